//! [`TaskPlan`]: the backend-neutral content of a derived task definition, and its hash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the job container in a derived task definition.
pub const JOB_CONTAINER: &str = "job";
/// Name of the container that copies the tool bundle into [`BUNDLE_VOLUME`] and exits.
pub const BUNDLE_CONTAINER: &str = "fargate-bundle";
/// Prefix of service container names (`service-1`, `service-2`...).
pub const SERVICE_CONTAINER_PREFIX: &str = "service-";
/// The task volume of the builds directory, shared by the helper and job containers.
pub const BUILDS_VOLUME: &str = "fargate-builds";
/// The task volume the bundle is copied into, mounted in the job container.
pub const BUNDLE_VOLUME: &str = "fargate-bundle";
/// Where the job container sees the bundle.
pub const BUNDLE_MOUNT: &str = "/opt/fargate";
/// The bundle's entry point, as the job container runs it: the bundle's shell running the
/// bundle's `entrypoint.sh` (see `examples/task-image/bundle-entrypoint.sh`).
pub const BUNDLE_ENTRY_POINT: [&str; 2] = ["/opt/fargate/bin/sh", "/opt/fargate/entrypoint.sh"];
/// Environment of the job container: the port of the bundle's SSH server.
pub const SSH_PORT_ENV: &str = "FARGATE_SSH_PORT";
/// Environment of the job container: the service host names, separated by spaces, that
/// the entry point writes into `/etc/hosts` as `127.0.0.1`.
pub const SERVICE_HOSTS_ENV: &str = "FARGATE_SERVICE_HOSTS";

/// What a container is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContainerRole {
    /// Copies the tool bundle into the shared volume, then exits.
    Bundle,
    /// Runs the job's image; `build_script`, `step_*` and `after_script` run in it.
    Job,
    /// One of the job's services.
    Service,
}

/// When a container may start, relative to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// Once the other container started.
    Start,
    /// Once the other container exited with 0.
    Success,
}

/// A volume mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mount {
    /// The task volume.
    pub volume: String,
    /// Where the container sees it.
    pub path: String,
}

impl Mount {
    /// `volume` at `path`.
    pub fn new(volume: impl Into<String>, path: impl Into<String>) -> Self {
        Mount {
            volume: volume.into(),
            path: path.into(),
        }
    }
}

/// One container the derived definition adds to the base's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerPlan {
    /// The container's name.
    pub name: String,
    /// What it is for.
    pub role: ContainerRole,
    /// Its image; `None`: the helper container's image (the task image).
    pub image: Option<String>,
    /// Entry point instead of the image's.
    pub entry_point: Option<Vec<String>>,
    /// Command instead of the image's.
    pub command: Option<Vec<String>>,
    /// Environment in the task definition (never secret).
    pub environment: BTreeMap<String, String>,
    /// Whether the task stops when it exits.
    pub essential: bool,
    /// The TCP port it listens on that the driver connects to, if any.
    pub port: Option<u16>,
    /// Volumes it mounts.
    pub mounts: Vec<Mount>,
    /// Containers it waits for.
    pub depends_on: Vec<(String, Condition)>,
    /// The backend's reference to the credentials its image is pulled with (a private
    /// registry's, [`RegistryCredentials`](crate::options::RegistryCredentials)); `None`:
    /// anonymous, or the backend's own authentication (ECR, for ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

impl ContainerPlan {
    fn new(name: impl Into<String>, role: ContainerRole, image: Option<String>) -> Self {
        ContainerPlan {
            name: name.into(),
            role,
            image,
            entry_point: None,
            command: None,
            environment: BTreeMap::new(),
            essential: false,
            port: None,
            mounts: Vec::new(),
            depends_on: Vec::new(),
            credentials: None,
        }
    }
}

