//! Job images and services: derived task definitions with a helper container.
//!
//! When the administrator allows images ([`ImagePolicy`](crate::options::ImagePolicy)), a
//! job's `image:` and `services:` (from `JOB_RESPONSE_FILE`, never from job variables) are
//! checked against the allowlist ([`decide`]) before any backend call, and turned into a
//! [`TaskPlan`]: the base task definition, plus
//!
//! ```text
//! fargate-bundle  task image, `cp -a <bundle>/. /opt/fargate/`, exits      (not essential)
//! job             job image, entry point = bundle's sh + entrypoint.sh:    (essential)
//!                 hosts file, SSH server on images.job_ssh_port;
//!                 waits for fargate-bundle SUCCESS and every service START
//! service-N       service image, its command/entrypoint                    (not essential)
//! helper (base)   task image as the admin built it, + builds volume
//! volumes         fargate-builds (helper + job at the builds dir), fargate-bundle
//! ```
//!
//! The launcher registers the plan as a task definition named after the base and
//! [`TaskPlan::content_hash`] (or reuses it), and
//! sends the [`ImageRequest::environment`] (the plain variables of the image and services)
//! as overrides only. A variable that holds a secret ([`secrets`]) is refused, or, when
//! the administrator allows it, goes through the launcher's secret store
//! ([`ImageRequest::from_secrets`]); never into overrides, tags, a shared definition or a
//! record. So do the job's own registry logins from the payload, when the administrator
//! lets jobs pull with them ([`ImageRequest::pull_logins`], matched to images by
//! [`login_for`]). The driver pins both SSH servers' host keys at prepare and runs each stage
//! where [`stage_container`] says.

mod plan;
mod prune;
mod registry;
mod request;
mod route;
pub mod secrets;

pub use plan::{
    BUILDS_VOLUME, BUNDLE_CONTAINER, BUNDLE_ENTRY_POINT, BUNDLE_MOUNT, BUNDLE_VOLUME, Condition,
    ContainerPlan, ContainerRole, JOB_CONTAINER, Mount, SERVICE_CONTAINER_PREFIX,
    SERVICE_HOSTS_ENV, SSH_PORT_ENV, TaskPlan,
};
pub use prune::{DerivedFamily, families_to_remove};
pub use registry::{DOCKER_HUB, login_for, pull_failure_hint, registry_host};
pub use request::{ImageDecision, ImageRequest, PullLogin, decide};
pub use route::{StageContainer, stage_container};
