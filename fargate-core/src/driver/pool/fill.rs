//! Filling the warm pool, sweeping it, and reporting on it (see the [module docs](super)).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobIdentity;
use crate::launcher::{Launched, TaskRef, TaskSpec};
use crate::metadata::{JobLock, JobRecord, Phase, PoolSlot};
use crate::observe::StopCause;
use crate::world::{unix_now, unix_seconds, whole_seconds_after};

use super::super::{Driver, SSH_PUBLIC_KEY_ENV, TASK_DEADLINE_ENV};
use super::{PoolReport, PoolTemplate, SlotInfo, SlotState, join_all, template_matches};

/// A slot claimed but not taken over by its job for this long was abandoned by a killed
/// prepare: a sweep stops its task.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// What a sweep does with a slot.
enum Sweep {
    /// Stop its task (and remove its record), for this reason.
    Stop(String),
    /// Remove only its record: the job that claimed it recorded the task.
    Forget,
}

/// How long a refill waits for another process's refill to finish before it leaves the
/// pool to that one.
const REFILL_LOCK_WAIT: Duration = Duration::from_secs(3);

impl Driver {
    /// Refills the pool: sweeps its expired, abandoned and outdated slots, then launches
    /// tasks until `size` are idle, without waiting for them to boot. What a prepare's
    /// embedder runs after (or beside) each prepare, off the job's path: the CLI starts it
    /// as a detached `fargate pool fill --background` process. Skipped (an empty report)
    /// when another process is refilling; what fails is in the report, never an error.
    ///
    /// # Cancel safety
    /// Cancelling through `cancel` (or dropping the future) stops it between steps and
    /// loses nothing: every slot is recorded, with its launch's client token, before its
    /// launch, so a launch whose answer never came is resolved (replayed and stopped) by
    /// the next refill or `gc`.
    pub async fn pool_refill(&self, cancel: &CancellationToken) -> PoolReport {
        let template = match self.resolved_pool_template().await {
            Ok(Some(template)) => template,
            Ok(None) => return PoolReport::default(),
            Err(err) => {
                let mut report = PoolReport::default();
                report.failures.push(format!("the pool's settings: {err}"));
                return report;
            }
        };
        let lock = match self
            .store
            .lock(&self.pool_fill_key(), REFILL_LOCK_WAIT)
            .await
        {
            Ok(lock) => lock,
            Err(err) => {
                tracing::debug!(error = %err, "another process is refilling the warm pool");
                return PoolReport::default();
            }
        };
        let report = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let mut report = PoolReport::default();
                report.failures.push("the refill was cancelled".into());
                report
            }
            report = self.fill(&template, false) => report,
        };
        self.release(lock).await;
        for failure in &report.failures {
            tracing::warn!("warm pool: {failure}");
        }
        report
    }

    /// Sweeps the pool and launches tasks until `size` are idle (with `wait`, until each
    /// answers SSH); what it started, stopped and failed to do (not the slots).
    pub(super) async fn fill(&self, template: &PoolTemplate, wait: bool) -> PoolReport {
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
            match self.sweep(&slot, template, now).await {
                Some(Sweep::Forget) => self.forget_slot(slot, &mut report).await,
                Some(Sweep::Stop(why)) => self.stop_slot(slot, &why, &mut report).await,
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
        // Up to the launcher's batch size per call: one call per group.
        let per_call = self.launcher.max_launch_batch().max(1) as usize;
        let groups = (0..missing)
            .step_by(per_call)
            .map(|first| (missing - first).min(per_call) as u32);
        let launches = groups.map(|count| self.launch_slots(template, count));
        for result in join_all(launches).await {
            match result {
                Ok((slots, failures)) => {
                    for slot in slots {
                        if let Some(task) = &slot.task {
                            report.started.push(task.id.clone());
                        }
                        idle.push(slot);
                    }
                    for err in failures {
                        report.failures.push(format!("starting a warm task: {err}"));
                    }
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
        report
    }

    /// Whether `slot` should go, and how.
    async fn sweep(&self, slot: &JobRecord, template: &PoolTemplate, now: u64) -> Option<Sweep> {
        let pool = slot.pool.as_ref()?;
        let quiet = now.saturating_sub(slot.updated_at);
        if let Some(job) = &pool.claimed_by {
            if quiet < ABANDONED_AFTER.as_secs() {
                return None;
            }
            // The claiming prepare died; unless its job's record names the task now, the
            // task is nobody's (a first look: `end_slot` reads it again under the lock).
            return Some(if self.named_by_claimer(slot).await {
                Sweep::Forget
            } else {
                Sweep::Stop(format!(
                    "claimed by {job} {quiet} s ago, which never took it over"
                ))
            });
        }
        if slot.phase == Phase::Stopping {
            // A stop began (a failed launch's cleanup, a drain, a sweep) and did not finish.
            return Some(Sweep::Stop("a stop of it began and did not finish".into()));
        }
        if now >= pool.idle_until {
            return Some(Sweep::Stop(
                "idle longer than the warm pool's maximum idle time".into(),
            ));
        }
        if slot.phase == Phase::LaunchRequested {
            // Its launcher holds the slot's lock until the answer is recorded: when
            // `stop_slot` gets the lock, that process died and the answer is lost (the
            // replayed launch finds the task, which is stopped).
            return Some(Sweep::Stop(
                "the process that launched it died before the launcher answered".into(),
            ));
        }
        if !template_matches(slot, template) {
            return Some(Sweep::Stop("the warm pool's task settings changed".into()));
        }
        None
    }

    /// Stops `slot`'s task and removes its record, under its lock (never waiting).
    pub(super) async fn stop_slot(&self, slot: JobRecord, why: &str, report: &mut PoolReport) {
        self.end_slot(slot, Some(why), report).await;
    }

    /// Removes only `slot`'s record (its task belongs to a job now), under its lock.
    async fn forget_slot(&self, slot: JobRecord, report: &mut PoolReport) {
        self.end_slot(slot, None, report).await;
    }

    /// Removes `slot`'s record, first stopping its task when `stop` says why; nothing when
    /// another process holds the slot or it changed since it was read.
    async fn end_slot(&self, slot: JobRecord, stop: Option<&str>, report: &mut PoolReport) {
        let Ok(lock) = self.store.lock(&slot.key, Duration::ZERO).await else {
            return; // another process is at it
        };
        let key = slot.key.clone();
        match (self.store.get(&key).await, stop) {
            (Ok(Some(current)), _) if current != slot => {} // changed: look again next time
            (Ok(Some(_)), None) => {
                if let Err(err) = self.store.delete_locked(&lock).await {
                    report.failures.push(format!("removing slot {key}: {err}"));
                }
            }
            // Read under the slot's lock: the job that claimed it took its task after all.
            (Ok(Some(_)), Some(_)) if self.named_by_claimer(&slot).await => {
                if let Err(err) = self.store.delete_locked(&lock).await {
                    report.failures.push(format!("removing slot {key}: {err}"));
                }
            }
            (Ok(Some(current)), Some(why)) => match self.stop_job(&lock, current).await {
                Ok(stopped) => {
                    self.observe_stops(&stopped, StopCause::Pool);
                    report
                        .stopped
                        .extend(stopped.into_iter().map(|t| (t.id, why.to_owned())));
                }
                Err(err) => report.failures.push(format!("stopping slot {key}: {err}")),
            },
            _ => {} // gone, or unreadable: nothing to act on
        }
        self.release(lock).await;
    }

    /// Whether the job that claimed `slot` names its task in its record (read now).
    async fn named_by_claimer(&self, slot: &JobRecord) -> bool {
        let Some(job) = slot.pool.as_ref().and_then(|p| p.claimed_by.as_ref()) else {
            return false;
        };
        match self.store.get(job).await {
            Ok(Some(record)) => slot.task.is_some() && record.task == slot.task,
            _ => false,
        }
    }

    /// Launches `count` pool tasks in one call: the first slot (its *lead*) is recorded
    /// before the launch, under its lock, with the call's client token and `count`; once
    /// answered, each other task gets a slot of its own, then the lead names the first
    /// task. The slots, and the errors of the tasks that did not start.
    async fn launch_slots(
        &self,
        template: &PoolTemplate,
        count: u32,
    ) -> Result<(Vec<JobRecord>, Vec<Error>)> {
        let identity = self.new_slot_identity()?;
        let key = identity.key();
        let lock = self.store.lock(&key, Duration::ZERO).await?;
        let result = self
            .launch_slots_locked(&lock, identity, template, count)
            .await;
        self.release(lock).await;
        result
    }

    fn new_slot_identity(&self) -> Result<JobIdentity> {
        let n = crate::world::random_u64()
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("no randomness: {e}")))?;
        Ok(JobIdentity::pool_slot(self.namespace.clone(), n))
    }

    async fn launch_slots_locked(
        &self,
        lock: &JobLock,
        identity: JobIdentity,
        template: &PoolTemplate,
        count: u32,
    ) -> Result<(Vec<JobRecord>, Vec<Error>)> {
        let keys = self.shell.generate_key(self.options.ssh.key_type).await?;
        let now = crate::world::now();
        let max_idle = self.options.pool.max_idle;
        let deadline =
            whole_seconds_after(now, max_idle + self.options.timeouts.task_lifetime(None));
        let mut spec = TaskSpec::new(identity.clone(), template.definition())
            .with_shape(template.shape.clone())
            .with_deadline(deadline);
        spec.platform_version = template.platform_version.clone();
        spec.container_name = template.container_name.clone();
        spec.environment = BTreeMap::from([
            (SSH_PUBLIC_KEY_ENV.to_owned(), keys.public_key),
            (
                TASK_DEADLINE_ENV.to_owned(),
                unix_seconds(deadline).to_string(),
            ),
        ]);
        let mut record = JobRecord::new(identity, keys.private_key);
        let slot =
            PoolSlot::new(unix_seconds(now + max_idle)).with_template(template.fingerprint());
        record.pool = Some(slot.clone().with_batch(count));
        record.spec = Some(spec.clone());
        match self
            .launch_tasks(
                lock,
                &mut record,
                &spec,
                count,
                false,
                &CancellationToken::new(),
            )
            .await
        {
            Ok(batch) => {
                let mut slots = Vec::new();
                // The batch-mates' slots first: until the lead's record names its task,
                // a replay of its launch (which stops what no other record names) is
                // what ends them if this process dies.
                for launched in batch.tasks.iter().skip(1) {
                    let mate = self
                        .record_batch_mate(&record, &slot, launched.task.clone())
                        .await?;
                    slots.push(mate);
                }
                self.store.put_locked(lock, &record).await?;
                tracing::debug!(slot = %record.key, task = ?record.task, count, started = batch.tasks.len(), "started warm tasks");
                slots.insert(0, record);
                Ok((slots, batch.failures))
            }
            Err(err) if record.pending_attempts().next().is_some() => {
                // Unanswered (a timeout, a lost answer): the task may exist. The slot stays
                // recorded with the launch's client token; the next refill, `pool drain`
                // or `gc` replays it and stops what it started. Never forgotten.
                if let Err(put_err) = self.store.put_locked(lock, &record).await {
                    tracing::warn!(slot = %record.key, error = %put_err, "could not record an unanswered warm task launch");
                }
                Err(err.with_hint(
                    "the launch was not answered; the next refill stops the task it may have started",
                ))
            }
            Err(err) => {
                // Refused: no task; the record goes.
                let key = record.key.clone();
                if let Err(stop_err) = self.stop_job(lock, record).await {
                    tracing::warn!(slot = %key, error = %stop_err, "could not remove the record of a refused warm task launch");
                }
                Err(err)
            }
        }
    }

    /// Records a slot of its own for `task`, started by the launch of the batch whose lead
    /// is `lead` (under the lead's lock): the same pool key, template and spec (the
    /// call's), `slot`'s idle time.
    async fn record_batch_mate(
        &self,
        lead: &JobRecord,
        slot: &PoolSlot,
        task: TaskRef,
    ) -> Result<JobRecord> {
        let identity = self.new_slot_identity()?;
        let key = identity.key();
        let lock = self.store.lock(&key, Duration::ZERO).await?;
        let mut mate = JobRecord::new(identity, lead.private_key.clone());
        mate.pool = Some(slot.clone());
        mate.spec = lead.spec.clone();
        mate.task = Some(task);
        mate.phase = Phase::Launched;
        let result = self.store.put_locked(&lock, &mate).await;
        self.release(lock).await;
        result.map(|()| mate)
    }

    /// Waits until a slot's task answers SSH and takes its pool key; records its endpoint
    /// and host key (phase Ready).
    pub(super) async fn ready_slot(&self, slot: JobRecord) -> std::result::Result<(), String> {
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
                self.store.put_locked(&lock, &probe).await.map_err(fail)
            }
            _ => Ok(()),
        };
        self.release(lock).await;
        result
    }

    pub(super) async fn slot_infos(&self) -> Result<Vec<SlotInfo>> {
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
}
