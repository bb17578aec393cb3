//! Fleet benchmark (issue 23): the warm pool on a shared DynamoDB table (moto's, on
//! loopback) against the file store, in the same run.
//!
//! 1. **Warm claim across hosts.** Host A fills a pool of 4; host B's prepare of a job
//!    claims one of its tasks (the pool's claim: list the slots, lock one, mark it claimed,
//!    the job's record names the task, the slot goes; then the take-over). Once on one
//!    DynamoDB table (two `DynamoStore`s with distinct host names, host B keeping its local
//!    copy as the CLI does), once on one metadata directory (two `FileMetadataStore`s: the
//!    file store cannot span hosts, so its "two hosts" are two processes' views of one
//!    directory). Launcher and shell are the in-memory ones (not what is measured): the
//!    time is the claim code path's and its store's. Rounds alternate the order; figures
//!    are medians and the median of the per-round ratios. Target: DynamoDB within 1.5 x
//!    the file store.
//! 2. **4 processes claiming at once.** Per repetition, on a fresh table: this process
//!    fills a pool of 40 (`pool fill --wait`), then 4 OS processes (this binary, `claimer`
//!    mode, each its own `DynamoStore` on the table, its own in-memory launcher whose
//!    `adopt` accepts any task, and in-memory shell) are released at once and prepare 10
//!    jobs each. Counted: warm claims, distinct tasks claimed, tasks that went to two jobs
//!    (from the processes' reports and from the job records in the table). Target: 40
//!    distinct claims and 0 double claims in every repetition.
//! 3. **Warm prepare across hosts, end to end.** What a job experiences: host B's `fargate
//!    custom prepare` (the real binary next to this executable, driven by the runner
//!    emulator) of a job that takes the warm task host A's `pool fill --wait` started, on
//!    the local Fargate (moto's ECS and DynamoDB, one sshd per task, on loopback): process
//!    start, claim, key swap over SSH, verification, the refill's launch. Once with the
//!    DynamoDB store (two `fargate.toml`s with the same `Namespace` and `DynamoDBTable`,
//!    their own metadata directories and `HostName`, as `tests/e2e_fleet.rs`), once with
//!    the file store (two `fargate.toml`s sharing one metadata directory, in a namespace of
//!    their own so neither pool sees the other's tasks); pool size 1, rounds alternate the
//!    order, an untimed round first; medians and the median of the per-round ratios.
//!    Target: DynamoDB within 1.5 x the file store. Skipped when the `fargate` binary is
//!    not next to this executable.
//!
//! ```sh
//! export FARGATE_MOTO_PYTHON=/opt/fargate-moto/bin/python AWS_EC2_METADATA_DISABLED=true
//! cargo build [--release] -p fargate-cli   # for part 3
//! cargo run [--release] -p fargate-benches --bin fleet_bench   # [-- REPETITIONS [CLAIM_ROUNDS [WARM_PREPARES]]]
//! # REPETITIONS of part 2 (default 100; 0 skips it), CLAIM_ROUNDS of part 1 (20; 0 skips
//! # it), WARM_PREPARES of part 3 (10; 0 skips it)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed step ends it

mod warm_prepare;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fargate_aws::SdkTransport;
use fargate_aws::dynamo_store::{DynamoStore, TableSettings};
use fargate_benches::median;
use fargate_core::options::WarmPoolOptions;
use fargate_core::testing::{MemoryLauncher, MemoryShell};
use fargate_core::{
    DebugCommands, Driver, DriverOptions, DynMetadataStore, FileMetadataStore, HostKey, JobContext,
    JobIdentity, JobKey, JobRecord, JobResponse, KeyType, Launched, LaunchedBatch, ListedTask,
    MetadataStore, Namespace, PrivateKey, RemoteShell, Result, StopOutcome, TaskLauncher, TaskRef,
    TaskSpec, TaskStatus,
};
use fargate_testkit::moto::{Moto, sdk_config_for};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "fleet";
const CLAIM_POOL: usize = 4;
const PROCESSES: usize = 4;
const POOL: usize = 40;
const REGION: &str = "us-east-1";

