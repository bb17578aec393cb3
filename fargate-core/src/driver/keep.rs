//! Keeping a failed job's task for debugging: a project rule's
//! [`keep_failed_for`](crate::options::ProjectRule::keep_failed_for).
//!
//! ```text
//! prepare:  the project (JOB_RESPONSE_FILE) keeps failed tasks: the task gets shell access
//!           (TaskShape::debug_access; for ECS, enableExecuteCommand)
//! run:      a user step (build_script, step_*) whose script fails (a script failure: not
//!           a cancel, a lost task or connection) ─ lock ─ get ─ put(failed_step) ─ the job
//!           log says how long the task is kept, how to enter it and how to stop it early;
//!           the last run stage (cleanup_file_variables) says it again, as the log's end
//! cleanup:  lock ─ get ─ a failed step is recorded and the project still keeps tasks:
//!           put(Kept, kept_until = now + keep) ─ the task's self-stop gets kept_until (over
//!           SSH, as a warm pool claim does) ─ its labels get kept_until (adopt) ─ the task
//!           keeps running; anything failing: stopped as usual
//! gc:       judges a kept task under its job's lock by kept_until (and by its deadline
//!           label): kept before, stopped after, then the record goes
//! release:  lock ─ get(Kept) ─ stop ─ delete (Driver::release_kept)
//! ```
//!
//! Only the job's trusted project (`JOB_RESPONSE_FILE`) counts, never a job variable, and
//! only a task that was started with shell access is kept. A kept task still holds
//! everything the job had: its files, variables and secrets, and its task role.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{IdentitySource, JobIdentity, JobKey, JobResponse};
use crate::launcher::{DebugCommands, TaskRef, TaskSpec};
use crate::metadata::{JobLock, JobRecord, Phase};
use crate::observe::{Event, JobSummary, StopCause, SummaryPoint};
use crate::shell::{CapturedOutput, OutputSink, RunOutcome, RunRequest};
use crate::world::{from_unix_seconds, human_duration, unix_seconds, whole_seconds_after};

use super::pool::DEADLINE_FILE_ENV;
use super::retry::with_retries;
use super::{CleanupReport, Driver};

/// The run stage gitlab-runner runs last, whatever became of the job: the keep message is
/// repeated at its end, so that it is the job log's last lines.
pub const LAST_RUN_STAGE: &str = "cleanup_file_variables";

/// Whether `stage` is one of the job's own steps (`build_script`, `step_*`), whose failure
/// fails the job.
pub fn is_user_step(stage: &str) -> bool {
    stage == "build_script" || stage.starts_with("step_")
}

/// A failed job's task, kept running for debugging ([`Phase::Kept`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeptTask {
    /// The job's key.
    pub job: JobKey,
    /// GitLab's job id (what `release` takes).
    pub job_id: u64,
    /// The job's project (`group/project`), when GitLab said.
    pub project: Option<String>,
    /// The step whose script failed.
    pub failed_step: Option<String>,
    /// The task.
    pub task: TaskRef,
    /// Seconds since the epoch until which it is kept.
    pub until: u64,
    /// How to enter it and stop it with the backend's tools, when the backend says.
    pub commands: Option<DebugCommands>,
}

impl KeptTask {
    /// The time left at `now` (zero once it is up).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        from_unix_seconds(self.until)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Display for KeptTask {
    /// `job 42 (group/project, build_script failed): task ARN, kept 29 min 10 s more`,
    /// then the commands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut about = Vec::new();
        if let Some(p) = &self.project {
            about.push(p.clone());
        }
        if let Some(s) = &self.failed_step {
            about.push(format!("{s} failed"));
        }
        let left = self.remaining(crate::world::now());
        write!(
            f,
            "job {} ({}): task {}, kept {} more (until {} Unix seconds)",
            self.job_id,
            about.join(", "),
            self.task,
            human_duration(left),
            self.until
        )?;
        if let Some(c) = &self.commands {
            write!(f, "\n  enter: {}\n  stop:  {}", c.enter, c.stop)?;
        }
        write!(f, "\n  stop:  fargate release {}", self.job_id)
    }
}

