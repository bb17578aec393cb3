//! [`JobImage`]: the job's `image:` and each of its `services:`, as GitLab sends them in
//! `JOB_RESPONSE_FILE`.
//!
//! The runner writes them as GitLab's job payload has them (gitlab-runner's `Image` type):
//! `{"name": "postgres:16", "alias": "db", "entrypoint": [..], "command": [..],
//! "variables": [{"key": .., "value": ..}, ..], ...}`; `image` is one such object (its
//! `name` empty when the job has no `image:`), `services` a list of them. Unknown fields
//! (`ports`, `pull_policy`, `executor_opts`...) are ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::sensitive::Sensitivity;

/// One image of the job payload: the job's `image:` or one of its `services:`.
///
/// `variables` may hold secrets (a service's variables can expand masked CI/CD variables):
/// `Debug` shows their names only, and the driver never puts their values into a task
/// definition.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobImage {
    /// The image reference, e.g. `registry.example.com/tools/rust:1.85`.
    pub name: String,
    /// Host names the job reaches a service by (`alias:`, which may list several,
    /// separated by commas or spaces).
    pub aliases: Vec<String>,
    /// The entry point to use instead of the image's (`entrypoint:`).
    pub entrypoint: Option<Vec<String>>,
    /// The command to use instead of the image's (`command:`).
    pub command: Option<Vec<String>>,
    /// The image's own variables (for services: their environment).
    pub variables: BTreeMap<String, String>,
    /// Those of [`variables`](Self::variables) that the payload itself marks as secret
    /// (`masked`, `file` or not `public`), with why.
    pub sensitive: BTreeMap<String, Sensitivity>,
}

impl JobImage {
    /// An image `name` with nothing else set.
    pub fn new(name: impl Into<String>) -> Self {
        JobImage {
            name: name.into(),
            ..JobImage::default()
        }
    }

    /// The same image with `alias` added to its aliases.
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.aliases.push(alias.into());
        self
    }

    /// The same image with variable `key` set to `value`.
    pub fn with_variable(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(key.into(), value.into());
        self
    }

    /// The same image with secret variable `key` set to `value` (marked `sensitivity`).
    pub fn with_secret_variable(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        sensitivity: Sensitivity,
    ) -> Self {
        let key = key.into();
        self.sensitive.insert(key.clone(), sensitivity);
        self.variables.insert(key, value.into());
        self
    }

    /// The same image with `command` instead of the image's.
    pub fn with_command(mut self, command: Vec<String>) -> Self {
        self.command = Some(command);
        self
    }

    /// The same image with `entrypoint` instead of the image's.
    pub fn with_entrypoint(mut self, entrypoint: Vec<String>) -> Self {
        self.entrypoint = Some(entrypoint);
        self
    }

    /// The aliases a service is reachable by: its `alias:` values, else the names Docker
    /// derives from the image (`registry/group/postgres:16` gives `registry__group__postgres`
    /// and `registry-group-postgres`, as gitlab-runner does for its Docker and Kubernetes
    /// executors), leaving out names that are not host names (a registry port's `:`).
    pub fn host_names(&self) -> Vec<String> {
        if !self.aliases.is_empty() {
            return self.aliases.clone();
        }
        let path = self.name.split('@').next().unwrap_or_default();
        // Drop the tag: the last ':' after the last '/'.
        let path = match (path.rfind(':'), path.rfind('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon > s) => &path[..colon],
            _ => path,
        };
        if path.is_empty() {
            return Vec::new();
        }
        let mut names = vec![path.replace('/', "__"), path.replace('/', "-")];
        names.dedup();
        names.retain(|n| is_host_name(n));
        names
    }
}

/// Whether `name` may go into a hosts file: 1-253 characters of letters, digits, `.`, `-`
/// and `_`.
pub(crate) fn is_host_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl fmt::Debug for JobImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobImage")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("entrypoint", &self.entrypoint)
            .field("command", &self.command)
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

/// The payload's shape of an image.
#[derive(Default, Deserialize)]
pub(crate) struct RawImage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    variables: Option<Vec<RawVariable>>,
}

/// One variable of the payload (of the job, or of an image): `key`, `value` and the flags
/// GitLab sets.
#[derive(Deserialize)]
pub(crate) struct RawVariable {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default)]
    masked: Option<bool>,
    #[serde(default)]
    file: Option<bool>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    pub(crate) raw: Option<bool>,
}

impl RawVariable {
    /// Why GitLab marks it secret, if it does.
    pub(crate) fn sensitivity(&self) -> Option<Sensitivity> {
        Sensitivity::of(self.masked, self.file, self.public)
    }
}

impl RawImage {
    /// The image, or `None` when it names none (a job without `image:`).
    pub(crate) fn into_image(self) -> Option<JobImage> {
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())?;
        let nonempty = |v: Option<Vec<String>>| v.filter(|v| !v.is_empty());
        let variables: Vec<RawVariable> = self
            .variables
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.key.is_empty())
            .collect();
        Some(JobImage {
            name,
            aliases: self
                .alias
                .unwrap_or_default()
                .split([',', ' ', '\t'])
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            entrypoint: nonempty(self.entrypoint),
            command: nonempty(self.command),
            sensitive: variables
                .iter()
                .filter_map(|v| Some((v.key.clone(), v.sensitivity()?)))
                .collect(),
            variables: variables.into_iter().map(|v| (v.key, v.value)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_alias_or_image() {
        assert_eq!(
            JobImage::new("postgres:16").with_alias("db").host_names(),
            ["db"]
        );
        assert_eq!(JobImage::new("postgres:16").host_names(), ["postgres"]);
        assert_eq!(
            JobImage::new("registry.example.com/group/redis:7@sha256:ab").host_names(),
            [
                "registry.example.com__group__redis",
                "registry.example.com-group-redis"
            ]
        );
        assert!(
            JobImage::new("localhost:5000/mysql")
                .host_names()
                .is_empty()
        );
    }

    #[test]
    fn debug_hides_variable_values() {
        let s = format!(
            "{:?}",
            JobImage::new("x").with_variable("PASSWORD", "hunter2")
        );
        assert!(s.contains("PASSWORD") && !s.contains("hunter2"), "{s}");
    }
}
