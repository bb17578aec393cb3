//! Tests of the garbage collector.

use super::*;
use crate::job::{JobIdentity, JobResponse};
use crate::launcher::TaskSpec;
use crate::shell::PrivateKey;
use crate::testing::{MemoryLauncher, MemoryStore};

fn identity(ns: &str, id: u64) -> JobIdentity {
    JobIdentity::from_response(Namespace::parse(ns).unwrap(), &JobResponse::new(id))
}

fn ns() -> Namespace {
    Namespace::parse("ci").unwrap()
}

async fn launch(launcher: &MemoryLauncher, ns: &str, id: u64) -> TaskRef {
    let spec = TaskSpec::new(identity(ns, id), "td").with_client_token(format!("t-{ns}-{id}"));
    launcher.launch(&spec).await.unwrap()
}

/// A record of job `id` created and last changed `age` ago.
async fn record(store: &MemoryStore, id: u64, age: Duration, phase: Phase) -> JobKey {
    let mut r = JobRecord::new(identity("ci", id), PrivateKey::new("k".into()));
    r.phase = phase;
    r.created_at -= age.as_secs();
    r.updated_at -= age.as_secs();
    store.put(&r).await.unwrap();
    r.key
}

fn opts() -> GcOptions {
    GcOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..GcOptions::default()
    }
}

fn action_of(report: &GcReport, task: &TaskRef) -> Action {
    report
        .tasks
        .iter()
        .find(|t| t.task == task.id)
        .unwrap_or_else(|| panic!("{task} not in {report:?}"))
        .action
}

#[tokio::test]
async fn a_task_without_record_is_stopped_once_and_other_namespaces_are_untouched() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let orphan = launch(&launcher, "ci", 1).await;
    let foreign = launch(&launcher, "other", 1).await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &orphan), Action::Removed);
    assert_eq!(report.tasks.len(), 1, "{report:?}");
    assert!(!report.has_failures());
    assert_eq!(launcher.running(), [foreign]);
    let again = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert!(
        again.tasks.is_empty() && again.records.is_empty(),
        "{again:?}"
    );
    assert!(again.to_string().contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn live_jobs_are_kept_and_dead_ones_stopped() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let young = launch(&launcher, "ci", 1).await;
    record(&store, 1, Duration::from_secs(60), Phase::Ready).await;
    let old = launch(&launcher, "ci", 2).await;
    let old_key = record(&store, 2, Duration::from_secs(7200), Phase::Ready).await;
    let stopping = launch(&launcher, "ci", 3).await;
    record(&store, 3, Duration::from_secs(10), Phase::Stopping).await;
    let locked = launch(&launcher, "ci", 4).await;
    let locked_key = record(&store, 4, Duration::from_secs(60), Phase::Launched).await;
    let lock = store.lock(&locked_key, Duration::ZERO).await.unwrap();
    let late = launch(&launcher, "ci", 5).await;
    record(&store, 5, Duration::from_secs(60), Phase::Ready).await;
    launcher.set_deadline(&late, SystemTime::now() - Duration::from_secs(5));

    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &young), Action::Kept);
    assert_eq!(action_of(&report, &locked), Action::Kept);
    assert_eq!(action_of(&report, &old), Action::Removed);
    assert_eq!(action_of(&report, &stopping), Action::Removed);
    assert_eq!(action_of(&report, &late), Action::Removed);
    assert!(report.to_string().contains("past its deadline"), "{report}");
    let mut running = launcher.running();
    running.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(running, [young, locked]);
    // The records of the jobs whose tasks gc stopped went with them; the others stay.
    assert!(store.peek(&old_key).is_none());
    assert!(store.peek(&record_key(3)).is_none());
    assert!(store.peek(&record_key(1)).is_some());
    assert!(store.peek(&locked_key).is_some());
    store.unlock(lock).await.unwrap();
}

fn record_key(id: u64) -> JobKey {
    identity("ci", id).key()
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let orphan = launch(&launcher, "ci", 1).await;
    let stale = record(&store, 2, Duration::from_secs(3600), Phase::Ready).await;
    let options = GcOptions {
        dry_run: true,
        ..opts()
    };
    let report = collect(&launcher, &store, &ns(), &options).await.unwrap();
    assert_eq!(action_of(&report, &orphan), Action::WouldRemove);
    assert_eq!(report.records[0].action, Action::WouldRemove);
    let text = report.to_string();
    assert!(text.contains("would stop task") && text.contains("would remove record"));
    assert_eq!(launcher.running(), [orphan]);
    assert!(store.peek(&stale).is_some());
    assert_eq!(launcher.faults.calls(crate::testing::Op::Stop), 0);
}