/// The in-memory launcher, but `adopt` accepts any task: a claimer process's launcher does
/// not know the tasks another process started (adoption is not what is measured).
#[derive(Debug, Default)]
struct AdoptsAny(MemoryLauncher);

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl TaskLauncher for AdoptsAny {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        self.0.launch(spec).await
    }
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        self.0.launch_observed(spec).await
    }
    fn max_launch_batch(&self) -> u32 {
        self.0.max_launch_batch()
    }
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        self.0.launch_batch(spec, count).await
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        self.0.describe(task).await
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        self.0.stop(task, reason).await
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        self.0.find(key).await
    }
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        self.0.list(namespace).await
    }
    async fn adopt(&self, _task: &TaskRef, _spec: &TaskSpec) -> Result<()> {
        Ok(())
    }
    async fn mark_alive(&self, task: &TaskRef, at: std::time::SystemTime) -> Result<()> {
        self.0.mark_alive(task, at).await
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        self.0.resolve_task_definition(task_definition).await
    }
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        self.0.announced_host_keys(task, container).await
    }
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.0.release(spec).await
    }
    fn settings_fingerprint(&self) -> String {
        self.0.settings_fingerprint()
    }
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        self.0.debug_commands(task, container)
    }
}

fn driver(
    store: DynMetadataStore,
    launcher: Arc<dyn TaskLauncher>,
    shell: Arc<MemoryShell>,
    pool: usize,
) -> Driver {
    let mut options = DriverOptions::builder()
        .namespace(Namespace::parse(NAMESPACE).unwrap())
        .task_definition("ci-coordinator:1")
        .build()
        .unwrap();
    let mut warm = WarmPoolOptions::default();
    warm.size = pool;
    options.pool = warm;
    Driver::new(options, launcher, shell, store)
}

fn dynamo(endpoint: &str, table: &str, host: &str) -> DynamoStore {
    DynamoStore::new(
        table,
        &sdk_config_for(endpoint),
        Some(REGION),
        &SdkTransport::default(),
    )
    .unwrap()
    .with_host(host)
}

fn job(id: u64) -> JobContext {
    JobContext::new(JobResponse::new(id))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("claimer") {
        return runtime().block_on(claimer(&args[2..]));
    }
    let repetitions: usize = args.get(1).map_or(100, |a| a.parse().unwrap());
    let claim_rounds: usize = args.get(2).map_or(20, |a| a.parse().unwrap());
    let warm_prepares: usize = args.get(3).map_or(10, |a| a.parse().unwrap());
    if claim_rounds > 0 || repetitions > 0 {
        let moto = Moto::start();
        let endpoint = moto.endpoint_url();
        runtime().block_on(async {
            if claim_rounds > 0 {
                warm_claims(&endpoint, claim_rounds).await;
            }
            if repetitions > 0 {
                processes(&endpoint, repetitions).await;
            }
        });
    }
    if warm_prepares > 0 {
        warm_prepare::run(warm_prepares);
    }
}

