//! The warm pool: tasks started ahead of jobs, each claimed by exactly one job.
//!
//! With [`WarmPoolOptions::size`](crate::options::WarmPoolOptions) above 0, the driver keeps
//! that many idle tasks of one shape (the pool's *template*: the default task definition
//! and platform version, and the shape a job gets when it asks for nothing, or the pool's
//! own CPU and memory). Each idle task is a *slot*: a record of its own, keyed
//! `<namespace>_pool_<16 hex digits>` ([`crate::JobIdentity::pool_slot`]), holding the
//! task, a private key of its own (the *pool key*, whose public half the task got in
//! `SSH_PUBLIC_KEY`), and once the task was seen ready its endpoint and host key.
//!
//! ```text
//! prepare (a job whose task would match the template):
//!   claim:  for each idle slot (ready ones first, oldest first): try its lock (never wait)
//!           ─ re-read ─ put(slot, claimed by the job)          ← one winner across processes
//!   take:   put(job record naming the task) ─ delete(slot) ─ unlock(slot)
//!   swap:   over SSH with the pool key and the slot's pinned host key, within ClaimTimeout,
//!           replace authorized_keys by the job's key (a slot never seen ready: first the
//!           usual wait for address and SSH)
//!   verify: at once, the pool key is refused and the job's key logs in and runs `true`
//!   put(job record: Ready)
//!   beside it: refill (sweep expired and abandoned slots, launch until `size` are idle)
//! a claimed task that is dead, refuses the swap or still takes the pool key is stopped,
//! and the job gets a task of its own as without a pool.
//! ```
//!
//! # Crash safety
//! At every instant the task is named by a record that something will act on: the slot's
//! (idle: kept until its maximum idle time, then stopped), the slot's marked as claimed by
//! job J (J's cleanup, and after the consistency window the next sweep or `gc`, stop it),
//! or J's (J's cleanup stops it; `gc` judges the task by the record that names it, not by
//! its tags, which still name the slot).
//!
//! # Security model
//! A pool task has never run a job: it was started by this driver with a fresh key that
//! only the runner host holds. Before any job script runs, the claiming prepare replaces
//! the task's authorized key with the job's fresh key and checks that the pool key no
//! longer logs in; the task's host key is pinned from the first time the driver saw it.
//! A claimed task runs one job and is stopped at that job's cleanup, as without a pool.
//! Only jobs whose task would be exactly the template (no task definition, size, capacity,
//! role, network or image of their own, and a deadline the task's covers) take pool tasks.
//!
//! # Cost
//! Idle tasks are billed like running jobs: a pool of `size` costs `size` tasks for as long
//! as it is kept full, and each idle task at most its maximum idle time before it is
//! replaced.
mod claim;
mod fill;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;
use crate::metadata::{JobLock, JobRecord};
use crate::setting::Setting;
use crate::shape::TaskShape;

use super::retry::with_retries;
use super::shape::{ShapeRequest, TrustedProject, resolve_shape};
use super::{Driver, TaskDefinitionChoice};

/// Environment variable a task image may set (for SSH sessions, e.g. with sshd's
/// `SetEnv`) to say where the login user's authorized keys are; default
/// `~/.ssh/authorized_keys`.
pub const AUTHORIZED_KEYS_ENV: &str = "FARGATE_AUTHORIZED_KEYS";

/// Environment variable a task image may set (for SSH sessions) to say where the task's
/// self-stop reads its deadline when a job takes the task over from the pool (Unix
/// seconds, one line); default `~/.fargate-deadline`. The example image's
/// `until-deadline.sh` reads it.
pub const DEADLINE_FILE_ENV: &str = "FARGATE_DEADLINE_FILE";

/// What a pool task is: the launch that every slot of the pool repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PoolTemplate {
    task_definition: String,
    platform_version: Option<String>,
    shape: TaskShape,
    container_name: String,
    /// The launcher's [`settings_fingerprint`](crate::TaskLauncher::settings_fingerprint).
    settings: String,
    /// `task_definition` as the launcher resolves it now
    /// ([`resolve_task_definition`](crate::TaskLauncher::resolve_task_definition)); `None`
    /// until [`Driver::resolve_template`] did.
    resolved: Option<String>,
}