#[tokio::test]
async fn stale_records_go_after_the_consistency_window_and_locked_ones_stay() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let stale = record(&store, 1, Duration::from_secs(600), Phase::LaunchRequested).await;
    let fresh = record(&store, 2, Duration::from_secs(5), Phase::LaunchRequested).await;
    let held = record(&store, 3, Duration::from_secs(600), Phase::Ready).await;
    let lock = store.lock(&held, Duration::ZERO).await.unwrap();
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    let action = |k: &JobKey| {
        report
            .records
            .iter()
            .find(|r| r.job == k.as_str())
            .unwrap()
            .action
    };
    assert_eq!(action(&stale), Action::Removed);
    assert_eq!(action(&fresh), Action::Kept);
    assert_eq!(action(&held), Action::Kept);
    assert!(store.peek(&stale).is_none());
    assert!(store.peek(&fresh).is_some() && store.peek(&held).is_some());
    // Its lock is free again: gc released it.
    store.unlock(lock).await.unwrap();
    store.lock(&stale, Duration::ZERO).await.unwrap();
}

/// A store that hands `task` from slot record `slot` to job record `job` (as a warm
/// pool claim ends) right before gc's first lock of the slot: after gc's first look at
/// the records, before its decision.
#[derive(Debug)]
struct ClaimDuringGc {
    inner: MemoryStore,
    slot: JobKey,
    job: JobRecord,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl MetadataStore for ClaimDuringGc {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        self.inner.put(record).await
    }
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &JobKey) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self) -> Result<Vec<JobKey>> {
        self.inner.list().await
    }
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        if key == &self.slot && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let claim = self.inner.lock(&self.slot, Duration::ZERO).await?;
            self.inner.put(&self.job).await?;
            self.inner.delete(&self.slot).await?;
            self.inner.unlock(claim).await?;
        }
        self.inner.lock(key, wait).await
    }
    async fn unlock(&self, lock: JobLock) -> Result<()> {
        self.inner.unlock(lock).await
    }
    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        self.inner.put_locked(lock, record).await
    }
    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        self.inner.delete_locked(lock).await
    }
    async fn get_locked(&self, lock: &JobLock) -> Result<Option<JobRecord>> {
        self.inner.get_locked(lock).await
    }
    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.inner.get_cached(key).await
    }
    async fn delete_and_unlock(&self, lock: JobLock) -> Result<()> {
        self.inner.delete_and_unlock(lock).await
    }
    fn may_hold_legacy_records(&self) -> bool {
        self.inner.may_hold_legacy_records()
    }
    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        self.inner.records_with_prefix(prefix).await
    }
    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        self.inner.heartbeat(key).await
    }
    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        self.inner.last_heartbeat(key).await
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<crate::metadata::SlotGrant> {
        self.inner.acquire_slot(counter, holder, limit, ttl).await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.inner.release_slot(counter, holder).await
    }
    async fn slot_holders(&self, counter: &str) -> Result<Vec<crate::metadata::SlotHolder>> {
        self.inner.slot_holders(counter).await
    }
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.slot_counters(prefix).await
    }
}

#[tokio::test]
async fn a_warm_task_claimed_while_gc_looks_is_not_stopped() {
    let launcher = MemoryLauncher::new();
    let slot_identity = JobIdentity::pool_slot(ns(), 7);
    let spec = TaskSpec::new(slot_identity.clone(), "td").with_client_token("slot");
    let task = launcher.launch(&spec).await.unwrap();
    // An idle slot whose maximum idle time has passed: gc would stop it...
    let mut slot = JobRecord::new(slot_identity, PrivateKey::new("k".into()));
    slot.task = Some(task.clone());
    slot.phase = Phase::Ready;
    slot.pool = Some(crate::metadata::PoolSlot::new(0));
    let inner = MemoryStore::new();
    inner.put(&slot).await.unwrap();
    // ...but job 1 claims it in between: its record names the task, the slot goes.
    let mut job = JobRecord::new(identity("ci", 1), PrivateKey::new("j".into()));
    job.task = Some(task.clone());
    job.phase = Phase::Launched;
    let store = ClaimDuringGc {
        inner,
        slot: slot.key.clone(),
        job: job.clone(),
        done: Default::default(),
    };
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Kept, "{report}");
    assert!(report.to_string().contains("owns it now"), "{report}");
    assert_eq!(launcher.running(), std::slice::from_ref(&task));
    assert!(store.inner.peek(&job.key).is_some());
    // The next run judges it by the job that owns it: kept while the job lives.
    let again = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&again, &task), Action::Kept, "{again}");
    assert_eq!(launcher.running(), [task]);
}

