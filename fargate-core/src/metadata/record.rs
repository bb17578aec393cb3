//! [`JobRecord`]: what one job keeps between its stage processes.

use serde::{Deserialize, Serialize};

use crate::job::{JobIdentity, JobKey};
use crate::launcher::{Endpoint, TaskRef, TaskSpec};
use crate::shell::{HostKey, PrivateKey};
use crate::world::unix_now;

/// Version of the record format written by this crate.
pub const RECORD_FORMAT: u32 = 2;

/// How far the job's prepare got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// A launch attempt is recorded and may be in flight; the task may or may not exist.
    LaunchRequested,
    /// The launcher accepted the task; its reference is recorded.
    Launched,
    /// The task is reachable; endpoint and host key are recorded.
    Ready,
    /// Cleanup (or a failed prepare) is stopping the job's tasks; the record stays until
    /// they are known to be stopping.
    Stopping,
    /// The job failed and its project keeps failed jobs' tasks for debugging: its cleanup
    /// left the task running until [`JobRecord::kept_until`]; `gc` (or `release`) stops
    /// it then (or earlier), and the task ends itself then too.
    Kept,
}

/// What became of one launch attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Sent (or about to be), answer not recorded: the task may exist.
    Pending,
    /// The backend refused it: no task.
    Refused,
    /// The backend accepted it.
    Accepted {
        /// The task it started.
        task: TaskRef,
    },
}

/// One launch attempt: a client token, recorded before the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LaunchAttempt {
    /// The idempotency token sent with it.
    pub client_token: String,
    /// Seconds since the epoch when it was recorded.
    pub started_at: u64,
    /// What became of it.
    pub outcome: AttemptOutcome,
}

impl LaunchAttempt {
    /// A pending attempt with `client_token`, started now.
    pub fn pending(client_token: impl Into<String>) -> Self {
        LaunchAttempt {
            client_token: client_token.into(),
            started_at: unix_now(),
            outcome: AttemptOutcome::Pending,
        }
    }
}

/// An SSH server of the task other than the main one, with its pinned host key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerLogin {
    /// Where it answers.
    pub endpoint: Endpoint,
    /// The host key pinned at prepare.
    pub host_key: HostKey,
}

impl ContainerLogin {
    /// The server at `endpoint` with `host_key`.
    pub fn new(endpoint: Endpoint, host_key: HostKey) -> Self {
        ContainerLogin { endpoint, host_key }
    }
}

/// What the record of a warm pool slot ([`JobIdentity::pool_slot`]) holds besides its task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolSlot {
    /// Seconds since the epoch after which the task, still unclaimed, is stopped (the
    /// pool's maximum idle time).
    pub idle_until: u64,
    /// The job that claimed the task. Set under the slot's lock before that job's record
    /// names the task; the slot's record is deleted once it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<JobKey>,
    /// The fingerprint of everything that shaped the slot's task (its definition,
    /// platform, size, container and the launcher's settings) when it was launched; a slot
    /// whose fingerprint is not the pool's current one is never claimed, and is swept.
    /// Empty in slots of earlier versions (swept as changed).
    #[serde(default)]
    pub template: String,
    /// How many tasks the slot's launch started in one call, when more than one (a
    /// *batch*, see the warm pool's docs): the slot names the first; the others carry its
    /// key in their labels too but belong to the slots that name them, so stopping this
    /// slot stops only tasks no other record names. `None`: one task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl PoolSlot {
    /// An unclaimed slot whose task may idle until `idle_until` (seconds since the epoch).
    pub fn new(idle_until: u64) -> Self {
        PoolSlot {
            idle_until,
            claimed_by: None,
            template: String::new(),
            batch: None,
        }
    }

    /// The same slot, its launch starting `count` tasks in one call (`batch`).
    pub fn with_batch(mut self, count: u32) -> Self {
        self.batch = (count > 1).then_some(count);
        self
    }

    /// The same slot, launched under the template with `fingerprint`.
    pub fn with_template(mut self, fingerprint: impl Into<String>) -> Self {
        self.template = fingerprint.into();
        self
    }
}

