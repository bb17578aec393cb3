//! [`BudgetedLauncher`]: a launcher wrapper that takes each changing call from a
//! [`CallBudget`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{CallBudget, CallClass};
use crate::error::{ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::launcher::{
    DebugCommands, DynTaskLauncher, Launched, LaunchedBatch, ListedTask, StopOutcome, TaskLauncher,
    TaskRef, TaskSpec, TaskStatus,
};
use crate::shell::HostKey;

/// Waits this long or more are said in the log (the job log, for a stage).
const VISIBLE_WAIT: Duration = Duration::from_secs(1);

/// Wraps a launcher: launches, stops and relabellings first take a token of `budget` (and
/// wait for it; a batch launch also takes a [`CallClass::Task`] token per task it starts),
/// and a call the backend throttled anyway is reported to it ([`CallBudget::throttled`]), so
/// that every process sharing the budget slows down. A throttled launch slows both the
/// launch and the task classes (the backend does not say which of its limits it met).
///
/// Single launches (a job's) take no task token: their tasks are bounded by the launch
/// rate, and the task class bounds what batches (a warm pool's) start on top of it, so the
/// two rates together are what the backend's task limit must allow.
/// Reads (describe, find, list) are not budgeted, nor are liveness marks
/// ([`TaskLauncher::mark_alive`]: made when the store, which may hold the budget, is out of
/// reach).
#[derive(Clone, Debug)]
pub struct BudgetedLauncher {
    inner: DynTaskLauncher,
    budget: Arc<dyn CallBudget>,
}

impl BudgetedLauncher {
    /// `inner`, its changing calls taken from `budget`.
    pub fn new(inner: DynTaskLauncher, budget: Arc<dyn CallBudget>) -> Self {
        BudgetedLauncher { inner, budget }
    }

    /// Waits for `tokens` tokens of `class`. A budget that fails (its file unreadable)
    /// does not stop the call: the backend's own limits still hold, and its error is
    /// logged.
    async fn take(&self, class: CallClass, tokens: u32, what: &str) {
        let mut reservation = match self.budget.reserve(class, tokens).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("the API budget could not be read, calling without it: {e}");
                return;
            }
        };
        let mut said = false;
        // A reservation voided by a throttle meanwhile is taken again, at the slower rate.
        while !reservation.wait.is_zero() {
            if reservation.wait >= VISIBLE_WAIT && !said {
                tracing::info!(
                    "waiting {:.1} s for this runner's API budget before {what} (many jobs are starting at once)",
                    reservation.wait.as_secs_f64()
                );
                said = true;
            }
            tokio::time::sleep(reservation.wait).await;
            match self.budget.confirm(class, reservation).await {
                Ok(Some(again)) => reservation = again,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("the API budget could not be read, calling without it: {e}");
                    break;
                }
            }
        }
    }

    async fn after<T>(&self, class: CallClass, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && e.kind() == ErrorKind::Throttled
        {
            let classes = match class {
                CallClass::Launch | CallClass::Task => vec![CallClass::Launch, CallClass::Task],
                _ => vec![class],
            };
            for class in classes {
                if let Err(report) = self.budget.throttled(class).await {
                    tracing::warn!(
                        "could not slow the API budget down after a throttled call: {report}"
                    );
                }
            }
        }
        result
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl TaskLauncher for BudgetedLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        self.take(CallClass::Launch, 1, "starting the task").await;
        let r = self.inner.launch(spec).await;
        self.after(CallClass::Launch, r).await
    }
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        self.take(CallClass::Launch, 1, "starting the task").await;
        let r = self.inner.launch_observed(spec).await;
        self.after(CallClass::Launch, r).await
    }
    fn max_launch_batch(&self) -> u32 {
        self.inner.max_launch_batch()
    }
    /// A task token for each of its `count` tasks, then one launch token for the call.
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        self.take(CallClass::Task, count, "starting warm tasks")
            .await;
        self.take(CallClass::Launch, 1, "starting warm tasks").await;
        let r = self.inner.launch_batch(spec, count).await;
        self.after(CallClass::Launch, r).await
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        self.inner.describe(task).await
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        self.take(CallClass::Change, 1, "stopping the task").await;
        let r = self.inner.stop(task, reason).await;
        self.after(CallClass::Change, r).await
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        self.inner.find(key).await
    }
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        self.inner.list(namespace).await
    }
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        self.take(CallClass::Change, 1, "taking over the warm task")
            .await;
        let r = self.inner.adopt(task, spec).await;
        self.after(CallClass::Change, r).await
    }
    // Not budgeted: the driver marks a task alive only when the store missed a heartbeat,
    // and in a fleet the budget lives in that store: a token would be asked of what is out
    // of reach, for as long as the mark's own bound (then it would never be sent). It is
    // at most one call per job every `HEARTBEAT_EVERY`.
    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        self.inner.mark_alive(task, at).await
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        self.inner.resolve_task_definition(task_definition).await
    }
    fn settings_fingerprint(&self) -> String {
        self.inner.settings_fingerprint()
    }
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        self.inner.debug_commands(task, container)
    }
    // Not budgeted: none of these is a launch, a stop or a relabelling of a task.
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.inner.release(spec).await
    }
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        self.inner.announced_host_keys(task, container).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::budget::{CallRates, MemoryCallBudget, Rate};
    use crate::error::Error;

    /// Throttles its first `throttles` launches, then launches.
    #[derive(Debug)]
    struct Throttling {
        throttles: AtomicU32,
        launches: AtomicU32,
    }

    #[async_trait]
    impl TaskLauncher for Throttling {
        async fn launch(&self, _: &TaskSpec) -> Result<TaskRef> {
            if self
                .throttles
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::new(ErrorKind::Throttled, "Rate exceeded"));
            }
            let n = self.launches.fetch_add(1, Ordering::SeqCst);
            Ok(TaskRef::new(format!("t-{n}")))
        }
        async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
            let mut tasks = Vec::new();
            for _ in 0..count {
                tasks.push(self.launch_observed(spec).await?);
            }
            Ok(LaunchedBatch::new(tasks))
        }
        async fn describe(&self, _: &TaskRef) -> Result<TaskStatus> {
            Ok(TaskStatus::missing())
        }
        async fn stop(&self, _: &TaskRef, _: &str) -> Result<StopOutcome> {
            Ok(StopOutcome::NotFound)
        }
        async fn find(&self, _: &JobKey) -> Result<Vec<TaskRef>> {
            Ok(Vec::new())
        }
    }

    fn spec() -> TaskSpec {
        let job = crate::job::JobContext::new(crate::job::JobResponse::new(1))
            .with_variable("CI_JOB_ID", "1")
            .with_variable("CI_PIPELINE_ID", "7");
        let identity = job.identity(&Namespace::parse("ci").unwrap()).unwrap();
        TaskSpec::new(identity, "td").with_client_token("t")
    }

    #[tokio::test(start_paused = true)]
    async fn launches_beyond_the_burst_wait_for_the_rate_and_a_throttle_slows_them() {
        let inner = Arc::new(Throttling {
            throttles: AtomicU32::new(1),
            launches: AtomicU32::new(0),
        });
        let rates = CallRates::new(
            Rate::new(10.0, 2.0),
            Rate::new(10.0, 2.0),
            Rate::new(100.0, 100.0),
        );
        let budget = Arc::new(MemoryCallBudget::new(rates));
        let l = BudgetedLauncher::new(inner.clone(), budget.clone());
        let start = tokio::time::Instant::now();
        // The first call is throttled: the rate halves and the bucket empties.
        let err = l.launch(&spec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Throttled);
        for _ in 0..4 {
            l.launch(&spec()).await.unwrap();
        }
        assert_eq!(inner.launches.load(Ordering::SeqCst), 4);
        // Four tokens at about 5 per second (the halved rate, recovering): at least 0.7 s.
        assert!(
            start.elapsed() >= Duration::from_millis(700),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_a_task_token_per_task_and_one_launch_token() {
        let inner = Arc::new(Throttling {
            throttles: AtomicU32::new(0),
            launches: AtomicU32::new(0),
        });
        // Calls are plenty (100 a second); tasks are 10 a second, 10 at once.
        let rates = CallRates::new(
            Rate::new(100.0, 100.0),
            Rate::new(100.0, 100.0),
            Rate::new(10.0, 10.0),
        );
        let l = BudgetedLauncher::new(inner.clone(), Arc::new(MemoryCallBudget::new(rates)));
        let start = tokio::time::Instant::now();
        assert_eq!(l.launch_batch(&spec(), 10).await.unwrap().tasks.len(), 10);
        assert_eq!(start.elapsed(), Duration::ZERO, "the task bucket's burst");
        // The next 10 tasks wait for the bucket to refill: a second, though calls are free.
        l.launch_batch(&spec(), 10).await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1100),
            "{waited:?}"
        );
        // A job's launch takes no task token (the launch rate bounds it): at once.
        l.launch(&spec()).await.unwrap();
        assert_eq!(start.elapsed(), waited);
        // The next batch's tasks still wait for the task bucket.
        l.launch_batch(&spec(), 5).await.unwrap();
        let more = start.elapsed() - waited;
        assert!(
            more >= Duration::from_millis(490) && more <= Duration::from_millis(600),
            "{more:?}"
        );
        assert_eq!(inner.launches.load(Ordering::SeqCst), 26);
    }

    /// A budget that never answers, as a fleet's budget in a table out of reach.
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait]
    impl CallBudget for Unreachable {
        async fn reserve(&self, _: CallClass, _: u32) -> Result<crate::budget::Reservation> {
            std::future::pending().await
        }
        async fn confirm(
            &self,
            _: CallClass,
            _: crate::budget::Reservation,
        ) -> Result<Option<crate::budget::Reservation>> {
            std::future::pending().await
        }
        async fn throttled(&self, _: CallClass) -> Result<()> {
            std::future::pending().await
        }
    }

    /// A liveness mark is made when the store (in a fleet, the budget's table too) is out
    /// of reach: it never waits for the budget.
    #[tokio::test(start_paused = true)]
    async fn a_liveness_mark_does_not_wait_for_the_budget() {
        let inner = Arc::new(crate::testing::MemoryLauncher::new());
        let task = inner.launch(&spec()).await.unwrap();
        let l = BudgetedLauncher::new(inner.clone(), Arc::new(Unreachable));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        tokio::time::timeout(Duration::from_secs(1), l.mark_alive(&task, at))
            .await
            .expect("the mark waits for nothing")
            .unwrap();
        assert_eq!(inner.tasks()[0].1.alive_at, Some(at));
        // A stop does wait for its token.
        let stop = tokio::time::timeout(Duration::from_secs(1), l.stop(&task, "done")).await;
        assert!(stop.is_err(), "a stop takes a token");
    }
}
