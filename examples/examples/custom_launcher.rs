//! A custom [`TaskLauncher`]: a fixed pool of pre-started hosts, handed out one job at a
//! time, plus a wrapper that logs every call. Jobs run through `fargate_core::Driver` with
//! it exactly as with the ECS launcher, and it passes the launcher conformance suite that
//! every backend of this project runs (`fargate_core::testing::conformance::launcher`).
//!
//! Use this shape for anything that can hand out an SSH-reachable machine: a warm pool of
//! Fargate tasks, VMs, a Kubernetes pod launcher, a test rig. The driver supplies the rest
//! (per-job keys, write-ahead records, readiness probing, host-key pinning, exit codes,
//! cleanup).
//!
//! It needs no network (the shell and store are the in-memory ones) and exits non-zero if
//! anything unexpected happens: `cargo run -p fargate-examples --example custom_launcher`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fargate_core::testing::conformance;
use fargate_core::testing::{MemoryShell, MemoryStore};
use fargate_core::{
    CapturedOutput, DebugCommands, Driver, DriverOptions, Error, ErrorKind, JobContext,
    JobIdentity, JobKey, JobResponse, Launched, LaunchedBatch, ListedTask, MetadataStore,
    Namespace, Result, RetryPolicy, StopDetails, StopOutcome, TaskLauncher, TaskRef, TaskSpec,
    TaskState, TaskStatus,
};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn StdError + Send + Sync>;

/// One lease of a pool host by a job.
#[derive(Clone, Debug)]
struct Lease {
    slot: usize,
    key: JobKey,
    stopped: Option<String>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Which lease (task id) holds each host.
    busy: Vec<Option<String>>,
    /// Every lease ever made, by task id.
    leases: HashMap<String, Lease>,
    /// Client token -> task id: a retried launch gets the same lease.
    tokens: HashMap<String, String>,
    next_id: u64,
}

/// A launcher that hands out hosts of a fixed, already running pool.
///
/// * `launch` leases a free host (same client token: same lease), or fails with the
///   temporary [`ErrorKind::CapacityUnavailable`] when every host is busy, so that the
///   driver retries it with backoff (`[Retry]`);
/// * `describe` reports a leased host as running at once, with its address;
/// * `stop` ends the lease and frees the host (the host itself keeps running; a real pool
///   would reset it here); an unknown lease is [`StopOutcome::NotFound`];
/// * `find` returns the job's unended leases, which is how cleanup finds a lease whose
///   `launch` answer was lost.
#[derive(Debug)]
struct PoolLauncher {
    hosts: Vec<IpAddr>,
    state: Mutex<PoolState>,
}

impl PoolLauncher {
    fn new(hosts: Vec<IpAddr>) -> Self {
        let state = PoolState {
            busy: vec![None; hosts.len()],
            ..PoolState::default()
        };
        PoolLauncher {
            hosts,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn free_hosts(&self) -> usize {
        self.lock().busy.iter().filter(|b| b.is_none()).count()
    }
}

#[async_trait]
impl TaskLauncher for PoolLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        let mut s = self.lock();
        if let Some(id) = s.tokens.get(&spec.client_token) {
            return Ok(TaskRef::new(id.clone()));
        }
        let Some(slot) = s.busy.iter().position(Option::is_none) else {
            return Err(Error::new(
                ErrorKind::CapacityUnavailable,
                format!("all {} hosts of the pool are busy", self.hosts.len()),
            )
            .with_backend("pool")
            .with_hint("wait for a job to finish, or grow the pool"));
        };
        s.next_id += 1;
        let id = format!("pool:{slot}:lease-{}", s.next_id);
        s.busy[slot] = Some(id.clone());
        s.tokens.insert(spec.client_token.clone(), id.clone());
        s.leases.insert(
            id.clone(),
            Lease {
                slot,
                key: spec.key.clone(),
                stopped: None,
            },
        );
        Ok(TaskRef::new(id))
    }

    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        let s = self.lock();
        Ok(match s.leases.get(&task.id) {
            None => TaskStatus::missing(),
            Some(Lease {
                stopped: Some(reason),
                ..
            }) => TaskStatus::new(TaskState::Stopped).with_stop(Some(StopDetails::new(
                None,
                Some(reason.clone()),
                Vec::new(),
            ))),
            Some(lease) => {
                TaskStatus::new(TaskState::Running).with_address(Some(self.hosts[lease.slot]))
            }
        })
    }

    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        let mut s = self.lock();
        let Some(lease) = s.leases.get_mut(&task.id) else {
            return Ok(StopOutcome::NotFound);
        };
        if lease.stopped.is_some() {
            return Ok(StopOutcome::Stopping); // stopping twice is fine
        }
        lease.stopped = Some(reason.to_owned());
        let slot = lease.slot;
        if s.busy[slot].as_deref() == Some(task.id.as_str()) {
            s.busy[slot] = None;
        }
        Ok(StopOutcome::Stopping)
    }

    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        Ok(self
            .lock()
            .leases
            .iter()
            .filter(|(_, l)| &l.key == key && l.stopped.is_none())
            .map(|(id, _)| TaskRef::new(id.clone()))
            .collect())
    }
}

