//! [`ImagePolicy`]: whether jobs may choose their image and services, and which.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::glob::glob_match;
use super::problems::ConfigProblem;

/// Which `image:` and `services:` of a job the driver runs (see [`crate::images`]).
///
/// Deny by default: with no [`allowed_images`](Self::allowed_images), images are disabled,
/// every job runs in the task image, and a job's `image:`/`services:` are ignored with one
/// line in its log. With patterns, a job's image must match one of them (else the job fails
/// before any backend call, naming the patterns), and each service must match one of
/// [`allowed_services`](Self::allowed_services).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ImagePolicy {
    /// Patterns of job images (`*` matches any run of characters, `/` and `:` included:
    /// `registry.example.com/ci/*`). Empty (the default): images are disabled.
    pub allowed_images: Vec<String>,
    /// Patterns of service images. Default none: a job with `services:` fails.
    pub allowed_services: Vec<String>,
    /// Most services one job may have. Default 4; at most 7 (a backend may limit the
    /// containers of a task: ECS to 10, the base's, the bundle's, the job's and the
    /// services').
    pub max_services: usize,
    /// The port the bundle's SSH server listens on in the job container (the task image's
    /// server keeps [`SshLogin::port`](super::SshLogin::port)). Default 2222.
    pub job_ssh_port: u16,
    /// Where the task image holds the tool bundle (the static SSH server, shell and entry
    /// point) that is copied into the job container. Default `/opt/fargate-bundle`.
    pub bundle_source: String,
    /// Where the builds directory is shared between the helper and job containers when the
    /// runner is not told one ([`DriverOptions::builds_dir`](super::DriverOptions)). Default
    /// `/builds`.
    pub default_builds_dir: String,
    /// A derived task definition no job used for this long is removed by `gc`. Default 7
    /// days.
    pub unused_after: Duration,
    /// Most derived task-definition families a base may have; `gc` removes the least
    /// recently used beyond it. Default 200.
    pub max_derived_families: usize,
    /// What becomes of an image's or service's variable that holds a secret (see
    /// [`crate::images`]): refused (the default), or passed through the backend's secret
    /// store.
    pub secrets: SecretPolicy,
    /// Credentials of private registries, per registry host: a job image or service from
    /// one of these hosts is pulled with them (see [`crate::images::registry_host`]).
    pub registries: Vec<RegistryCredentials>,
    /// Registry hosts whose images a job pulls with its own registry login from the job
    /// payload ([`RegistryLogin`](crate::job::RegistryLogin), the job token), kept in the
    /// backend's secret store for the job's life (see [`crate::images`]); `"*"`: every
    /// host the payload has a login for. Empty (the default): jobs' logins are not used.
    /// A host with [`registries`](Self::registries) credentials uses those instead.
    pub job_registry_credentials: Vec<String>,
}

/// How the backend authenticates to one private registry when it pulls an image from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryCredentials {
    /// The registry's host as image names write it (`registry.gitlab.example.com`,
    /// `registry.example.com:5050`; `docker.io` for Docker Hub), compared without case.
    pub host: String,
    /// The backend's reference to the stored username and password (for ECS: the ARN of
    /// a Secrets Manager secret, used as `repositoryCredentials`). Not a secret itself.
    pub credentials: String,
}

impl RegistryCredentials {
    /// Credentials `credentials` for registry `host`.
    pub fn new(host: impl Into<String>, credentials: impl Into<String>) -> Self {
        RegistryCredentials {
            host: host.into(),
            credentials: credentials.into(),
        }
    }
}

/// What the driver does with a secret variable of a job's image or service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SecretPolicy {
    /// The job fails before any backend call, with an error naming the variable.
    #[default]
    Refuse,
    /// The launcher keeps the value in its secret store for the job's life, and the task
    /// reads it from there (for ECS: a per-job Secrets Manager secret referenced by the
    /// task definition); it never goes into the launch's overrides, tags or records.
    Store,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        ImagePolicy {
            allowed_images: Vec::new(),
            allowed_services: Vec::new(),
            max_services: 4,
            job_ssh_port: 2222,
            bundle_source: "/opt/fargate-bundle".into(),
            default_builds_dir: "/builds".into(),
            unused_after: Duration::from_secs(7 * 24 * 3600),
            max_derived_families: 200,
            secrets: SecretPolicy::Refuse,
            registries: Vec::new(),
            job_registry_credentials: Vec::new(),
        }
    }
}

impl ImagePolicy {
    /// The defaults, with jobs allowed the images matching `images` and the services
    /// matching `services`.
    pub fn allowing<I, S>(images: I, services: S) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        S: IntoIterator,
        S::Item: Into<String>,
    {
        ImagePolicy {
            allowed_images: images.into_iter().map(Into::into).collect(),
            allowed_services: services.into_iter().map(Into::into).collect(),
            ..ImagePolicy::default()
        }
    }

    /// Whether jobs may choose their image at all.
    pub fn enabled(&self) -> bool {
        !self.allowed_images.is_empty()
    }

