//! The interleaving harness of the ownership model (`docs/ownership.md`): jobs of two runner
//! namespaces, a warm pool, refills and `gc` runs share one store and one in-memory launcher,
//! and a seeded scheduler interleaves their steps; after every step the ownership invariants
//! are checked. The store is a [`Backend`]'s: the in-memory store ([`MemoryBackend`]), the
//! file store ([`FileBackend`]), or any other (the DynamoDB store's tests run it on moto,
//! through a [`Bridge`]).
//!
//! Every store and launcher call is a scheduling point: the actors' backends forward to
//! the shared store and [`MemoryLauncher`] and yield once before and after each call, and
//! the scheduler polls one runnable actor (picked by the seed's generator) per step. Time
//! is tokio's paused clock: when no actor can run, the runtime jumps to the next timer. The
//! driver's wall clock and randomness come from the seed too ([`Determinism`]), so with the
//! in-memory store a seed replays exactly; a store that does real I/O (files, HTTP) finishes
//! its calls when it does, so its runs differ between tries of a seed, and are checked all
//! the same.
//!
//! Invariants (a violation fails the seed, with its step log):
//! 1. No live job loses its task: from the end of a successful prepare until its cleanup
//!    starts (or one of its stages is killed), the job's task runs and the job's record
//!    names it (its run stages need both).
//! 2. No actor touches another namespace: no put, delete or lock of a key of another
//!    namespace, no launch, adoption or stop of another namespace's task.
//! 3. No task serves two jobs: no two successful prepares report the same task.
//! 4. Nothing is left: after every actor ended, the pools are drained and, two days of
//!    virtual time later (past every window, age limit and deadline), one `gc` per
//!    namespace runs; then no task runs and the store holds no record.
//!
//! `FARGATE_INTERLEAVING_SEEDS=<n>` sets how many seeds run ([`seeds_to_run`]);
//! `FARGATE_INTERLEAVING_SEED=<n>` runs seed `n` alone and prints its whole step log.
//!
//! Not covered: faults of the backends (errors, hangs, lost answers), real processes, SSH
//! failures (the shell answers at once and is not a scheduling point), interruption memory,
//! image jobs and job shapes other than the pool's template.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use async_trait::async_trait;
use fargate_core::FileMetadataStore;
use fargate_core::gc::{self, GcOptions};
use fargate_core::launcher::{
    Launched, LaunchedBatch, ListedTask, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskStatus,
};
use fargate_core::options::{DriverOptions, WarmPoolOptions};
use fargate_core::shell::CapturedOutput;
use fargate_core::testing::{BootPlan, Determinism, MemoryLauncher, MemoryShell, MemoryStore};
use fargate_core::{Driver, JobContext, JobKey, JobLock, JobRecord, JobResponse, MetadataStore};
use fargate_core::{Namespace, Result};
use tokio_util::sync::CancellationToken;

/// Seeds the in-memory store runs by default: about 300 seeds/s pass in a debug build on
/// one core of a 2-core machine, so about 27 s (failing seeds end early).
pub const DEFAULT_SEEDS: u64 = 8000;
/// Steps after which a seed counts as stuck.
const MAX_STEPS: u64 = 200_000;
/// Step-log entries shown with a failure.
const LOG_TAIL: usize = 50;

// ---------------------------------------------------------------------------------------
// The seeded generator.

/// The scheduler's and the scenarios' generator, seeded per run: splitmix64, small, good
/// enough, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Another stream than the driver's (Determinism::install takes the seed as is).
        Rng(seed ^ 0x5EED_0F1A_7E21_EA00)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// What the run records: the step log, the live jobs, and violations.

#[derive(Debug, Default)]
struct Trace {
    step: u64,
    /// The actor being polled.
    actor: String,
    events: Vec<String>,
    violations: Vec<String>,
    /// Tasks of live jobs (prepared, cleanup not started): task id -> job.
    live: BTreeMap<String, String>,
    /// Every task a successful prepare reported: task id -> job.
    served: BTreeMap<String, String>,
    /// Whether the live tasks must be looked at again (a stop, or a job became live).
    recheck: bool,
}

type SharedTrace = Arc<Mutex<Trace>>;

fn lock(trace: &SharedTrace) -> MutexGuard<'_, Trace> {
    trace.lock().unwrap_or_else(|p| p.into_inner())
}

impl Trace {
    fn event(&mut self, what: impl AsRef<str>) {
        let line = format!("#{} {}: {}", self.step, self.actor, what.as_ref());
        self.events.push(line);
    }

    /// Job `job`'s prepare succeeded on `task`: the job is live (invariant 3 checked).
    fn prepared(&mut self, job: &str, task: &TaskRef) {
        if let Some(other) = self.served.insert(task.id.clone(), job.to_owned()) {
            self.violate(
                "3 (one job per task)",
                format!("{job} and {other} were both prepared on {task}"),
            );
        }
        self.live.insert(task.id.clone(), job.to_owned());
        self.recheck = true;
    }

    fn violate(&mut self, invariant: &str, what: String) {
        let line = format!(
            "invariant {invariant} violated at step {}: {what}",
            self.step
        );
        self.event(format!("VIOLATION {line}"));
        self.violations.push(line);
    }
}

/// Whether `key` (a record, lock or task key) belongs to namespace `ns`: job keys are
/// `<ns>-<job>`, pool keys `<ns>_pool_...`.
fn owns(ns: &Namespace, key: &JobKey) -> bool {
    key.as_str()
        .strip_prefix(ns.as_str())
        .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
}

// ---------------------------------------------------------------------------------------
// Scheduling points: backends that yield around every call and check namespaces.

/// Pending once (waking itself), then ready: lets the scheduler run another actor.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

fn outcome<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error {:?}", e.kind()),
    }
}

/// One namespace's view of the shared store.
#[derive(Debug)]
struct SimStore {
    ns: Namespace,
    inner: Arc<dyn MetadataStore>,
    trace: SharedTrace,
}

impl SimStore {
    /// Checks that the actor may change `key` (invariant 2).
    fn writes(&self, op: &str, key: &JobKey) {
        let mut t = lock(&self.trace);
        t.recheck = true;
        if !owns(&self.ns, key) {
            let actor = t.actor.clone();
            t.violate(
                "2 (namespaces)",
                format!(
                    "{actor} (namespace {}) did {op} on {key} of another namespace",
                    self.ns
                ),
            );
        }
    }

