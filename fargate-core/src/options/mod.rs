//! [`DriverOptions`]: what the stage state machine ([`Driver`](crate::Driver)) needs to
//! know, and nothing about any backend.
//!
//! Build them in code with [`DriverOptions::builder`]; they are also plain data
//! (`serde`), with a default for everything except the task definition. Backends have
//! their own configuration (`fargate_aws::EcsConfig`, `fargate_ssh::Ssh2Config`), and the
//! `fargate` command reads all of them from its configuration file.
//!
//! ```
//! use std::time::Duration;
//! use fargate_core::options::DriverOptions;
//! use fargate_core::retry::RetryPolicy;
//!
//! let options = DriverOptions::builder()
//!     .task_definition("ci-coordinator:3")
//!     .allowed_task_definitions(["ci-*"])
//!     .ready_timeout(Duration::from_secs(300))
//!     .retry(RetryPolicy::default().with_max_attempts(3))
//!     .build()?;
//! assert_eq!(options.ssh.port, 22);
//! # Ok::<(), fargate_core::options::ConfigError>(())
//! ```

mod builder;
mod glob;
mod images;
mod pool;
mod problems;
mod shape;
mod task;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use builder::DriverOptionsBuilder;
pub use images::{ImagePolicy, RegistryCredentials, SecretPolicy};
pub use pool::{MAX_POOL_SIZE, WarmPoolOptions};
pub use problems::{ConfigError, ConfigProblem};
pub use shape::{
    CapacityProfile, ConcurrencyLimit, DEFAULT_SLOT_WAIT, OverMax, ProjectRule, ShapePolicy,
    SizeLimit,
};
pub use task::TaskPolicy;

use crate::job::Namespace;
use crate::retry::RetryPolicy;
use crate::shell::KeyType;

/// How long the driver waits, and how often it looks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Timeouts {
    /// From launch to SSH answering. Default 10 minutes.
    pub ready: Duration,
    /// First delay between status calls while waiting (then growing by half each time).
    /// Default 2 s.
    pub poll_initial: Duration,
    /// Largest delay between status calls while waiting. Default 10 s.
    pub poll_max: Duration,
    /// Deadline for stopping a task (cleanup, rollback). Default 60 s.
    pub stop: Duration,
    /// While a stage script runs, how often to check that the task still runs (zero
    /// disables). A stopped task then fails the stage at once, with the launcher's reason,
    /// instead of when the connection times out. Default 30 s.
    pub watch: Duration,
    /// How long after a launch the launcher may still not know the task (a backend may be
    /// eventually consistent, as ECS is): within it, "unknown task" means "not visible yet", never "stopped".
    /// Default 60 s.
    pub consistency_window: Duration,
    /// Longest a task may live: the cap of its deadline (see
    /// [`TaskSpec::deadline`](crate::TaskSpec::deadline)), and its lifetime when the job
    /// has no timeout. Default 24 hours.
    pub max_task_lifetime: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ready: Duration::from_secs(600),
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(10),
            stop: Duration::from_secs(60),
            watch: Duration::from_secs(30),
            consistency_window: Duration::from_secs(60),
            max_task_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Added to a job's timeout, besides [`Timeouts::ready`] and [`Timeouts::stop`], to make
/// its task's lifetime: `after_script` (which GitLab does not count in the job's timeout,
/// 5 minutes by default) and the cleanup stage's own work.
pub const LIFETIME_SLACK: Duration = Duration::from_secs(600);

impl Timeouts {
    /// How long the task of a job with `job_timeout` (GitLab's, from `JOB_RESPONSE_FILE`)
    /// may live from its launch: the job's timeout plus [`Timeouts::ready`],
    /// [`Timeouts::stop`] and [`LIFETIME_SLACK`], at most [`Timeouts::max_task_lifetime`];
    /// that maximum when the job has no timeout.
    pub fn task_lifetime(&self, job_timeout: Option<Duration>) -> Duration {
        match job_timeout {
            Some(t) => t
                .saturating_add(self.ready)
                .saturating_add(self.stop)
                .saturating_add(LIFETIME_SLACK)
                .min(self.max_task_lifetime),
            None => self.max_task_lifetime,
        }
    }
}

/// How the driver logs in to the task (the transport's own settings belong to the
/// [`RemoteShell`](crate::RemoteShell)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SshLogin {
    /// Login user. Default `root`.
    pub username: String,
    /// SSH port of the task. Default 22.
    pub port: u16,
    /// Type of the per-job key. Default Ed25519.
    pub key_type: KeyType,
    /// Interval of SSH readiness probes once the task's address is known. Default 250 ms.
    pub probe_interval: Duration,
    /// Where the host key that prepare pins comes from. Default
    /// [`HostKeySource::FirstUse`].
    pub host_key_source: HostKeySource,
}

/// Where the driver learns which host key a task's SSH server must present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HostKeySource {
    /// The key the server presents when it first answers is pinned (trust on first use).
    /// Enough on a private network; on a path others can answer on (a public IP), the
    /// first answer may not be the task's.
    #[default]
    FirstUse,
    /// The task announces its host keys out of band, through the backend
    /// ([`TaskLauncher::announced_host_keys`](crate::TaskLauncher::announced_host_keys):
    /// for ECS its log stream); the SSH server must present one of them, else prepare
    /// fails before anything is sent to it.
    Announced,
}

