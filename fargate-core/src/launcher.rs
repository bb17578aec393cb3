//! [`TaskLauncher`]: starts, watches, stops and finds the task that runs a job.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::images::ImageRequest;
use crate::job::{JobIdentity, JobKey, Namespace};
use crate::shape::TaskShape;
use crate::shell::HostKey;

mod status;

pub use crate::endpoint::Endpoint;

pub use status::{ContainerStatus, ContainerStop, StopDetails, StopOutcome, TaskState, TaskStatus};

/// What to start for one job. Backend-wide settings (cluster, subnets, capacity) belong to
/// the backend's own configuration; this holds what differs from job to job.
///
/// It is stored in the job record before the launch (the public key in `environment` is not
/// secret), so that a later stage can replay the exact launch with the same token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskSpec {
    /// The job the task runs. Backends tag the task with it so [`TaskLauncher::find`] works.
    pub job: JobIdentity,
    /// The job's key (tags, `startedBy`).
    pub key: JobKey,
    /// Idempotency token of this launch attempt: launching twice with the same token and
    /// the same spec starts at most one task (see [`TaskLauncher::launch`]).
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
    /// When the task must be gone: the driver sets it at prepare from the job's timeout
    /// ([`Timeouts::task_lifetime`](crate::options::Timeouts::task_lifetime)), in whole
    /// seconds. Backends tag the task with it, and the driver passes it to the container
    /// (`FARGATE_TASK_DEADLINE`), so that a reaper and the task itself can end it when no
    /// stage ever does. `None`: no deadline (records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<SystemTime>,
    /// The job's size, capacity, role and extra network, as the driver granted them
    /// ([`TaskShape`]); empty: as the task definition and the backend's configuration say.
    #[serde(default, skip_serializing_if = "TaskShape::is_empty")]
    pub shape: TaskShape,
    /// The job's own image and services ([`crate::images`]): the launcher runs the task
    /// from the base definition derived by this request's plan (registered, or reused by
    /// its hash) instead of [`task_definition`](Self::task_definition) itself, gives
    /// `environment` to the job container too, and the request's secrets to their
    /// containers as overrides. `None`: the task definition as it is. A launcher that
    /// cannot derive definitions should refuse a spec with it ([`ErrorKind::Unsupported`])
    /// rather than run the base definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Box<ImageRequest>>,
}

impl TaskSpec {
    /// A spec for `job` with `task_definition`, the default container `ci-coordinator`, no
    /// platform version, no environment and no client token yet.
    pub fn new(job: JobIdentity, task_definition: impl Into<String>) -> Self {
        TaskSpec {
            key: job.key(),
            job,
            client_token: String::new(),
            task_definition: task_definition.into(),
            platform_version: None,
            container_name: "ci-coordinator".into(),
            environment: BTreeMap::new(),
            deadline: None,
            shape: TaskShape::default(),
            images: None,
        }
    }

    /// The same spec with `shape` (see [`TaskSpec::shape`]).
    pub fn with_shape(mut self, shape: TaskShape) -> Self {
        self.shape = shape;
        self
    }

    /// The same spec with `deadline` (see [`TaskSpec::deadline`]).
    pub fn with_deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The same spec with another client token.
    pub fn with_client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = token.into();
        self
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("key", &self.key)
            .field("task_definition", &self.task_definition)
            .field("platform_version", &self.platform_version)
            .field("container_name", &self.container_name)
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("deadline", &self.deadline)
            .field("shape", &self.shape)
            .field("images", &self.images)
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

/// What [`TaskLauncher::launch_observed`] returns: the task, and what the backend's answer
/// to the launch already said of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Launched {
    /// The task.
    pub task: TaskRef,
    /// The task's status as the launch answer showed it, when it showed one (ECS's RunTask
    /// answer describes the task; its address may already be there). `None`: ask
    /// [`TaskLauncher::describe`].
    pub status: Option<TaskStatus>,
}

impl Launched {
    /// `task`, with nothing known of its status.
    pub fn new(task: TaskRef) -> Self {
        Launched { task, status: None }
    }

    /// Sets the status the launch answer showed.
    pub fn with_status(mut self, status: Option<TaskStatus>) -> Self {
        self.status = status;
        self
    }

    /// The address the launch answer carried, if any.
    pub fn address(&self) -> Option<IpAddr> {
        self.status.as_ref().and_then(|s| s.address)
    }
}