    fn log(&self, what: String) {
        lock(&self.trace).event(what);
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MetadataStore for SimStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        yield_once().await;
        self.writes("put", &record.key);
        let r = self.inner.put(record).await;
        self.log(format!(
            "put {} {:?}: {}",
            record.key,
            record.phase,
            outcome(&r)
        ));
        yield_once().await;
        r
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        yield_once().await;
        let r = self.inner.get(key).await;
        let found = match &r {
            Ok(Some(rec)) => format!("{:?}", rec.phase),
            Ok(None) => "none".into(),
            Err(e) => format!("error {:?}", e.kind()),
        };
        self.log(format!("get {key}: {found}"));
        yield_once().await;
        r
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        yield_once().await;
        self.writes("delete", key);
        let r = self.inner.delete(key).await;
        self.log(format!("delete {key}: {}", outcome(&r)));
        yield_once().await;
        r
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        yield_once().await;
        let r = self.inner.list().await;
        self.log(format!(
            "list records: {}",
            r.as_ref().map_or(0, |keys| keys.len())
        ));
        yield_once().await;
        r
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        yield_once().await;
        self.writes("lock", key);
        let r = self.inner.lock(key, wait).await;
        self.log(format!("lock {key}: {}", outcome(&r)));
        yield_once().await;
        r
    }

    async fn unlock(&self, job_lock: JobLock) -> Result<()> {
        yield_once().await;
        let key = job_lock.key().clone();
        let r = self.inner.unlock(job_lock).await;
        self.log(format!("unlock {key}: {}", outcome(&r)));
        yield_once().await;
        r
    }

    async fn put_locked(&self, job_lock: &JobLock, record: &JobRecord) -> Result<()> {
        yield_once().await;
        self.writes("put", &record.key);
        let r = self.inner.put_locked(job_lock, record).await;
        self.log(format!(
            "put {} {:?} (locked): {}",
            record.key,
            record.phase,
            outcome(&r)
        ));
        yield_once().await;
        r
    }

    async fn delete_locked(&self, job_lock: &JobLock) -> Result<()> {
        yield_once().await;
        self.writes("delete", job_lock.key());
        let r = self.inner.delete_locked(job_lock).await;
        self.log(format!(
            "delete {} (locked): {}",
            job_lock.key(),
            outcome(&r)
        ));
        yield_once().await;
        r
    }

    async fn get_locked(&self, job_lock: &JobLock) -> Result<Option<JobRecord>> {
        yield_once().await;
        let r = self.inner.get_locked(job_lock).await;
        let found = match &r {
            Ok(Some(rec)) => format!("{:?}", rec.phase),
            Ok(None) => "none".into(),
            Err(e) => format!("error {:?}", e.kind()),
        };
        self.log(format!("get {} (locked): {found}", job_lock.key()));
        yield_once().await;
        r
    }

    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        yield_once().await;
        let r = self.inner.get_cached(key).await;
        let found = match &r {
            Ok(Some(rec)) => format!("{:?}", rec.phase),
            Ok(None) => "none".into(),
            Err(e) => format!("error {:?}", e.kind()),
        };
        self.log(format!("get {key} (cached): {found}"));
        yield_once().await;
        r
    }

    async fn delete_and_unlock(&self, job_lock: JobLock) -> Result<()> {
        yield_once().await;
        let key = job_lock.key().clone();
        self.writes("delete", &key);
        let r = self.inner.delete_and_unlock(job_lock).await;
        self.log(format!("delete {key} and unlock: {}", outcome(&r)));
        yield_once().await;
        r
    }

    fn may_hold_legacy_records(&self) -> bool {
        self.inner.may_hold_legacy_records()
    }

    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        yield_once().await;
        let r = self.inner.records_with_prefix(prefix).await;
        self.log(format!(
            "list records {prefix}*: {}",
            r.as_ref().map_or(0, |records| records.len())
        ));
        yield_once().await;
        r
    }

    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        yield_once().await;
        self.writes("heartbeat", key);
        let r = self.inner.heartbeat(key).await;
        self.log(format!("heartbeat {key}: {}", outcome(&r)));
        yield_once().await;
        r
    }

    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        yield_once().await;
        let r = self.inner.last_heartbeat(key).await;
        self.log(format!("last heartbeat {key}: {}", outcome(&r)));
        yield_once().await;
        r
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<fargate_core::metadata::SlotGrant> {
        self.inner.acquire_slot(counter, holder, limit, ttl).await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.inner.release_slot(counter, holder).await
    }
    async fn slot_holders(&self, counter: &str) -> Result<Vec<fargate_core::metadata::SlotHolder>> {
        self.inner.slot_holders(counter).await
    }
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.slot_counters(prefix).await
    }
}

/// One namespace's view of the shared launcher.
#[derive(Debug)]
struct SimLauncher {
    ns: Namespace,
    inner: Arc<MemoryLauncher>,
    trace: SharedTrace,
}

impl SimLauncher {
    /// The namespace of task `task`'s job (its launch spec), if the task exists.
    fn namespace_of(&self, task: &TaskRef) -> Option<Namespace> {
        self.inner
            .tasks()
            .into_iter()
            .find(|(t, _)| t == task)
            .map(|(_, fake)| fake.spec.job.namespace)
    }

    fn touches(&self, op: &str, what: &str, ns: Option<Namespace>) {
        if let Some(ns) = ns
            && ns != self.ns
        {
            let mut t = lock(&self.trace);
            let actor = t.actor.clone();
            t.violate(
                "2 (namespaces)",
                format!(
                    "{actor} (namespace {}) did {op} on {what} of namespace {ns}",
                    self.ns
                ),
            );
        }
    }

