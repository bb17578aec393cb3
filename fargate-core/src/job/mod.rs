//! The job as the runner describes it, and who it is.
//!
//! The runner starts every stage with the same environment and files (GitLab's custom
//! executor documentation: <https://docs.gitlab.com/runner/executors/custom/>).
//! Two sources, two levels of trust:
//!
//! * `JOB_RESPONSE_FILE` ([`JobResponse`]) is written by the runner from what GitLab sent: the
//!   job's id, project and timeout cannot be set by a pipeline. The job's identity
//!   ([`JobIdentity`], [`JobKey`]) comes from it and from the administrator's [`Namespace`].
//! * `CUSTOM_ENV_*` variables ([`JobContext::variable`]) are the job's CI/CD variables: a
//!   pipeline author can set any of them, `CI_JOB_ID` included. They never pick a record, a
//!   lock, a task to stop or a privilege; they are read only for what the administrator
//!   allows (e.g. an allowed task definition) and for the Go driver's cosmetic `hostname`.

mod context;
mod go_id;
mod identity;
pub(crate) use identity::POOL_KEY_INFIX;
mod image;
mod registry_login;
mod response;
mod sensitive;
mod variables;

pub use context::{CUSTOM_ENV_PREFIX, JobContext};
pub use go_id::GoJobId;
pub use identity::{
    IdentitySource, JobIdentity, JobKey, MAX_KEY_LEN, MAX_NAMESPACE_LEN, Namespace,
};
pub use image::JobImage;
pub(crate) use image::is_host_name;
pub use registry_login::RegistryLogin;
pub use response::JobResponse;
pub use sensitive::{SecretValue, SensitiveVariable, Sensitivity};
pub use variables::{Expanded, JobVariables};