impl Default for SshLogin {
    fn default() -> Self {
        SshLogin {
            username: "root".into(),
            port: 22,
            key_type: KeyType::Ed25519,
            probe_interval: Duration::from_millis(250),
            host_key_source: HostKeySource::FirstUse,
        }
    }
}

/// Everything [`Driver`](crate::Driver) reads: task policy, timeouts, SSH login, retries,
/// and what the config stage tells the runner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DriverOptions {
    /// Separates this driver's jobs, records and tasks from other drivers' sharing the
    /// backends; `None` derives one from the host name ([`Namespace::default_for`]).
    /// Embedders should set it.
    pub namespace: Option<Namespace>,
    /// Which task each job gets.
    pub task: TaskPolicy,
    /// What jobs may ask for in their task's shape, and what each project gets.
    pub shape: ShapePolicy,
    /// Waiting and polling.
    pub timeouts: Timeouts,
    /// Logging in to the task.
    pub ssh: SshLogin,
    /// Retries of temporary launcher failures (the driver is their one owner).
    pub retry: RetryPolicy,
    /// `builds_dir` reported to the runner by the config stage (a path inside the task).
    pub builds_dir: Option<String>,
    /// `cache_dir` reported to the runner by the config stage (a path inside the task).
    pub cache_dir: Option<String>,
    /// Which job `image:` and `services:` run ([`crate::images`]); disabled by default.
    pub images: ImagePolicy,
    /// The warm pool of idle tasks ([`crate::driver::pool`]); off by default.
    pub pool: WarmPoolOptions,
}

impl DriverOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> DriverOptionsBuilder {
        DriverOptionsBuilder::default()
    }

    /// Every problem of these options; keys are field paths (`task.task_definition`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.task.task_definition.trim().is_empty() {
            p.push(
                ConfigProblem::new(
                    "task.task_definition",
                    "is required (family, family:revision or ARN)",
                )
                .with_hint("the task definition every job runs in unless it may choose another"),
            );
        }
        if self.task.container_name.trim().is_empty() {
            p.push(ConfigProblem::new(
                "task.container_name",
                "must not be empty",
            ));
        }
        if self.ssh.username.trim().is_empty() {
            p.push(ConfigProblem::new("ssh.username", "must not be empty"));
        }
        if self.ssh.port == 0 {
            p.push(ConfigProblem::new("ssh.port", "must be from 1 to 65535"));
        }
        let t = &self.timeouts;
        for (key, d) in [
            ("timeouts.ready", t.ready),
            ("timeouts.poll_initial", t.poll_initial),
            ("timeouts.poll_max", t.poll_max),
            ("timeouts.stop", t.stop),
            ("timeouts.max_task_lifetime", t.max_task_lifetime),
            ("ssh.probe_interval", self.ssh.probe_interval),
        ] {
            if d.is_zero() {
                p.push(ConfigProblem::new(key, "must be positive"));
            }
        }
        p.extend(self.retry.problems());
        p.extend(self.shape.problems());
        p.extend(self.images.problems(self.ssh.port));
        p.extend(self.pool.problems(self.shape.sizes.as_ref()));
        p
    }

    /// Checks the options: every problem, or none.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(self.problems())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_task_definition() {
        let err = DriverOptions::default().validate().unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].key, "task.task_definition");
        let ok = DriverOptions::builder()
            .task_definition("td:1")
            .build()
            .unwrap();
        assert_eq!(ok.task.container_name, "ci-coordinator");
        assert_eq!(ok.timeouts, Timeouts::default());
        assert_eq!(ok.ssh, SshLogin::default());
        assert_eq!(ok.retry, RetryPolicy::default());
    }

    #[test]
    fn task_lifetime_is_the_job_timeout_plus_margins_within_the_cap() {
        let mut t = Timeouts::default();
        let min = |m: u64| Duration::from_secs(m * 60);
        // 1 h job + 10 min ready + 1 min stop + 10 min slack.
        assert_eq!(t.task_lifetime(Some(min(60))), min(81));
        assert_eq!(t.task_lifetime(None), min(24 * 60));
        assert_eq!(t.task_lifetime(Some(min(48 * 60))), min(24 * 60));
        assert_eq!(t.task_lifetime(Some(Duration::MAX)), min(24 * 60));
        t.max_task_lifetime = min(30);
        assert_eq!(t.task_lifetime(Some(min(60))), min(30));
        assert_eq!(t.task_lifetime(None), min(30));
    }

    #[test]
    fn every_problem_is_listed() {
        let mut o = DriverOptions::default();
        o.ssh.username = " ".into();
        o.timeouts.stop = Duration::ZERO;
        o.retry.max_attempts = 0;
        let keys: Vec<String> = o.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "task.task_definition",
                "ssh.username",
                "timeouts.stop",
                "retry.max_attempts"
            ]
        );
    }

    #[test]
    fn round_trips_through_serde_with_defaults_for_missing_fields() {
        let o = DriverOptions::builder()
            .task_definition("td")
            .namespace(Namespace::parse("ci").unwrap())
            .build()
            .unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<DriverOptions>(&json).unwrap(), o);
        let partial: DriverOptions =
            serde_json::from_str(r#"{"task": {"task_definition": "td"}}"#).unwrap();
        assert_eq!(partial.task.container_name, "ci-coordinator");
        assert!(partial.validate().is_ok());
    }
}