impl PoolTemplate {
    /// 16 hex digits of a hash of everything that shapes a pool task: the slot's key
    /// ([`PoolSlot::template`](crate::metadata::PoolSlot)). A slot launched under another
    /// template (another definition, platform, shape, container, or launcher settings such
    /// as the cluster, network or tags) is never claimed and is swept.
    pub(super) fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let shape = serde_json::to_string(&self.shape).unwrap_or_default();
        let text = format!(
            "definition={:?}\nplatform={:?}\nshape={shape}\ncontainer={:?}\nsettings={:?}\n",
            self.definition(),
            self.platform_version,
            self.container_name,
            self.settings
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }

    /// The definition pool tasks run: the resolved one, once resolved.
    pub(super) fn definition(&self) -> &str {
        self.resolved.as_deref().unwrap_or(&self.task_definition)
    }
}

/// Where a slot is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "job")]
#[non_exhaustive]
pub enum SlotState {
    /// Its launch is recorded; the backend's answer is not.
    Launching,
    /// Launched, not yet seen answering SSH.
    Booting,
    /// Seen answering SSH with its pool key; endpoint and host key pinned.
    Ready,
    /// A job claimed it and is taking it over.
    Claimed(String),
    /// Being stopped.
    Stopping,
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Launching => f.write_str("launching"),
            SlotState::Booting => f.write_str("booting"),
            SlotState::Ready => f.write_str("ready"),
            SlotState::Claimed(job) => write!(f, "claimed by {job}"),
            SlotState::Stopping => f.write_str("stopping"),
        }
    }
}

/// One slot of the pool, as its record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SlotInfo {
    /// The slot's key.
    pub key: String,
    /// Its task, once launched.
    pub task: Option<String>,
    /// Where it is.
    pub state: SlotState,
    /// Seconds since it was started.
    pub age_secs: u64,
    /// Seconds it may still idle before it is stopped (0: expired).
    pub idle_left_secs: u64,
}

/// What a pool command (or a refill) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolReport {
    /// The pool's slots afterwards.
    pub slots: Vec<SlotInfo>,
    /// Tasks started.
    pub started: Vec<String>,
    /// Tasks stopped, each with why.
    pub stopped: Vec<(String, String)>,
    /// What failed, one line each.
    pub failures: Vec<String>,
}

impl PoolReport {
    /// Idle slots (not claimed, not stopping).
    pub fn idle(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    SlotState::Launching | SlotState::Booting | SlotState::Ready
                )
            })
            .count()
    }
}

impl fmt::Display for PoolReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for task in &self.started {
            writeln!(f, "started {task}")?;
        }
        for (task, why) in &self.stopped {
            writeln!(f, "stopped {task}: {why}")?;
        }
        for failure in &self.failures {
            writeln!(f, "FAILED: {failure}")?;
        }
        for s in &self.slots {
            writeln!(
                f,
                "{}  {}  {}  age {} s, may idle {} s more",
                s.key,
                s.task.as_deref().unwrap_or("-"),
                s.state,
                s.age_secs,
                s.idle_left_secs
            )?;
        }
        write!(f, "{} idle task(s)", self.idle())
    }
}

impl Driver {
    /// The pool's template, when there is a pool.
    pub(in crate::driver) fn pool_template(&self) -> Result<Option<PoolTemplate>> {
        let pool = &self.options.pool;
        if !pool.enabled() {
            return Ok(None);
        }
        let mut shape = resolve_shape(
            &self.options.shape,
            &ShapeRequest::default(),
            &TrustedProject::default(),
            None,
        )?
        .shape;
        if let (Some(cpu), Some(memory)) = (pool.cpu, pool.memory) {
            shape = shape.with_size(cpu, memory);
        }
        Ok(Some(PoolTemplate {
            task_definition: self
                .admin
                .task_definition
                .clone()
                .unwrap_or_else(|| self.options.task.task_definition.clone()),
            platform_version: self
                .admin
                .platform_version
                .clone()
                .or_else(|| self.options.task.platform_version.clone()),
            shape,
            container_name: self.options.task.container_name.clone(),
            settings: self.launcher.settings_fingerprint(),
            resolved: None,
        }))
    }