    fn log(&self, what: String) {
        lock(&self.trace).event(what);
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl TaskLauncher for SimLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        yield_once().await;
        self.touches(
            "launch",
            spec.key.as_str(),
            Some(spec.job.namespace.clone()),
        );
        let r = self.inner.launch(spec).await;
        self.log(format!(
            "launch for {}: {:?}",
            spec.key,
            r.as_ref().map(|t| &t.id)
        ));
        yield_once().await;
        r
    }

    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        yield_once().await;
        self.touches(
            "launch",
            spec.key.as_str(),
            Some(spec.job.namespace.clone()),
        );
        let r = self.inner.launch_observed(spec).await;
        self.log(format!(
            "launch for {}: {:?}",
            spec.key,
            r.as_ref().map(|l| &l.task.id)
        ));
        yield_once().await;
        r
    }

    fn max_launch_batch(&self) -> u32 {
        self.inner.max_launch_batch()
    }

    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        yield_once().await;
        self.touches(
            "launch",
            spec.key.as_str(),
            Some(spec.job.namespace.clone()),
        );
        let r = self.inner.launch_batch(spec, count).await;
        self.log(format!(
            "launch of {count} for {}: {:?}",
            spec.key,
            r.as_ref().map(|b| b.tasks.len())
        ));
        yield_once().await;
        r
    }

    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        yield_once().await;
        let r = self.inner.describe(task).await;
        self.log(format!(
            "describe {task}: {:?}",
            r.as_ref().map(|s| s.state)
        ));
        yield_once().await;
        r
    }

    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        yield_once().await;
        self.touches("stop", &task.id, self.namespace_of(task));
        let r = self.inner.stop(task, reason).await;
        {
            let mut t = lock(&self.trace);
            t.event(format!("stop {task} ({reason}): {r:?}"));
            t.recheck = true;
        }
        yield_once().await;
        r
    }

    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        yield_once().await;
        let r = self.inner.find(key).await;
        self.log(format!(
            "find {key}: {}",
            r.as_ref().map_or(0, |tasks| tasks.len())
        ));
        yield_once().await;
        r
    }

    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        yield_once().await;
        let r = self.inner.list(namespace).await;
        self.log(format!(
            "list tasks of {namespace}: {}",
            r.as_ref().map_or(0, |tasks| tasks.len())
        ));
        yield_once().await;
        r
    }

    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        yield_once().await;
        self.touches("adopt", &task.id, self.namespace_of(task));
        self.touches("adopt", spec.key.as_str(), Some(spec.job.namespace.clone()));
        let r = self.inner.adopt(task, spec).await;
        self.log(format!("adopt {task} for {}: {}", spec.key, outcome(&r)));
        yield_once().await;
        r
    }

    async fn mark_alive(&self, task: &TaskRef, at: std::time::SystemTime) -> Result<()> {
        yield_once().await;
        self.touches("mark alive", &task.id, self.namespace_of(task));
        let r = self.inner.mark_alive(task, at).await;
        self.log(format!("mark {task} alive: {}", outcome(&r)));
        yield_once().await;
        r
    }

    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        yield_once().await;
        let r = self.inner.resolve_task_definition(task_definition).await;
        self.log(format!("resolve {task_definition}: {}", outcome(&r)));
        yield_once().await;
        r
    }

    fn settings_fingerprint(&self) -> String {
        self.inner.settings_fingerprint()
    }

    fn debug_commands(
        &self,
        task: &TaskRef,
        container: &str,
    ) -> Option<fargate_core::DebugCommands> {
        self.inner.debug_commands(task, container)
    }

    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        yield_once().await;
        self.inner.release(spec).await
    }

    async fn announced_host_keys(
        &self,
        task: &TaskRef,
        container: &str,
    ) -> Result<Vec<fargate_core::HostKey>> {
        yield_once().await;
        self.inner.announced_host_keys(task, container).await
    }
}

// ---------------------------------------------------------------------------------------
// The scheduler.

/// An actor's waker: marks it runnable and wakes the scheduler.
struct Flag {
    woken: AtomicBool,
    scheduler: Arc<Mutex<Option<Waker>>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(w) = self
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

type ActorFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Actor {
    name: String,
    future: Option<ActorFuture>,
    flag: Arc<Flag>,
    /// Set by the scheduler to kill the actor's current stage.
    kill: Rc<Cell<bool>>,
    /// The actor's own poll at which its current stage is killed.
    kill_at: Option<u64>,
    polls: u64,
}

/// Runs `actors` to completion, one seeded pick per step, checking `check` after each
/// step; the first violation ends the run.
async fn schedule(
    actors: &mut [Actor],
    rng: &mut Rng,
    trace: &SharedTrace,
    check: &dyn Fn(&mut Trace),
) -> std::result::Result<(), String> {
    let scheduler: Arc<Mutex<Option<Waker>>> = Arc::default();
    for a in actors.iter_mut() {
        a.flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            scheduler: scheduler.clone(),
        });
    }
    std::future::poll_fn(|cx| {
        *scheduler.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        loop {
            let runnable: Vec<usize> = actors
                .iter()
                .enumerate()
                .filter(|(_, a)| a.future.is_some() && a.flag.woken.load(Ordering::SeqCst))
                .map(|(i, _)| i)
                .collect();
            if runnable.is_empty() {
                return if actors.iter().all(|a| a.future.is_none()) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending // timers: the paused clock jumps to the next one
                };
            }
            let actor = &mut actors[runnable[rng.below(runnable.len() as u64) as usize]];
            actor.flag.woken.store(false, Ordering::SeqCst);
            actor.polls += 1;
            {
                let mut t = lock(trace);
                t.step += 1;
                t.actor.clone_from(&actor.name);
                if actor.kill_at == Some(actor.polls) {
                    actor.kill.set(true);
                }
                if t.step > MAX_STEPS {
                    return Poll::Ready(Err(format!("no end after {MAX_STEPS} steps")));
                }
            }
            let waker = Waker::from(actor.flag.clone());
            let future = actor.future.as_mut().expect("runnable");
            if future
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                actor.future = None;
                lock(trace).event("ends");
            }
            let mut t = lock(trace);
            check(&mut t);
            if let Some(v) = t.violations.first() {
                return Poll::Ready(Err(v.clone()));
            }
        }
    })
    .await
}