/// The state of one job, as stored between stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobRecord {
    /// Record format version ([`RECORD_FORMAT`]).
    pub format: u32,
    /// The job's key (the record's name).
    pub key: JobKey,
    /// The job's identity; `None` for records of the Go driver and of format 1, which are
    /// only ever found under a name derived from the trusted job id.
    #[serde(default)]
    pub identity: Option<JobIdentity>,
    /// How far prepare got.
    pub phase: Phase,
    /// What prepare launches (each attempt with its own token), so that a later stage can
    /// replay a launch whose answer was lost.
    #[serde(default)]
    pub spec: Option<TaskSpec>,
    /// Every launch attempt, in order.
    #[serde(default)]
    pub attempts: Vec<LaunchAttempt>,
    /// The job's task, once launched.
    #[serde(default)]
    pub task: Option<TaskRef>,
    /// Where the task's SSH server is, once ready. Port 0 means "the configured port"
    /// (records of the Go driver).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// The host key pinned when the task became ready; `None` only for Go driver records.
    #[serde(default)]
    pub host_key: Option<HostKey>,
    /// Where the job container's SSH server is and its pinned host key, when the job runs in
    /// its own image ([`crate::images`]); `None`: every stage runs at `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_container: Option<ContainerLogin>,
    /// Set on the record of a warm pool slot ([`JobIdentity::pool_slot`]); `None` for jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSlot>,
    /// The job's first user step (`build_script`, `step_*`) whose script failed, when the
    /// job's task may be kept for debugging ([`Phase::Kept`]); set by that run stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// In [`Phase::Kept`]: seconds since the epoch until which the task is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_until: Option<u64>,
    /// The job's client private key.
    pub private_key: PrivateKey,
    /// Seconds since the epoch when the record was created.
    #[serde(default)]
    pub created_at: u64,
    /// Seconds since the epoch of the last update.
    #[serde(default)]
    pub updated_at: u64,
}

impl JobRecord {
    /// A new record of `identity` in [`Phase::LaunchRequested`], with no attempt yet.
    pub fn new(identity: JobIdentity, private_key: PrivateKey) -> Self {
        let now = unix_now();
        JobRecord {
            format: RECORD_FORMAT,
            key: identity.key(),
            identity: Some(identity),
            phase: Phase::LaunchRequested,
            spec: None,
            attempts: Vec::new(),
            task: None,
            endpoint: None,
            host_key: None,
            job_container: None,
            pool: None,
            failed_step: None,
            kept_until: None,
            private_key,
            created_at: now,
            updated_at: now,
        }
    }

    /// Every task an attempt started, and the recorded task.
    pub fn known_tasks(&self) -> Vec<TaskRef> {
        let mut tasks: Vec<TaskRef> = self
            .attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                AttemptOutcome::Accepted { task } => Some(task.clone()),
                _ => None,
            })
            .collect();
        if let Some(task) = &self.task
            && !tasks.contains(task)
        {
            tasks.push(task.clone());
        }
        tasks
    }

    /// Attempts whose answer is not recorded.
    pub fn pending_attempts(&self) -> impl Iterator<Item = &LaunchAttempt> {
        self.attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Pending)
    }

    /// When the first launch attempt was recorded, if any.
    pub fn first_launch_at(&self) -> Option<u64> {
        self.attempts.iter().map(|a| a.started_at).min()
    }

    /// Sets the outcome of the attempt with `client_token`.
    pub fn settle(&mut self, client_token: &str, outcome: AttemptOutcome) {
        if let Some(a) = self
            .attempts
            .iter_mut()
            .find(|a| a.client_token == client_token)
        {
            a.outcome = outcome;
        }
    }

    /// Marks the record as updated now.
    pub fn touch(&mut self) {
        self.updated_at = unix_now();
    }
}