    /// `template` with its task definition resolved as the launcher resolves it now: what
    /// pool tasks are launched with and keyed by, so that a new revision of a family is
    /// never served by a task of the old one.
    pub(in crate::driver) async fn resolve_template(
        &self,
        mut template: PoolTemplate,
    ) -> Result<PoolTemplate> {
        let resolved = with_retries(
            &self.options.retry,
            "resolving the warm pool's task definition",
            &*self.observer,
            || {
                self.launcher
                    .resolve_task_definition(&template.task_definition)
            },
        )
        .await?;
        template.resolved = Some(resolved);
        Ok(template)
    }

    /// The pool's template with its task definition resolved, when there is a pool.
    pub(in crate::driver) async fn resolved_pool_template(&self) -> Result<Option<PoolTemplate>> {
        match self.pool_template()? {
            Some(template) => self.resolve_template(template).await.map(Some),
            None => Ok(None),
        }
    }

    /// Whether a job with `choice` and `shape` would get exactly a pool task.
    pub(in crate::driver) fn fits_pool(
        template: &PoolTemplate,
        choice: &TaskDefinitionChoice,
        shape: &TaskShape,
    ) -> bool {
        choice.images.is_none()
            && choice.task_definition == template.task_definition
            && choice.platform_version == template.platform_version
            && *shape == template.shape
    }

    /// The records of the pool's slots (unreadable ones are skipped with a warning).
    pub(super) async fn slots(&self) -> Result<Vec<JobRecord>> {
        let prefix = format!("{}{}", self.namespace, crate::job::POOL_KEY_INFIX);
        let mut slots = self.store.records_with_prefix(&prefix).await?;
        slots.retain(|record| record.key.is_pool_slot_of(&self.namespace) && record.pool.is_some());
        Ok(slots)
    }

    /// `fargate pool fill`: sweeps expired and abandoned slots and launches tasks until
    /// [`WarmPoolOptions::size`](crate::options::WarmPoolOptions) are idle; with `wait`,
    /// also waits until every idle task answers SSH with its pool key and pins its host
    /// key, so that claims of it do not wait.
    pub async fn pool_fill(&self, wait: bool) -> Result<PoolReport> {
        let Some(template) = self.resolved_pool_template().await? else {
            return Err(pool_disabled());
        };
        let lock = self
            .store
            .lock(&self.pool_fill_key(), Duration::from_secs(30))
            .await?;
        let mut report = self.fill(&template, wait).await;
        self.release(lock).await;
        report.slots = self.slot_infos().await?;
        Ok(report)
    }

    /// `fargate pool drain`: stops every task of the pool that no job claimed, and removes
    /// their slots. Slots another process holds are left (and reported).
    pub async fn pool_drain(&self) -> Result<PoolReport> {
        let mut report = PoolReport::default();
        for slot in self.slots().await? {
            if slot.pool.as_ref().is_some_and(|p| p.claimed_by.is_some()) {
                continue;
            }
            self.stop_slot(slot, "the warm pool is drained", &mut report)
                .await;
        }
        report.slots = self.slot_infos().await?;
        Ok(report)
    }

    /// `fargate pool status`: the pool's slots as recorded (no backend call).
    pub async fn pool_status(&self) -> Result<PoolReport> {
        Ok(PoolReport {
            slots: self.slot_infos().await?,
            ..PoolReport::default()
        })
    }

    /// The lock that makes refills of one namespace one at a time (no record has this key).
    pub(super) fn pool_fill_key(&self) -> JobKey {
        JobKey::pool_fill(&self.namespace)
    }

    pub(super) async fn release(&self, lock: JobLock) {
        if let Err(err) = self.store.unlock(lock).await {
            tracing::warn!(error = %err, "could not release a warm pool lock");
        }
    }
}

fn template_matches(slot: &JobRecord, template: &PoolTemplate) -> bool {
    slot.pool
        .as_ref()
        .is_some_and(|p| p.template == template.fingerprint())
        && slot.spec.as_ref().is_some_and(|s| s.images.is_none())
}

/// Runs `futures` together; their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *result = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn pool_disabled() -> Error {
    Error::new(ErrorKind::InvalidConfig, "there is no warm pool")
        .with_hint("give the warm pool a size")
        .with_setting(Setting::PoolSize)
}