/// The content of a derived task definition, on top of the base definition.
///
/// The base's containers stay as they are, except the helper (the base container the
/// driver logs in to, [`TaskPolicy::container_name`](crate::options::TaskPolicy)), which
/// also mounts the builds volume. The plan adds, in order: the bundle container (the task
/// image copying its tool bundle into [`BUNDLE_VOLUME`], then exiting), the job container
/// (the job's image, its entry point replaced by the bundle's SSH server on
/// [`job_ssh_port`](Self::job_ssh_port), starting once the bundle is copied and the
/// services started) and one non-essential container per service. It holds no variable of
/// the job's: those go in the launch's overrides ([`super::ImageRequest::environment`]) or,
/// secret ones, through the backend's secret store ([`super::ImageRequest::from_secrets`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskPlan {
    /// The base container that becomes the helper.
    pub helper: String,
    /// Volumes the helper mounts.
    pub helper_mounts: Vec<Mount>,
    /// Containers added to the base's.
    pub containers: Vec<ContainerPlan>,
    /// Task volumes (task-scoped storage, no host path).
    pub volumes: Vec<String>,
    /// The port of the job container's SSH server.
    pub job_ssh_port: u16,
}

/// What [`TaskPlan::derive`] needs.
#[derive(Clone, Debug)]
pub(crate) struct PlanInput<'a> {
    pub helper: &'a str,
    pub builds_dir: &'a str,
    pub bundle_source: &'a str,
    pub job_ssh_port: u16,
    /// The job image; `None`: the task image.
    pub job_image: Option<&'a str>,
    /// `(image, entrypoint, command, host names)` of each service.
    pub services: Vec<ServiceInput<'a>>,
}

/// One service of [`PlanInput`].
#[derive(Clone, Debug)]
pub(crate) struct ServiceInput<'a> {
    pub image: &'a str,
    pub entrypoint: Option<&'a [String]>,
    pub command: Option<&'a [String]>,
    pub hosts: Vec<String>,
}