/// Part 1: a warm claim by host B of host A's pool, DynamoDB against the file store.
async fn warm_claims(endpoint: &str, rounds: usize) {
    let init = dynamo(endpoint, "claims", "init");
    assert!(
        init.init_table(&TableSettings::default())
            .await
            .unwrap()
            .usable()
    );
    let dir = tempfile::tempdir().unwrap();
    let launcher = Arc::new(MemoryLauncher::new());
    let shell = Arc::new(MemoryShell::new());
    let b_store = dynamo(endpoint, "claims", "host-b").with_local_copy(dir.path().join("copy"));
    let calls = b_store.api_calls().clone();
    let fleet = [
        driver(
            Arc::new(dynamo(endpoint, "claims", "host-a")),
            launcher.clone(),
            shell.clone(),
            CLAIM_POOL,
        ),
        driver(
            Arc::new(b_store),
            launcher.clone(),
            shell.clone(),
            CLAIM_POOL,
        ),
    ];
    let files = dir.path().join("metadata");
    let file = [
        driver(
            Arc::new(FileMetadataStore::new(&files)),
            launcher.clone(),
            shell.clone(),
            CLAIM_POOL,
        ),
        driver(
            Arc::new(FileMetadataStore::new(&files)),
            launcher.clone(),
            shell.clone(),
            CLAIM_POOL,
        ),
    ];
    // One DynamoDB request on the local table (a read of a missing item), for scale.
    let probe = JobKey::parse("fleet-0").unwrap();
    let mut latency: Vec<f64> = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        MetadataStore::get(&init, &probe).await.unwrap();
        latency.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    // And the requests of a job's record: a lock (that reads), a write under it, a delete
    // that unlocks.
    let record = JobRecord::new(
        JobIdentity::from_response(Namespace::parse(NAMESPACE).unwrap(), &JobResponse::new(1)),
        PrivateKey::new("FAKE PRIVATE KEY".into()),
    );
    let (mut lock_ms, mut write_ms, mut delete_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let start = Instant::now();
        let lock = init.lock(&record.key, Duration::ZERO).await.unwrap();
        lock_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = Instant::now();
        init.put_locked(&lock, &record).await.unwrap();
        write_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = Instant::now();
        init.delete_and_unlock(lock).await.unwrap();
        delete_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "one DynamoDB request on the local table (moto), medians: a read {:.2} ms, a lock {:.2} ms, a write under it {:.2} ms, a delete that unlocks {:.2} ms",
        median(&latency),
        median(&lock_ms),
        median(&write_ms),
        median(&delete_ms)
    );
    let cancel = CancellationToken::new();
    let (mut t_dynamo, mut t_file, mut ratios, mut requests) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // One untimed round each first (connections, directories).
    for round in 0..=rounds {
        let mut times = [0.0; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let [a, b] = if which == 0 { &fleet } else { &file };
            let filled = a.pool_fill(true).await.unwrap();
            assert_eq!(filled.idle(), CLAIM_POOL, "{filled}");
            let job = job(1_000 + round as u64 * 2 + which as u64);
            calls.reset();
            let start = Instant::now();
            let report = b.prepare(&job, &cancel).await.unwrap();
            times[which] = start.elapsed().as_secs_f64() * 1000.0;
            assert!(report.warm, "the job got a warm task");
            if which == 0 {
                requests.push(calls.total() as f64);
            }
            b.cleanup(&job).await.unwrap();
        }
        if round > 0 {
            t_dynamo.push(times[0]);
            t_file.push(times[1]);
            ratios.push(times[0] / times[1]);
        }
    }
    let (d, f) = (median(&t_dynamo), median(&t_file));
    println!(
        "warm claim across hosts (pool of {CLAIM_POOL}, {rounds} rounds): DynamoDB {d:.1} ms, file store {f:.1} ms (medians); ratio {:.2}x (median of per-round ratios {:.2}x, range {:.2}-{:.2}x); {} DynamoDB requests per warm prepare",
        d / f,
        median(&ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
        median(&requests),
    );
}

/// Part 2: 4 processes claiming from a pool of 40 at once, `repetitions` times.
async fn processes(endpoint: &str, repetitions: usize) {
    let exe = std::env::current_exe().unwrap();
    let launcher: Arc<dyn TaskLauncher> = Arc::new(AdoptsAny::default());
    let shell = Arc::new(MemoryShell::new());
    let (mut perfect, mut doubles_total, mut times) = (0, 0, Vec::new());
    let mut warm_counts = BTreeMap::new();
    for rep in 0..repetitions {
        let table = format!("pool-{rep}");
        let filler_store = dynamo(endpoint, &table, "filler");
        assert!(
            filler_store
                .init_table(&TableSettings::default())
                .await
                .unwrap()
                .usable()
        );
        let filler = driver(
            Arc::new(filler_store.clone()),
            launcher.clone(),
            shell.clone(),
            POOL,
        );
        let filled = filler.pool_fill(true).await.unwrap();
        assert_eq!(filled.idle(), POOL, "{filled}");
        let pool_tasks: BTreeSet<String> =
            filled.slots.iter().filter_map(|s| s.task.clone()).collect();
        let mut children: Vec<_> = (0..PROCESSES)
            .map(|p| {
                let first = (rep * 1000 + p * 100) as u64 + 1;
                Command::new(&exe)
                    .args([
                        "claimer",
                        endpoint,
                        &table,
                        &format!("host-{p}"),
                        &first.to_string(),
                        &(POOL / PROCESSES).to_string(),
                    ])
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut outputs: Vec<_> = children
            .iter_mut()
            .map(|c| BufReader::new(c.stdout.take().unwrap()))
            .collect();
        for out in &mut outputs {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
        }
        // Released together.
        let start = Instant::now();
        for child in &mut children {
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut warm = 0;
        for out in outputs {
            for line in out.lines() {
                let line = line.unwrap();
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["job", id, "warm", task] = parts[..] {
                    warm += 1;
                    claims
                        .entry(task.to_owned())
                        .or_default()
                        .push(id.to_owned());
                }
            }
        }
        for child in &mut children {
            assert!(child.wait().unwrap().success(), "a claimer failed");
        }
        times.push(start.elapsed().as_secs_f64());
        // The table's view: the task each job record names.
        let mut named: BTreeMap<String, usize> = BTreeMap::new();
        for key in filler_store.list().await.unwrap() {
            if key.is_pool_slot_of(&Namespace::parse(NAMESPACE).unwrap()) {
                continue;
            }
            let record = MetadataStore::get(&filler_store, &key)
                .await
                .unwrap()
                .unwrap();
            if let Some(task) = record.task
                && pool_tasks.contains(&task.id)
            {
                *named.entry(task.id).or_default() += 1;
            }
        }
        let doubles = claims.values().filter(|jobs| jobs.len() > 1).count()
            + named.values().filter(|n| **n > 1).count();
        let distinct = claims.len();
        assert!(
            claims.keys().all(|t| pool_tasks.contains(t)),
            "a claim of a task not in the pool"
        );
        assert_eq!(
            named.len(),
            distinct,
            "the table names the tasks the processes claimed"
        );
        doubles_total += doubles;
        *warm_counts.entry(distinct).or_insert(0usize) += 1;
        if distinct == POOL && doubles == 0 && warm == POOL {
            perfect += 1;
        }
        eprintln!(
            "repetition {rep}: {warm} warm claims, {distinct} distinct tasks, {doubles} double claims, {:.2} s",
            times.last().unwrap()
        );
    }
    println!(
        "{PROCESSES} processes claiming from a pool of {POOL}, {repetitions} repetitions: {perfect} with {POOL} distinct claims and no double claim; double claims in all: {doubles_total}; distinct claims per repetition: {warm_counts:?}; claiming took {:.2} s (median)",
        median(&times)
    );
}

/// A claimer process: prepares `jobs` jobs from `first` on, one after the other, on the
/// table, once the parent says go; prints `job <id> warm <task>` or `job <id> cold`.
async fn claimer(args: &[String]) {
    let [endpoint, table, host, first, jobs] = args else {
        panic!("claimer ENDPOINT TABLE HOST FIRST_JOB JOBS");
    };
    let (first, jobs): (u64, u64) = (first.parse().unwrap(), jobs.parse().unwrap());
    let store = dynamo(endpoint, table, host);
    // The in-memory shell numbers its keys from 0 in every process, and a warm task's key
    // swap revokes the pool's key: this process's job keys start far above the keys the
    // filling process made for the pool (at most 40 per repetition).
    let shell = Arc::new(MemoryShell::new());
    let offset = 100_000 * (1 + host.trim_start_matches("host-").parse::<usize>().unwrap());
    for _ in 0..offset {
        shell.generate_key(KeyType::Ed25519).await.unwrap();
    }
    let driver = driver(Arc::new(store), Arc::new(AdoptsAny::default()), shell, POOL);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").unwrap();
    stdout.flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let cancel = CancellationToken::new();
    for id in first..first + jobs {
        let report = driver.prepare(&job(id), &cancel).await.unwrap();
        if report.warm {
            writeln!(stdout, "job {id} warm {}", report.task.id).unwrap();
        } else {
            writeln!(stdout, "job {id} cold").unwrap();
        }
    }
    stdout.flush().unwrap();
}