    /// Whether `image` matches one of the allowed image patterns.
    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_images.iter().any(|p| glob_match(p, image))
    }

    /// Whether `image` matches one of the allowed service patterns.
    pub fn allows_service(&self, image: &str) -> bool {
        self.allowed_services.iter().any(|p| glob_match(p, image))
    }

    /// The credentials the administrator configured for the registry of `image` (by
    /// [`registry_host`](crate::images::registry_host), without case), if any.
    pub fn credentials_for(&self, image: &str) -> Option<&RegistryCredentials> {
        let host = crate::images::registry_host(image);
        self.registries
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(host))
    }

    /// Whether a job pulls `image` with its own registry login when its payload has one
    /// for it: `image`'s host is in [`job_registry_credentials`](Self::job_registry_credentials)
    /// (or that holds `"*"`) and the administrator configured no credentials for it.
    pub fn uses_job_login(&self, image: &str) -> bool {
        let host = crate::images::registry_host(image);
        self.credentials_for(image).is_none()
            && self
                .job_registry_credentials
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(host))
    }

    /// Problems of these settings (keys under `images.`); `ssh_port` is the task image's.
    pub(crate) fn problems(&self, ssh_port: u16) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.job_ssh_port == 0 || (self.enabled() && self.job_ssh_port == ssh_port) {
            p.push(
                ConfigProblem::new("images.job_ssh_port", "must be from 1 to 65535 and differ from ssh.port")
                    .with_hint("the job and helper containers share the task's network: their SSH servers need their own ports"),
            );
        }
        if self.max_services > 7 {
            p.push(ConfigProblem::new(
                "images.max_services",
                "must be at most 7 (ECS: 10 containers per task definition)",
            ));
        }
        for (key, path) in [
            ("images.bundle_source", &self.bundle_source),
            ("images.default_builds_dir", &self.default_builds_dir),
        ] {
            if !path.starts_with('/') {
                p.push(ConfigProblem::new(key, "must be an absolute path"));
            }
        }
        for (i, r) in self.registries.iter().enumerate() {
            if !is_registry_host(&r.host) {
                p.push(
                    ConfigProblem::new(
                        "images.registries.host",
                        format!("registry {}: {:?} is not a registry host", i + 1, r.host),
                    )
                    .with_hint("write the host as image names start with it (registry.example.com or registry.example.com:5050; docker.io for Docker Hub)"),
                );
            }
            if r.credentials.trim().is_empty() {
                p.push(ConfigProblem::new(
                    "images.registries.credentials",
                    format!("registry {}: {:?} has no credentials", i + 1, r.host),
                ));
            }
            if self.registries[..i]
                .iter()
                .any(|o| o.host.eq_ignore_ascii_case(&r.host))
            {
                p.push(ConfigProblem::new(
                    "images.registries.host",
                    format!("registry {:?} is configured twice", r.host),
                ));
            }
        }
        for host in &self.job_registry_credentials {
            if host != "*" && !is_registry_host(host) {
                p.push(
                    ConfigProblem::new(
                        "images.job_registry_credentials",
                        format!("{host:?} is not a registry host"),
                    )
                    .with_hint("write hosts as image names start with them (registry.gitlab.example.com, registry.example.com:5050), or \"*\" for every registry the job has a login for"),
                );
            }
        }
        if self.max_derived_families == 0 {
            p.push(ConfigProblem::new(
                "images.max_derived_families",
                "must be positive",
            ));
        }
        p
    }
}

/// Whether `host` is written as image names start with a registry host.
fn is_registry_host(host: &str) -> bool {
    !host.is_empty() && !host.contains(['/', '@', ' ', '*']) && host != "index.docker.io"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_by_default_and_patterns_match_whole_names() {
        let none = ImagePolicy::default();
        assert!(!none.enabled() && !none.allows_image("alpine") && !none.allows_service("redis"));
        let p = ImagePolicy {
            allowed_images: vec!["registry.example.com/ci/*".into(), "alpine:3.*".into()],
            allowed_services: vec!["postgres:*".into()],
            ..ImagePolicy::default()
        };
        assert!(p.enabled());
        assert!(p.allows_image("registry.example.com/ci/rust:1.85"));
        assert!(p.allows_image("alpine:3.20"));
        assert!(!p.allows_image("alpine:edge"));
        assert!(!p.allows_image("evil.example/registry.example.com/ci/x"));
        assert!(p.allows_service("postgres:16") && !p.allows_service("redis:7"));
        assert!(!p.allows_service("alpine:3.20"));
    }

    #[test]
    fn problems_name_their_keys() {
        let p = ImagePolicy {
            allowed_images: vec!["*".into()],
            job_ssh_port: 22,
            max_services: 8,
            bundle_source: "opt".into(),
            max_derived_families: 0,
            ..ImagePolicy::default()
        };
        let keys: Vec<String> = p.problems(22).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "images.job_ssh_port",
                "images.max_services",
                "images.bundle_source",
                "images.max_derived_families"
            ]
        );
        assert!(ImagePolicy::default().problems(22).is_empty());
        let bad = ImagePolicy {
            job_registry_credentials: vec!["*".into(), "reg.example/x".into()],
            ..ImagePolicy::default()
        };
        let keys: Vec<String> = bad.problems(22).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["images.job_registry_credentials"]);
    }

    #[test]
    fn job_logins_are_opt_in_per_host_and_the_admins_credentials_win() {
        let mut p = ImagePolicy::allowing(["*"], ["*"]);
        assert!(!p.uses_job_login("registry.gitlab.example.com/g/app:1"));
        p.job_registry_credentials = vec!["Registry.GitLab.example.com".into()];
        assert!(p.uses_job_login("registry.gitlab.example.com/g/app:1"));
        assert!(!p.uses_job_login("other.example.com/g/app:1"));
        assert!(!p.uses_job_login("alpine:3"));
        p.registries = vec![RegistryCredentials::new(
            "registry.gitlab.example.com",
            "arn:deploy-token",
        )];
        assert!(!p.uses_job_login("registry.gitlab.example.com/g/app:1"));
        p.job_registry_credentials = vec!["*".into()];
        assert!(p.uses_job_login("alpine:3") && p.uses_job_login("other.example.com/x"));
    }
}
