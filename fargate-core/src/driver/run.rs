//! The run stage: one stage script in the job's task.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::JobContext;
use crate::launcher::{StopDetails, TaskRef, TaskState, TaskStatus};
use crate::metadata::{JobRecord, Phase};
use crate::setting::Setting;
use crate::shell::{OutputSink, RunOutcome, RunRequest};
use crate::world::unix_now;

use super::Driver;

/// Bound on one `describe` made to watch or explain (no retries: the next check comes).
const WATCH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

enum Watched {
    Finished(Result<RunOutcome>),
    TaskStopped(StopDetails),
}

impl Driver {
    /// Runs one stage script in the job's task.
    ///
    /// # Cancel safety
    /// Cancel through `cancel` to stop the remote script (it is signalled and its process
    /// group killed). Dropping the future leaves the remote script running until the task
    /// stops.
    pub async fn run(
        &self,
        job: &JobContext,
        stage: &str,
        script: Arc<[u8]>,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let identity = self.identity(job)?;
        let key = identity.key();
        let record = self.load_record(&identity, job, None).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "there is no job record: the prepare stage did not succeed, or cleanup already ran",
            )
            .with_operation(format!("the {stage} stage"))
            .with_context("job", &key)
            .with_hint("check the prepare stage's log above; the metadata directory and the namespace must be the same for all stages")
            .with_setting(Setting::MetadataDirectory)
            .with_setting(Setting::Namespace)
        })?;
        let (Phase::Ready, Some(task), Some(mut endpoint)) =
            (record.phase, record.task.clone(), record.endpoint)
        else {
            return Err(Error::new(ErrorKind::InvalidInput, "the job is not ready")
                .with_operation(format!("the {stage} stage"))
                .with_context("job", &key)
                .with_context("phase", format!("{:?}", record.phase))
                .with_hint("prepare did not finish; see its log above")
                .into());
        };
        if endpoint.port == 0 {
            endpoint.port = self.options.ssh.port;
        }
        let (endpoint, host_key) =
            Driver::stage_login(&record, stage, endpoint, record.host_key.clone());
        let request = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: record.private_key.clone(),
            host_key,
            script,
        };
        tracing::debug!(%stage, %endpoint, "running the stage script in the task");
        // The job's heartbeat as the stage starts, beside the script, and never cut short
        // by a script that ends first (a store may skip it: see `MetadataStore::heartbeat`).
        let (watched, ()) = tokio::join!(
            self.run_watched(&task, &record, &request, output, cancel),
            self.beat(&record.key, &task)
        );
        let outcome = match watched {
            Watched::Finished(outcome) => outcome,
            Watched::TaskStopped(details) => {
                self.note_reclaim(job, &identity, &details).await;
                return Err(Error::new(
                    ErrorKind::TaskStopped,
                    format!("the task stopped while the {stage} script was running: {details}"),
                )
                .with_context("task", &task)
                .with_hint("the reason above comes from the launcher (e.g. the container ran out of memory, or spot capacity was reclaimed)")
                .into());
            }
        };
        // The script ran and failed: not a cancel, nor a lost task or connection.
        let script_failed = matches!(outcome, Ok(RunOutcome::Signaled { .. }))
            || matches!(outcome, Ok(RunOutcome::Exited(code)) if code != 0);
        let result = match outcome {
            Ok(RunOutcome::Exited(0)) => Ok(()),
            Ok(RunOutcome::Exited(code)) => Err(Failure::script(
                code,
                format!("the {stage} script exited with status {code}"),
            )),
            Ok(RunOutcome::Signaled { signal }) => {
                let code = 128 + signal_number(&signal).unwrap_or(0);
                Err(Failure::script(
                    code,
                    format!("the {stage} script was killed by signal {signal}"),
                ))
            }
            Err(err) if err.kind() == ErrorKind::Cancelled => Err(err.into()),
            Err(err) => {
                let (err, stop) = self.explain_with_task_state(&task, &record, err).await;
                if let Some(details) = stop {
                    self.note_reclaim(job, &identity, &details).await;
                }
                Err(err.into())
            }
        };
        // A failed job whose project keeps failed tasks: the job log says so (see `keep`).
        self.after_run_stage(&identity, &record, stage, script_failed, output)
            .await;
        result
    }

    /// Runs the script while, beside it, checking at the watch interval that the
    /// task still runs; a stopped task cancels the script.
    ///
    /// The check is its own future, polled next to the script's: a slow or unreachable backend
    /// API never stalls the output or delays a cancel. Each check has a short timeout and no
    /// retries (the next check comes anyway).
    async fn run_watched(
        &self,
        task: &TaskRef,
        record: &JobRecord,
        request: &RunRequest,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Watched {
        let interval = self.options.timeouts.watch;
        let script_cancel = cancel.child_token();
        let run = self.shell.run(request, output, &script_cancel);
        let check = async {
            if interval.is_zero() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(interval).await;
                if let Some(status) = self.stopped_status(task, record).await {
                    return status.stop.unwrap_or_default();
                }
            }
        };
        // The job's heartbeat while the script runs (the stage's caller notes the first):
        // for `gc` on other hosts.
        let beat = async {
            loop {
                tokio::time::sleep(super::HEARTBEAT_EVERY).await;
                self.beat(&record.key, task).await;
            }
        };
        let watch = async {
            tokio::pin!(check, beat);
            tokio::select! {
                biased;
                details = &mut check => details,
                never = &mut beat => never,
            }
        };
        tokio::pin!(run, watch);
        // Biased: the same order every time (a deterministic test replays a seed exactly).
        tokio::select! {
            biased;
            r = &mut run => Watched::Finished(r),
            details = &mut watch => {
                tracing::debug!(task = %task, "the task stopped while the script was running");
                script_cancel.cancel();
                // The shell stops the remote script within its own bound.
                let _ = run.await;
                Watched::TaskStopped(details)
            }
        }
    }

    /// The task's status when one quick describe says it stopped (or is unknown to the
    /// launcher although it was launched longer ago than the consistency window).
    async fn stopped_status(&self, task: &TaskRef, record: &JobRecord) -> Option<TaskStatus> {
        let status = tokio::time::timeout(WATCH_CALL_TIMEOUT, self.launcher.describe(task))
            .await
            .ok()?
            .ok()?;
        let forgotten = status.state == TaskState::Missing
            && record.first_launch_at().is_some_and(|at| {
                unix_now().saturating_sub(at) >= self.options.timeouts.consistency_window.as_secs()
            });
        (status.state.is_terminal() || forgotten).then_some(status)
    }

    /// When SSH fails, the task stopping is the likeliest cause: say so if it is, with why
    /// it stopped.
    async fn explain_with_task_state(
        &self,
        task: &TaskRef,
        record: &JobRecord,
        err: Error,
    ) -> (Error, Option<StopDetails>) {
        if !matches!(
            err.kind(),
            ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::Unexpected
        ) {
            return (err, None);
        }
        match self.stopped_status(task, record).await {
            Some(status) => {
                let details = status.stop.unwrap_or_default();
                let err = Error::new(
                    ErrorKind::TaskStopped,
                    format!("the task stopped: {details} ({})", err.message()),
                )
                .with_context("task", task)
                .with_hint("the reason comes from the launcher (e.g. the container ran out of memory, or spot capacity was reclaimed)")
                .with_source(err);
                (err, Some(details))
            }
            None => (err, None),
        }
    }
}

/// POSIX signal numbers of the names SSH reports (Linux numbering).
fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}
