//! [`TaskLauncher`]: starts, watches, stops and finds the task that runs a job.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job::{JobIdentity, JobKey};

/// What to start for one job. Backend-wide settings (cluster, subnets, capacity) belong to
/// the backend's own configuration; this holds what differs from job to job.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The job the task runs. Backends tag the task with it so [`TaskLauncher::find`] works.
    pub job: JobIdentity,
    /// The job's key (tags, `startedBy`).
    pub key: JobKey,
    /// Idempotency token: launching twice with the same token starts at most one task.
    pub client_token: String,
    /// Task definition (`family`, `family:revision` or ARN).
    pub task_definition: String,
    /// Platform version, or the backend's default.
    pub platform_version: Option<String>,
    /// Container that gets `environment` (default `ci-coordinator`).
    pub container_name: String,
    /// Environment for that container, e.g. `SSH_PUBLIC_KEY`. Values are not secret (ECS
    /// shows them to anyone who may describe the task).
    pub environment: BTreeMap<String, String>,
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("key", &self.key)
            .field("task_definition", &self.task_definition)
            .field("platform_version", &self.platform_version)
            .field("container_name", &self.container_name)
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A reference to a launched task (for ECS: the task ARN; `cluster` is the cluster it runs in).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task's id (for ECS its ARN).
    pub id: String,
    /// The cluster or group the task runs in, if the backend has such a notion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl TaskRef {
    /// A reference to task `id`.
    pub fn new(id: impl Into<String>) -> Self {
        TaskRef {
            id: id.into(),
            cluster: None,
        }
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Where the task can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address to connect to.
    pub ip: IpAddr,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// The task's lifecycle, simplified from ECS's statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskState {
    /// Accepted, resources being provisioned.
    Provisioning,
    /// Image being pulled, containers starting.
    Pending,
    /// Containers running.
    Running,
    /// Being stopped (or desired to stop).
    Stopping,
    /// Stopped.
    Stopped,
    /// Unknown to the backend (never existed, or forgotten after stopping).
    Missing,
}

impl TaskState {
    /// Whether the task is stopped, stopping, or gone.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Stopping | TaskState::Stopped | TaskState::Missing
        )
    }
}

/// Why a task stopped, as the backend reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopDetails {
    /// The backend's stop code (ECS `stopCode`, e.g. `TaskFailedToStart`).
    pub code: Option<String>,
    /// The backend's reason (ECS `stoppedReason`).
    pub reason: Option<String>,
    /// Per-container reasons and exit codes: `(name, reason, exit code)`.
    pub containers: Vec<(String, Option<String>, Option<i32>)>,
}

impl fmt::Display for StopDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            parts.push(reason.to_owned());
        }
        if let Some(code) = self.code.as_deref().filter(|c| !c.is_empty()) {
            parts.push(format!("stop code {code}"));
        }
        for (name, reason, exit) in &self.containers {
            let mut s = format!("container {name}");
            if let Some(code) = exit {
                s.push_str(&format!(" exited with {code}"));
            }
            if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                s.push_str(&format!(": {reason}"));
            }
            if exit.is_some() || reason.as_deref().is_some_and(|r| !r.is_empty()) {
                parts.push(s);
            }
        }
        if parts.is_empty() {
            f.write_str("no reason given")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// What the backend knows of a task right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// Where in its lifecycle the task is.
    pub state: TaskState,
    /// The address the driver should connect to, once known (private or public, as the
    /// backend is configured). It is often known before the task is running.
    pub address: Option<IpAddr>,
    /// Why it stopped, when it is stopping or stopped.
    pub stop: Option<StopDetails>,
}

/// Starts, watches, stops and finds tasks.
///
/// Implementations must be cheap to call concurrently and must not retry internally in
/// unbounded ways: retry policy is a wrapper ([`crate::retry::RetryLauncher`]).
///
/// # Behaviour every implementation guarantees (checked by
/// `fargate_core::testing::conformance::launcher`)
/// - `launch` returns as soon as the backend accepted the task; two calls with the same
///   `client_token` start at most one task and return the same [`TaskRef`].
/// - `describe` of a task that does not exist (or no longer exists) returns
///   [`TaskState::Missing`], not an error.
/// - `stop` of a stopped, stopping or missing task succeeds.
/// - `find` returns every task launched for the job that is not yet stopped, including tasks
///   whose `launch` call failed after the backend accepted it.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait TaskLauncher: Send + Sync + fmt::Debug {
    /// Starts one task for `spec`.
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef>;

    /// What the backend knows of `task` now.
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus>;

    /// Asks the backend to stop `task`, with a human-readable `reason`.
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<()>;

    /// Tasks of job `key` that are not stopped.
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>>;
}

/// A shared, dynamically chosen launcher.
pub type DynTaskLauncher = Arc<dyn TaskLauncher>;

#[async_trait]
impl<T: TaskLauncher + ?Sized> TaskLauncher for Arc<T> {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        (**self).launch(spec).await
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        (**self).describe(task).await
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<()> {
        (**self).stop(task, reason).await
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        (**self).find(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_details_read_well() {
        let d = StopDetails {
            code: Some("TaskFailedToStart".into()),
            reason: Some("CannotPullContainerError: pull access denied".into()),
            containers: vec![
                ("ci-coordinator".into(), Some("OOM".into()), Some(137)),
                ("idle".into(), None, None),
            ],
        };
        assert_eq!(
            d.to_string(),
            "CannotPullContainerError: pull access denied; stop code TaskFailedToStart; \
             container ci-coordinator exited with 137: OOM"
        );
        assert_eq!(StopDetails::default().to_string(), "no reason given");
    }

    #[test]
    fn spec_debug_hides_environment_values() {
        let spec = TaskSpec {
            job: JobIdentity {
                runner_short_token: "t".into(),
                project_url: "u".into(),
                pipeline_id: 1,
                job_id: 2,
            },
            key: JobKey::parse("t-1").unwrap(),
            client_token: "tok".into(),
            task_definition: "td".into(),
            platform_version: None,
            container_name: "ci-coordinator".into(),
            environment: [("SSH_PUBLIC_KEY".to_owned(), "ssh-ed25519 AAAA".to_owned())].into(),
        };
        let s = format!("{spec:?}");
        assert!(s.contains("SSH_PUBLIC_KEY") && !s.contains("AAAA"), "{s}");
    }
}
