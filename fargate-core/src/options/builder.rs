//! [`DriverOptionsBuilder`].

use std::time::Duration;

use super::{ConfigError, DriverOptions, ShapePolicy};
use crate::job::Namespace;
use crate::retry::RetryPolicy;
use crate::shell::KeyType;

/// Builds [`DriverOptions`] from the defaults; [`build`](Self::build) checks them.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DriverOptionsBuilder {
    options: DriverOptions,
}

/// Setters of one field each: `name(value: Type) => field.path = expression;`.
macro_rules! setters {
    ($($(#[doc = $doc:literal])+ $name:ident($value:ident: $ty:ty) => $($field:ident).+ = $set:expr;)+) => {$(
        $(#[doc = $doc])+
        pub fn $name(mut self, $value: $ty) -> Self {
            self.options.$($field).+ = $set;
            self
        }
    )+};
}

impl DriverOptionsBuilder {
    setters! {
        /// The namespace of this driver's jobs.
        namespace(namespace: Namespace) => namespace = Some(namespace);
        /// The default task definition (required).
        task_definition(name: impl Into<String>) => task.task_definition = name.into();
        /// The default platform version.
        platform_version(version: impl Into<String>) => task.platform_version = Some(version.into());
        /// The container that gets the job's key and environment.
        container_name(name: impl Into<String>) => task.container_name = name.into();
        /// Whether jobs may choose the platform version.
        allow_platform_version_override(allow: bool) => task.allow_platform_version_override = allow;
        /// From launch to SSH answering.
        ready_timeout(timeout: Duration) => timeouts.ready = timeout;
        /// Deadline for stopping a task.
        stop_timeout(timeout: Duration) => timeouts.stop = timeout;
        /// How often a running stage checks its task (zero disables).
        watch_interval(interval: Duration) => timeouts.watch = interval;
        /// How long after a launch an unknown task means "not visible yet".
        consistency_window(window: Duration) => timeouts.consistency_window = window;
        /// Longest a task may live (the cap of its deadline).
        max_task_lifetime(lifetime: Duration) => timeouts.max_task_lifetime = lifetime;
        /// Type of the per-job key.
        key_type(key_type: KeyType) => ssh.key_type = key_type;
        /// Interval of SSH readiness probes.
        probe_interval(interval: Duration) => ssh.probe_interval = interval;
        /// Retries of temporary launcher failures.
        retry(policy: RetryPolicy) => retry = policy;
        /// What jobs may ask for in their task's shape, and what each project gets.
        shape_policy(policy: ShapePolicy) => shape = policy;
        /// `builds_dir` for the runner.
        builds_dir(dir: impl Into<String>) => builds_dir = Some(dir.into());
        /// `cache_dir` for the runner.
        cache_dir(dir: impl Into<String>) => cache_dir = Some(dir.into());
        /// Which job images and services run.
        images(policy: super::ImagePolicy) => images = policy;
        /// The warm pool.
        warm_pool(pool: super::WarmPoolOptions) => pool = pool;
    }

    /// Patterns (`*` wildcard) of the task definitions jobs may ask for.
    pub fn allowed_task_definitions(
        mut self,
        patterns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.options.task.allowed_task_definitions = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// First and largest delay between status calls while waiting.
    pub fn poll_intervals(mut self, initial: Duration, max: Duration) -> Self {
        self.options.timeouts.poll_initial = initial;
        self.options.timeouts.poll_max = max;
        self
    }

    /// Login user and port of the task's SSH server.
    pub fn ssh_login(mut self, username: impl Into<String>, port: u16) -> Self {
        self.options.ssh.username = username.into();
        self.options.ssh.port = port;
        self
    }

    /// The options, once [`DriverOptions::validate`] finds no problem.
    pub fn build(self) -> Result<DriverOptions, ConfigError> {
        self.options.validate()?;
        Ok(self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setter_sets_its_field() {
        let ms = Duration::from_millis;
        let o = DriverOptions::builder()
            .namespace(Namespace::parse("ns").unwrap())
            .task_definition("td")
            .platform_version("1.4.0")
            .container_name("build")
            .allow_platform_version_override(false)
            .allowed_task_definitions(["ci-*"])
            .ready_timeout(ms(1))
            .poll_intervals(ms(2), ms(3))
            .stop_timeout(ms(4))
            .watch_interval(ms(5))
            .consistency_window(ms(6))
            .max_task_lifetime(ms(8))
            .ssh_login("ci", 2222)
            .key_type(KeyType::Rsa { bits: 4096 })
            .probe_interval(ms(7))
            .retry(RetryPolicy::none())
            .builds_dir("/b")
            .cache_dir("/c")
            .build()
            .unwrap();
        assert_eq!(o.namespace.as_ref().map(Namespace::as_str), Some("ns"));
        let t = &o.task;
        assert_eq!(
            (t.task_definition.as_str(), t.platform_version.as_deref()),
            ("td", Some("1.4.0"))
        );
        assert_eq!(t.container_name, "build");
        assert!(!t.allow_platform_version_override && t.allows("ci-x"));
        let d = [
            o.timeouts.ready,
            o.timeouts.poll_initial,
            o.timeouts.poll_max,
            o.timeouts.stop,
            o.timeouts.watch,
            o.timeouts.consistency_window,
            o.ssh.probe_interval,
        ];
        assert_eq!(d, [1, 2, 3, 4, 5, 6, 7].map(ms));
        assert_eq!(o.timeouts.max_task_lifetime, ms(8));
        assert_eq!((o.ssh.username.as_str(), o.ssh.port), ("ci", 2222));
        assert_eq!(o.ssh.key_type, KeyType::Rsa { bits: 4096 });
        assert_eq!(o.retry.max_attempts, 1);
        assert_eq!(
            (o.builds_dir.as_deref(), o.cache_dir.as_deref()),
            (Some("/b"), Some("/c"))
        );
    }

    #[test]
    fn build_lists_every_problem() {
        let err = DriverOptions::builder()
            .ssh_login("", 0)
            .build()
            .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["task.task_definition", "ssh.username", "ssh.port"]);
    }
}
