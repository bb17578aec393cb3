//! Burst benchmark (issue 24): 200 jobs arrive within one second across 4 runners, against
//! the moto fixture throttling as ECS does (`RunTask` 20 per second with a bucket of 20,
//! Fargate task launches 20 per second with a bucket of 100).
//!
//! Each job is one launch as prepare makes it: through the runner's launcher, retried under
//! the driver's default policy (`RetryPolicy::default()`: 5 attempts, 1 s backoff doubling
//! with full jitter, 20 s at most) when it fails for a reason that may pass. Two rounds, on
//! fresh servers, in the same run:
//!
//! - **today**: each runner launches on its own (the behaviour before the API budget);
//! - **budget**: the runners' launchers take their turn from one `FileCallBudget` in a
//!   shared metadata directory just under ECS's `RunTask` rate (a runner that has the
//!   account to itself: 19 per second, bursts of 18; at exactly ECS's 20/20 the two
//!   buckets' clocks differ by the requests' jitter, and the few calls that arrive early
//!   are throttled).
//!
//! The 4 runners are 4 launcher and budget instances in this process (the budget's file
//! lock serialises separate open file descriptions as it serialises processes).
//!
//! Figures: jobs started; jobs whose launch still failed throttled (what would reach a job
//! log); `RunTask` calls per job (every request that reached the server, throttled ones
//! included); the time from the first job's arrival until the last task was requested,
//! against the floor ECS's rates allow ((200 - 20) / 20 = 9 s). Target: every job starts,
//! none throttled in its log, at most 1.05 calls per job, at most 1.2 x the floor.
//!
//! ```sh
//! export FARGATE_MOTO_PYTHON=/opt/fargate-moto/bin/python AWS_EC2_METADATA_DISABLED=true
//! cargo run --release -p fargate-benches --bin burst_bench   # [-- JOBS]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed step ends it

use std::sync::Arc;
use std::time::{Duration, Instant};

use fargate_aws::{EcsLauncher, SdkTransport};
use fargate_core::budget::{BudgetedLauncher, CallRates, Rate};
use fargate_core::{ErrorKind, FileMetadataStore, Namespace, RetryPolicy, TaskLauncher};
use fargate_testkit::moto::{Moto, MotoEcs};

const RUNNERS: usize = 4;

struct Round {
    started: usize,
    throttled_in_log: usize,
    run_task_calls: usize,
    last_requested: Duration,
}

/// One job: a launch under the driver's default retry policy; `Ok` when it started, the
/// last error's kind otherwise.
async fn job(l: Arc<dyn TaskLauncher>, ecs: Arc<MotoEcs>, id: u64) -> Result<Instant, ErrorKind> {
    let policy = RetryPolicy::default();
    let mut backoff = policy.initial_backoff;
    let start = Instant::now();
    let mut attempt = 1;
    loop {
        match l.launch(&ecs.spec(id)).await {
            Ok(_) => return Ok(Instant::now()),
            Err(e) if !e.is_temporary() => return Err(e.kind()),
            Err(e) => {
                if attempt >= policy.max_attempts || start.elapsed() + backoff > policy.max_elapsed
                {
                    return Err(e.kind());
                }
                // Full jitter, as the driver's retry engine waits.
                let jitter = rand_fraction();
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
        }
    }
}

fn rand_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

async fn round(jobs: u64, budgeted: bool) -> Round {
    let moto = Moto::start();
    let ecs = Arc::new(moto.setup().await);
    moto.set_throttling(&Moto::ECS_THROTTLING);
    let meta = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        meta.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let namespace = Namespace::parse("burst").unwrap();
    let rates = CallRates::new(
        Rate::new(19.0, 18.0),
        Rate::new(19.0, 18.0),
        Rate::new(19.0, 95.0),
    );
    let runners: Vec<Arc<dyn TaskLauncher>> = (0..RUNNERS)
        .map(|_| {
            let mut config = ecs.config();
            // The SDK's own quick retry, as the driver configures it by default.
            config.transport = SdkTransport::default();
            let ecs_launcher: Arc<dyn TaskLauncher> =
                Arc::new(EcsLauncher::new(config, &moto.sdk_config()).unwrap());
            if budgeted {
                let budget = FileMetadataStore::new(meta.path()).call_budget(&namespace, rates);
                Arc::new(BudgetedLauncher::new(ecs_launcher, Arc::new(budget)))
                    as Arc<dyn TaskLauncher>
            } else {
                ecs_launcher
            }
        })
        .collect();
    // The jobs arrive spread over one second, round-robin over the runners.
    let begin = Instant::now();
    let mut handles = Vec::new();
    for id in 1..=jobs {
        let l = runners[(id as usize) % RUNNERS].clone();
        let ecs = ecs.clone();
        let arrival = Duration::from_millis((id - 1) * 1000 / jobs);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(begin + arrival)).await;
            job(l, ecs, id).await
        }));
    }
    let mut started = 0;
    let mut throttled_in_log = 0;
    let mut last = begin;
    for h in handles {
        match h.await.unwrap() {
            Ok(at) => {
                started += 1;
                last = last.max(at);
            }
            Err(ErrorKind::Throttled) => throttled_in_log += 1,
            Err(other) => panic!("a job failed: {other:?}"),
        }
    }
    let run_task_calls = moto.run_task_requests().len() + moto.throttled_calls().len();
    Round {
        started,
        throttled_in_log,
        run_task_calls,
        last_requested: last - begin,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: u64 = std::env::args()
        .nth(1)
        .map_or(200, |a| a.parse().expect("JOBS: a number"));
    let floor = (jobs as f64 - 20.0).max(0.0) / 20.0;
    println!("{jobs} jobs over 1 s across {RUNNERS} runners; ECS's floor: {floor:.1} s");
    let today = round(jobs, false).await;
    let budget = round(jobs, true).await;
    println!(
        "| round | started | throttled in a job log | RunTask calls per job | last task requested after | x floor |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, r) in [("today (no budget)", &today), ("API budget", &budget)] {
        println!(
            "| {name} | {}/{jobs} | {} | {:.2} | {:.1} s | {:.2}x |",
            r.started,
            r.throttled_in_log,
            r.run_task_calls as f64 / jobs as f64,
            r.last_requested.as_secs_f64(),
            r.last_requested.as_secs_f64() / floor
        );
    }
    let ok = budget.started == jobs as usize
        && budget.throttled_in_log == 0
        && budget.run_task_calls as f64 <= 1.05 * jobs as f64
        && budget.last_requested.as_secs_f64() <= 1.2 * floor;
    println!(
        "target (budget round): {}",
        if ok { "PASS" } else { "MISS" }
    );
}