/// The lines the job log gets when a kept job fails: how long, how to enter, how to stop.
fn keep_message(
    job_id: u64,
    keep: Duration,
    rule: &str,
    commands: Option<&DebugCommands>,
) -> String {
    let mut m = format!(
        "\nfargate: this job failed; its task stays up for {} after the job ends, for debugging \
         (project rule {rule:?}).\n\
         fargate: it still holds this job's files, variables and secrets, and its role: whoever may \
         enter it sees them.\n",
        human_duration(keep)
    );
    if let Some(c) = commands {
        m.push_str(&format!("fargate: enter it:\n    {}\n", c.enter));
    }
    m.push_str(&format!(
        "fargate: stop it early (on the runner host):\n    fargate release {job_id}\n"
    ));
    if let Some(c) = commands {
        m.push_str(&format!("fargate: or:\n    {}\n", c.stop));
    }
    m
}

/// The script that writes `deadline` (Unix seconds) where the task's self-stop reads it
/// (`$FARGATE_DEADLINE_FILE`, default `~/.fargate-deadline`), atomically.
pub(super) fn deadline_script(deadline: u64) -> String {
    format!(
        "d=\"${{{DEADLINE_FILE_ENV}:-$HOME/.fargate-deadline}}\"\n\
         printf '%s\\n' {deadline} > \"$d.fargate-swap.$$\"\n\
         mv -f \"$d.fargate-swap.$$\" \"$d\"\n"
    )
}

/// The container a person debugging the job wants a shell in: the job's own image's when
/// it has one, else the one its scripts ran in.
fn debug_container(spec: &TaskSpec) -> &str {
    if spec.images.is_some() {
        crate::images::JOB_CONTAINER
    } else {
        &spec.container_name
    }
}

impl Driver {
    /// How long the task of `record`'s job is kept if the job fails, with the rule that
    /// says so: only for a task started with shell access, of a job whose project
    /// `JOB_RESPONSE_FILE` names and a project rule keeps failed tasks of.
    fn keep_time(&self, identity: &JobIdentity, record: &JobRecord) -> Option<(Duration, String)> {
        if identity.source != IdentitySource::JobResponse
            || !record.spec.as_ref().is_some_and(|s| s.shape.debug_access)
        {
            return None;
        }
        self.options
            .shape
            .keep_failed_for(identity.project_path.as_deref(), identity.project_id)
            .map(|(d, rule)| (d, rule.to_owned()))
    }

    /// After a run stage: when a user step of a job that keeps its failed task failed as a
    /// script failure, records the failed step and writes the keep message to `output`; at
    /// the end of [`LAST_RUN_STAGE`], says it again. Never fails the stage.
    pub(super) async fn after_run_stage(
        &self,
        identity: &JobIdentity,
        record: &JobRecord,
        stage: &str,
        script_failed: bool,
        output: &mut dyn OutputSink,
    ) {
        let Some((keep, rule)) = self.keep_time(identity, record) else {
            return;
        };
        let say = if script_failed && is_user_step(stage) {
            match self.mark_failed_step(&identity.key(), record, stage).await {
                Ok(marked) => marked,
                Err(err) => {
                    tracing::warn!(error = %err, "could not record the failed step; the task is stopped at cleanup");
                    false
                }
            }
        } else {
            stage == LAST_RUN_STAGE && record.failed_step.is_some()
        };
        if !say {
            return;
        }
        let commands = match (&record.task, &record.spec) {
            (Some(task), Some(spec)) => self.launcher.debug_commands(task, debug_container(spec)),
            _ => None,
        };
        let message = keep_message(identity.job_id, keep, &rule, commands.as_ref());
        if let Err(err) = output.stdout(message.as_bytes()) {
            tracing::warn!(error = %err, "could not write the keep message to the job log");
        }
    }

    /// Records `stage` as the job's failed step, under the job's lock, on the record read
    /// after taking it; `false` when the record no longer names the stage's task in
    /// [`Phase::Ready`].
    async fn mark_failed_step(&self, key: &JobKey, seen: &JobRecord, stage: &str) -> Result<bool> {
        let lock = self.lock_job(key).await?;
        let result = async {
            let Some(mut record) = self.store.get_locked(&lock).await? else {
                return Ok(false);
            };
            if record.phase != Phase::Ready || record.task != seen.task {
                return Ok(false);
            }
            if record.failed_step.is_none() {
                record.failed_step = Some(stage.to_owned());
                record.touch();
                self.save(&lock, &record).await?;
            }
            Ok(true)
        }
        .await;
        self.unlock_job(lock).await;
        result
    }

