//! [`GcReport`]: what [`collect`](super::collect)(super::collect) decided and did, task by task and record
//! by record.

use std::fmt;

use serde::Serialize;

/// What [`collect`](super::collect) did (or, in a dry run, would do) with one task or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Left alone.
    Kept,
    /// Stopped (a task) or removed (a record).
    Removed,
    /// Would be stopped or removed (dry run).
    WouldRemove,
    /// Should be stopped or removed, but that failed.
    Failed,
}

/// The decision about one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskDecision {
    /// The task (for ECS its ARN).
    pub task: String,
    /// Its job, when its tags name one.
    pub job: Option<String>,
    /// What was done.
    pub action: Action,
    /// Why.
    pub reason: String,
}

/// The decision about one job record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RecordDecision {
    /// The job's key.
    pub job: String,
    /// What was done.
    pub action: Action,
    /// Why.
    pub reason: String,
}

/// Everything [`collect`](super::collect) decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
    /// One entry per listed task.
    pub tasks: Vec<TaskDecision>,
    /// One entry per stale or kept record that no listed task belongs to.
    pub records: Vec<RecordDecision>,
}

impl GcReport {
    /// Whether something that should have been stopped or removed was not.
    pub fn has_failures(&self) -> bool {
        self.tasks.iter().any(|t| t.action == Action::Failed)
            || self.records.iter().any(|r| r.action == Action::Failed)
    }

    /// Tasks with `action`.
    pub fn tasks_with(&self, action: Action) -> impl Iterator<Item = &TaskDecision> {
        self.tasks.iter().filter(move |t| t.action == action)
    }
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (stop, remove) = if self.dry_run {
            ("would stop", "would remove")
        } else {
            ("stopped", "removed")
        };
        for t in &self.tasks {
            let verb = match t.action {
                Action::Kept => "kept",
                Action::Removed | Action::WouldRemove => stop,
                Action::Failed => "FAILED to stop",
            };
            let job = t.job.as_deref().unwrap_or("no job");
            writeln!(f, "{verb} task {} ({job}): {}", t.task, t.reason)?;
        }
        for r in &self.records {
            let verb = match r.action {
                Action::Kept => "kept",
                Action::Removed | Action::WouldRemove => remove,
                Action::Failed => "FAILED to remove",
            };
            writeln!(f, "{verb} record {}: {}", r.job, r.reason)?;
        }
        let count = |a: Action| self.tasks.iter().filter(|t| t.action == a).count();
        let done = count(Action::Removed) + count(Action::WouldRemove);
        let records = self
            .records
            .iter()
            .filter(|r| matches!(r.action, Action::Removed | Action::WouldRemove))
            .count();
        write!(
            f,
            "{} tasks: {stop} {done}, kept {}, failed {}; {remove} {records} stale records",
            self.tasks.len(),
            count(Action::Kept),
            count(Action::Failed),
        )?;
        if self.tasks.is_empty() && self.records.is_empty() {
            write!(f, " (nothing to do)")?;
        }
        Ok(())
    }
}
