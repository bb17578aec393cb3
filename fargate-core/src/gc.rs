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
//! | failed, and its task is kept for debugging ([`Phase::Kept`]) until a time now past | stopped |
//! | failed, and its task is kept for debugging until a time still to come | kept, whatever its age |
//! | has a record whose last sign of life is older than [`GcOptions::dead_after`] (the latest of: its last heartbeat, [`MetadataStore::last_heartbeat`], kept by a store shared by several hosts; the record's last change; the last mark on its task, [`ListedTask::alive_at`], which a host cut off from the store leaves instead of a heartbeat): its host died | stopped |
//! | has such a record, but its task was marked alive within [`GcOptions::dead_after`] (its host cannot reach the store, and still runs the job) | kept, until its deadline or the maximum age |
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
use std::time::{Duration, SystemTime};

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
    /// A job whose stages gave no sign of life for this long (no heartbeat,
    /// [`MetadataStore::heartbeat`]; no change of its record; no mark on its task,
    /// [`TaskLauncher::mark_alive`], which its host leaves when the store is out of its
    /// reach), and that holds no lock, is dead (its host died): its task is stopped.
    /// Only for stores that keep heartbeats (the DynamoDB store of a fleet), and only for
    /// jobs that sent one. `None`: never.
    pub dead_after: Option<Duration>,
}

impl Default for GcOptions {
    /// Not a dry run; a maximum age of 24 hours; a consistency window of 5 minutes; dead
    /// after 10 minutes without a heartbeat (20 missed ones).
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            max_age: Some(Duration::from_secs(24 * 3600)),
            consistency_window: Duration::from_secs(300),
            dead_after: Some(Duration::from_secs(600)),
        }
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
pub(crate) async fn owners(
    store: &dyn MetadataStore,
    namespace: &Namespace,
) -> Result<BTreeMap<String, JobKey>> {
    // One read of them all where the store can (a table's scan), not one per record.
    let mut owners = BTreeMap::new();
    for record in store.records_with_prefix(namespace.as_str()).await? {
        if !record.key.belongs_to(namespace) {
            continue;
        }
        for task in record.known_tasks() {
            owners.insert(task.id, record.key.clone());
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
    let record = match &lock {
        Some(lock) => store.get_locked(lock).await,
        None => store.get(key).await,
    };
    // A kept task's job has ended (it failed, and its task is kept for debugging until a
    // time of its own): no stage gives it a heartbeat, and its record alone decides.
    let heartbeat = match (&record, &lock) {
        (Ok(Some(r)), Some(_)) if r.pool.is_none() && r.phase != Phase::Kept => {
            store.last_heartbeat(key).await.ok().flatten()
        }
        _ => None,
    };
    // The job's task may carry a later sign of life than the store: its host marks it
    // when the store is out of its reach ([`TaskLauncher::mark_alive`]).
    let marked = tasks.iter().filter_map(|t| t.alive_at).max();
    let mut all_stopped = true;
    for t in tasks {
        let mut verdict = if let Some(why) = past_deadline(t, now) {
            Verdict::Stop(why)
        } else {
            match (&record, &lock) {
                (Err(e), _) => Verdict::Fail(format!("cannot read its job's record: {e}")),
                (Ok(record), Some(_)) => match record
                    .as_ref()
                    .filter(|r| r.phase != Phase::Kept)
                    .and_then(|r| dead(r, heartbeat, marked, options, now))
                {
                    Some(why) => Verdict::Stop(why),
                    None => judge(record.as_ref(), options, now),
                },
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
            && let Err(e) = store.delete_locked(&lock).await
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
    if record.phase == Phase::Kept {
        // A failed job's task kept for debugging: its own deadline, not the maximum age.
        let until = at(record.kept_until.unwrap_or(0));
        return match until.duration_since(now) {
            Ok(left) if !left.is_zero() => Verdict::Keep(format!(
                "kept for debugging its failed job, {} left",
                crate::world::human_duration(left)
            )),
            _ => Verdict::Stop(format!(
                "it was kept for debugging its failed job until {} s ago",
                now.duration_since(until).map_or(0, |d| d.as_secs())
            )),
        };
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

/// Why the job of `record`, whose last heartbeat was `heartbeat` and whose task was last
/// marked alive at `marked`, is dead, if it is: no sign of life (heartbeat, change of its
/// record, or mark on its task) for [`GcOptions::dead_after`]. Judged only for a job that
/// sent a heartbeat (a store that keeps them); a mark only defers the judgement, never a
/// deadline or the maximum age (judged before and after this).
fn dead(
    record: &JobRecord,
    heartbeat: Option<SystemTime>,
    marked: Option<SystemTime>,
    options: &GcOptions,
    now: SystemTime,
) -> Option<String> {
    let limit = options.dead_after?;
    let last = heartbeat?
        .max(at(record.updated_at))
        .max(marked.unwrap_or(SystemTime::UNIX_EPOCH));
    let silent = now.duration_since(last).ok()?;
    (silent > limit).then(|| {
        format!(
            "its job gave no sign of life for {} s (its host died or is cut off)",
            silent.as_secs()
        )
    })
}

/// Why a record is older than its job could run, if it is. A failed job's task kept for
/// debugging ([`Phase::Kept`]) is judged by its own deadline instead.
fn too_old(record: &JobRecord, options: &GcOptions, now: SystemTime) -> Option<String> {
    if record.phase == Phase::Kept {
        return None;
    }
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
            Ok(None) => match store.delete_locked(&lock).await {
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

mod report;
#[cfg(test)]
mod tests;

pub use report::{Action, GcReport, RecordDecision, TaskDecision};