/// A wrapper that logs every call of another launcher and counts them (cross-cutting
/// behaviour is a wrapper around the trait).
#[derive(Debug)]
struct Logged<L> {
    inner: L,
    calls: AtomicU32,
}

impl<L> Logged<L> {
    fn new(inner: L) -> Self {
        Logged {
            inner,
            calls: AtomicU32::new(0),
        }
    }

    fn log<T: std::fmt::Debug>(&self, call: String, result: &Result<T>) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        match result {
            Ok(v) => println!("  launcher #{n:<2} {call} -> {v:?}"),
            Err(e) => println!(
                "  launcher #{n:<2} {call} -> error ({}): {}",
                e.kind(),
                e.message()
            ),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<L: TaskLauncher> TaskLauncher for Logged<L> {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        let r = self.inner.launch(spec).await;
        self.log(format!("launch({})", spec.key), &r);
        r
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        let r = self.inner.describe(task).await;
        self.log(
            format!("describe({task})"),
            &r.as_ref().map(|s| (s.state, s.address)).map_err(clone_err),
        );
        r
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        let r = self.inner.stop(task, reason).await;
        self.log(
            format!("stop({task}, {reason:?})"),
            &r.as_ref().map(|o| *o).map_err(clone_err),
        );
        r
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        let r = self.inner.find(key).await;
        self.log(
            format!("find({key})"),
            &r.as_ref().map(Vec::len).map_err(clone_err),
        );
        r
    }
    // The warm pool launches several tasks a call when the inner launcher can.
    fn max_launch_batch(&self) -> u32 {
        self.inner.max_launch_batch()
    }
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        let r = self.inner.launch_batch(spec, count).await;
        self.log(
            format!("launch_batch({}, {count})", spec.key),
            &r.as_ref().map(|b| b.tasks.len()).map_err(clone_err),
        );
        r
    }
    // The driver launches through `launch_observed`: forwarding it keeps what the inner
    // launcher's answer carries (the task's address), which the default would drop.
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        let r = self.inner.launch_observed(spec).await;
        self.log(
            format!("launch({})", spec.key),
            &r.as_ref()
                .map(|l| (l.task.clone(), l.address()))
                .map_err(clone_err),
        );
        r
    }
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        let r = self.inner.list(namespace).await;
        self.log(
            format!("list({namespace})"),
            &r.as_ref().map(Vec::len).map_err(clone_err),
        );
        r
    }
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        let r = self.inner.adopt(task, spec).await;
        self.log(
            format!("adopt({task}, {})", spec.key),
            &r.as_ref().map(|_| ()).map_err(clone_err),
        );
        r
    }
    async fn mark_alive(&self, task: &TaskRef, at: std::time::SystemTime) -> Result<()> {
        let r = self.inner.mark_alive(task, at).await;
        self.log(
            format!("mark_alive({task})"),
            &r.as_ref().map(|_| ()).map_err(clone_err),
        );
        r
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        self.inner.resolve_task_definition(task_definition).await
    }
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.inner.release(spec).await
    }
    async fn announced_host_keys(
        &self,
        task: &TaskRef,
        container: &str,
    ) -> Result<Vec<fargate_core::HostKey>> {
        self.inner.announced_host_keys(task, container).await
    }
    fn settings_fingerprint(&self) -> String {
        self.inner.settings_fingerprint()
    }
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        self.inner.debug_commands(task, container)
    }
}

fn clone_err(e: &Error) -> Error {
    Error::new(e.kind(), e.message())
}

/// The driver's options: no cluster, network or any other ECS value, since this launcher
/// has none; only what the driver itself needs.
fn options() -> std::result::Result<DriverOptions, BoxError> {
    let ms = Duration::from_millis;
    Ok(DriverOptions::builder()
        .namespace(Namespace::parse("pool")?)
        .task_definition("pool-host")
        .poll_intervals(ms(10), ms(20))
        .ready_timeout(Duration::from_secs(5))
        .probe_interval(ms(10))
        // A full pool is CapacityUnavailable, a temporary error: retried twice, quickly.
        .retry(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_backoff(ms(20), ms(50))
                .with_max_elapsed(Duration::from_secs(1)),
        )
        .build()?)
}
fn job(id: u64) -> std::result::Result<JobContext, Error> {
    Ok(JobContext::new(JobResponse::new(id)))
}

