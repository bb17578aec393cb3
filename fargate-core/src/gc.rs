//! Garbage collection: stops the tasks of a namespace that no live job owns, and removes
//! stale job records ([`collect`]; the `fargate gc` command).
//!
//! When the runner host dies or is restarted mid-job, no cleanup stage ever runs and the
//! job's task keeps running (and costing). [`collect`] finds such tasks through
//! [`TaskLauncher::list`] and decides, per job, while holding the job's lock:
//!
//! | The job | The task |
//! |---|---|
//! | holds its lock (a prepare or cleanup runs) and is within its lifetime | kept |
//! | has no record | stopped |
//! | has a record in phase [`Phase::Stopping`] (a cleanup began and died) | stopped |
//! | has a record older than [`GcOptions::max_age`] | stopped |
//! | any, when the task is past its deadline ([`ListedTask::deadline`]) | stopped |
//! | has a record younger than that (its run stages are going on) | kept |
//! | is a warm pool slot ([`crate::driver::pool`]) idle past its maximum idle time, or claimed by a job that never recorded the task | stopped |
//! | is a warm pool slot otherwise | kept |
//!
//! A task belongs to the job whose record names it; only a task no record names belongs to
//! the job its tags name. Only records, slots and tasks of `namespace` are ever looked at
//! ([`JobKey::belongs_to`]): runners sharing a store never judge each other's.
//!
//! Since it takes each job's lock (trying once, never waiting) before deciding, and decides
//! on the record read after taking it, it is safe to run while jobs run, and two runs at
//! once never act on the same job together. The first look at who owns each task is read
//! without locks; so before stopping a task that the locked record does not name, gc reads
//! the namespace's records again: a task another record names by then (a warm pool claim
//! completed meanwhile) is kept, and judged by that record at the next run. When it stopped
//! every listed task of a job, the job's record goes too (with its lock and temporary
//! files). A record none of whose tasks is listed is removed once it has not changed for
//! [`GcOptions::consistency_window`] (an eventually consistent backend may not list a task
//! launched moments ago) and [`TaskLauncher::describe`] says none of its tasks runs (a
//! listing may miss one). The rules are those of the ownership model (`docs/ownership.md`
//! in the repository).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::launcher::{ListedTask, StopOutcome, TaskLauncher, TaskRef, TaskState};
use crate::metadata::{JobLock, JobRecord, MetadataStore, Phase};

/// How [`collect`] decides and acts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// Decide and report, but stop and delete nothing.
    pub dry_run: bool,
    /// The longest a job may run, counted from its record's creation: a task of a job
    /// whose record is older is stopped. `None`: no limit but the tasks' deadlines.
    pub max_age: Option<Duration>,
    /// How long after its last change a record without listed tasks is kept, because the
    /// backend may not list a task launched moments ago.
    pub consistency_window: Duration,
}

impl Default for GcOptions {
    /// Not a dry run; a maximum age of 24 hours; a consistency window of 5 minutes.
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            max_age: Some(Duration::from_secs(24 * 3600)),
            consistency_window: Duration::from_secs(300),
        }
    }
}

/// What [`collect`] did (or, in a dry run, would do) with one task or record.
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

/// Everything [`collect`] decided.
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

