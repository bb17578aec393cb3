//! Launching the job's task: each attempt's client token recorded before the call, retried
//! on the one retry engine, and a call in flight waited for after a cancel.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cancel::CancelBudget;
use crate::error::{Error, ErrorKind, Result};
use crate::launcher::{Launched, LaunchedBatch, TaskSpec};
use crate::metadata::{AttemptOutcome, JobLock, JobRecord, LaunchAttempt, Phase};

use super::super::Driver;
use super::super::retry::{Failed, Retry};

/// How long a cancelled prepare still waits for a launch call in flight, so that the task
/// it may start is known and stopped rather than left behind.
pub(in crate::driver) const LAUNCH_SETTLE: Duration = CancelBudget::DEFAULT.launch_settle;

impl Driver {
    /// Launches `spec`, retrying under the options' [`RetryPolicy`](crate::retry::RetryPolicy): a failure whose outcome is unknown (no
    /// answer) is retried with the same client token, so it can start at most one task; a
    /// definite refusal that may pass (throttling, capacity) is retried with a new token.
    /// Each token is recorded (and the record written, under `lock`) before it is sent.
    ///
    /// With `fail_fast_on_capacity` (the job has a capacity to fall back to), a capacity
    /// error is returned at once.
    pub(in crate::driver) async fn launch(
        &self,
        lock: &JobLock,
        record: &mut JobRecord,
        spec: &TaskSpec,
        fail_fast_on_capacity: bool,
        cancel: &CancellationToken,
    ) -> Result<Launched> {
        let batch = self
            .launch_tasks(lock, record, spec, 1, fail_fast_on_capacity, cancel)
            .await?;
        batch
            .tasks
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "the launcher started no task"))
    }

    /// [`launch`](Driver::launch) of `count` tasks in one call
    /// ([`TaskLauncher::launch_batch`](crate::TaskLauncher::launch_batch)); the record names
    /// the first.
    pub(in crate::driver) async fn launch_tasks(
        &self,
        lock: &JobLock,
        record: &mut JobRecord,
        spec: &TaskSpec,
        count: u32,
        fail_fast_on_capacity: bool,
        cancel: &CancellationToken,
    ) -> Result<LaunchedBatch> {
        // The token to send again: that of an attempt whose outcome is unknown.
        let mut replay: Option<String> = None;
        let mut retry = Retry::new(&self.options.retry, "starting the task", &*self.observer)
            .cancelled_by(cancel);
        loop {
            let attempt = self
                .launch_attempt(
                    lock,
                    record,
                    (spec, count),
                    &mut replay,
                    fail_fast_on_capacity,
                    cancel,
                )
                .await;
            let failed = match attempt {
                Ok(launched) => return Ok(launched),
                Err(failed) => failed,
            };
            retry
                .failed(failed, |err, attempt, delay| {
                    tracing::warn!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        same_token = err.outcome_unknown(),
                        error = %err,
                        "starting the task failed, retrying"
                    );
                })
                .await?;
        }
    }

    /// One attempt of [`launch_tasks`](Driver::launch_tasks) of `count` tasks of `spec`:
    /// sends `replay`'s token (taken) or a new one, recorded before the call; after an
    /// unknown outcome leaves the token in `replay` for the next attempt.
    async fn launch_attempt(
        &self,
        lock: &JobLock,
        record: &mut JobRecord,
        (spec, count): (&TaskSpec, u32),
        replay: &mut Option<String>,
        fail_fast_on_capacity: bool,
        cancel: &CancellationToken,
    ) -> std::result::Result<LaunchedBatch, Failed> {
        let token = match replay.take() {
            Some(token) => token,
            None => {
                let token = crate::world::client_token();
                record.attempts.push(LaunchAttempt::pending(token.clone()));
                record.touch();
                self.save(lock, record).await.map_err(Failed::Return)?;
                token
            }
        };
        let result = self
            .launch_settled(
                &spec.clone().with_client_token(token.clone()),
                count,
                cancel,
            )
            .await;
        match result {
            Ok(launched) => {
                let Some(task) = launched.tasks.first().map(|l| l.task.clone()) else {
                    return Err(Failed::GiveUp(Error::new(
                        ErrorKind::Unexpected,
                        "the launcher answered a launch without a task",
                    )));
                };
                record.settle(&token, AttemptOutcome::Accepted { task: task.clone() });
                record.task = Some(task);
                record.phase = Phase::Launched;
                record.touch();
                if cancel.is_cancelled() {
                    return Err(Failed::Return(Error::cancelled("starting the task")));
                }
                Ok(launched)
            }
            Err(err) => {
                let unknown = err.outcome_unknown();
                if !unknown {
                    record.settle(&token, AttemptOutcome::Refused);
                }
                if cancel.is_cancelled() || err.kind() == ErrorKind::Cancelled {
                    return Err(Failed::Return(Error::cancelled("starting the task")));
                }
                let retryable = (unknown || err.is_temporary())
                    && !(fail_fast_on_capacity && err.kind() == ErrorKind::CapacityUnavailable);
                if !retryable {
                    return Err(Failed::GiveUp(err));
                }
                // Sent again only if the engine retries.
                *replay = unknown.then_some(token);
                Err(Failed::Retry(err))
            }
        }
    }

    /// One launch call. When `cancel` fires while it is in flight, the call is not dropped:
    /// it gets [`LAUNCH_SETTLE`] more to answer, so the task it may start is known.
    async fn launch_settled(
        &self,
        spec: &TaskSpec,
        count: u32,
        cancel: &CancellationToken,
    ) -> Result<LaunchedBatch> {
        let call = async {
            if count == 1 {
                let launched = self.launcher.launch_observed(spec).await?;
                return Ok(LaunchedBatch::new(vec![launched]));
            }
            self.launcher.launch_batch(spec, count).await
        };
        tokio::pin!(call);
        tokio::select! {
            biased;
            r = &mut call => r,
            _ = cancel.cancelled() => {
                tracing::warn!("cancelled while starting the task; waiting for the launcher's answer so that the task can be stopped");
                match tokio::time::timeout(LAUNCH_SETTLE, &mut call).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::timeout("starting the task after a cancel")),
                }
            }
        }
    }
}
