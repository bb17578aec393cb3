//! [`JobLog`]: the job log's lines about the task, from the driver's events.
//!
//! One line per fact: the launch, the task's readiness, the summary, each stop. The
//! structured log gets the same events with their figures as fields.

use fargate_core::observe::{Event, Observer};

/// Writes the driver's events to the log (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JobLog;

impl Observer for JobLog {
    fn observe(&self, event: &Event) {
        match event {
            Event::Launching { task_definition } => tracing::info!(
                %task_definition,
                "starting a Fargate task from task definition {task_definition}"
            ),
            Event::Ready {
                task,
                endpoint,
                elapsed,
            } => tracing::info!(
                %task,
                %endpoint,
                elapsed_ms = elapsed.as_millis() as u64,
                "task {task} is ready at {endpoint} after {:.1} s",
                elapsed.as_secs_f64()
            ),
            Event::Summary(summary) => {
                // One event per line, so that every line of the structured log has its time;
                // the figures go with the first.
                let text = summary.to_string();
                let mut lines = text.lines();
                tracing::info!(
                    task = %summary.task,
                    run_time_ms = summary.run_time().map(|d| d.as_millis() as u64),
                    estimated_cost = summary.cost.as_ref().map(|c| c.amount),
                    "{}",
                    lines.next().unwrap_or_default()
                );
                for line in lines {
                    tracing::info!("{line}");
                }
            }
            Event::Kept { task, until } => tracing::info!(
                %task,
                until = until
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                "kept task {task} for debugging its failed job (fargate kept lists it)"
            ),
            Event::Stopped { task, cause } => tracing::info!(
                %task,
                cause = cause.as_str(),
                "stopped task {task}"
            ),
            Event::Phase { phase, elapsed } => tracing::debug!(
                ?phase,
                elapsed_ms = elapsed.as_millis() as u64,
                "prepare phase {phase:?} reached"
            ),
            Event::TaskState { task, state } => {
                tracing::debug!(%task, ?state, "the task is {state:?}")
            }
            // Retries are logged where they happen; calls are counted by the metrics.
            _ => {}
        }
    }
}