fn check(ok: bool, what: &str) -> std::result::Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected outcome: {what}").into())
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    let hosts = vec![
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)),
    ];
    let pool = Arc::new(Logged::new(PoolLauncher::new(hosts.clone())));
    // The driver retries (`[Retry]`): each attempt goes through the logging wrapper.
    let launcher = pool.clone();
    let shell = Arc::new(MemoryShell::new());
    let store = Arc::new(MemoryStore::new());
    let driver = Driver::new(options()?, launcher, shell.clone(), store.clone());
    let cancel = CancellationToken::new();

    println!("== two jobs take both hosts of the pool");
    let (j1, j2, j3) = (job(1)?, job(2)?, job(3)?);
    let (r1, r2) = tokio::join!(driver.prepare(&j1, &cancel), driver.prepare(&j2, &cancel));
    let (r1, r2) = (r1?, r2?);
    println!("job 1 on {}, job 2 on {}", r1.endpoint, r2.endpoint);
    check(
        r1.endpoint.ip != r2.endpoint.ip,
        "two jobs must not share a host",
    )?;
    check(pool.inner.free_hosts() == 0, "the pool should be full")?;

    println!("== a third job finds the pool full: retried, then a system failure");
    let err = match driver.prepare(&j3, &cancel).await {
        Ok(_) => return Err("job 3 should not get a host from a full pool".into()),
        Err(failure) => failure,
    };
    println!("job 3 prepare failed: {err}");
    let exit = err.exit(&j3.exit_codes);
    println!(
        "  -> exit code {} (system failure: gitlab-runner retries prepare)",
        exit.exit_code
    );
    check(
        err.as_system()
            .is_some_and(|e| e.kind() == ErrorKind::CapacityUnavailable),
        "job 3 should fail with CapacityUnavailable",
    )?;
    check(
        exit.exit_code == 2 && exit.build_exit_code.is_none(),
        "capacity is a system failure",
    )?;
    // gitlab-runner runs cleanup after every failed prepare attempt: it must be harmless.
    let report = driver.cleanup(&j3).await?;
    check(report.stopped.is_empty(), "nothing to stop for job 3")?;

    println!("== job 1 runs a stage and finishes; its host goes back to the pool");
    let mut out = CapturedOutput::default();
    driver
        .run(
            &j1,
            "build_script",
            Arc::from(&b"echo built on a pool host"[..]),
            &mut out,
            &cancel,
        )
        .await?;
    print!("job 1 output: {}", String::from_utf8_lossy(&out.stdout));
    check(out.stdout == b"built on a pool host\n", "job 1's output")?;
    let report = driver.cleanup(&j1).await?;
    check(
        report.stopped == [r1.task.clone()],
        "cleanup should end job 1's lease",
    )?;
    check(
        pool.inner.free_hosts() == 1,
        "job 1's host should be free again",
    )?;

    println!("== gitlab-runner's retry of job 3 now gets the freed host");
    let r3 = driver.prepare(&j3, &cancel).await?;
    println!("job 3 on {}", r3.endpoint);
    check(
        r3.endpoint == r1.endpoint,
        "job 3 should reuse job 1's host",
    )?;
    for j in [&j2, &j3] {
        driver.cleanup(j).await?;
    }
    check(
        pool.inner.free_hosts() == 2,
        "every host should be free at the end",
    )?;
    check(store.list().await?.is_empty(), "no job record may be left")?;
    let scripts = shell
        .runs()
        .iter()
        .filter(|r| &r.script[..] != fargate_core::driver::LOGIN_CHECK_SCRIPT)
        .count();
    check(scripts == 1, "exactly one stage script ran")?;

    println!("== the launcher conformance suite, on a fresh pool (panics on a violation)");
    let fresh = PoolLauncher::new(hosts);
    let identity = JobIdentity::from_response(Namespace::parse("pool")?, &JobResponse::new(99));
    let spec = TaskSpec::new(identity, "pool-host").with_client_token("conformance-token");
    conformance::launcher(
        &fresh,
        &spec,
        &TaskRef::new("pool:9:no-such-lease"),
        conformance::LauncherCaps::default(),
    )
    .await;
    check(
        fresh.free_hosts() == 2,
        "the conformance run should leave the pool free",
    )?;
    println!("PoolLauncher passes fargate_core::testing::conformance::launcher");
    Ok(())
}