/// Invariants 1 and 3 after a step (2 is checked at each call, by the backends).
fn check_live_tasks(launcher: &MemoryLauncher, backend: &dyn Backend, t: &mut Trace) {
    if !std::mem::take(&mut t.recheck) {
        return;
    }
    let tasks = launcher.tasks();
    let live: Vec<(String, String)> = t.live.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
    for (task, job) in live {
        let state = tasks
            .iter()
            .find(|(r, _)| r.id == task)
            .map(|(_, f)| f.state);
        if state.is_none_or(|s| s.is_terminal()) {
            t.violate(
                "1 (live task)",
                format!("the task {task} of live job {job} is {state:?}"),
            );
        }
        // Its run stages need the record that names the task.
        let record = backend.peek(&JobKey::parse(&job).expect("a job key"));
        let named = record.as_ref().and_then(|r| r.task.as_ref());
        if named.is_none_or(|named| named.id != task) {
            t.violate(
                "1 (live task)",
                format!(
                    "the record of live job {job} is {:?}, naming {named:?}, not its task {task}",
                    record.as_ref().map(|r| r.phase)
                ),
            );
        }
    }
}

/// What a stage of an actor came to.
enum Stage<T> {
    Done(T),
    Killed,
}

/// Runs `stage` unless the actor's kill flag is set, in which case the stage's future is
/// dropped at that poll (a killed process).
async fn killable<T>(kill: &Rc<Cell<bool>>, stage: impl Future<Output = T>) -> Stage<T> {
    let mut stage = std::pin::pin!(stage);
    std::future::poll_fn(|cx| {
        if kill.replace(false) {
            return Poll::Ready(Stage::Killed);
        }
        stage.as_mut().poll(cx).map(Stage::Done)
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The world of one seed.

const TASK_DEFINITION: &str = "ci-coordinator:1";

struct Runner {
    ns: Namespace,
    driver: Driver,
    store: Arc<SimStore>,
    launcher: Arc<SimLauncher>,
    pool: usize,
}

/// The world of one seed: one launcher, one store (a handle of it per runner), the runners
/// and the trace.
pub struct World {
    launcher: Arc<MemoryLauncher>,
    backend: Arc<dyn Backend>,
    runners: Vec<Runner>,
    trace: SharedTrace,
}

impl World {
    fn new(plan: BootPlan, pools: &[(&str, usize)], backend: Arc<dyn Backend>) -> Self {
        let launcher = Arc::new(MemoryLauncher::with_plan(plan));
        let shell = Arc::new(MemoryShell::new());
        let trace = SharedTrace::default();
        let runners = pools
            .iter()
            .enumerate()
            .map(|(index, &(name, size))| {
                let ns = Namespace::parse(name).unwrap();
                let mut options = DriverOptions::builder()
                    .namespace(ns.clone())
                    .task_definition(TASK_DEFINITION)
                    .build()
                    .unwrap();
                let mut pool = WarmPoolOptions::default();
                pool.size = size;
                options.pool = pool;
                let sim_store = Arc::new(SimStore {
                    ns: ns.clone(),
                    inner: backend.store(index),
                    trace: trace.clone(),
                });
                let sim_launcher = Arc::new(SimLauncher {
                    ns: ns.clone(),
                    inner: launcher.clone(),
                    trace: trace.clone(),
                });
                let driver = Driver::new(
                    options,
                    sim_launcher.clone(),
                    shell.clone(),
                    sim_store.clone(),
                );
                Runner {
                    ns,
                    driver,
                    store: sim_store,
                    launcher: sim_launcher,
                    pool: size,
                }
            })
            .collect();
        World {
            launcher,
            backend,
            runners,
            trace,
        }
    }

    /// An actor running `body`, which gets the actor's kill flag.
    fn actor<F: Future<Output = ()> + 'static>(
        &self,
        name: String,
        kill_at: Option<u64>,
        body: impl FnOnce(Rc<Cell<bool>>) -> F,
    ) -> Actor {
        let kill = Rc::new(Cell::new(false));
        // Unconstrained: the scheduler polls many steps per poll of its own task, which
        // would use up tokio's cooperative budget and leave every actor spinning.
        let future = tokio::task::unconstrained(body(kill.clone()));
        Actor {
            name,
            future: Some(Box::pin(future)),
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                scheduler: Arc::default(),
            }),
            kill,
            kill_at,
            polls: 0,
        }
    }
}

fn job_context(id: u64) -> JobContext {
    JobContext::new(JobResponse::new(id))
        .with_variable("CI_JOB_ID", id.to_string())
        .with_variable("CI_PIPELINE_ID", "7")
        .with_variable("CI_RUNNER_SHORT_TOKEN", "tok")
        .with_variable("CI_PROJECT_URL", "https://gitlab.example/p")
}

/// What a job does after one of its stages was killed.
#[derive(Clone, Copy, Debug)]
enum AfterKill {
    /// The runner lives on and runs cleanup.
    Cleanup,
    /// The host died: no stage of the job ever runs again.
    HostDied,
}

/// What a job does.
#[derive(Clone, Copy, Debug)]
struct JobPlan {
    id: u64,
    /// When its prepare starts.
    start: Duration,
    /// How many run stages it has.
    runs: u32,
    /// The time before each run stage ends (its script's time).
    gap: Duration,
    after_kill: AfterKill,
}

/// A job: prepare, run stages, cleanup (after any failure too, as gitlab-runner).
async fn job_actor(driver: Driver, trace: SharedTrace, kill: Rc<Cell<bool>>, plan: JobPlan) {
    let JobPlan {
        id,
        start,
        runs,
        gap,
        after_kill,
    } = plan;
    tokio::time::sleep(start).await;
    let job = job_context(id);
    let label = format!("{}-{id}", driver.namespace());
    let cancel = CancellationToken::new();
    let killed = |trace: &SharedTrace, stage: &str| {
        lock(trace).event(format!("killed in {stage} ({after_kill:?})"));
        matches!(after_kill, AfterKill::HostDied)
    };
    let mut task = None;
    match killable(&kill, driver.prepare(&job, &cancel)).await {
        Stage::Done(Ok(report)) => {
            let mut t = lock(&trace);
            t.event(format!(
                "prepared on {} (warm: {})",
                report.task, report.warm
            ));
            t.prepared(&label, &report.task);
            task = Some(report.task);
        }
        Stage::Done(Err(f)) => lock(&trace).event(format!("prepare failed: {f}")),
        Stage::Killed => {
            if killed(&trace, "prepare") {
                return;
            }
        }
    }
    let not_live = |trace: &SharedTrace| {
        if let Some(task) = &task {
            lock(trace).live.remove(&task.id);
        }
    };
    if task.is_some() {
        for n in 0..runs {
            // The script's time: the run stages of a job take long, its prepare does not.
            tokio::time::sleep(gap).await;
            let mut out = CapturedOutput::default();
            let script: Arc<[u8]> = Arc::from(&b"echo hi"[..]);
            let stage = driver.run(&job, "build_script", script, &mut out, &cancel);
            match killable(&kill, stage).await {
                Stage::Done(Ok(())) => lock(&trace).event(format!("run {n} ok")),
                Stage::Done(Err(f)) => {
                    lock(&trace).event(format!("run {n} failed: {f}"));
                    break;
                }
                Stage::Killed => {
                    not_live(&trace);
                    if killed(&trace, "run") {
                        return;
                    }
                    break;
                }
            }
        }
    }
    not_live(&trace);
    lock(&trace).event("cleanup starts");
    match killable(&kill, driver.cleanup(&job)).await {
        Stage::Done(Ok(report)) => {
            lock(&trace).event(format!("cleanup stopped {:?}", report.stopped))
        }
        Stage::Done(Err(f)) => lock(&trace).event(format!("cleanup failed: {f}")),
        Stage::Killed => {
            killed(&trace, "cleanup");
        }
    }
}