/// What [`TaskLauncher::launch_batch`] returns: the tasks the call started, and why the
/// others of its `count` did not start (a backend may place only some of a call's tasks).
#[derive(Debug)]
#[non_exhaustive]
pub struct LaunchedBatch {
    /// The tasks started (at least one), in the backend's order.
    pub tasks: Vec<Launched>,
    /// One error per task of the call that did not start.
    pub failures: Vec<Error>,
}

impl LaunchedBatch {
    /// `tasks` started, none failed.
    pub fn new(tasks: Vec<Launched>) -> Self {
        LaunchedBatch {
            tasks,
            failures: Vec::new(),
        }
    }

    /// Sets the errors of the tasks that did not start.
    pub fn with_failures(mut self, failures: Vec<Error>) -> Self {
        self.failures = failures;
        self
    }
}

/// One task of a namespace, as [`TaskLauncher::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedTask {
    /// The task.
    pub task: TaskRef,
    /// The job it runs, from its job-key tag; `None` when the tag is missing or invalid.
    pub key: Option<JobKey>,
    /// The task's deadline (for ECS its `fargate:deadline` tag), if it has one.
    pub deadline: Option<SystemTime>,
    /// The last sign of life the driver left on the task itself
    /// ([`TaskLauncher::mark_alive`]; for ECS its `fargate:alive` tag), if any.
    pub alive_at: Option<SystemTime>,
    /// When the backend created the task, if it says.
    pub started_at: Option<SystemTime>,
    /// Where in its lifecycle the task is.
    pub state: TaskState,
}

impl ListedTask {
    /// A listed `task` of job `key` in `state`, with no deadline and no start time.
    pub fn new(task: TaskRef, key: Option<JobKey>, state: TaskState) -> Self {
        ListedTask {
            task,
            key,
            deadline: None,
            alive_at: None,
            started_at: None,
            state,
        }
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<SystemTime>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the last sign of life marked on the task ([`ListedTask::alive_at`]).
    pub fn with_alive_at(mut self, alive_at: Option<SystemTime>) -> Self {
        self.alive_at = alive_at;
        self
    }

    /// Sets when the task was created.
    pub fn with_started_at(mut self, started_at: Option<SystemTime>) -> Self {
        self.started_at = started_at;
        self
    }
}

/// How a person enters a running task and stops it, outside the driver: commands of the
/// backend's own tools, for a job log ([`TaskLauncher::debug_commands`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DebugCommands {
    /// Opens an interactive shell in the task's container (for ECS: `aws ecs
    /// execute-command ... --interactive --command /bin/sh`).
    pub enter: String,
    /// Stops the task (for ECS: `aws ecs stop-task ...`).
    pub stop: String,
}

impl DebugCommands {
    /// The commands `enter` and `stop`.
    pub fn new(enter: impl Into<String>, stop: impl Into<String>) -> Self {
        DebugCommands {
            enter: enter.into(),
            stop: stop.into(),
        }
    }
}

