//! The cleanup stage, and stopping everything a job owns (also prepare's rollback).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::{JobContext, JobIdentity, JobKey};
use crate::launcher::{StopOutcome, TaskRef};
use crate::metadata::{AttemptOutcome, JobLock, JobRecord, Phase};
use crate::observe::{StopCause, SummaryPoint};
use crate::world::unix_now;

use super::retry::with_retries;
use super::{CleanupReport, Driver};

/// Longest delay between two searches for a job's tasks while waiting out the consistency
/// window.
const SEARCH_MAX_DELAY: Duration = Duration::from_secs(5);

impl Driver {
    /// Stops every task of the job and deletes its record. Idempotent; needs no record.
    /// The exception: a job whose user step failed, of a project that keeps failed jobs'
    /// tasks for debugging, keeps its task ([`CleanupReport::kept`]; see the `keep` module).
    ///
    /// What it stops is the union of the tasks the record names, of those that replaying the
    /// record's unanswered launch attempts returns (same client token, same spec), and of
    /// those a search by the job's key finds. The record is deleted only when all of them
    /// are known to be stopping; otherwise it stays (phase `Stopping`) for a later cleanup
    /// and the error says why.
    ///
    /// # Cancel safety
    /// Safe to drop and to call again. It runs under the stop timeout
    /// ([`Timeouts::stop`](crate::options::Timeouts)) and takes no
    /// cancellation token: gitlab-runner never cancels cleanup.
    pub async fn cleanup(&self, job: &JobContext) -> std::result::Result<CleanupReport, Failure> {
        let identity = self.identity(job)?;
        let key = identity.key();
        let lock = self.lock_job(&key).await?;
        let result = match self.cleanup_locked(&lock, &identity, job).await {
            // The record goes last, with the lock (one request for a store that can).
            Ok((report, Some(record))) => self
                .remove_and_unlock(lock, &record)
                .await
                .map(|()| report)
                .map_err(Failure::from),
            result => {
                self.unlock_job(lock).await;
                result.map(|(report, _)| report)
            }
        };
        // The project's slot, once the job's tasks are stopped (a failed cleanup leaves the
        // record, which keeps the slot counted until a later cleanup or gc).
        if let (Ok(_), Some(slot)) = (&result, self.project_slot(&identity)) {
            self.give_back_project_slot(&slot, &key).await;
        }
        result
    }

    /// The part of cleanup that runs under the job's lock, `lock`; with the key of the
    /// record to delete as the lock is released, once its tasks are known to be stopping.
    async fn cleanup_locked(
        &self,
        lock: &JobLock,
        identity: &JobIdentity,
        job: &JobContext,
    ) -> std::result::Result<(CleanupReport, Option<JobKey>), Failure> {
        let key = identity.key();
        let record = self.load_record_for_cleanup(lock, identity, job).await?;
        // A failed job's task kept for debugging is not stopped.
        let kept = match &record {
            Some(record) => self.keep_failed(lock, identity, record).await,
            None => None,
        };
        let mut remove = None;
        let mut report = match (kept, record) {
            (Some(kept), _) => kept,
            (None, Some(record)) => {
                remove = Some(record.key.clone());
                let summary = match &record.task {
                    Some(task) => self.describe_for_summary(task).await.map(|details| {
                        self.summarize(SummaryPoint::Cleanup, task, details, None, None, None)
                    }),
                    None => None,
                };
                CleanupReport {
                    stopped: self.stop_job_tasks(lock, record).await?,
                    had_record: true,
                    summary,
                    kept: None,
                }
            }
            (None, None) => CleanupReport {
                stopped: self.stop_unrecorded(&key, None).await?,
                had_record: false,
                summary: None,
                kept: None,
            },
        };
        // A warm task the job claimed but had not recorded yet (prepare was killed).
        report.stopped.extend(self.stop_claimed_slots(&key).await);
        self.observe_stops(&report.stopped, StopCause::Cleanup);
        Ok((report, remove))
    }