/// Stops the tasks of `namespace` that no live job owns and removes stale records, as the
/// [module docs](self) say. Fails only when the tasks or records cannot be listed; a task
/// that cannot be stopped is an [`Action::Failed`] entry of the report.
pub async fn collect(
    launcher: &dyn TaskLauncher,
    store: &dyn MetadataStore,
    namespace: &Namespace,
    options: &GcOptions,
) -> Result<GcReport> {
    let listed = launcher.list(namespace).await?;
    // A first guess at who owns each task, read without locks: only for grouping. Every
    // destructive decision below is checked again under the owner's lock.
    let owners = owners(store, namespace).await?;
    let mut by_job: BTreeMap<Option<JobKey>, Vec<ListedTask>> = BTreeMap::new();
    for task in listed {
        let owner = owners
            .get(&task.task.id)
            .cloned()
            .or(task.key.clone().filter(|k| k.belongs_to(namespace)));
        by_job.entry(owner).or_default().push(task);
    }
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let now = crate::world::now();
    for (key, tasks) in &by_job {
        let Some(key) = key else {
            for t in tasks {
                let verdict = match past_deadline(t, now) {
                    Some(why) => Verdict::Stop(why),
                    None => Verdict::Keep("it has no job-key tag of this namespace".into()),
                };
                report
                    .tasks
                    .push(act(launcher, t, None, verdict, options).await.0);
            }
            continue;
        };
        collect_job(
            launcher,
            store,
            namespace,
            key,
            tasks,
            options,
            now,
            &mut report,
        )
        .await;
    }
    for key in store.list().await? {
        if !key.belongs_to(namespace) || by_job.contains_key(&Some(key.clone())) {
            continue;
        }
        report
            .records
            .push(sweep_record(launcher, store, &key, options, now).await);
    }
    Ok(report)
}

/// Task id -> key of the record of `namespace` that names it.
async fn owners(
    store: &dyn MetadataStore,
    namespace: &Namespace,
) -> Result<BTreeMap<String, JobKey>> {
    let mut owners = BTreeMap::new();
    for key in store.list().await? {
        if !key.belongs_to(namespace) {
            continue;
        }
        if let Ok(Some(record)) = store.get(&key).await {
            for task in record.known_tasks() {
                owners.insert(task.id, key.clone());
            }
        }
    }
    Ok(owners)
}

/// Judges and acts on the listed `tasks` of job (or slot) `key`, holding its lock.
#[allow(clippy::too_many_arguments)]
async fn collect_job(
    launcher: &dyn TaskLauncher,
    store: &dyn MetadataStore,
    namespace: &Namespace,
    key: &JobKey,
    tasks: &[ListedTask],
    options: &GcOptions,
    now: SystemTime,
    report: &mut GcReport,
) {
    let lock = match store.lock(key, Duration::ZERO).await {
        Ok(lock) => Some(lock),
        Err(e) if e.kind() == ErrorKind::Timeout => None,
        Err(e) => {
            for t in tasks {
                let verdict = Verdict::Fail(format!("cannot lock its job: {e}"));
                report
                    .tasks
                    .push(act(launcher, t, Some(key), verdict, options).await.0);
            }
            return;
        }
    };
    // Read after taking the lock: what the decisions rest on.
    let record = store.get(key).await;
    let mut all_stopped = true;
    for t in tasks {
        let mut verdict = if let Some(why) = past_deadline(t, now) {
            Verdict::Stop(why)
        } else {
            match (&record, &lock) {
                (Err(e), _) => Verdict::Fail(format!("cannot read its job's record: {e}")),
                (Ok(record), Some(_)) => judge(record.as_ref(), options, now),
                (Ok(record), None) => {
                    match record.as_ref().and_then(|r| too_old(r, options, now)) {
                        Some(why) => Verdict::Stop(why),
                        None => Verdict::Keep("its job holds its lock".into()),
                    }
                }
            }
        };
        // A task that `key`'s record (read under its lock) does not name may have been
        // handed to another job since the first look (a warm pool claim ends by deleting
        // the slot's record): it is stopped only when no record of the namespace names it
        // now. A task past its deadline is stopped whoever owns it.
        if let Verdict::Stop(why) = &verdict
            && past_deadline(t, now).is_none()
            && !record
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .is_some_and(|r| r.known_tasks().contains(&t.task))
        {
            match owner_of(store, namespace, &t.task).await {
                Ok(Some(other)) if &other != key => {
                    verdict = Verdict::Keep(format!(
                        "job {other} owns it now (was: {why}); the next run judges it by that job"
                    ));
                }
                Ok(_) => {}
                Err(e) => verdict = Verdict::Fail(format!("cannot tell who owns it: {e}")),
            }
        }
        let (decision, gone) = act(launcher, t, Some(key), verdict, options).await;
        all_stopped &= gone;
        report.tasks.push(decision);
    }
    if let (Some(lock), Ok(Some(_))) = (lock, &record) {
        // gc stopped every listed task of the job: its record (and lock) go too.
        if all_stopped
            && !options.dry_run
            && let Err(e) = store.delete(key).await
        {
            report.records.push(RecordDecision {
                job: key.to_string(),
                action: Action::Failed,
                reason: e.to_string(),
            });
        }
        release(store, lock).await;
    }
}

