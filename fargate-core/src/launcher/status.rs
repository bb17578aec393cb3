//! What a launcher reports of a task: its [`TaskState`], its [`TaskStatus`] (address, stop
//! details, containers), and how a stop went ([`StopOutcome`], [`StopDetails`]).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::task_details::TaskDetails;

/// The task's lifecycle, simplified from the backend's statuses (for ECS its `lastStatus`).
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
    /// Unknown to the backend: not visible yet (the ECS API is eventually consistent: a task
    /// can be unknown for a while after its launch was accepted), never launched, or
    /// forgotten long after it stopped. Callers tell these apart by the time since launch.
    Missing,
}

impl TaskState {
    /// Whether the task is stopping or stopped. [`TaskState::Missing`] is not terminal: it
    /// may mean "not visible yet".
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Stopping | TaskState::Stopped)
    }
}

/// What [`TaskLauncher::stop`](super::TaskLauncher::stop) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopOutcome {
    /// The backend knows the task: it is now stopping, or was already stopped.
    Stopping,
    /// The backend does not know the task. Right after its launch this may only mean "not
    /// visible yet": the caller must try again until its consistency window has passed.
    NotFound,
}

/// Why a task stopped, as the backend reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StopDetails {
    /// The backend's stop code (ECS `stopCode`, e.g. `TaskFailedToStart`).
    pub code: Option<String>,
    /// The backend's reason (ECS `stoppedReason`).
    pub reason: Option<String>,
    /// Per-container reasons and exit codes.
    pub containers: Vec<ContainerStop>,
    /// Whether the backend took the task's capacity back (a Spot-like interruption, e.g. of Fargate Spot):
    /// not the job's fault, and the driver remembers it so that the job's retry runs on
    /// capacity that is not reclaimed ([`TaskShape::capacity`]'s fallback).
    ///
    /// [`TaskShape::capacity`]: crate::shape::TaskShape::capacity
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reclaimed: bool,
    /// Whether the task could not start because an image could not be pulled (ECS:
    /// `CannotPullContainerError`), and the containers whose pull failed (empty: the
    /// backend did not say which). The driver then names the image's registry and what
    /// configuration it may lack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_failed: Option<Vec<String>>,
}

impl StopDetails {
    /// Details with the backend's stop `code`, `reason` and per-container `containers`.
    pub fn new(
        code: Option<String>,
        reason: Option<String>,
        containers: Vec<ContainerStop>,
    ) -> Self {
        StopDetails {
            code,
            reason,
            containers,
            reclaimed: false,
            pull_failed: None,
        }
    }

    /// The same details, marked as a failed image pull of `containers` (see
    /// [`StopDetails::pull_failed`]).
    pub fn with_pull_failed(mut self, containers: Option<Vec<String>>) -> Self {
        self.pull_failed = containers;
        self
    }

    /// The same details, marked as a reclaim of the task's capacity (see
    /// [`StopDetails::reclaimed`]).
    pub fn with_reclaimed(mut self, reclaimed: bool) -> Self {
        self.reclaimed = reclaimed;
        self
    }
}

/// How one container of a stopped task ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerStop {
    /// The container's name in the task definition.
    pub name: String,
    /// The backend's reason (e.g. `OutOfMemoryError`), if any.
    pub reason: Option<String>,
    /// The container's exit code, if it exited.
    pub exit_code: Option<i32>,
}

impl ContainerStop {
    /// Container `name` ended with `exit_code` for `reason`.
    pub fn new(name: impl Into<String>, reason: Option<String>, exit_code: Option<i32>) -> Self {
        ContainerStop {
            name: name.into(),
            reason,
            exit_code,
        }
    }
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
        for ContainerStop {
            name,
            reason,
            exit_code: exit,
        } in &self.containers
        {
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
#[non_exhaustive]
pub struct TaskStatus {
    /// Where in its lifecycle the task is.
    pub state: TaskState,
    /// The address the driver should connect to, once known (private or public, as the
    /// backend is configured). It is often known before the task is running.
    pub address: Option<IpAddr>,
    /// Why it stopped, when it is stopping or stopped.
    pub stop: Option<StopDetails>,
    /// Its timeline and shape, as far as the backend reports them.
    pub details: TaskDetails,
    /// Its containers, when the backend reports them (empty otherwise).
    pub containers: Vec<ContainerStatus>,
}

/// One container of a task, as the backend reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerStatus {
    /// The container's name in the task definition.
    pub name: String,
    /// The backend's status (ECS `lastStatus`: `PENDING`, `RUNNING`, `STOPPED`).
    pub status: Option<String>,
    /// The backend's reason (e.g. `CannotPullContainerError: ...`), if any.
    pub reason: Option<String>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
}

impl ContainerStatus {
    /// Container `name` in `status`, with no reason and no exit code.
    pub fn new(name: impl Into<String>, status: Option<String>) -> Self {
        ContainerStatus {
            name: name.into(),
            status,
            ..ContainerStatus::default()
        }
    }

    /// Sets the reason and exit code.
    pub fn with_exit(mut self, reason: Option<String>, exit_code: Option<i32>) -> Self {
        self.reason = reason;
        self.exit_code = exit_code;
        self
    }
}

impl TaskStatus {
    /// A task in `state`, with no address and no stop details yet.
    pub fn new(state: TaskState) -> Self {
        TaskStatus {
            state,
            address: None,
            stop: None,
            details: TaskDetails::default(),
            containers: Vec::new(),
        }
    }

    /// A task the backend does not know ([`TaskState::Missing`]).
    pub fn missing() -> Self {
        TaskStatus::new(TaskState::Missing)
    }

    /// Sets the address to connect to.
    pub fn with_address(mut self, address: Option<IpAddr>) -> Self {
        self.address = address;
        self
    }

    /// Sets why the task stopped.
    pub fn with_stop(mut self, stop: Option<StopDetails>) -> Self {
        self.stop = stop;
        self
    }

    /// Sets the task's timeline and shape.
    pub fn with_details(mut self, details: TaskDetails) -> Self {
        self.details = details;
        self
    }

    /// Sets the containers.
    pub fn with_containers(mut self, containers: Vec<ContainerStatus>) -> Self {
        self.containers = containers;
        self
    }
}