#[tokio::test]
async fn another_namespaces_records_and_slots_are_never_touched() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    // Runner "ci-1" shares the store: a stale record (its task not listed for "ci"),
    // and a slot past its idle time.
    let other = Namespace::parse("ci-1").unwrap();
    let mut stale = JobRecord::new(
        JobIdentity::from_response(other.clone(), &JobResponse::new(5)),
        PrivateKey::new("k".into()),
    );
    stale.created_at -= 7200;
    stale.updated_at -= 7200;
    store.put(&stale).await.unwrap();
    let other_task = launch(&launcher, "ci-1", 6).await;
    let mut slot = JobRecord::new(
        JobIdentity::pool_slot(other, 1),
        PrivateKey::new("k".into()),
    );
    slot.pool = Some(crate::metadata::PoolSlot::new(0));
    slot.updated_at -= 7200;
    store.put(&slot).await.unwrap();
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert!(
        report.records.is_empty() && report.tasks.is_empty(),
        "{report}"
    );
    assert!(store.peek(&stale.key).is_some() && store.peek(&slot.key).is_some());
    assert_eq!(launcher.running(), [other_task]);
    assert_eq!(store.faults.calls(crate::testing::Op::Delete), 0);
}

#[tokio::test]
async fn a_record_whose_task_runs_unlisted_is_kept() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    // The record's task runs, but the listing does not show it (another cluster's
    // listing, a lagging index): the describe says it runs.
    let task = launch(&launcher, "elsewhere", 1).await;
    let key = record(&store, 1, Duration::from_secs(600), Phase::Ready).await;
    let mut r = store.peek(&key).unwrap();
    r.task = Some(task.clone());
    store.put(&r).await.unwrap();
    let mut r = store.peek(&key).unwrap();
    r.updated_at -= 600;
    store.put(&r).await.unwrap();
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(report.records[0].action, Action::Kept, "{report}");
    assert!(report.records[0].reason.contains("still runs"), "{report}");
    assert!(store.peek(&key).is_some());
    launcher.kill(&task, "done");
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(report.records[0].action, Action::Removed, "{report}");
}

#[tokio::test]
async fn a_task_stopped_since_the_listing_is_not_stopped_again() {
    let launcher = MemoryLauncher::new();
    let orphan = launch(&launcher, "ci", 1).await;
    // A cleanup stops it between the listing and gc's decision.
    launcher.kill(&orphan, "cleanup");
    let listed = ListedTask::new(orphan.clone(), Some(record_key(1)), TaskState::Running);
    let (decision, gone) = act(
        &launcher,
        &listed,
        Some(&record_key(1)),
        Verdict::Stop("test".into()),
        &opts(),
    )
    .await;
    assert_eq!(decision.action, Action::Kept, "{decision:?}");
    assert!(gone);
    assert_eq!(launcher.faults.calls(crate::testing::Op::Stop), 0);
}

#[tokio::test]
async fn a_task_that_cannot_be_stopped_is_a_failure() {
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let orphan = launch(&launcher, "ci", 1).await;
    launcher.faults.inject_always(
        crate::testing::Op::Stop,
        crate::testing::Fault::Fail(ErrorKind::PermissionDenied),
    );
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &orphan), Action::Failed);
    assert!(report.has_failures());
    assert!(report.to_string().contains("FAILED to stop"), "{report}");
}

