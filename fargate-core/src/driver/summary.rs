//! The job's summary ([`JobSummary`]) and the driver's events ([`crate::observe`]).

use std::time::{Duration, SystemTime};

use crate::launcher::TaskRef;
use crate::observe::{Event, JobSummary, StopCause, SummaryPoint};
use crate::task_details::TaskDetails;

use super::Driver;

/// How long cleanup waits for the describe its summary needs before it stops the task.
const SUMMARY_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Driver {
    /// Tells the observer.
    pub(super) fn observe(&self, event: Event) {
        self.observer.observe(&event);
    }

    /// Tells the observer that `tasks` were asked to stop by `cause`.
    pub(super) fn observe_stops(&self, tasks: &[TaskRef], cause: StopCause) {
        for task in tasks {
            self.observe(Event::Stopped {
                task: task.clone(),
                cause,
            });
        }
    }

    /// The summary of `task` with its cost estimate, told to the observer; `warm_claim` for
    /// a task from the warm pool (see [`JobSummary::warm_claim`]).
    pub(super) fn summarize(
        &self,
        point: SummaryPoint,
        task: &TaskRef,
        details: TaskDetails,
        accepted: Option<Duration>,
        ready_at: Option<SystemTime>,
        warm_claim: Option<Duration>,
    ) -> JobSummary {
        let mut summary = JobSummary::new(point, task.clone(), details);
        summary.accepted = accepted;
        summary.ready_at = ready_at;
        summary.warm_claim = warm_claim;
        summary.cost = summary
            .run_time()
            .and_then(|run| self.prices.estimate(&summary.details, run));
        self.observe(Event::Summary(Box::new(summary.clone())));
        summary
    }

    /// What the backend reports of `task` now, for a summary: `None` when it does not know
    /// the task or does not answer quickly (a summary never fails a stage).
    pub(super) async fn describe_for_summary(&self, task: &TaskRef) -> Option<TaskDetails> {
        match tokio::time::timeout(SUMMARY_DESCRIBE_TIMEOUT, self.launcher.describe(task)).await {
            Ok(Ok(status)) if status.state != crate::launcher::TaskState::Missing => {
                Some(status.details)
            }
            Ok(Ok(_)) => None,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "describing the task for its summary failed");
                None
            }
            Err(_) => None,
        }
    }
}