/// The record of `namespace` that names `task` now, if any.
async fn owner_of(
    store: &dyn MetadataStore,
    namespace: &Namespace,
    task: &TaskRef,
) -> Result<Option<JobKey>> {
    for key in store.list().await? {
        if !key.belongs_to(namespace) {
            continue;
        }
        if let Some(record) = store.get(&key).await?
            && record.known_tasks().contains(task)
        {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

enum Verdict {
    Keep(String),
    Stop(String),
    Fail(String),
}

/// Why a task is past its deadline, if it is.
fn past_deadline(task: &ListedTask, now: SystemTime) -> Option<String> {
    let deadline = task.deadline?;
    let late = now.duration_since(deadline).ok()?;
    Some(format!("past its deadline by {} s", late.as_secs()))
}

/// The verdict on a task of a job whose lock gc holds.
fn judge(record: Option<&JobRecord>, options: &GcOptions, now: SystemTime) -> Verdict {
    let Some(record) = record else {
        return Verdict::Stop("its job has no record (its runner is gone)".into());
    };
    if record.phase == Phase::Stopping {
        return Verdict::Stop("its job's cleanup began and did not finish".into());
    }
    if let Some(pool) = &record.pool {
        let now_secs = crate::world::unix_seconds(now);
        match &pool.claimed_by {
            Some(job) if record_is_dead(record, options, now) => {
                return Verdict::Stop(format!(
                    "the warm pool task was claimed by {job}, which never took it over"
                ));
            }
            Some(_) => {}
            None if now_secs >= pool.idle_until => {
                return Verdict::Stop(
                    "the warm pool task was idle longer than the pool's maximum idle time".into(),
                );
            }
            None => return Verdict::Keep("an idle task of the warm pool".into()),
        }
    }
    if let Some(age) = too_old(record, options, now) {
        return Verdict::Stop(age);
    }
    Verdict::Keep("its job is within its lifetime".into())
}

/// Why a record is older than its job could run, if it is.
fn too_old(record: &JobRecord, options: &GcOptions, now: SystemTime) -> Option<String> {
    let max = options.max_age?;
    let age = now.duration_since(at(record.created_at)).ok()?;
    (age > max).then(|| {
        format!(
            "its job started {} s ago, more than the maximum age of {} s",
            age.as_secs(),
            max.as_secs()
        )
    })
}

/// Whether a record may go once its listed tasks are stopped: it has not changed for the
/// consistency window (a task launched moments ago may not be listed yet).
fn record_is_dead(record: &JobRecord, options: &GcOptions, now: SystemTime) -> bool {
    now.duration_since(at(record.updated_at))
        .is_ok_and(|quiet| quiet >= options.consistency_window)
}

/// Carries out `verdict` on `task`; also says whether the task is now stopping or stopped.
///
/// Before stopping, the task is described again: a cleanup that finished between the
/// listing and the lock has stopped it already, and then it is not stopped a second time.
async fn act(
    launcher: &dyn TaskLauncher,
    task: &ListedTask,
    key: Option<&JobKey>,
    verdict: Verdict,
    options: &GcOptions,
) -> (TaskDecision, bool) {
    let (action, reason, gone) = match verdict {
        Verdict::Keep(why) => (Action::Kept, why, false),
        Verdict::Fail(why) => (Action::Failed, why, false),
        Verdict::Stop(why) if options.dry_run => (Action::WouldRemove, why, false),
        Verdict::Stop(why) => match launcher.describe(&task.task).await {
            Ok(status) if status.state.is_terminal() => {
                (Action::Kept, "it is already stopping".to_owned(), true)
            }
            _ => match stop(launcher, &task.task, &why).await {
                Ok(()) => (Action::Removed, why, true),
                Err(e) => (
                    Action::Failed,
                    format!("{why}; stopping failed: {e}"),
                    false,
                ),
            },
        },
    };
    let decision = TaskDecision {
        task: task.task.id.clone(),
        job: key.map(JobKey::to_string),
        action,
        reason,
    };
    (decision, gone)
}

async fn stop(launcher: &dyn TaskLauncher, task: &TaskRef, why: &str) -> Result<()> {
    let reason = format!("fargate gc: {why}");
    match launcher.stop(task, &reason).await? {
        StopOutcome::Stopping | StopOutcome::NotFound => Ok(()),
    }
}

/// Removes the record of `key` (no task of it is listed) when its job is not alive: it
/// has not changed for the consistency window and the backend says none of the tasks it
/// names runs (a listing can miss a task; a describe of it is the truth).
async fn sweep_record(
    launcher: &dyn TaskLauncher,
    store: &dyn MetadataStore,
    key: &JobKey,
    options: &GcOptions,
    now: SystemTime,
) -> RecordDecision {
    let decide = |action, reason: &str| RecordDecision {
        job: key.to_string(),
        action,
        reason: reason.to_owned(),
    };
    let lock = match store.lock(key, Duration::ZERO).await {
        Ok(lock) => lock,
        Err(e) if e.kind() == ErrorKind::Timeout => {
            return decide(Action::Kept, "its job holds its lock");
        }
        Err(e) => return decide(Action::Failed, &format!("cannot lock it: {e}")),
    };
    let decision = match store.get(key).await {
        Ok(None) => decide(Action::Kept, "it is gone"),
        // An unreadable record is kept for a person to look at.
        Err(e) => decide(Action::Kept, &format!("cannot read it: {e}")),
        Ok(Some(record)) if !record_is_dead(&record, options, now) => decide(
            Action::Kept,
            "it changed recently; its task may not be listed yet",
        ),
        Ok(Some(record)) => match still_running(launcher, &record).await {
            Err(e) => decide(
                Action::Kept,
                &format!("cannot tell whether its task runs: {e}"),
            ),
            Ok(Some(task)) => decide(
                Action::Kept,
                &format!("its task {task} still runs, though not listed"),
            ),
            Ok(None) if options.dry_run => decide(Action::WouldRemove, "none of its tasks runs"),
            Ok(None) => match store.delete(key).await {
                Ok(()) => decide(Action::Removed, "none of its tasks runs"),
                Err(e) => decide(Action::Failed, &format!("deleting it: {e}")),
            },
        },
    };
    release(store, lock).await;
    decision
}

/// A task `record` names that the backend says is not stopped, if any.
async fn still_running(launcher: &dyn TaskLauncher, record: &JobRecord) -> Result<Option<TaskRef>> {
    for task in record.known_tasks() {
        let status = launcher.describe(&task).await?;
        if !status.state.is_terminal() && status.state != TaskState::Missing {
            return Ok(Some(task));
        }
    }
    Ok(None)
}

async fn release(store: &dyn MetadataStore, lock: JobLock) {
    if let Err(e) = store.unlock(lock).await {
        tracing::warn!("fargate gc: releasing a job lock: {e}");
    }
}

fn at(unix_seconds: u64) -> SystemTime {
    crate::world::from_unix_seconds(unix_seconds)
}

#[cfg(test)]
mod tests {
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
}