#[tokio::test]
async fn a_launcher_that_cannot_list_is_an_unsupported_error() {
    #[derive(Debug)]
    struct NoList;
    #[async_trait::async_trait]
    impl TaskLauncher for NoList {
        async fn launch(&self, _: &TaskSpec) -> Result<TaskRef> {
            unreachable!()
        }
        async fn describe(&self, _: &TaskRef) -> Result<crate::TaskStatus> {
            unreachable!()
        }
        async fn stop(&self, _: &TaskRef, _: &str) -> Result<StopOutcome> {
            unreachable!()
        }
        async fn find(&self, _: &JobKey) -> Result<Vec<TaskRef>> {
            unreachable!()
        }
    }
    let err = collect(&NoList, &MemoryStore::new(), &ns(), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

/// A failed job's task kept for debugging: a record in `Phase::Kept` naming `task`, created
/// `age` ago and kept for `left` more, with `tag` as the task's deadline label.
async fn kept(
    launcher: &MemoryLauncher,
    store: &MemoryStore,
    id: u64,
    age: Duration,
    left: Duration,
    tag: Option<Duration>,
) -> (JobKey, TaskRef, SystemTime) {
    let task = launch(launcher, "ci", id).await;
    let mut r = JobRecord::new(identity("ci", id), PrivateKey::new("k".into()));
    r.phase = Phase::Kept;
    r.task = Some(task.clone());
    r.created_at -= age.as_secs();
    r.failed_step = Some("build_script".into());
    let until = crate::world::whole_seconds_after(crate::world::now(), left);
    r.kept_until = Some(crate::world::unix_seconds(until));
    store.put(&r).await.unwrap();
    if let Some(tag) = tag {
        launcher.set_deadline(
            &task,
            crate::world::whole_seconds_after(crate::world::now(), tag),
        );
    }
    (r.key, task, until)
}

fn reason_of(report: &GcReport, task: &TaskRef) -> String {
    report
        .tasks
        .iter()
        .find(|t| t.task == task.id)
        .unwrap_or_else(|| panic!("{task} not in {report:?}"))
        .reason
        .clone()
}

#[tokio::test(start_paused = true)]
async fn a_kept_task_is_kept_until_its_time_whatever_its_age_and_stopped_after_it() {
    let _clock = crate::testing::Determinism::install(27);
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    // Its job started two hours ago (past the maximum age of one hour); its task is kept
    // ten more minutes. No deadline label: the record alone decides.
    let (key, task, _) = kept(
        &launcher,
        &store,
        1,
        Duration::from_secs(7200),
        Duration::from_secs(600),
        None,
    )
    .await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Kept, "{report}");
    assert_eq!(
        reason_of(&report, &task),
        "kept for debugging its failed job, 10 min left"
    );
    // One second before its time, still kept (the virtual clock moves, nothing sleeps).
    tokio::time::advance(Duration::from_secs(599)).await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Kept, "{report}");
    assert!(reason_of(&report, &task).ends_with("1 s left"), "{report}");
    assert_eq!(launcher.running(), std::slice::from_ref(&task));
    // At its time: a dry run says it would stop it, and stops nothing.
    tokio::time::advance(Duration::from_secs(1)).await;
    let dry = GcOptions {
        dry_run: true,
        ..opts()
    };
    let report = collect(&launcher, &store, &ns(), &dry).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::WouldRemove, "{report}");
    assert_eq!(launcher.running(), std::slice::from_ref(&task));
    // Then gc stops it and the record goes with it.
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Removed, "{report}");
    assert!(
        reason_of(&report, &task).contains("kept for debugging its failed job until"),
        "{report}"
    );
    assert!(launcher.running().is_empty());
    assert!(store.peek(&key).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_kept_task_whose_job_holds_its_lock_is_kept_until_its_deadline_label() {
    let _clock = crate::testing::Determinism::install(28);
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let (key, task, _) = kept(
        &launcher,
        &store,
        2,
        Duration::from_secs(7200),
        Duration::from_secs(600),
        Some(Duration::from_secs(600)),
    )
    .await;
    // A release (or the job's cleanup) holds the lock: kept, though older than the
    // maximum age.
    let lock = store.lock(&key, Duration::ZERO).await.unwrap();
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Kept, "{report}");
    // Past the label's deadline its time is up, whoever holds the lock.
    tokio::time::advance(Duration::from_secs(601)).await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &task), Action::Removed, "{report}");
    assert!(reason_of(&report, &task).contains("past its deadline"));
    store.unlock(lock).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_without_heartbeats_for_dead_after_is_stopped_a_live_one_kept() {
    let _determinism = crate::testing::Determinism::install(7);
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let (silent, alive, never) = (
        launch(&launcher, "ci", 1).await,
        launch(&launcher, "ci", 2).await,
        launch(&launcher, "ci", 3).await,
    );
    for (id, task) in [(1, &silent), (2, &alive), (3, &never)] {
        let key = record(&store, id, Duration::ZERO, Phase::Ready).await;
        let mut r = store.peek(&key).unwrap();
        r.task = Some(task.clone());
        store.put(&r).await.unwrap();
    }
    let key = |id| identity("ci", id).key();
    store.heartbeat(&key(1)).await.unwrap();
    store.heartbeat(&key(2)).await.unwrap();
    // Eleven minutes later only job 2's stages still beat; job 3 never did (a store or
    // driver without heartbeats: the other rules judge it).
    tokio::time::advance(Duration::from_secs(11 * 60)).await;
    store.heartbeat(&key(2)).await.unwrap();
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &silent), Action::Removed, "{report}");
    assert!(
        report.to_string().contains("no sign of life for 660 s"),
        "{report}"
    );
    assert_eq!(action_of(&report, &alive), Action::Kept, "{report}");
    assert_eq!(action_of(&report, &never), Action::Kept, "{report}");
    assert!(
        store.peek(&key(1)).is_none(),
        "the dead job's record goes with its task"
    );
    // A job whose lock is held (a stage runs) is never judged by its heartbeat.
    let held = store.lock(&key(2), Duration::ZERO).await.unwrap();
    tokio::time::advance(Duration::from_secs(11 * 60)).await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &alive), Action::Kept, "{report}");
    store.unlock(held).await.unwrap();
    // Without the rule (`dead_after: None`) a silent job is kept.
    let mut keep = opts();
    keep.dead_after = None;
    let report = collect(&launcher, &store, &ns(), &keep).await.unwrap();
    assert_eq!(action_of(&report, &alive), Action::Kept, "{report}");
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &alive), Action::Removed, "{report}");
}