/// Starts, watches, stops and finds tasks.
///
/// Implementations must be cheap to call concurrently and must not retry internally in
/// unbounded ways: [`Driver`](crate::Driver) owns the retry policy, and retries only what an
/// error marks as temporary.
///
/// # Behaviour every implementation guarantees (checked by
/// `fargate_core::testing::conformance::launcher`)
/// - `launch` returns as soon as the backend accepted the task; two calls with the same
///   `client_token` and the same spec start at most one task and return the same
///   [`TaskRef`] (a replay). An error says whether the backend definitely did not act on
///   the call ([`Error::outcome_unknown`](crate::Error::outcome_unknown) is `false`: it
///   refused it) or may have (`true`: no answer, a lost connection, a server error).
/// - `describe` of a task the backend does not know returns [`TaskState::Missing`], not an
///   error. Backends may be eventually consistent: a task just launched may be `Missing`
///   for a while.
/// - `stop` always asks the backend to stop the task (it is never skipped because of an
///   earlier answer) and reports [`StopOutcome::NotFound`] for a task the backend does not
///   know; stopping a stopped or stopping task is [`StopOutcome::Stopping`].
/// - `find` returns the job's tasks that are not yet stopped and that the backend lists,
///   including tasks whose `launch` call failed after the backend accepted it. An
///   eventually consistent backend may leave out a task launched moments ago.
/// - `mark_alive`, where the backend supports it, is what `list` then reports as the
///   task's `alive_at` (the latest mark, to the second), changing nothing else listed.
///
/// # Cancel safety
/// See each method. None takes a cancellation token: callers bound them with a timeout
/// and drop the future.
// A mockall mock for the driver's interaction tests, never public API.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TaskLauncher: Send + Sync + fmt::Debug {
    /// Starts one task for `spec`.
    ///
    /// # Cancel safety
    /// **Not** cancel safe: dropping the future may leave a task running whose reference
    /// the caller never saw. A caller that may drop it records `spec.client_token` first
    /// and resolves it later, by calling `launch` again with the same token and spec (a
    /// replay returns the same task) or by `find` (as [`Driver`](crate::Driver) does).
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef>;

    /// [`launch`](TaskLauncher::launch), also returning what the backend's answer said of
    /// the task (its address, when the answer carries one), so that the caller can connect
    /// without waiting for a first [`describe`](TaskLauncher::describe). The default
    /// returns no status; a backend whose answer describes the task overrides it (and then
    /// implements `launch` on top of it). Same guarantees and cancel safety as `launch`.
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        self.launch(spec).await.map(Launched::new)
    }

    /// The most tasks one [`launch_batch`](TaskLauncher::launch_batch) call may start (for
    /// ECS 10, `RunTask`'s largest `count`). The default, 1: the backend starts one task a
    /// call.
    fn max_launch_batch(&self) -> u32 {
        1
    }

    /// Starts `count` tasks of `spec` (1 to [`max_launch_batch`](TaskLauncher::max_launch_batch))
    /// in **one** backend call: every task gets the same labels (those of `spec.key`), the
    /// same environment and the same settings. Fails only when no task started; a call that
    /// started some reports the others in [`LaunchedBatch::failures`]. Same guarantees as
    /// [`launch`](TaskLauncher::launch): a replay with the same `client_token`, spec and
    /// `count` starts nothing more and returns the same tasks; [`find`](TaskLauncher::find)
    /// of `spec.key` returns all of them. The default launches one task
    /// ([`launch_observed`](TaskLauncher::launch_observed)) and refuses a larger `count`
    /// ([`ErrorKind::Unsupported`]).
    ///
    /// # Cancel safety
    /// **Not** cancel safe, as `launch`: a caller records `spec.client_token` and `count`
    /// first.
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        if count == 1 {
            return self
                .launch_observed(spec)
                .await
                .map(|l| LaunchedBatch::new(vec![l]));
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {self:?} launcher starts one task a call, not {count}"),
        ))
    }

    /// What the backend knows of `task` now.
    ///
    /// # Cancel safety
    /// Safe to drop: it changes nothing.
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus>;

    /// Asks the backend to stop `task`, with a human-readable `reason`.
    ///
    /// # Cancel safety
    /// Safe to drop: the stop may or may not have been asked for; asking again is
    /// harmless.
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome>;

    /// Tasks of job `key` that are not stopped.
    ///
    /// # Cancel safety
    /// Safe to drop: it changes nothing.
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>>;

    /// Every task of `namespace` that is not stopped (tagged with it at launch), for a
    /// garbage collector ([`crate::gc`]). Backends that cannot list return
    /// [`ErrorKind::Unsupported`], the default.
    ///
    /// # Cancel safety
    /// Safe to drop: it changes nothing.
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        let _ = namespace;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {self:?} launcher cannot list tasks"),
        ))
    }

    /// Hands `task`, launched for another key (a warm pool slot), to the job of `spec`:
    /// from now on the backend's labels of the task name `spec.key`, its job and
    /// `spec.deadline`, as a launch of `spec` would have labelled it, so that
    /// [`list`](TaskLauncher::list) reports the task under the job and with the job's
    /// deadline. Labels a backend can only set at launch may keep naming the old key; then
    /// [`find`](TaskLauncher::find) of `spec.key` may not return the task (the job's
    /// record names it). Backends that cannot relabel return [`ErrorKind::Unsupported`],
    /// the default; the driver then uses no warm task.
    ///
    /// The driver also calls it with the task's own job and a later deadline, to keep a
    /// failed job's task for debugging (the project rule's
    /// [`keep_failed_for`](crate::options::ProjectRule::keep_failed_for)); a launcher that
    /// cannot relabel then has the task stopped as usual.
    ///
    /// # Cancel safety
    /// Safe to drop: the labels are the old or the new ones; asking again is harmless.
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        let _ = (task, spec);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {self:?} launcher cannot hand a task to another job"),
        ))
    }

    /// Marks on `task` itself that its job was alive at `at`: a second channel for the
    /// job's signs of life, which the driver uses only when the store's
    /// [`heartbeat`](crate::MetadataStore::heartbeat) fails (its host cut off from a shared
    /// store but not from the backend). [`list`](TaskLauncher::list) reports the mark as
    /// [`ListedTask::alive_at`], and [`gc`](crate::gc) counts it as a sign of life of the
    /// task's job. The mark replaces an earlier one; it changes nothing else of the task
    /// (its job, its deadline). Only the driver sets it, from the job's record: nothing a
    /// pipeline author writes reaches it. Backends that cannot label a running task return
    /// [`ErrorKind::Unsupported`], the default.
    ///
    /// # Cancel safety
    /// Safe to drop: the mark is the old or the new one; marking again is harmless.
    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        let _ = (task, at);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {self:?} launcher cannot mark a task alive"),
        ))
    }

    /// The task definition a launch of `task_definition` runs now, as the backend names it
    /// exactly: a name that can mean different definitions over time (for ECS a family
    /// without revision, which means its latest active revision) resolved to the one it
    /// means now. The warm pool keys its tasks by it, so that a new definition is never
    /// served by a task of the old one. The default returns `task_definition` unchanged (a
    /// backend whose names always mean the same definition).
    ///
    /// # Cancel safety
    /// Safe to drop: it changes nothing.
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        Ok(task_definition.to_owned())
    }

    /// The host keys that `container` of `task` announced out of band, for
    /// [`HostKeySource::Announced`](crate::options::HostKeySource::Announced): for ECS the
    /// `fargate-host-key: <algorithm> <base64>` lines its entry point printed to its log
    /// stream, read through the logs API. Empty when none is there (yet: logs may arrive
    /// seconds after the container printed them); the driver asks again until its ready
    /// deadline. The channel must be one that nothing between the task and this host can
    /// write to. Backends without one return [`ErrorKind::Unsupported`], the default.
    ///
    /// # Cancel safety
    /// Safe to drop: it changes nothing.
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        let _ = (task, container);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("the {self:?} launcher learns no host keys out of band"),
        ))
    }

    /// Removes what a launch of `spec` made for its job besides the task itself, once the
    /// job's tasks are stopped (cleanup, prepare's rollback): for ECS, the job's secrets
    /// and its own task definition when the job's services had secret variables
    /// ([`ImageRequest::from_secrets`](crate::images::ImageRequest::from_secrets)) or its
    /// images pulled with the job's registry login
    /// ([`ImageRequest::pull_logins`](crate::images::ImageRequest::pull_logins)). What is
    /// already gone is not an error. The default does nothing (a backend that makes nothing
    /// per job).
    ///
    /// # Cancel safety
    /// Safe to drop and to call again: what is removed stays removed.
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        let _ = spec;
        Ok(())
    }

    /// What the backend's own settings (those not in a [`TaskSpec`]: where tasks run, their
    /// network, the labels every task gets) make of every task, as an opaque fingerprint:
    /// two tasks launched from equal specs under equal fingerprints are interchangeable.
    /// The warm pool keys its tasks by it, so that a changed setting is never served by a
    /// task started under the old one. The default, an empty string, says the backend has
    /// no such settings.
    fn settings_fingerprint(&self) -> String {
        String::new()
    }

    /// The commands a person runs to open a shell in `container` of `task` and to stop the
    /// task, with the backend's own tools, for a task launched with
    /// [`TaskShape::debug_access`](crate::TaskShape::debug_access). No backend call: the
    /// launcher's settings and `task` are enough. The default, `None`: the backend offers
    /// no such access (the driver then names only its own `release`).
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        let _ = (task, container);
        None
    }
}

/// A shared, dynamically chosen launcher.
pub type DynTaskLauncher = Arc<dyn TaskLauncher>;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: TaskLauncher + ?Sized> TaskLauncher for Arc<T> {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        (**self).launch(spec).await
    }
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        (**self).launch_observed(spec).await
    }
    fn max_launch_batch(&self) -> u32 {
        (**self).max_launch_batch()
    }
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        (**self).launch_batch(spec, count).await
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        (**self).describe(task).await
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        (**self).stop(task, reason).await
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        (**self).find(key).await
    }
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        (**self).list(namespace).await
    }
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        (**self).adopt(task, spec).await
    }
    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        (**self).mark_alive(task, at).await
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        (**self).resolve_task_definition(task_definition).await
    }
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        (**self).release(spec).await
    }
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        (**self).announced_host_keys(task, container).await
    }
    fn settings_fingerprint(&self) -> String {
        (**self).settings_fingerprint()
    }
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        (**self).debug_commands(task, container)
    }
}

#[cfg(test)]
mod tests;