    /// Reads the job's record (the job's lock is `lock`). An unreadable one is reported, its
    /// tasks are searched for by the job's key (through the whole consistency window, since
    /// it may hide a launch of a moment ago), and it is deleted once they are stopped.
    pub(super) async fn load_record_for_cleanup(
        &self,
        lock: &JobLock,
        identity: &JobIdentity,
        job: &JobContext,
    ) -> Result<Option<JobRecord>> {
        match self.load_record(identity, job, Some(lock)).await {
            Ok(r) => Ok(r),
            Err(err) if err.kind() == ErrorKind::CorruptRecord => {
                let key = identity.key();
                tracing::warn!(error = %err, "the job record is unreadable; looking for the job's tasks by its key");
                let window_end = Instant::now() + self.options.timeouts.consistency_window;
                self.stop_unrecorded(&key, Some(window_end)).await?;
                self.remove(lock, &key).await?;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Stops the tasks a search by `key` finds (searching until `window_end` when given),
    /// under the stop deadline.
    async fn stop_unrecorded(
        &self,
        key: &JobKey,
        window_end: Option<Instant>,
    ) -> Result<Vec<TaskRef>> {
        self.under_stop_deadline(key, async {
            let tasks = self.search(key, Vec::new(), window_end).await?;
            self.stop_all(key, &tasks, None).await?;
            Ok(tasks)
        })
        .await
    }

    /// Stops everything `record`'s job (or slot) owns, then deletes the record, as the
    /// holder of `lock`, the job's lock; see [`Driver::cleanup`].
    pub(super) async fn stop_job(&self, lock: &JobLock, record: JobRecord) -> Result<Vec<TaskRef>> {
        let key = record.key.clone();
        let tasks = self.stop_job_tasks(lock, record).await?;
        self.remove(lock, &key).await?;
        Ok(tasks)
    }

    /// [`Driver::stop_job`] but the delete: stops everything `record`'s job owns; the
    /// caller deletes the record (it may, once this succeeded).
    async fn stop_job_tasks(&self, lock: &JobLock, record: JobRecord) -> Result<Vec<TaskRef>> {
        let mut record = record;
        let key = lock.key();
        let result = self
            .under_stop_deadline(key, self.stop_recorded(lock, &mut record))
            .await;
        match result {
            Ok(tasks) => {
                // The job's tasks are stopping: what the launch made for them besides (for
                // ECS the job's secret) goes too. A failure leaves it to the backend's gc.
                if let Some(spec) = &record.spec
                    && let Err(err) = self.launcher.release(spec).await
                {
                    tracing::warn!(error = %err.chain(), "could not remove what the job's launch made besides its task; `fargate gc` will");
                }
                Ok(tasks)
            }
            Err(err) => {
                record.phase = Phase::Stopping;
                record.touch();
                if let Err(put_err) = self.save(lock, &record).await {
                    tracing::warn!(error = %put_err, "could not update the job record");
                }
                Err(err)
            }
        }
    }

    async fn stop_recorded(&self, lock: &JobLock, record: &mut JobRecord) -> Result<Vec<TaskRef>> {
        let key = lock.key();
        if record.phase != Phase::Stopping {
            record.phase = Phase::Stopping;
            record.touch();
            if let Err(err) = self.save(lock, record).await {
                // Another holder owns the job now: it decides what to stop.
                if err.kind() == ErrorKind::LockLost {
                    return Err(err);
                }
                tracing::warn!(error = %err, "could not mark the record as stopping");
            }
        }
        // Launch attempts whose answer was lost: replaying them with the same token and
        // spec returns the task they started (or starts one, which is stopped below).
        let mut unresolved = false;
        // A warm pool batch's slot: its launch started `batch` tasks, replayed as such.
        let batch = record.pool.as_ref().and_then(|p| p.batch).unwrap_or(1);
        let mut replayed = Vec::new();
        if let Some(spec) = record.spec.clone() {
            let pending: Vec<String> = record
                .pending_attempts()
                .map(|a| a.client_token.clone())
                .collect();
            for token in pending {
                let replay = spec.clone().with_client_token(token.clone());
                match with_retries(
                    &self.options.retry,
                    "replaying a launch",
                    &*self.observer,
                    || async {
                        if batch == 1 {
                            return self.launcher.launch(&replay).await.map(|t| vec![t]);
                        }
                        let launched = self.launcher.launch_batch(&replay, batch).await?;
                        Ok(launched.tasks.into_iter().map(|l| l.task).collect())
                    },
                )
                .await
                {
                    Ok(tasks) => {
                        let mut tasks = tasks.into_iter();
                        if let Some(task) = tasks.next() {
                            tracing::info!(task = %task, "a launch whose answer was lost started this task");
                            record.settle(&token, AttemptOutcome::Accepted { task });
                        }
                        replayed.extend(tasks);
                    }
                    Err(err) => {
                        // Not proof that the first call started nothing (another spec, say):
                        // only a search after the consistency window is.
                        tracing::warn!(error = %err, "replaying a launch failed; searching for its task instead");
                        unresolved = true;
                    }
                }
            }
        } else if record.task.is_none() {
            // A record of an earlier format that never got its task: nothing to replay.
            unresolved = true;
        }
        let launched_at = record
            .first_launch_at()
            .or((record.created_at > 0).then_some(record.created_at));
        // While an unresolved launch may still become visible, keep searching until the
        // consistency window after it has passed.
        let window_end = unresolved.then(|| {
            let since = unix_now().saturating_sub(launched_at.unwrap_or_else(unix_now));
            Instant::now()
                + self
                    .options
                    .timeouts
                    .consistency_window
                    .saturating_sub(Duration::from_secs(since))
        });
        // Stop what is known first, so that a slow or failing search cannot keep it running.
        let mut known = record.known_tasks();
        if batch > 1 {
            // The batch's other tasks carry this slot's key too: only those no other
            // record names (their slots, or the jobs that claimed them) are this slot's.
            replayed.retain(|t| !known.contains(t));
            known.extend(replayed);
            let others = self.named_by_others(key).await?;
            known.retain(|t| !others.contains(&t.id));
            self.stop_all(key, &known, launched_at).await?;
            let tasks = self.search(key, known.clone(), window_end).await?;
            let others = self.named_by_others(key).await?;
            let found: Vec<TaskRef> = tasks
                .into_iter()
                .filter(|t| !known.contains(t) && !others.contains(&t.id))
                .collect();
            self.stop_all(key, &found, launched_at).await?;
            known.extend(found);
            return Ok(known);
        }
        self.stop_all(key, &known, launched_at).await?;
        let tasks = self.search(key, known.clone(), window_end).await?;
        let found: Vec<TaskRef> = tasks
            .iter()
            .filter(|t| !known.contains(t))
            .cloned()
            .collect();
        self.stop_all(key, &found, launched_at).await?;
        Ok(tasks)
    }

    /// The tasks (ids) that records of the namespace other than `key`'s name, read now.
    async fn named_by_others(&self, key: &JobKey) -> Result<std::collections::BTreeSet<String>> {
        let owners = crate::gc::owners(&*self.store, &self.namespace).await?;
        Ok(owners
            .into_iter()
            .filter(|(_, owner)| owner != key)
            .map(|(task, _)| task)
            .collect())
    }

    /// `known` plus what `find` returns for `key`. With `window_end`, searches again (with
    /// growing delays) until the window has passed, since a task launched moments ago may
    /// not be listed yet.
    async fn search(
        &self,
        key: &JobKey,
        known: Vec<TaskRef>,
        window_end: Option<Instant>,
    ) -> Result<Vec<TaskRef>> {
        let mut tasks = known;
        let mut delay = Duration::from_millis(500);
        loop {
            let found = with_retries(
                &self.options.retry,
                "finding the job's tasks",
                &*self.observer,
                || self.launcher.find(key),
            )
            .await?;
            for task in found {
                if !tasks.iter().any(|t| t.id == task.id) {
                    tracing::info!(task = %task, "found a task of the job by its key");
                    tasks.push(task);
                }
            }
            match window_end {
                Some(end) if Instant::now() < end => {
                    tracing::debug!("a launch of the job may not be listed yet; searching again");
                    tokio::time::sleep(delay.min(end - Instant::now())).await;
                    delay = (delay * 2).min(SEARCH_MAX_DELAY);
                }
                _ => return Ok(tasks),
            }
        }
    }

    /// Asks the launcher to stop each task. A task the launcher does not know is gone, except
    /// within the consistency window after `launched_at` (seconds since the epoch), when it
    /// may not be visible yet: then stopping is tried again until it works or the window
    /// passes.
    async fn stop_all(
        &self,
        key: &JobKey,
        tasks: &[TaskRef],
        launched_at: Option<u64>,
    ) -> Result<()> {
        let reason = format!("fargate driver: job {key} finished");
        let window = self.options.timeouts.consistency_window;
        for task in tasks {
            tracing::debug!(task = %task, "stopping the task");
            let mut delay = Duration::from_millis(500);
            loop {
                let outcome = with_retries(
                    &self.options.retry,
                    "stopping the task",
                    &*self.observer,
                    || self.launcher.stop(task, &reason),
                )
                .await?;
                let young =
                    launched_at.is_some_and(|at| unix_now().saturating_sub(at) < window.as_secs());
                match outcome {
                    StopOutcome::NotFound if young => {
                        tracing::debug!(task = %task, "the backend does not know the task yet; trying again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(SEARCH_MAX_DELAY);
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Runs `work` under the stop timeout ([`Timeouts::stop`](crate::options::Timeouts)).
    async fn under_stop_deadline<T>(
        &self,
        key: &JobKey,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let deadline = self.options.timeouts.stop;
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "stopping the job's tasks took longer than {} s",
                    deadline.as_secs()
                ),
            )
            .with_context("job", key)
            .with_hint("the record is kept; the cleanup stage (or a later one) will try again")),
        }
    }
}