    /// Part of cleanup, under the job's lock: when the job failed in a user step and its
    /// project keeps failed tasks, keeps the task until now + the keep time and reports it;
    /// `Ok(None)` when the task is to be stopped as usual (also when keeping it failed:
    /// then `record` is still to be stopped).
    pub(super) async fn keep_failed(
        &self,
        lock: &JobLock,
        identity: &JobIdentity,
        record: &JobRecord,
    ) -> Option<CleanupReport> {
        let (keep, _) = self.keep_time(identity, record)?;
        let task = record.task.clone()?;
        // Only a plain case is kept: the one task of a ready job that failed, no launch
        // left unanswered (whose task would have to be stopped beside it).
        if record.failed_step.is_none()
            || record.phase != Phase::Ready
            || record.pending_attempts().next().is_some()
            || record.known_tasks() != [task.clone()]
        {
            return None;
        }
        let details = self.describe_for_summary(&task).await;
        match self.keep_task(lock, record.clone(), &task, keep).await {
            Ok(kept) => {
                tracing::info!(task = %task, until = kept.until, "the failed job's task is kept for debugging for {}", human_duration(keep));
                let summary = details.map(|d| self.summarize_kept(&task, d, keep));
                self.observe(Event::Kept {
                    task: task.clone(),
                    until: from_unix_seconds(kept.until),
                });
                Some(CleanupReport {
                    stopped: Vec::new(),
                    had_record: true,
                    summary,
                    kept: Some(kept),
                })
            }
            Err(err) => {
                tracing::warn!(task = %task, error = %err, "could not keep the failed job's task for debugging; stopping it");
                None
            }
        }
    }