/// Issue 23: a job whose host is cut off from the store marks its task alive instead; gc
/// counts the mark as a sign of life, but never past the task's deadline or the maximum
/// age.
#[tokio::test(start_paused = true)]
async fn a_task_marked_alive_defers_the_dead_judgement_but_not_the_deadline() {
    let _determinism = crate::testing::Determinism::install(23);
    let (launcher, store) = (MemoryLauncher::new(), MemoryStore::new());
    let (marked, silent, late, old) = (
        launch(&launcher, "ci", 1).await,
        launch(&launcher, "ci", 2).await,
        launch(&launcher, "ci", 3).await,
        launch(&launcher, "ci", 4).await,
    );
    // Job 4 started two hours ago, more than the maximum age (one hour).
    for (id, task, age) in [
        (1, &marked, Duration::ZERO),
        (2, &silent, Duration::ZERO),
        (3, &late, Duration::ZERO),
        (4, &old, Duration::from_secs(2 * 3600)),
    ] {
        let key = record(&store, id, age, Phase::Ready).await;
        let mut r = store.peek(&key).unwrap();
        r.task = Some(task.clone());
        store.put(&r).await.unwrap();
        store.heartbeat(&key).await.unwrap();
    }
    // Eleven minutes without a heartbeat; the tasks of jobs 1, 3 and 4 were marked alive
    // a minute ago; job 3's task is past its deadline.
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    for task in [&marked, &late, &old] {
        launcher
            .mark_alive(task, crate::world::now())
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(60)).await;
    launcher.set_deadline(&late, crate::world::now() - Duration::from_secs(5));
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &marked), Action::Kept, "{report}");
    assert_eq!(action_of(&report, &silent), Action::Removed, "{report}");
    assert!(
        reason_of(&report, &silent).contains("no sign of life for 660 s"),
        "{report}"
    );
    assert_eq!(action_of(&report, &late), Action::Removed, "{report}");
    assert!(
        reason_of(&report, &late).contains("past its deadline"),
        "{report}"
    );
    assert_eq!(action_of(&report, &old), Action::Removed, "{report}");
    assert!(reason_of(&report, &old).contains("maximum age"), "{report}");
    assert_eq!(launcher.running(), std::slice::from_ref(&marked));
    // Its marks stop too: eleven minutes after the last one, it is stopped.
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    let report = collect(&launcher, &store, &ns(), &opts()).await.unwrap();
    assert_eq!(action_of(&report, &marked), Action::Removed, "{report}");
    assert!(
        reason_of(&report, &marked).contains("no sign of life for 660 s"),
        "{report}"
    );
}