impl TaskPlan {
    /// The plan for `input`: a pure function of it.
    pub(crate) fn derive(input: &PlanInput<'_>) -> TaskPlan {
        let builds = Mount::new(BUILDS_VOLUME, input.builds_dir);
        let mut bundle = ContainerPlan::new(BUNDLE_CONTAINER, ContainerRole::Bundle, None);
        bundle.entry_point = Some(vec![
            "cp".into(),
            "-a".into(),
            format!("{}/.", input.bundle_source.trim_end_matches('/')),
            format!("{BUNDLE_MOUNT}/"),
        ]);
        bundle.mounts = vec![Mount::new(BUNDLE_VOLUME, BUNDLE_MOUNT)];

        let services: Vec<ContainerPlan> = input
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut c = ContainerPlan::new(
                    format!("{SERVICE_CONTAINER_PREFIX}{}", i + 1),
                    ContainerRole::Service,
                    Some(s.image.to_owned()),
                );
                c.entry_point = s.entrypoint.map(<[String]>::to_vec);
                c.command = s.command.map(<[String]>::to_vec);
                c
            })
            .collect();
        let mut hosts: Vec<&str> = input
            .services
            .iter()
            .flat_map(|s| s.hosts.iter().map(String::as_str))
            .collect();
        hosts.sort_unstable();
        hosts.dedup();

        let mut job = ContainerPlan::new(
            JOB_CONTAINER,
            ContainerRole::Job,
            input.job_image.map(str::to_owned),
        );
        job.entry_point = Some(BUNDLE_ENTRY_POINT.iter().map(|s| (*s).to_owned()).collect());
        job.essential = true;
        job.port = Some(input.job_ssh_port);
        job.mounts = vec![builds.clone(), Mount::new(BUNDLE_VOLUME, BUNDLE_MOUNT)];
        job.environment = BTreeMap::from([
            (SSH_PORT_ENV.to_owned(), input.job_ssh_port.to_string()),
            (SERVICE_HOSTS_ENV.to_owned(), hosts.join(" ")),
        ]);
        job.depends_on = std::iter::once((BUNDLE_CONTAINER.to_owned(), Condition::Success))
            .chain(services.iter().map(|s| (s.name.clone(), Condition::Start)))
            .collect();

        let mut containers = vec![bundle, job];
        containers.extend(services);
        TaskPlan {
            helper: input.helper.to_owned(),
            helper_mounts: vec![builds],
            containers,
            volumes: vec![BUILDS_VOLUME.to_owned(), BUNDLE_VOLUME.to_owned()],
            job_ssh_port: input.job_ssh_port,
        }
    }

    /// The hash that names the derived definition: SHA-256 (hex) of the plan and of
    /// `base`, the exact base revision it builds on (for ECS its ARN). The same plan on the
    /// same base revision gives the same hash, so its definition is registered once.
    pub fn content_hash(&self, base: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"fargate-derived-task-definition/1\0");
        h.update(base.as_bytes());
        h.update(b"\0");
        // Serialising plain data with ordered maps cannot fail and is deterministic.
        h.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(h.finalize())
    }

    /// The added container `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerPlan> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The service containers, in the order of the job's `services:`.
    pub fn services(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.containers
            .iter()
            .filter(|c| c.role == ContainerRole::Service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(services: Vec<ServiceInput<'a>>) -> PlanInput<'a> {
        PlanInput {
            helper: "ci-coordinator",
            builds_dir: "/builds",
            bundle_source: "/opt/fargate-bundle/",
            job_ssh_port: 2222,
            job_image: Some("rust:1.85"),
            services,
        }
    }

    #[test]
    fn the_plan_wires_bundle_job_and_services() {
        let cmd = vec!["postgres".to_owned(), "-c".into(), "fsync=off".into()];
        let plan = TaskPlan::derive(&input(vec![
            ServiceInput {
                image: "postgres:16",
                entrypoint: None,
                command: Some(&cmd),
                hosts: vec!["db".into(), "pg".into()],
            },
            ServiceInput {
                image: "redis:7",
                entrypoint: None,
                command: None,
                hosts: vec!["redis".into(), "db".into()],
            },
        ]));
        assert_eq!(plan.helper, "ci-coordinator");
        assert_eq!(plan.helper_mounts, [Mount::new(BUILDS_VOLUME, "/builds")]);
        assert_eq!(plan.volumes, [BUILDS_VOLUME, BUNDLE_VOLUME]);
        let names: Vec<&str> = plan.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [BUNDLE_CONTAINER, JOB_CONTAINER, "service-1", "service-2"]
        );

        let bundle = plan.container(BUNDLE_CONTAINER).unwrap();
        assert_eq!(bundle.image, None, "the bundle comes from the task image");
        assert!(!bundle.essential);
        assert_eq!(
            bundle.entry_point.as_deref().unwrap(),
            ["cp", "-a", "/opt/fargate-bundle/.", "/opt/fargate/"]
        );

        let job = plan.container(JOB_CONTAINER).unwrap();
        assert_eq!(job.image.as_deref(), Some("rust:1.85"));
        assert!(job.essential);
        assert_eq!(job.port, Some(2222));
        assert_eq!(job.entry_point.as_deref().unwrap(), BUNDLE_ENTRY_POINT);
        assert_eq!(job.environment[SSH_PORT_ENV], "2222");
        assert_eq!(job.environment[SERVICE_HOSTS_ENV], "db pg redis");
        assert_eq!(
            job.depends_on,
            [
                (BUNDLE_CONTAINER.to_owned(), Condition::Success),
                ("service-1".to_owned(), Condition::Start),
                ("service-2".to_owned(), Condition::Start)
            ]
        );
        assert_eq!(job.mounts[0], Mount::new(BUILDS_VOLUME, "/builds"));

        let services: Vec<&ContainerPlan> = plan.services().collect();
        assert_eq!(services.len(), 2);
        assert!(services.iter().all(|s| !s.essential && s.port.is_none()));
        assert_eq!(services[0].command.as_deref(), Some(&cmd[..]));
        assert_eq!(services[1].image.as_deref(), Some("redis:7"));
    }

    #[test]
    fn the_hash_follows_content_and_base() {
        let a = TaskPlan::derive(&input(vec![]));
        let b = TaskPlan::derive(&input(vec![]));
        assert_eq!(a.content_hash("td:1"), b.content_hash("td:1"));
        assert_ne!(a.content_hash("td:1"), a.content_hash("td:2"));
        let mut other = input(vec![]);
        other.job_image = Some("rust:1.86");
        assert_ne!(
            TaskPlan::derive(&other).content_hash("td:1"),
            a.content_hash("td:1")
        );
        let hash = a.content_hash("td:1");
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