/// A pool command of the administrator.
#[derive(Clone, Copy, Debug)]
enum PoolCommand {
    /// `fargate pool fill`, with `--wait` or not.
    Fill { wait: bool },
    /// `fargate pool drain`.
    Drain,
}

/// `command` after `start`.
async fn pool_actor(
    driver: Driver,
    trace: SharedTrace,
    kill: Rc<Cell<bool>>,
    start: Duration,
    command: PoolCommand,
) {
    tokio::time::sleep(start).await;
    let run = async {
        match command {
            PoolCommand::Fill { wait } => driver.pool_fill(wait).await,
            PoolCommand::Drain => driver.pool_drain().await,
        }
    };
    match killable(&kill, run).await {
        Stage::Done(r) => lock(&trace).event(format!(
            "pool {command:?}: {}",
            r.map_or_else(
                |e| e.to_string(),
                |r| format!("started {:?}, stopped {:?}", r.started, r.stopped)
            )
        )),
        Stage::Killed => lock(&trace).event(format!("pool {command:?} killed")),
    }
}

/// When and how `fargate gc` runs.
#[derive(Clone, Debug)]
struct GcPlan {
    start: Duration,
    runs: u32,
    every: Duration,
    options: GcOptions,
}

/// `fargate gc` of `runner`'s namespace as `plan` says.
async fn gc_actor(
    runner: (Arc<SimStore>, Arc<SimLauncher>),
    trace: SharedTrace,
    kill: Rc<Cell<bool>>,
    plan: GcPlan,
) {
    let (store, launcher) = runner;
    let GcPlan {
        start,
        runs,
        every,
        options,
    } = plan;
    tokio::time::sleep(start).await;
    let ns = store.ns.clone();
    for _ in 0..runs {
        let run = gc::collect(&*launcher, &*store, &ns, &options);
        match killable(&kill, run).await {
            Stage::Done(Ok(report)) => {
                let stopped: Vec<&str> = report
                    .tasks_with(gc::Action::Removed)
                    .map(|t| t.task.as_str())
                    .collect();
                lock(&trace).event(format!("gc stopped {stopped:?}"));
            }
            Stage::Done(Err(e)) => lock(&trace).event(format!("gc failed: {e}")),
            Stage::Killed => {
                lock(&trace).event("gc killed");
                return;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// After every actor: drain the pools, let two days pass, gc every namespace.
async fn final_actor(world: Rc<World>) {
    for r in world.runners.iter().filter(|r| r.pool > 0) {
        let drained = r.driver.pool_drain().await;
        lock(&world.trace).event(format!("pool drain of {}: {}", r.ns, drained.is_ok()));
    }
    tokio::time::sleep(Duration::from_secs(48 * 3600)).await;
    for r in &world.runners {
        let report = gc::collect(&*r.launcher, &*r.store, &r.ns, &GcOptions::default()).await;
        lock(&world.trace).event(format!("final gc of {}: {}", r.ns, report.is_ok()));
    }
}

/// Invariant 4, at the end.
async fn check_nothing_left(world: &World) {
    let running = world.launcher.running();
    let records = match world.backend.store(0).list().await {
        Ok(records) => records,
        Err(e) => vec![
            JobKey::parse(&format!(
                "unlistable-{}",
                e.kind().as_str().replace(' ', "-")
            ))
            .expect("a key"),
        ],
    };
    let mut t = lock(&world.trace);
    t.actor = "end".into();
    if !running.is_empty() {
        t.violate("4 (nothing left)", format!("tasks still run: {running:?}"));
    }
    if !records.is_empty() {
        t.violate("4 (nothing left)", format!("records left: {records:?}"));
    }
}

/// A scenario: the world and its actors, drawn from the seed.
pub struct Scenario {
    world: Rc<World>,
    actors: Vec<Actor>,
    description: String,
}

/// The scenario of the ownership model's run: drawn from `rng`, on `backend`'s store.
pub fn scenario(rng: &mut Rng, backend: Arc<dyn Backend>) -> Scenario {
    let lag = Duration::from_secs(rng.pick(&[0, 0, 3, 30]));
    let until_address = rng.range(0, 2) as u32;
    // Half the seeds fill pools with calls of several tasks (a lead slot records the call).
    let batch = rng.pick(&[1, 1, 2, 10]) as u32;
    let plan = BootPlan {
        describes_until_address: until_address,
        describes_until_running: until_address + rng.range(0, 1) as u32,
        invisible_for: lag,
        max_launch_batch: batch,
        ..BootPlan::default()
    };
    let alpha_pool = rng.range(1, 3) as usize;
    let beta_pool = if rng.chance(1, 3) { 1 } else { 0 };
    let world = Rc::new(World::new(
        plan,
        &[("alpha", alpha_pool), ("beta", beta_pool)],
        backend,
    ));
    let mut actors = Vec::new();
    let mut description = format!(
        "lag {lag:?}, describes until address {until_address}, launch batches of {batch}, pools alpha {alpha_pool} beta {beta_pool}"
    );
    // A third of the seeds use one namespace: beta's runner exists but does nothing.
    let two_namespaces = rng.chance(2, 3);
    let jobs = [
        rng.range(1, 4),
        if two_namespaces { rng.range(0, 2) } else { 0 },
    ];
    for (r, &count) in world.runners.iter().zip(&jobs) {
        for id in 1..=count {
            let start = Duration::from_secs(rng.pick(&[0, 0, 1, 5, 20]));
            let runs = rng.range(1, 3) as u32;
            let gap = Duration::from_secs(rng.pick(&[0, 1, 30, 400]));
            let kill_at = rng.chance(1, 3).then(|| rng.range(1, 60));
            let after_kill = if rng.chance(1, 2) {
                AfterKill::Cleanup
            } else {
                AfterKill::HostDied
            };
            let plan = JobPlan {
                id,
                start,
                runs,
                gap,
                after_kill,
            };
            let name = format!("job {}-{id}", r.ns);
            let _ = write!(description, "; {name}: {plan:?}, kill at {kill_at:?}");
            let (driver, trace) = (r.driver.clone(), world.trace.clone());
            actors.push(world.actor(name, kill_at, |kill| job_actor(driver, trace, kill, plan)));
        }
    }
    for r in world.runners.iter().filter(|r| r.pool > 0) {
        let mut commands = Vec::new();
        if rng.chance(1, 2) {
            commands.push(PoolCommand::Fill {
                wait: rng.chance(1, 2),
            });
        }
        if rng.chance(1, 6) {
            commands.push(PoolCommand::Drain);
        }
        for command in commands {
            let start = Duration::from_secs(rng.pick(&[0, 2, 10, 30]));
            let kill_at = rng.chance(1, 6).then(|| rng.range(1, 40));
            let name = format!("pool {}", r.ns);
            let _ = write!(
                description,
                "; {name}: {command:?} at {start:?}, kill at {kill_at:?}"
            );
            let (driver, trace) = (r.driver.clone(), world.trace.clone());
            actors.push(world.actor(name, kill_at, |kill| {
                pool_actor(driver, trace, kill, start, command)
            }));
        }
    }
    for _ in 0..rng.range(1, 2) {
        let r = &world.runners[if two_namespaces {
            rng.below(2) as usize
        } else {
            0
        }];
        // Often at the instants jobs start (their claims), as a gc timer may hit them.
        let start = Duration::from_secs(rng.pick(&[0, 1, 5, 20, 40]));
        let runs = rng.range(1, 6) as u32;
        let every = Duration::from_secs(rng.pick(&[1, 1, 4, 10, 60]));
        let mut options = GcOptions::default();
        // The window must cover the backend's lag (plus a second: records count in whole
        // seconds), as an administrator's must.
        options.consistency_window = lag + Duration::from_secs(rng.pick(&[2, 10, 300]));
        options.max_age = rng.chance(1, 2).then(|| Duration::from_secs(3600));
        let kill_at = rng.chance(1, 6).then(|| rng.range(1, 40));
        let name = format!("gc {}", r.ns);
        let _ = write!(
            description,
            "; {name}: start {start:?}, {runs} runs every {every:?}, window {:?}, kill at {kill_at:?}",
            options.consistency_window
        );
        let plan = GcPlan {
            start,
            runs,
            every,
            options,
        };
        let runner = (r.store.clone(), r.launcher.clone());
        let trace = world.trace.clone();
        actors.push(world.actor(name, kill_at, |kill| gc_actor(runner, trace, kill, plan)));
    }
    Scenario {
        world,
        actors,
        description,
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct Outcome {
    /// The step log.
    pub events: Vec<String>,
    /// The scenario drawn from the seed.
    pub description: String,
    /// The first violation, if any.
    pub result: std::result::Result<(), String>,
}

/// Runs `build`'s scenario for `seed` on `backend`: the actors, then the final drain and gc,
/// then the end check.
pub fn run_seed(
    seed: u64,
    backend: Arc<dyn Backend>,
    build: impl FnOnce(&mut Rng, Arc<dyn Backend>) -> Scenario,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let _determinism = Determinism::install(seed);
        let mut rng = Rng::new(seed);
        let Scenario {
            world,
            mut actors,
            description,
        } = build(&mut rng, backend);
        let (launcher, backend) = (world.launcher.clone(), world.backend.clone());
        let check = move |t: &mut Trace| check_live_tasks(&launcher, &*backend, t);
        let mut result = schedule(&mut actors, &mut rng, &world.trace, &check).await;
        drop(actors);
        if result.is_ok() {
            // Every job ended: none is live, the final actor may stop everything.
            lock(&world.trace).live.clear();
            let w = world.clone();
            let mut last = vec![world.actor("final".into(), None, |_| final_actor(w))];
            result = schedule(&mut last, &mut rng, &world.trace, &check).await;
        }
        if result.is_ok() {
            check_nothing_left(&world).await;
            result = lock(&world.trace)
                .violations
                .first()
                .map_or(Ok(()), |v| Err(v.clone()));
        }
        let events = std::mem::take(&mut lock(&world.trace).events);
        Outcome {
            events,
            description,
            result,
        }
    })
}

/// What a failed seed says: the violation, the scenario, the end of the step log and how
/// to run the seed alone.
pub fn failure_message(seed: u64, outcome: &Outcome) -> String {
    let err = outcome.result.as_ref().err().map_or("", String::as_str);
    let tail = outcome.events.len().saturating_sub(LOG_TAIL);
    format!(
        "seed {seed}: {err}\nscenario: {}\nlast {} of {} steps (rerun with FARGATE_INTERLEAVING_SEED={seed}):\n{}",
        outcome.description,
        outcome.events.len() - tail,
        outcome.events.len(),
        outcome.events[tail..].join("\n")
    )
}

/// The number in environment variable `name`, if set (a panic when it is no number).
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// The invariant a failure names ("invariant 1 (live task)"), for the summary.
pub fn invariant_of(err: &str) -> String {
    err.split(" violated").next().unwrap_or(err).to_owned()
}

/// What a rogue actor does wrong, once job `alpha-1` is live.
#[derive(Clone, Copy, Debug)]
pub enum Rogue {
    /// Stops the job's task with alpha's launcher.
    StopsTheTask,
    /// Deletes the job's record with beta's store.
    DeletesAnotherNamespacesRecord,
    /// Reports a second prepare on the job's task.
    PreparesOnTheSameTask,
    /// Leaves a task running that no runner's gc lists.
    LeavesATask,
}

/// One job of alpha, and a rogue actor that waits until it is live and then does `rogue`.
pub fn rogue_scenario(rogue: Rogue) -> impl FnOnce(&mut Rng, Arc<dyn Backend>) -> Scenario {
    move |_rng, backend| {
        let world = Rc::new(World::new(
            BootPlan::default(),
            &[("alpha", 0), ("beta", 0)],
            backend,
        ));
        let plan = JobPlan {
            id: 1,
            start: Duration::ZERO,
            runs: 3,
            gap: Duration::from_secs(1),
            after_kill: AfterKill::Cleanup,
        };
        let (driver, trace) = (world.runners[0].driver.clone(), world.trace.clone());
        let job = world.actor("job alpha-1".into(), None, |kill| {
            job_actor(driver, trace, kill, plan)
        });
        let w = world.clone();
        let body = async move {
            let task = loop {
                let live = lock(&w.trace).live.keys().next().cloned();
                match live {
                    Some(task) => break TaskRef::new(task),
                    // A timer, not a busy loop: a store doing real I/O may take many steps.
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            };
            let key = JobKey::parse("alpha-1").unwrap();
            match rogue {
                Rogue::StopsTheTask => {
                    let _ = w.runners[0].launcher.stop(&task, "rogue").await;
                }
                Rogue::DeletesAnotherNamespacesRecord => {
                    let _ = w.runners[1].store.delete(&key).await;
                }
                Rogue::PreparesOnTheSameTask => lock(&w.trace).prepared("alpha-2", &task),
                Rogue::LeavesATask => {
                    // A namespace no runner's gc lists.
                    let identity = fargate_core::JobIdentity::from_response(
                        Namespace::parse("gamma").unwrap(),
                        &JobResponse::new(1),
                    );
                    let spec = TaskSpec::new(identity, TASK_DEFINITION).with_client_token("rogue");
                    w.launcher.launch(&spec).await.unwrap();
                }
            }
        };
        let rogue_actor = world.actor("rogue".into(), None, |_| body);
        Scenario {
            world,
            actors: vec![job, rogue_actor],
            description: format!("{rogue:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stores, and runs of many seeds.

/// The store of a run: a handle per runner, and the checker's view of it.
pub trait Backend {
    /// The store runner `runner` (0 or 1) uses: one store for both, or a handle of its own
    /// (another host) on the same data.
    fn store(&self, runner: usize) -> Arc<dyn MetadataStore>;
    /// The record of `key` as stored now, read at once (the checker's view, outside the
    /// scheduler: never a scheduling point).
    fn peek(&self, key: &JobKey) -> Option<JobRecord>;
}

/// The in-memory store, shared by both runners: runs replay exactly.
#[derive(Debug, Default)]
pub struct MemoryBackend(Arc<MemoryStore>);

impl MemoryBackend {
    /// A fresh store.
    pub fn fresh() -> Arc<dyn Backend> {
        Arc::new(MemoryBackend::default())
    }
}

impl Backend for MemoryBackend {
    fn store(&self, _runner: usize) -> Arc<dyn MetadataStore> {
        self.0.clone()
    }
    fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        self.0.peek(key)
    }
}

/// The file store in a temporary directory, shared by both runners (two runner entries of
/// one host, each with its namespace).
#[derive(Debug)]
pub struct FileBackend {
    dir: tempfile::TempDir,
    store: Arc<FileMetadataStore>,
}

impl FileBackend {
    /// A store in a fresh temporary directory.
    pub fn fresh() -> Arc<dyn Backend> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(FileMetadataStore::new(dir.path().join("metadata")));
        Arc::new(FileBackend { dir, store })
    }
}

impl Backend for FileBackend {
    fn store(&self, _runner: usize) -> Arc<dyn MetadataStore> {
        self.store.clone()
    }
    fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        let _ = &self.dir;
        let bytes = std::fs::read(self.store.record_path(key)).ok()?;
        JobRecord::from_json(key, &bytes).ok()
    }
}

/// How many seeds a run of `backend_name` does: `FARGATE_INTERLEAVING_SEEDS`, else
/// `default`.
pub fn seeds_to_run(default: u64) -> u64 {
    env_u64("FARGATE_INTERLEAVING_SEEDS").unwrap_or(default)
}

/// Runs the ownership model's scenario for `seeds` seeds (or the one seed of
/// `FARGATE_INTERLEAVING_SEED`, printing its log), each on a fresh store of `backend`;
/// panics with a summary of the violations and the first failure's log.
pub fn check_seeds(seeds: u64, backend: impl Fn(u64) -> Arc<dyn Backend>) {
    if let Some(seed) = env_u64("FARGATE_INTERLEAVING_SEED") {
        let outcome = run_seed(seed, backend(seed), scenario);
        println!("scenario: {}", outcome.description);
        for e in &outcome.events {
            println!("{e}");
        }
        assert!(
            outcome.result.is_ok(),
            "{}",
            failure_message(seed, &outcome)
        );
        return;
    }
    let started = std::time::Instant::now();
    let mut failures: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut first: Option<String> = None;
    let mut steps = 0;
    for seed in 0..seeds {
        let outcome = run_seed(seed, backend(seed), scenario);
        steps += outcome.events.len();
        if let Err(err) = &outcome.result {
            failures.entry(invariant_of(err)).or_default().push(seed);
            first.get_or_insert_with(|| failure_message(seed, &outcome));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{seeds} seeds, {steps} logged steps in {elapsed:?} ({:.0} seeds/s)",
        seeds as f64 / elapsed.as_secs_f64()
    );
    if let Some(first) = first {
        let mut summary = String::new();
        for (invariant, seeds) in &failures {
            let shown: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
            let _ = writeln!(
                summary,
                "{invariant}: {} seeds, e.g. {}",
                seeds.len(),
                shown.join(" ")
            );
        }
        panic!("{summary}\nfirst failure: {first}");
    }
}

/// Checks that the checker notices each [`Rogue`] on `backend`'s stores (5 seeds each).
pub fn check_rogues_are_caught(backend: impl Fn(u64) -> Arc<dyn Backend>) {
    for (rogue, invariant) in [
        (Rogue::StopsTheTask, "invariant 1 (live task)"),
        (
            Rogue::DeletesAnotherNamespacesRecord,
            "invariant 2 (namespaces)",
        ),
        (
            Rogue::PreparesOnTheSameTask,
            "invariant 3 (one job per task)",
        ),
        (Rogue::LeavesATask, "invariant 4 (nothing left)"),
    ] {
        for seed in 0..5 {
            let outcome = run_seed(seed, backend(seed), rogue_scenario(rogue));
            let err = outcome.result.as_ref().expect_err(&format!(
                "{rogue:?}, seed {seed}: no violation; log:\n{}",
                outcome.events.join("\n")
            ));
            assert_eq!(
                invariant_of(err),
                invariant,
                "{rogue:?}, seed {seed}: {err}"
            );
            let message = failure_message(seed, &outcome);
            assert!(message.contains(&format!("FARGATE_INTERLEAVING_SEED={seed}")));
        }
    }
}

// ---------------------------------------------------------------------------------------
// A store that does its I/O on a runtime of its own.

/// Runs a store's calls on a runtime of its own (a thread with real time), for a store
/// whose I/O would not survive the scheduler's paused clock (an HTTP client's timeouts
/// fire at once when the paused runtime jumps to its next timer). Each call is handed over
/// from a blocking task, which keeps the paused clock from jumping while it runs. Before
/// each call, `clock` is set to the driver's (virtual) wall clock, for a store that reads
/// its lease times from it.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<dyn MetadataStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    clock: fargate_core::testing::ManualClock,
    /// The inner store's locks, by holder: the outer locks carry holder and fence only.
    held: Arc<Mutex<BTreeMap<String, JobLock>>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The outer lock's guard: drops the inner lock with it (the inner store releases it on
/// the runtime it was taken on).
struct BridgeGuard {
    holder: String,
    held: Arc<Mutex<BTreeMap<String, JobLock>>>,
}

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let inner = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.holder);
        drop(inner);
    }
}

impl Bridge {
    /// `inner` (whose lease clock is `clock`) on `runtime`.
    pub fn new(
        inner: Arc<dyn MetadataStore>,
        runtime: Arc<tokio::runtime::Runtime>,
        clock: fargate_core::testing::ManualClock,
    ) -> Self {
        Bridge {
            inner,
            runtime,
            clock,
            held: Arc::default(),
        }
    }

    /// Runs `call` on the store's runtime, from a blocking task of the caller's.
    async fn run<T: Send + 'static, F>(
        &self,
        call: impl FnOnce(Arc<dyn MetadataStore>) -> F + Send + 'static,
    ) -> T
    where
        F: Future<Output = T> + Send + 'static,
    {
        use fargate_core::world::Clock;
        self.clock.set(fargate_core::world::SystemClock.now());
        let (inner, runtime) = (self.inner.clone(), self.runtime.clone());
        tokio::task::spawn_blocking(move || runtime.block_on(call(inner)))
            .await
            .expect("a bridged store call")
    }

    /// The record of `key` now, read from any thread (for [`Backend::peek`]).
    pub fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        let (inner, runtime, key) = (self.inner.clone(), self.runtime.clone(), key.clone());
        std::thread::spawn(move || runtime.block_on(async move { inner.get(&key).await }))
            .join()
            .expect("a bridged read")
            .ok()
            .flatten()
    }

    /// The inner lock of the outer `lock`, without its guard: what a write under it needs.
    fn token(lock: &JobLock) -> JobLock {
        let inner = JobLock::new(lock.key().clone(), lock.holder());
        match lock.fence() {
            Some(fence) => inner.with_fence(fence),
            None => inner,
        }
    }
}

#[async_trait]
impl MetadataStore for Bridge {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let record = record.clone();
        self.run(move |s| async move { s.put(&record).await }).await
    }
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let key = key.clone();
        self.run(move |s| async move { s.get(&key).await }).await
    }
    async fn delete(&self, key: &JobKey) -> Result<()> {
        let key = key.clone();
        self.run(move |s| async move { s.delete(&key).await }).await
    }
    async fn list(&self) -> Result<Vec<JobKey>> {
        self.run(move |s| async move { s.list().await }).await
    }
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let key = key.clone();
        let inner = self
            .run(move |s| async move { s.lock(&key, wait).await })
            .await?;
        let mut outer = Self::token(&inner);
        if let Some(lease) = inner.lease() {
            outer = outer.with_lease(lease);
        }
        let holder = inner.holder().to_owned();
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(holder.clone(), inner);
        Ok(outer.with_guard(BridgeGuard {
            holder,
            held: self.held.clone(),
        }))
    }
    async fn unlock(&self, mut lock: JobLock) -> Result<()> {
        let inner = lock.take_guard::<BridgeGuard>().and_then(|guard| {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&guard.holder)
        });
        match inner {
            Some(inner) => {
                self.run(move |s| async move { s.unlock(inner).await })
                    .await
            }
            None => Ok(()),
        }
    }
    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        let (lock, record) = (Self::token(lock), record.clone());
        self.run(move |s| async move { s.put_locked(&lock, &record).await })
            .await
    }
    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        let lock = Self::token(lock);
        self.run(move |s| async move { s.delete_locked(&lock).await })
            .await
    }
    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        let key = key.clone();
        self.run(move |s| async move { s.heartbeat(&key).await })
            .await
    }
    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        let key = key.clone();
        self.run(move |s| async move { s.last_heartbeat(&key).await })
            .await
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<fargate_core::metadata::SlotGrant> {
        let (counter, holder) = (counter.to_owned(), holder.clone());
        self.run(move |s| async move { s.acquire_slot(&counter, &holder, limit, ttl).await })
            .await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        let (counter, holder) = (counter.to_owned(), holder.clone());
        self.run(move |s| async move { s.release_slot(&counter, &holder).await })
            .await
    }
    async fn slot_holders(&self, counter: &str) -> Result<Vec<fargate_core::metadata::SlotHolder>> {
        let counter = counter.to_owned();
        self.run(move |s| async move { s.slot_holders(&counter).await })
            .await
    }
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.run(move |s| async move { s.slot_counters(&prefix).await })
            .await
    }
}
