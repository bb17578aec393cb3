//! The warm pool: tasks started ahead of jobs, each claimed by exactly one job.
//!
//! With [`WarmPoolOptions::size`](crate::options::WarmPoolOptions) above 0, the driver keeps
//! that many idle tasks of one shape (the pool's *template*: the default task definition
//! and platform version, and the shape a job gets when it asks for nothing, or the pool's
//! own CPU and memory). Each idle task is a *slot*: a record of its own, keyed
//! `<namespace>_pool_<16 hex digits>` ([`JobIdentity::pool_slot`]), holding the task, a
//! private key of its own (the *pool key*, whose public half the task got in
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::{JobIdentity, JobKey};
use crate::launcher::{Endpoint, Launched, TaskRef, TaskSpec};
use crate::metadata::{JobLock, JobRecord, Phase, PoolSlot, unix_now};
use crate::observe::{Event, PreparePhase, StopCause, SummaryPoint};
use crate::shape::TaskShape;
use crate::shell::{CapturedOutput, HostKey, RunOutcome, RunRequest};

use super::prepare::LOGIN_CHECK_SCRIPT;
use super::shape::{ShapeRequest, TrustedProject, resolve_shape};
use super::{Driver, PrepareReport, SSH_PUBLIC_KEY_ENV, TASK_DEADLINE_ENV, TaskDefinitionChoice};

/// Environment variable a task image may set (for SSH sessions, e.g. with sshd's
/// `SetEnv`) to say where the login user's authorized keys are; default
/// `~/.ssh/authorized_keys`.
pub const AUTHORIZED_KEYS_ENV: &str = "FARGATE_AUTHORIZED_KEYS";

/// A slot claimed but not taken over by its job for this long was abandoned by a killed
/// prepare: a sweep stops its task.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How long a refill waits for another process's refill to finish before it leaves the
/// pool to that one.
const REFILL_LOCK_WAIT: Duration = Duration::from_secs(3);

/// What a pool task is: the launch that every slot of the pool repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PoolTemplate {
    task_definition: String,
    platform_version: Option<String>,
    shape: TaskShape,
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

/// A slot this process claimed: its record (marked as claimed) and its lock.
pub(super) struct Claim {
    slot: JobRecord,
    lock: JobLock,
}

/// Why a claimed task cannot serve the job: it is stopped and the job launches its own.
struct Unusable(Error);

