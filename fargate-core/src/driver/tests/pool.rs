//! The driver with a warm pool: claims, key swaps and their verification, fallbacks, and
//! prepare dropped at every step of a claim.

use std::collections::HashSet;

use super::*;
use crate::options::WarmPoolOptions;

fn pool_config(size: usize) -> DriverOptions {
    let mut c = config();
    c.pool = WarmPoolOptions {
        size,
        ..WarmPoolOptions::default()
    };
    c
}

fn pool_rig(size: usize) -> Rig {
    rig_with(pool_config(size), BootPlan::default())
}

impl Rig {
    /// The records of the pool's slots.
    async fn slot_records(&self) -> Vec<JobRecord> {
        let mut slots = Vec::new();
        for key in self.store.list().await.unwrap() {
            if key.is_pool_slot() {
                slots.push(self.store.get(&key).await.unwrap().unwrap());
            }
        }
        slots
    }

    /// What runs is exactly the tasks of unclaimed slots, and no job record is left.
    async fn assert_only_idle_pool_tasks(&self, context: &str) {
        let slots = self.slot_records().await;
        assert!(
            slots
                .iter()
                .all(|s| s.pool.as_ref().unwrap().claimed_by.is_none()),
            "{context}: a slot is left claimed: {slots:?}"
        );
        let idle: HashSet<TaskRef> = slots.iter().filter_map(|s| s.task.clone()).collect();
        let running: HashSet<TaskRef> = self.launcher.running().into_iter().collect();
        assert_eq!(running, idle, "{context}: running tasks vs idle slots");
        for key in self.store.list().await.unwrap() {
            assert!(key.is_pool_slot(), "{context}: record {key} left behind");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_takes_a_filled_warm_task_after_its_key_replaced_the_pool_key() {
    let r = pool_rig(1);
    let filled = r.driver.pool_fill(true).await.unwrap();
    assert_eq!(filled.started.len(), 1, "{filled}");
    let warm = TaskRef::new(filled.started[0].clone());
    let slot = r.slot_records().await.remove(0);
    assert_eq!(
        slot.phase,
        Phase::Ready,
        "fill --wait pins endpoint and host key"
    );

    let report = r.prepare().await.unwrap();
    assert!(report.warm);
    assert_eq!(report.task, warm);
    // The key was swapped with the pool key, which no longer logs in; the job's key does.
    let runs = r.shell.runs();
    let swap = runs
        .iter()
        .find(|run| String::from_utf8_lossy(&run.script).contains(".fargate-swap"))
        .expect("a key swap");
    assert_eq!(swap.private_key, slot.private_key);
    assert_eq!(swap.host_key, slot.host_key, "the slot's pinned host key");
    // Keys in order: the pool task's, the job's, the replacement's.
    let job_key = r.shell.generated_keys()[1].clone();
    assert!(
        String::from_utf8_lossy(&swap.script).contains(&job_key),
        "the swap installs the job's key"
    );
    let job_record = r.store.peek(&r.key()).unwrap();
    assert_eq!(job_record.task, Some(warm.clone()));
    assert_ne!(job_record.private_key, slot.private_key);
    let (result, _) = r.run("echo hi").await;
    result.unwrap();
    assert_eq!(
        r.script_runs().last().unwrap().private_key,
        job_record.private_key
    );
    // Prepare does not refill (that is off the job's path); the claimed slot is gone,
    // and the refill its embedder runs next starts a new task.
    assert!(r.slot_records().await.is_empty());
    let refill = r.driver.pool_refill(&CancellationToken::new()).await;
    assert_eq!(refill.started.len(), 1, "{refill}");
    let slots = r.slot_records().await;
    assert_eq!(slots.len(), 1);
    assert_ne!(slots[0].task, Some(warm.clone()));

    let cleanup = r.driver.cleanup(&r.job).await.unwrap();
    assert_eq!(cleanup.stopped, [warm]);
    r.assert_only_idle_pool_tasks("after cleanup").await;
}

#[tokio::test(start_paused = true)]
async fn a_claimed_task_becomes_the_jobs_labels_deadline_and_all() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let warm = r.launcher.running().remove(0);
    let slot_deadline = r.slot_records().await[0].spec.as_ref().unwrap().deadline;
    let report = r.prepare().await.unwrap();
    assert!(report.warm);
    let record = r.store.peek(&r.key()).unwrap();
    let spec = record.spec.clone().unwrap();
    assert_eq!(spec.key, r.key(), "the job's record holds the job's launch");
    assert!(
        spec.deadline < slot_deadline,
        "the job's deadline, not the pool's"
    );
    let (_, task) = r
        .launcher
        .tasks()
        .into_iter()
        .find(|(t, _)| *t == warm)
        .unwrap();
    // The backend's labels name the job and its deadline: gc lists it under the job.
    assert_eq!(task.spec.key, r.key());
    assert_eq!(task.deadline, spec.deadline);
    let listed = r.launcher.list(r.driver.namespace()).await.unwrap();
    let listed = listed.iter().find(|t| t.task == warm).unwrap();
    assert_eq!(listed.key, Some(r.key()));
    // The swap told the task's self-stop the job's deadline.
    let swap = r
        .shell
        .runs()
        .into_iter()
        .find(|run| String::from_utf8_lossy(&run.script).contains(".fargate-swap"))
        .unwrap();
    let deadline_secs = spec
        .deadline
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let script = String::from_utf8_lossy(&swap.script).into_owned();
    assert!(
        script.contains(&format!("printf '%s\\n' {deadline_secs}")),
        "{script}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_revision_of_the_family_is_never_served_by_a_task_of_the_old_one() {
    let mut c = pool_config(1);
    c.task.task_definition = "ci-coordinator".into();
    let r = rig_with(c, BootPlan::default());
    r.launcher.set_definition(
        "ci-coordinator",
        "arn:fake:task-definition/ci-coordinator:1",
    );
    r.driver.pool_fill(true).await.unwrap();
    let old = r.launcher.running().remove(0);
    // Slots launch the revision they are keyed by.
    let slot = r.slot_records().await.remove(0);
    assert_eq!(
        slot.spec.unwrap().task_definition,
        "arn:fake:task-definition/ci-coordinator:1"
    );
    // The administrator registers revision 2.
    r.launcher.set_definition(
        "ci-coordinator",
        "arn:fake:task-definition/ci-coordinator:2",
    );
    let report = r.prepare().await.unwrap();
    assert!(!report.warm, "a task of revision 1 is never claimed");
    let refill = r.driver.pool_refill(&CancellationToken::new()).await;
    assert!(
        refill
            .stopped
            .iter()
            .any(|(t, why)| *t == old.id && why.contains("settings")),
        "{refill}"
    );
    let slot = r.slot_records().await.remove(0);
    assert_eq!(
        slot.spec.unwrap().task_definition,
        "arn:fake:task-definition/ci-coordinator:2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_definition_that_cannot_be_resolved_means_no_claim_and_no_refill() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let idle = r.launcher.running();
    r.launcher.faults.inject_always(
        Op::ResolveDefinition,
        Fault::Fail(ErrorKind::PermissionDenied),
    );
    let report = r.prepare().await.unwrap();
    assert!(!report.warm, "no claim without knowing the definition");
    let refill = r.driver.pool_refill(&CancellationToken::new()).await;
    assert_eq!(refill.failures.len(), 1, "{refill}");
    assert!(
        refill.stopped.is_empty() && refill.started.is_empty(),
        "{refill}"
    );
    for task in idle {
        assert!(
            r.launcher.running().contains(&task),
            "the idle task is kept"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn prepare_never_waits_for_a_refill() {
    // A pool of 2 with one idle task: before, prepare refilled beside its own work and
    // returned only when the refill's launches (here: hanging) ended.
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let r = Rig {
        driver: Driver::new(
            pool_config(2),
            r.launcher.clone(),
            r.shell.clone(),
            r.store.clone(),
        ),
        ..r
    };
    r.launcher.faults.inject_always(Op::Launch, Fault::Hang);
    let launches = r.launcher.faults.calls(Op::Launch);
    // Virtual time (paused): an hour passes at once if prepare waits on the hung launches.
    let report = tokio::time::timeout(Duration::from_secs(3600), r.prepare())
        .await
        .expect("prepare waited for the pool's refill")
        .unwrap();
    assert!(report.warm);
    assert_eq!(
        r.launcher.faults.calls(Op::Launch),
        launches,
        "prepare launched nothing for the pool"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_the_launcher_cannot_hand_over_is_stopped_and_the_job_gets_its_own() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let warm = r.launcher.running().remove(0);
    r.launcher
        .faults
        .inject_always(Op::Adopt, Fault::Fail(ErrorKind::Unsupported));
    let report = r.prepare().await.unwrap();
    assert!(!report.warm);
    assert_ne!(report.task, warm);
    assert!(
        !r.launcher.running().contains(&warm),
        "the unusable warm task is stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn slots_of_other_launcher_settings_are_never_claimed_and_are_swept() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let old = r.launcher.running().remove(0);
    // The administrator moves the runner to another cluster or network.
    r.launcher.set_settings_fingerprint("another-cluster");
    let report = r.prepare().await.unwrap();
    assert!(!report.warm, "a task of the old settings is never claimed");
    assert_ne!(report.task, old);
    let filled = r.driver.pool_fill(false).await.unwrap();
    assert!(
        filled
            .stopped
            .iter()
            .any(|(t, why)| *t == old.id && why.contains("settings")),
        "{filled}"
    );
    assert!(!r.launcher.running().contains(&old));
}

#[tokio::test(start_paused = true)]
async fn a_slot_launch_never_answered_is_kept_and_stopped_by_the_next_refill() {
    let r = pool_rig(1);
    // ECS starts the task but its answer never arrives, for every attempt.
    r.launcher
        .faults
        .inject_always(Op::Launch, Fault::LoseResponse(ErrorKind::Timeout));
    let first = r.driver.pool_refill(&CancellationToken::new()).await;
    assert_eq!(first.failures.len(), 1, "{first}");
    let leaked = r.launcher.running();
    assert_eq!(leaked.len(), 1, "ECS started it: {leaked:?}");
    // The slot is kept with its launch's token, not forgotten.
    let slot = r.slot_records().await.remove(0);
    assert_eq!(slot.phase, Phase::LaunchRequested);
    assert!(slot.pending_attempts().next().is_some());
    // ECS answers again: the next refill replays the launch by its token, stops its task
    // and starts a new one.
    r.launcher.faults.clear();
    let next = r.driver.pool_refill(&CancellationToken::new()).await;
    assert!(next.failures.is_empty(), "{next}");
    assert!(
        next.stopped.iter().any(|(t, _)| *t == leaked[0].id),
        "{next}"
    );
    assert!(!r.launcher.running().contains(&leaked[0]));
    r.assert_only_idle_pool_tasks("after the second refill")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_slot_whose_stop_did_not_finish_is_stopped_by_the_next_refill_and_not_counted_idle() {
    let r = pool_rig(1);
    r.driver.pool_fill(false).await.unwrap();
    let mut slot = r.slot_records().await.remove(0);
    let task = slot.task.clone().unwrap();
    slot.phase = Phase::Stopping;
    r.store.put(&slot).await.unwrap();
    let report = r.driver.pool_refill(&CancellationToken::new()).await;
    assert!(
        report.stopped.iter().any(|(t, _)| *t == task.id),
        "{report}"
    );
    assert_eq!(
        report.started.len(),
        1,
        "a stopping slot is no idle task: {report}"
    );
    r.assert_only_idle_pool_tasks("after the refill").await;
}

#[tokio::test(start_paused = true)]
async fn a_warm_task_still_taking_the_pool_key_is_stopped_and_the_job_gets_its_own() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let warm = r.launcher.running().remove(0);
    r.shell.ignore_key_swaps(true);
    let recorder = Arc::new(Recorder::default());
    let driver = r.driver.clone().with_observer(recorder.clone());
    let report = driver
        .prepare(&r.job, &CancellationToken::new())
        .await
        .unwrap();
    assert!(!report.warm);
    let events = recorder.0.lock().unwrap().clone();
    for expected in ["warm pool unusable", "stopped by pool"] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected}: {events:?}"
        );
    }
    assert_ne!(report.task, warm);
    assert!(
        !r.launcher.running().contains(&warm),
        "the unusable task is stopped"
    );
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_only_idle_pool_tasks("after cleanup").await;
}

#[tokio::test(start_paused = true)]
async fn a_warm_task_that_died_while_idle_is_given_up_within_the_claim_timeout() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let slot = r.slot_records().await.remove(0);
    r.shell.set_down(slot.endpoint.unwrap().ip, true);
    let report = r.prepare().await.unwrap();
    assert!(!report.warm);
    assert!(
        report.ssh_ready < r.driver.options().pool.claim_timeout + Duration::from_secs(5),
        "{report:?}"
    );
    assert!(!r.launcher.running().contains(&slot.task.clone().unwrap()));
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_only_idle_pool_tasks("after cleanup").await;
}

#[tokio::test(start_paused = true)]
async fn a_job_asking_for_another_task_leaves_the_pool_alone() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let warm = r.launcher.running().remove(0);
    let job = job(2).with_variable(TASK_DEFINITION_VARIABLE, "ci-other:1");
    let report = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    assert!(!report.warm);
    assert_ne!(report.task, warm);
    r.driver.cleanup(&job).await.unwrap();
    assert_eq!(r.launcher.running(), [warm]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_prepares_never_share_a_warm_task() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    let jobs: Vec<JobContext> = (10..14).map(job).collect();
    let cancel = CancellationToken::new();
    let (a, b, c, d) = tokio::join!(
        r.driver.prepare(&jobs[0], &cancel),
        r.driver.prepare(&jobs[1], &cancel),
        r.driver.prepare(&jobs[2], &cancel),
        r.driver.prepare(&jobs[3], &cancel),
    );
    let reports = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let tasks: HashSet<&TaskRef> = reports.iter().map(|r| &r.task).collect();
    assert_eq!(tasks.len(), 4, "every job has its own task");
    assert!(reports.iter().any(|r| r.warm), "one job took the warm task");
    for job in &jobs {
        r.driver.cleanup(job).await.unwrap();
    }
    r.assert_only_idle_pool_tasks("after the jobs").await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_task_past_its_maximum_idle_time_is_replaced_by_the_next_fill() {
    let r = pool_rig(1);
    r.driver.pool_fill(false).await.unwrap();
    let mut slot = r.slot_records().await.remove(0);
    slot.pool.as_mut().unwrap().idle_until = 0;
    r.store.put(&slot).await.unwrap();
    // It cannot be claimed any more.
    let report = r.prepare().await.unwrap();
    assert!(!report.warm);
    r.driver.cleanup(&r.job).await.unwrap();
    r.driver.pool_refill(&CancellationToken::new()).await;
    let running = r.launcher.running();
    assert!(
        !running.contains(&slot.task.clone().unwrap()),
        "{running:?}"
    );
    r.assert_only_idle_pool_tasks("after the refill").await;
    let drained = r.driver.pool_drain().await.unwrap();
    assert_eq!(drained.stopped.len(), 1, "{drained}");
    assert!(r.launcher.running().is_empty());
    assert!(r.store.list().await.unwrap().is_empty());
}

/// Prepare dropped at any instant of a claim (an embedder's timeout, a killed process)
/// loses no task: the job's cleanup and the next refill leave exactly the pool's idle
/// tasks running.
#[tokio::test(start_paused = true)]
async fn dropping_prepare_at_any_step_of_a_claim_leaves_only_idle_pool_tasks() {
    let slow = Fault::Delay(Duration::from_millis(100));
    let mut dropped_while_claimed = 0;
    for step in 0.. {
        let r = pool_rig(1);
        r.driver.pool_fill(true).await.unwrap();
        for op in [Op::Put, Op::Get, Op::Delete] {
            r.store.faults.inject_always(op, slow);
        }
        for op in [Op::GenerateKey, Op::Probe, Op::Run] {
            r.shell.faults.inject_always(op, slow);
        }
        for op in [Op::Launch, Op::Describe] {
            r.launcher.faults.inject_always(op, slow);
        }
        let budget = Duration::from_millis(50) * step;
        let cancel = CancellationToken::new();
        let prepare = r.driver.prepare(&r.job, &cancel);
        let finished = tokio::time::timeout(budget, prepare).await.is_ok();
        let claimed = r
            .slot_records()
            .await
            .iter()
            .any(|s| s.pool.as_ref().unwrap().claimed_by.is_some());
        dropped_while_claimed += usize::from(!finished && claimed);
        r.store.faults.clear();
        r.shell.faults.clear();
        r.launcher.faults.clear();
        r.driver
            .cleanup(&r.job)
            .await
            .unwrap_or_else(|f| panic!("step {step}: {f}"));
        r.driver.pool_fill(false).await.unwrap();
        r.assert_only_idle_pool_tasks(&format!("step {step}")).await;
        if finished {
            break;
        }
    }
    assert!(dropped_while_claimed >= 2, "{dropped_while_claimed}");
}

#[tokio::test(start_paused = true)]
async fn a_smaller_pool_stops_its_youngest_idle_tasks_at_the_next_fill() {
    let r = pool_rig(3);
    r.driver.pool_fill(true).await.unwrap();
    assert_eq!(r.launcher.running().len(), 3);
    let smaller = Driver::new(
        pool_config(1),
        r.launcher.clone(),
        r.shell.clone(),
        r.store.clone(),
    );
    let report = smaller.pool_fill(false).await.unwrap();
    assert_eq!(report.stopped.len(), 2, "{report}");
    assert!(report.started.is_empty(), "{report}");
    assert_eq!(report.idle(), 1, "{report}");
    r.assert_only_idle_pool_tasks("after the smaller fill")
        .await;
}

/// A store on which the job that claimed `slot` records the slot's task right before the
/// first lock of the slot: between a sweep's first look and its decision.
#[derive(Debug)]
struct TakesOverBeforeTheSweepLocks {
    inner: Arc<MemoryStore>,
    slot: JobKey,
    job: JobRecord,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl MetadataStore for TakesOverBeforeTheSweepLocks {
    async fn put(&self, record: &JobRecord) -> crate::Result<()> {
        self.inner.put(record).await
    }
    async fn get(&self, key: &JobKey) -> crate::Result<Option<JobRecord>> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &JobKey) -> crate::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self) -> crate::Result<Vec<JobKey>> {
        self.inner.list().await
    }
    async fn lock(&self, key: &JobKey, wait: Duration) -> crate::Result<crate::JobLock> {
        if key == &self.slot && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.inner.put(&self.job).await?;
        }
        self.inner.lock(key, wait).await
    }
    async fn unlock(&self, lock: crate::JobLock) -> crate::Result<()> {
        self.inner.unlock(lock).await
    }
    async fn put_locked(&self, lock: &crate::JobLock, record: &JobRecord) -> crate::Result<()> {
        self.inner.put_locked(lock, record).await
    }
    async fn delete_locked(&self, lock: &crate::JobLock) -> crate::Result<()> {
        self.inner.delete_locked(lock).await
    }
    async fn get_locked(&self, lock: &crate::JobLock) -> crate::Result<Option<JobRecord>> {
        self.inner.get_locked(lock).await
    }
    async fn get_cached(&self, key: &JobKey) -> crate::Result<Option<JobRecord>> {
        self.inner.get_cached(key).await
    }
    async fn delete_and_unlock(&self, lock: crate::JobLock) -> crate::Result<()> {
        self.inner.delete_and_unlock(lock).await
    }
    fn may_hold_legacy_records(&self) -> bool {
        self.inner.may_hold_legacy_records()
    }
    async fn records_with_prefix(&self, prefix: &str) -> crate::Result<Vec<JobRecord>> {
        self.inner.records_with_prefix(prefix).await
    }
    async fn heartbeat(&self, key: &JobKey) -> crate::Result<()> {
        self.inner.heartbeat(key).await
    }
    async fn last_heartbeat(&self, key: &JobKey) -> crate::Result<Option<std::time::SystemTime>> {
        self.inner.last_heartbeat(key).await
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> crate::Result<crate::metadata::SlotGrant> {
        self.inner.acquire_slot(counter, holder, limit, ttl).await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> crate::Result<()> {
        self.inner.release_slot(counter, holder).await
    }
    async fn slot_holders(&self, counter: &str) -> crate::Result<Vec<crate::metadata::SlotHolder>> {
        self.inner.slot_holders(counter).await
    }
    async fn slot_counters(&self, prefix: &str) -> crate::Result<Vec<String>> {
        self.inner.slot_counters(prefix).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_sweep_decides_on_the_claimers_record_read_under_the_slots_lock() {
    let r = pool_rig(1);
    r.driver.pool_fill(true).await.unwrap();
    // A slot claimed by job 1 a while ago, whose record did not name the task at the
    // sweep's first look...
    let mut slot = r.slot_records().await.remove(0);
    let task = slot.task.clone().unwrap();
    slot.pool.as_mut().unwrap().claimed_by = Some(r.key());
    slot.updated_at -= 600;
    r.store.put(&slot).await.unwrap();
    // ...and names it by the time the sweep holds the slot's lock.
    let mut job = JobRecord::new(
        r.driver.identity(&r.job).unwrap(),
        crate::shell::PrivateKey::new("job".into()),
    );
    job.task = Some(task.clone());
    job.phase = Phase::Launched;
    let store = Arc::new(TakesOverBeforeTheSweepLocks {
        inner: r.store.clone(),
        slot: slot.key.clone(),
        job,
        done: Default::default(),
    });
    let driver = Driver::new(pool_config(1), r.launcher.clone(), r.shell.clone(), store);
    let refill = driver.pool_refill(&CancellationToken::new()).await;
    assert!(
        refill.stopped.is_empty(),
        "the job's task was stopped: {refill}"
    );
    assert!(r.launcher.running().contains(&task));
    assert!(r.store.peek(&slot.key).is_none(), "the slot is forgotten");
    assert_eq!(r.store.peek(&r.key()).unwrap().task, Some(task));
}

#[tokio::test(start_paused = true)]
async fn a_fill_launches_in_batches_and_every_slot_gets_its_own_task_a_job_can_claim() {
    let r = rig_with(
        pool_config(5),
        BootPlan {
            max_launch_batch: 2,
            ..BootPlan::default()
        },
    );
    let filled = r.driver.pool_fill(true).await.unwrap();
    assert_eq!(filled.idle(), 5, "{filled}");
    // 5 tasks in calls of at most 2: 3 calls.
    assert_eq!(r.launcher.faults.calls(Op::Launch), 3);
    let slots = r.slot_records().await;
    let tasks: HashSet<TaskRef> = slots.iter().filter_map(|s| s.task.clone()).collect();
    assert_eq!(tasks.len(), 5, "each slot its own task: {slots:?}");
    assert_eq!(
        tasks,
        r.launcher.running().into_iter().collect::<HashSet<_>>()
    );
    // A job claims one of them, and the pool keeps the other four.
    let report = r
        .driver
        .prepare(&r.job, &CancellationToken::new())
        .await
        .unwrap();
    assert!(report.warm, "{report:?}");
    assert!(tasks.contains(&report.task));
    r.driver.cleanup(&r.job).await.unwrap();
    assert!(!r.launcher.running().contains(&report.task));
    let idle = r.driver.pool_status().await.unwrap().idle();
    assert!(idle >= 4, "{idle} idle after the claim");
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_answer_was_lost_is_replayed_and_stopped_by_the_drain() {
    let r = rig_with(
        pool_config(3),
        BootPlan {
            max_launch_batch: 10,
            ..BootPlan::default()
        },
    );
    r.launcher
        .faults
        .inject_next(Op::Launch, Fault::LoseResponse(ErrorKind::Timeout));
    // The call started 3 tasks, but the fill never heard of them.
    let _ = r.driver.pool_fill(true).await;
    assert_eq!(r.launcher.running().len(), 3, "the lost call's tasks run");
    // The drain replays the recorded call (same token, same count) and stops its tasks.
    r.driver.pool_drain().await.unwrap();
    assert_eq!(
        r.launcher.running(),
        Vec::<TaskRef>::new(),
        "every task of the lost call stopped"
    );
    assert_eq!(
        r.launcher.tasks().len(),
        3,
        "the replay started nothing more"
    );
}