    /// Keeps `task` of `record` until now + `keep`: the record first (so that gc keeps the
    /// task until then, and stops it after), then the task's self-stop and its labels.
    async fn keep_task(
        &self,
        lock: &JobLock,
        mut record: JobRecord,
        task: &TaskRef,
        keep: Duration,
    ) -> Result<KeptTask> {
        let until = whole_seconds_after(crate::world::now(), keep);
        let until_secs = unix_seconds(until);
        let (Some(mut endpoint), Some(spec)) = (record.endpoint, record.spec.clone()) else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "the job's record has no endpoint or launch",
            ));
        };
        record.phase = Phase::Kept;
        record.kept_until = Some(until_secs);
        let spec = spec.with_deadline(until);
        record.spec = Some(spec.clone());
        record.touch();
        self.save(lock, &record).await?;

        // The task's self-stop: the same file a warm pool claim writes.
        if endpoint.port == 0 {
            endpoint.port = self.options.ssh.port;
        }
        let request = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: record.private_key.clone(),
            host_key: record.host_key.clone(),
            script: Arc::from(format!("set -eu\n{}", deadline_script(until_secs)).into_bytes()),
        };
        let mut out = CapturedOutput::default();
        let outcome = tokio::time::timeout(
            self.options.timeouts.stop,
            self.shell
                .run(&request, &mut out, &CancellationToken::new()),
        )
        .await
        .unwrap_or_else(|_| Err(Error::timeout("telling the task its new deadline")))?;
        if outcome != RunOutcome::Exited(0) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!(
                    "writing the task's new deadline ended with {outcome:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        // Its labels: what gc and other tools read.
        with_retries(
            &self.options.retry,
            "relabelling the kept task",
            &*self.observer,
            || self.launcher.adopt(task, &spec),
        )
        .await?;
        let identity = record.identity.clone();
        Ok(KeptTask {
            job: record.key.clone(),
            job_id: identity.as_ref().map_or(0, |i| i.job_id),
            project: identity.and_then(|i| i.project_path),
            failed_step: record.failed_step.clone(),
            task: task.clone(),
            until: until_secs,
            commands: self.launcher.debug_commands(task, debug_container(&spec)),
        })
    }

    /// The cleanup summary of a kept task: its cost estimate includes the time it is kept.
    fn summarize_kept(
        &self,
        task: &TaskRef,
        details: crate::task_details::TaskDetails,
        keep: Duration,
    ) -> JobSummary {
        let mut summary = JobSummary::new(SummaryPoint::Cleanup, task.clone(), details);
        summary.kept_for = Some(keep);
        summary.cost = summary
            .run_time()
            .and_then(|run| self.prices.estimate(&summary.details, run + keep));
        self.observe(Event::Summary(Box::new(summary.clone())));
        summary
    }

    /// Stops the task of job `job_id` of this driver's namespace that is kept for debugging
    /// ([`Phase::Kept`]) before its time is up, and forgets the job, under the job's lock.
    /// A job whose task is not kept (it runs, or is gone) is an error, and nothing is
    /// stopped: a running job's own cleanup stops its task.
    pub async fn release_kept(&self, job_id: u64) -> Result<Vec<TaskRef>> {
        let identity =
            JobIdentity::from_response(self.namespace.clone(), &JobResponse::new(job_id));
        let key = identity.key();
        let lock = self.lock_job(&key).await?;
        let result = async {
            let record = self.store.get_locked(&lock).await?;
            match record {
                Some(record) if record.phase == Phase::Kept => {
                    let stopped = self.stop_job(&lock, record).await?;
                    self.observe_stops(&stopped, StopCause::Release);
                    Ok(stopped)
                }
                Some(record) => Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the task of job {job_id} is not kept for debugging (its record is {:?})",
                        record.phase
                    ),
                )
                .with_context("job", &key)
                .with_hint("a job that still runs stops its task at its own cleanup")),
                None => Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "job {job_id} has no task kept for debugging in namespace {}",
                        self.namespace
                    ),
                )
                .with_context("job", &key)
                .with_hint(
                    "`fargate kept` lists the kept tasks; one whose time was up is gone already",
                )),
            }
        }
        .await;
        self.unlock_job(lock).await;
        result
    }

    /// The tasks of this driver's namespace kept for debugging, soonest to end first, as
    /// their records say (no backend call, no lock).
    pub async fn kept_tasks(&self) -> Result<Vec<KeptTask>> {
        let mut kept = Vec::new();
        for key in self.store.list().await? {
            if !key.belongs_to(&self.namespace) {
                continue;
            }
            let Ok(Some(record)) = self.store.get(&key).await else {
                continue;
            };
            let (Phase::Kept, Some(task), Some(until)) =
                (record.phase, record.task.clone(), record.kept_until)
            else {
                continue;
            };
            let identity = record.identity.clone();
            kept.push(KeptTask {
                job: key,
                job_id: identity.as_ref().map_or(0, |i| i.job_id),
                project: identity.and_then(|i| i.project_path),
                failed_step: record.failed_step.clone(),
                commands: record
                    .spec
                    .as_ref()
                    .and_then(|s| self.launcher.debug_commands(&task, debug_container(s))),
                task,
                until,
            });
        }
        kept.sort_by_key(|k| (k.until, k.job_id));
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_steps_are_the_jobs_own() {
        for stage in ["build_script", "step_script", "step_release"] {
            assert!(is_user_step(stage), "{stage}");
        }
        for stage in [
            "after_script",
            "prepare_script",
            "get_sources",
            LAST_RUN_STAGE,
        ] {
            assert!(!is_user_step(stage), "{stage}");
        }
    }

    #[test]
    fn the_message_says_how_long_how_to_enter_and_how_to_stop() {
        let commands = DebugCommands::new("enter-cmd --task t", "stop-cmd --task t");
        let m = keep_message(42, Duration::from_secs(1800), "debug", Some(&commands));
        assert!(m.contains("stays up for 30 min after the job ends"), "{m}");
        assert!(m.contains("(project rule \"debug\")"), "{m}");
        assert!(m.contains("secrets"), "{m}");
        assert!(m.contains("\n    enter-cmd --task t\n"), "{m}");
        assert!(m.contains("\n    fargate release 42\n"), "{m}");
        assert!(m.ends_with("\n    stop-cmd --task t\n"), "{m}");
        let bare = keep_message(42, Duration::from_secs(60), "debug", None);
        assert!(!bare.contains("fargate: enter it:"), "{bare}");
        assert!(bare.ends_with("fargate release 42\n"), "{bare}");
    }
}