impl Driver {
    /// The pool's template, when there is a pool.
    pub(super) fn pool_template(&self) -> Result<Option<PoolTemplate>> {
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
        }))
    }

    /// Whether a job with `choice` and `shape` would get exactly a pool task.
    pub(super) fn fits_pool(
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
    async fn slots(&self) -> Result<Vec<JobRecord>> {
        let mut slots = Vec::new();
        for key in self.store.list().await? {
            if !key.is_pool_slot_of(&self.namespace) {
                continue;
            }
            match self.store.get(&key).await {
                Ok(Some(record)) if record.pool.is_some() => slots.push(record),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(slot = %key, error = %err, "skipping an unreadable warm pool slot")
                }
            }
        }
        Ok(slots)
    }

    /// Claims an idle slot for job `job` whose task runs `template` until at least
    /// `needed_until`; `None` when there is none. Never waits for a lock: a slot another
    /// process is claiming is skipped.
    pub(super) async fn claim(
        &self,
        job: &JobKey,
        template: &PoolTemplate,
        needed_until: SystemTime,
    ) -> Option<Claim> {
        let mut candidates = match self.slots().await {
            Ok(slots) => slots,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the warm pool; launching a task for the job");
                return None;
            }
        };
        let now = unix_now();
        candidates.retain(|s| claimable(s, template, now, needed_until));
        // Ready ones first (no wait), then the oldest (closest to expiry, furthest booted).
        candidates.sort_by_key(|s| (s.phase != Phase::Ready, s.created_at));
        for candidate in candidates {
            let lock = match self.store.lock(&candidate.key, Duration::ZERO).await {
                Ok(lock) => lock,
                Err(_) => continue, // another process holds it (claiming, refilling, gc)
            };
            let mut slot = match self.store.get(&candidate.key).await {
                Ok(Some(slot)) if claimable(&slot, template, unix_now(), needed_until) => slot,
                _ => {
                    self.release(lock).await;
                    continue;
                }
            };
            if let Some(pool) = slot.pool.as_mut() {
                pool.claimed_by = Some(job.clone());
            }
            slot.touch();
            if let Err(err) = self.store.put(&slot).await {
                tracing::warn!(slot = %slot.key, error = %err, "cannot claim a warm task");
                self.release(lock).await;
                continue;
            }
            return Some(Claim { slot, lock });
        }
        None
    }

    /// Takes the claimed task over for the job of `record` (whose key is in it) and makes it
    /// ready for the job: see the [module docs](self). `Ok(None)`: the task could not serve
    /// the job and was stopped; launch one for it.
    pub(super) async fn prepare_warm(
        &self,
        start: Instant,
        claim: Claim,
        mut record: JobRecord,
        job_public_key: &str,
        cancel: &CancellationToken,
    ) -> std::result::Result<Option<PrepareReport>, Failure> {
        let Claim { slot, lock } = claim;
        let task = slot.task.clone();
        let (Some(task), Some(spec)) = (task, slot.spec.clone()) else {
            self.release(lock).await;
            return Ok(None);
        };
        // The job's record names the task before the slot goes.
        record.task = Some(task.clone());
        record.spec = Some(spec.clone());
        record.phase = Phase::Launched;
        record.touch();
        let taken = self.store.put(&record).await;
        if taken.is_ok()
            && let Err(err) = self.store.delete(&slot.key).await
        {
            tracing::warn!(slot = %slot.key, error = %err, "could not remove the claimed slot's record; a sweep will");
        }
        self.release(lock).await;
        if let Err(err) = taken {
            // The slot still names the task (claimed): it is stopped by the job's cleanup.
            return Err(Failure::from(err));
        }
        let idle = unix_now().saturating_sub(slot.created_at);
        tracing::info!(task = %task, idle_s = idle, "using a warm task from the pool");
        self.observe(Event::Launched { task: task.clone() });
        self.observe(Event::Phase {
            phase: PreparePhase::Accepted,
            elapsed: start.elapsed(),
        });
        let launch_accepted = start.elapsed();

        // ECS's timeline of the task, for the summary, beside the take-over.
        let take_over = async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Ok(Error::cancelled("taking over a warm task"))),
                r = self.take_over(start, &slot, &mut record, job_public_key) => r,
            }
        };
        let (outcome, details) = tokio::join!(take_over, self.describe_for_summary(&task));
        let (endpoint, host_key, address_known, probes, describe_calls) = match outcome {
            Ok(ready) => ready,
            Err(Ok(err)) => return Err(self.roll_back(record, err).await),
            Err(Err(Unusable(why))) => {
                tracing::warn!(task = %task, "the warm task cannot serve the job ({why}); stopping it and launching a task for the job");
                let key = record.key.clone();
                return match self.stop_job(&key, record).await {
                    Ok(stopped) => {
                        self.observe_stops(&stopped, StopCause::Pool);
                        Ok(None)
                    }
                    Err(err) => Err(Failure::from(err)),
                };
            }
        };
        record.endpoint = Some(endpoint);
        record.host_key = Some(host_key.clone());
        record.phase = Phase::Ready;
        record.touch();
        if let Err(err) = self.store.put(&record).await {
            return Err(self.roll_back(record, err).await);
        }
        let ssh_ready = start.elapsed();
        let ready_at = SystemTime::now();
        self.observe(Event::Phase {
            phase: PreparePhase::SshUp,
            elapsed: ssh_ready,
        });
        self.observe(Event::Ready {
            task: task.clone(),
            endpoint,
            elapsed: ssh_ready,
        });
        tracing::info!("task shape: {}", spec.shape);
        let details = details.unwrap_or_default();
        let summary = self.summarize_with(
            SummaryPoint::Prepared,
            &task,
            details,
            Some(launch_accepted),
            Some(ready_at),
            Some(ssh_ready),
        );
        Ok(Some(PrepareReport {
            summary,
            task,
            endpoint,
            host_key,
            launch_accepted,
            address_known,
            ssh_ready,
            describe_calls,
            probes,
            shape: spec.shape,
            warm: true,
        }))
    }

    /// Finds the claimed task's SSH server, swaps its key and verifies the swap. `Err(Ok)`:
    /// the job fails; `Err(Err)`: the task cannot serve the job.
    async fn take_over(
        &self,
        start: Instant,
        slot: &JobRecord,
        record: &mut JobRecord,
        job_public_key: &str,
    ) -> std::result::Result<
        (Endpoint, HostKey, Duration, u32, u32),
        std::result::Result<Error, Unusable>,
    > {
        let unusable = |e: Error| Err(Unusable(e));
        let Some(task) = slot.task.clone() else {
            return Err(unusable(Error::new(ErrorKind::Unexpected, "no task")));
        };
        let (endpoint, host_key, address_known, probes, describe_calls) =
            match (slot.endpoint, slot.host_key.clone()) {
                // Seen ready by the pool: the swap's own connection checks that it still
                // answers, with the pinned host key (else HostKeyMismatch: unusable).
                (Some(endpoint), Some(pinned)) => (endpoint, pinned, Duration::ZERO, 0, 0),
                _ => {
                    // Never seen ready: wait for it as for a task of the job's own.
                    let deadline = start + self.options.timeouts.ready;
                    match self
                        .wait_ready(&Launched::new(task), Instant::now(), deadline)
                        .await
                    {
                        Ok(ready) => (
                            ready.endpoint,
                            ready.host_key,
                            ready.address_known,
                            ready.probes,
                            ready.describe_calls,
                        ),
                        Err(err) if err.kind() == ErrorKind::TaskStopped => {
                            return Err(unusable(err));
                        }
                        Err(err) => return Err(Ok(err)),
                    }
                }
            };
        let as_pool = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: slot.private_key.clone(),
            host_key: Some(host_key.clone()),
            script: Arc::from(key_swap_script(job_public_key).map_err(Ok)?.into_bytes()),
        };
        let deadline = Instant::now() + self.options.pool.claim_timeout;
        match run_captured(self, &as_pool, deadline).await {
            Ok((RunOutcome::Exited(0), _)) => {}
            Ok((outcome, stderr)) => {
                return Err(unusable(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("replacing its authorized key ended with {outcome:?}: {stderr}"),
                )));
            }
            Err(err) => return Err(unusable(err)),
        }
        // Only the job's key may work from now on: the pool key is refused, and the job's
        // key logs in and runs `true` (both checked at once).
        let old_key = RunRequest {
            script: Arc::from(LOGIN_CHECK_SCRIPT),
            ..as_pool
        };
        record.endpoint = Some(endpoint);
        record.host_key = Some(host_key.clone());
        let (refused, login) = tokio::join!(
            run_captured(self, &old_key, deadline),
            self.check_login(record, deadline)
        );
        match refused {
            Err(err) if err.kind() == ErrorKind::AuthenticationFailed => {}
            Ok(_) => {
                return Err(unusable(Error::new(
                    ErrorKind::NotAllowed,
                    "the pool key still logs in after the swap",
                )
                .with_hint(format!("the task image's SSH server must read the login user's authorized keys from ~/.ssh/authorized_keys (or from ${AUTHORIZED_KEYS_ENV} in its sessions' environment)"))));
            }
            Err(err) => return Err(unusable(err)),
        }
        if let Err(err) = login {
            return Err(unusable(err));
        }
        Ok((endpoint, host_key, address_known, probes, describe_calls))
    }

    /// Refills the pool: sweeps its expired and abandoned slots, then launches tasks until
    /// `size` are idle. Best effort: what fails is in the report, never an error of the
    /// job. Skipped when another process is refilling.
    pub(super) async fn refill_pool(&self) -> Option<PoolReport> {
        let template = match self.pool_template() {
            Ok(Some(t)) => t,
            _ => return None,
        };
        let fill_key = self.pool_fill_key();
        let lock = match self.store.lock(&fill_key, REFILL_LOCK_WAIT).await {
            Ok(lock) => lock,
            Err(err) => {
                tracing::debug!(error = %err, "another process is refilling the warm pool");
                return None;
            }
        };
        let report = self.fill(&template, false).await;
        self.release(lock).await;
        for failure in &report.failures {
            tracing::warn!("warm pool: {failure}");
        }
        Some(report)
    }

    /// `fargate pool fill`: sweeps expired and abandoned slots and launches tasks until
    /// [`WarmPoolOptions::size`](crate::options::WarmPoolOptions) are idle; with `wait`,
    /// also waits until every idle task answers SSH with its pool key and pins its host
    /// key, so that claims of it do not wait.
    pub async fn pool_fill(&self, wait: bool) -> Result<PoolReport> {
        let Some(template) = self.pool_template()? else {
            return Err(pool_disabled());
        };
        let lock = self
            .store
            .lock(&self.pool_fill_key(), Duration::from_secs(30))
            .await?;
        let report = self.fill(&template, wait).await;
        self.release(lock).await;
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

    /// Stops the slots claimed by `job` that its record does not name (a prepare killed
    /// between its claim and its record): part of the job's cleanup.
    pub(super) async fn stop_claimed_slots(&self, job: &JobKey) -> Vec<TaskRef> {
        if !self.options.pool.enabled() {
            return Vec::new();
        }
        let mut report = PoolReport::default();
        if let Ok(slots) = self.slots().await {
            for slot in slots {
                if slot.pool.as_ref().and_then(|p| p.claimed_by.as_ref()) == Some(job) {
                    self.stop_slot(slot, "its claiming job ended", &mut report)
                        .await;
                }
            }
        }
        report
            .stopped
            .into_iter()
            .map(|(task, _)| TaskRef::new(task))
            .collect()
    }

    async fn fill(&self, template: &PoolTemplate, wait: bool) -> PoolReport {
        let mut report = PoolReport::default();
        let slots = match self.slots().await {
            Ok(slots) => slots,
            Err(err) => {
                report.failures.push(format!("reading the pool: {err}"));
                return report;
            }
        };
        let now = unix_now();
        let mut idle = Vec::new();
        for slot in slots {
            match self.sweep_reason(&slot, template, now).await {
                Some(why) => self.stop_slot(slot, &why, &mut report).await,
                None if slot.pool.as_ref().is_some_and(|p| p.claimed_by.is_none()) => {
                    idle.push(slot)
                }
                None => {}
            }
        }
        // A smaller pool than before: the youngest idle tasks go.
        idle.sort_by_key(|s| (s.phase != Phase::Ready, s.created_at));
        while idle.len() > self.options.pool.size {
            if let Some(extra) = idle.pop() {
                self.stop_slot(extra, "the warm pool is smaller now", &mut report)
                    .await;
            }
        }
        let missing = self.options.pool.size.saturating_sub(idle.len());
        let launches = (0..missing).map(|_| self.launch_slot(template));
        for result in join_all(launches).await {
            match result {
                Ok(slot) => {
                    if let Some(task) = &slot.task {
                        report.started.push(task.id.clone());
                    }
                    idle.push(slot);
                }
                Err(err) => report.failures.push(format!("starting a warm task: {err}")),
            }
        }
        if wait {
            let readies = idle
                .into_iter()
                .filter(|s| s.phase != Phase::Ready)
                .map(|s| self.ready_slot(s));
            for result in join_all(readies).await {
                if let Err(err) = result {
                    report.failures.push(err);
                }
            }
        }
        match self.slot_infos().await {
            Ok(slots) => report.slots = slots,
            Err(err) => report.failures.push(format!("reading the pool: {err}")),
        }
        report
    }

    /// Why `slot` should go, if it should.
    async fn sweep_reason(
        &self,
        slot: &JobRecord,
        template: &PoolTemplate,
        now: u64,
    ) -> Option<String> {
        let pool = slot.pool.as_ref()?;
        let quiet = now.saturating_sub(slot.updated_at);
        if let Some(job) = &pool.claimed_by {
            if quiet < ABANDONED_AFTER.as_secs() {
                return None;
            }
            // The claiming prepare died; unless its job's record names the task now, the
            // task is nobody's.
            let named = match self.store.get(job).await {
                Ok(Some(record)) => slot.task.is_some() && record.task == slot.task,
                _ => false,
            };
            return Some(if named {
                String::new() // only the slot's record goes; see stop_slot
            } else {
                format!("claimed by {job} {quiet} s ago, which never took it over")
            });
        }
        if now >= pool.idle_until {
            return Some("idle longer than the warm pool's maximum idle time".into());
        }
        if slot.phase == Phase::LaunchRequested {
            // Its launcher holds the slot's lock until the answer is recorded: when
            // `stop_slot` gets the lock, that process died and the answer is lost (the
            // replayed launch finds the task, which is stopped).
            return Some("the process that launched it died before ECS answered".into());
        }
        if !template_matches(slot, template) {
            return Some("the warm pool's task settings changed".into());
        }
        None
    }

    /// Stops `slot`'s task and removes its record, under its lock (never waiting). An empty
    /// `why` removes only the record (its task belongs to a job now).
    async fn stop_slot(&self, slot: JobRecord, why: &str, report: &mut PoolReport) {
        let Ok(lock) = self.store.lock(&slot.key, Duration::ZERO).await else {
            return; // another process is at it
        };
        let key = slot.key.clone();
        match self.store.get(&key).await {
            Ok(Some(current)) if current == slot => {
                if why.is_empty() {
                    if let Err(err) = self.store.delete(&key).await {
                        report.failures.push(format!("removing slot {key}: {err}"));
                    }
                } else {
                    match self.stop_job(&key, current).await {
                        Ok(stopped) => {
                            self.observe_stops(&stopped, StopCause::Pool);
                            report
                                .stopped
                                .extend(stopped.into_iter().map(|t| (t.id, why.to_owned())));
                        }
                        Err(err) => report.failures.push(format!("stopping slot {key}: {err}")),
                    }
                }
            }
            _ => {} // it changed meanwhile: look again next time
        }
        self.release(lock).await;
    }

    /// Launches one pool task; its slot is recorded before the launch, under its lock.
    async fn launch_slot(&self, template: &PoolTemplate) -> Result<JobRecord> {
        let mut n = [0u8; 8];
        getrandom::fill(&mut n)
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("no randomness: {e}")))?;
        let identity = JobIdentity::pool_slot(self.namespace.clone(), u64::from_be_bytes(n));
        let key = identity.key();
        let lock = self.store.lock(&key, Duration::ZERO).await?;
        let result = self.launch_slot_locked(identity, template).await;
        self.release(lock).await;
        result
    }

    async fn launch_slot_locked(
        &self,
        identity: JobIdentity,
        template: &PoolTemplate,
    ) -> Result<JobRecord> {
        let keys = self.shell.generate_key(self.options.ssh.key_type).await?;
        let now = SystemTime::now();
        let max_idle = self.options.pool.max_idle;
        let deadline = whole_seconds(now + max_idle + self.options.timeouts.task_lifetime(None));
        let mut spec = TaskSpec::new(identity.clone(), template.task_definition.clone())
            .with_shape(template.shape.clone())
            .with_deadline(deadline);
        spec.platform_version = template.platform_version.clone();
        spec.container_name = self.options.task.container_name.clone();
        spec.environment = BTreeMap::from([
            (SSH_PUBLIC_KEY_ENV.to_owned(), keys.public_key),
            (
                TASK_DEADLINE_ENV.to_owned(),
                unix_secs(deadline).to_string(),
            ),
        ]);
        let mut record = JobRecord::new(identity, keys.private_key);
        record.pool = Some(PoolSlot::new(unix_secs(now + max_idle)));
        record.spec = Some(spec.clone());
        match self
            .launch(&mut record, &spec, false, &CancellationToken::new())
            .await
        {
            Ok(_) => {
                self.store.put(&record).await?;
                tracing::debug!(slot = %record.key, task = ?record.task, "started a warm task");
                Ok(record)
            }
            Err(err) => {
                let key = record.key.clone();
                if let Err(stop_err) = self.stop_job(&key, record).await {
                    tracing::warn!(slot = %key, error = %stop_err, "could not clean up a failed warm task launch; a sweep will");
                }
                Err(err)
            }
        }
    }

    /// Waits until a slot's task answers SSH and takes its pool key; records its endpoint
    /// and host key (phase Ready).
    async fn ready_slot(&self, slot: JobRecord) -> std::result::Result<(), String> {
        let key = slot.key.clone();
        let fail = |e: Error| format!("waiting for warm task of slot {key}: {e}");
        let Some(task) = slot.task.clone() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.options.timeouts.ready;
        let ready = self
            .wait_ready(&Launched::new(task), Instant::now(), deadline)
            .await
            .map_err(fail)?;
        let mut probe = slot.clone();
        probe.endpoint = Some(ready.endpoint);
        probe.host_key = Some(ready.host_key.clone());
        self.check_login(&probe, deadline).await.map_err(fail)?;
        // Record it unless the slot changed meanwhile (claimed, swept).
        let lock = self
            .store
            .lock(&key, Duration::from_secs(5))
            .await
            .map_err(fail)?;
        let result = match self.store.get(&key).await {
            Ok(Some(current)) if current == slot => {
                probe.phase = Phase::Ready;
                probe.touch();
                self.store.put(&probe).await.map_err(fail)
            }
            _ => Ok(()),
        };
        self.release(lock).await;
        result
    }

    async fn slot_infos(&self) -> Result<Vec<SlotInfo>> {
        let now = unix_now();
        let mut infos: Vec<SlotInfo> = self
            .slots()
            .await?
            .into_iter()
            .filter_map(|s| {
                let pool = s.pool.as_ref()?;
                let state = match (&pool.claimed_by, s.phase) {
                    (Some(job), _) => SlotState::Claimed(job.to_string()),
                    (None, Phase::LaunchRequested) => SlotState::Launching,
                    (None, Phase::Launched) => SlotState::Booting,
                    (None, Phase::Ready) => SlotState::Ready,
                    (None, _) => SlotState::Stopping,
                };
                Some(SlotInfo {
                    key: s.key.to_string(),
                    task: s.task.as_ref().map(|t| t.id.clone()),
                    state,
                    age_secs: now.saturating_sub(s.created_at),
                    idle_left_secs: pool.idle_until.saturating_sub(now),
                })
            })
            .collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    /// The lock that makes refills of one namespace one at a time (no record has this key).
    fn pool_fill_key(&self) -> JobKey {
        JobKey(format!("{}_pool_fill", self.namespace))
    }

    async fn release(&self, lock: JobLock) {
        if let Err(err) = self.store.unlock(lock).await {
            tracing::warn!(error = %err, "could not release a warm pool lock");
        }
    }
}

