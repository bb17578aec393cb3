//! [`RegistryLogin`]: the job's own registry credentials from `JOB_RESPONSE_FILE`.
//!
//! GitLab sends each job, in the payload's `credentials` list, the logins of the
//! registries it may pull from for the job's life: entries of `type` `registry` with the
//! registry's `url` (e.g. `registry.gitlab.example.com`, the dependency proxy's
//! `gitlab.example.com:443`), a `username` (`gitlab-ci-token`) and a `password` (the job
//! token, valid until the job ends). gitlab-runner's own executors log in with them to
//! pull `image:` and `services:` (`helpers/docker/auth`). They come from GitLab, not from
//! the pipeline's variables; the password is a [`SecretValue`] (never shown, serialized
//! or kept in a record).

use serde::{Deserialize, Serialize};

use super::sensitive::SecretValue;

/// One `credentials` entry of type `registry` of the job payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryLogin {
    /// The registry as GitLab names it (`registry.gitlab.example.com`, maybe with a port,
    /// a path or an `https://` prefix).
    pub url: String,
    /// The username (`gitlab-ci-token` for the job token). Not secret.
    pub username: String,
    /// The password: the job token (never shown nor serialized).
    pub password: SecretValue,
}

impl RegistryLogin {
    /// Login `username`/`password` for the registry `url`.
    pub fn new(
        url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        RegistryLogin {
            url: url.into(),
            username: username.into(),
            password: SecretValue::new(password),
        }
    }
}

/// A `credentials` entry as the payload writes it.
#[derive(Deserialize)]
pub(super) struct RawCredentials {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

impl RawCredentials {
    /// The login, for an entry of type `registry` with a URL (gitlab-runner reads no other).
    pub(super) fn into_login(self) -> Option<RegistryLogin> {
        (self.kind == "registry" && !self.url.trim().is_empty())
            .then(|| RegistryLogin::new(self.url.trim(), self.username, self.password))
    }
}

impl std::fmt::Debug for RawCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCredentials")
            .field("type", &self.kind)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}
