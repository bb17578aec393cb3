//! [`DriverOptionsBuilder`].

use std::time::Duration;

use super::{ConfigError, DriverOptions};
use crate::job::Namespace;
use crate::retry::RetryPolicy;
use crate::shell::KeyType;

/// Builds [`DriverOptions`] from the defaults; [`build`](Self::build) checks them.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DriverOptionsBuilder {
    options: DriverOptions,
}

impl DriverOptionsBuilder {
    /// The namespace of this driver's jobs.
    pub fn namespace(mut self, namespace: Namespace) -> Self {
        self.options.namespace = Some(namespace);
        self
    }

    /// The default task definition (required).
    pub fn task_definition(mut self, name: impl Into<String>) -> Self {
        self.options.task.task_definition = name.into();
        self
    }

    /// The default platform version.
    pub fn platform_version(mut self, version: impl Into<String>) -> Self {
        self.options.task.platform_version = Some(version.into());
        self
    }

    /// The container that gets the job's key and environment.
    pub fn container_name(mut self, name: impl Into<String>) -> Self {
        self.options.task.container_name = name.into();
        self
    }

    /// Patterns (`*` wildcard) of the task definitions jobs may ask for.
    pub fn allowed_task_definitions(
        mut self,
        patterns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.options.task.allowed_task_definitions = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Whether jobs may choose the platform version.
    pub fn allow_platform_version_override(mut self, allow: bool) -> Self {
        self.options.task.allow_platform_version_override = allow;
        self
    }

    /// From launch to SSH answering.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeouts.ready = timeout;
        self
    }

    /// First and largest delay between status calls while waiting.
    pub fn poll_intervals(mut self, initial: Duration, max: Duration) -> Self {
        self.options.timeouts.poll_initial = initial;
        self.options.timeouts.poll_max = max;
        self
    }

    /// Deadline for stopping a task.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeouts.stop = timeout;
        self
    }

    /// How often a running stage checks its task (zero disables).
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.options.timeouts.watch = interval;
        self
    }

    /// How long after a launch an unknown task means "not visible yet".
    pub fn consistency_window(mut self, window: Duration) -> Self {
        self.options.timeouts.consistency_window = window;
        self
    }

    /// Login user and port of the task's SSH server.
    pub fn ssh_login(mut self, username: impl Into<String>, port: u16) -> Self {
        self.options.ssh.username = username.into();
        self.options.ssh.port = port;
        self
    }

    /// Type of the per-job key.
    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.options.ssh.key_type = key_type;
        self
    }

    /// Interval of SSH readiness probes.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.options.ssh.probe_interval = interval;
        self
    }

    /// Retries of temporary launcher failures.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }

    /// `builds_dir` for the runner.
    pub fn builds_dir(mut self, dir: impl Into<String>) -> Self {
        self.options.builds_dir = Some(dir.into());
        self
    }

    /// `cache_dir` for the runner.
    pub fn cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.options.cache_dir = Some(dir.into());
        self
    }

    /// The options, once [`DriverOptions::validate`] finds no problem.
    pub fn build(self) -> Result<DriverOptions, ConfigError> {
        self.options.validate()?;
        Ok(self.options)
    }
}