/// Whether `slot` is an idle task of `template` that lives until `needed_until`.
fn claimable(
    slot: &JobRecord,
    template: &PoolTemplate,
    now: u64,
    needed_until: SystemTime,
) -> bool {
    let Some(pool) = &slot.pool else {
        return false;
    };
    pool.claimed_by.is_none()
        && matches!(slot.phase, Phase::Launched | Phase::Ready)
        && slot.task.is_some()
        && now < pool.idle_until
        && template_matches(slot, template)
        && slot
            .spec
            .as_ref()
            .and_then(|s| s.deadline)
            .is_some_and(|d| d >= needed_until)
}

fn template_matches(slot: &JobRecord, template: &PoolTemplate) -> bool {
    slot.spec.as_ref().is_some_and(|s| {
        s.task_definition == template.task_definition
            && s.platform_version == template.platform_version
            && s.shape == template.shape
            && s.images.is_none()
    })
}

/// The script that makes `public_key` the login user's only authorized key, atomically
/// (a new file renamed over the old one, 0600 in a 0700 directory).
pub(super) fn key_swap_script(public_key: &str) -> Result<String> {
    let line = public_key.trim();
    let safe = !line.is_empty()
        && line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " +/=@._:-".contains(c));
    if !safe {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "the job's public key has characters an authorized_keys line does not",
        ));
    }
    Ok(format!(
        "set -eu\n\
         umask 077\n\
         f=\"${{{AUTHORIZED_KEYS_ENV}:-$HOME/.ssh/authorized_keys}}\"\n\
         mkdir -p \"$(dirname \"$f\")\"\n\
         printf '%s\\n' '{line}' > \"$f.fargate-swap\"\n\
         mv -f \"$f.fargate-swap\" \"$f\"\n"
    ))
}

/// Runs `request` until `deadline`; its outcome and stderr.
async fn run_captured(
    driver: &Driver,
    request: &RunRequest,
    deadline: Instant,
) -> Result<(RunOutcome, String)> {
    let mut out = CapturedOutput::default();
    let outcome = tokio::time::timeout_at(
        deadline,
        driver
            .shell
            .run(request, &mut out, &CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|_| Err(Error::timeout("running a script on the warm task")))?;
    Ok((
        outcome,
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
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
        .with_hint("set [Fargate.WarmPool] Size in fargate.toml")
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs(t))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The pool key never leaves the slot's record; this keeps it out of `Debug` output of
/// claims.
impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("slot", &self.slot.key)
            .finish_non_exhaustive()
    }
}
