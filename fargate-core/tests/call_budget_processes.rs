//! The file store's API budget ([`FileCallBudget`]) shared by real OS processes (this test
//! executable, re-run as workers), one of which is killed with SIGKILL while it holds the
//! budget's lock.
//!
//! Every worker reserves launch tokens as fast as it can and reports when each of its calls
//! may go (the reservation's time plus its wait). Together the calls must keep to the
//! bucket: no window of time holds more calls than the burst plus the rate times its
//! length (a lost update of the budget file would let two calls share a token), every
//! reservation is counted, and the killed holder stalls nobody for longer than it lived.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step is a failed test

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use fargate_core::budget::{CallBudget, CallClass, CallRates, Rate};
use fargate_core::{FileMetadataStore, Namespace};

const WORKERS: usize = 4;
const CALLS: usize = 6;

const WORKER_ENV: &str = "FARGATE_BUDGET_WORKER";
const DIR_ENV: &str = "FARGATE_BUDGET_DIR";
const RATE_ENV: &str = "FARGATE_BUDGET_RATE";
const MARK: &str = "@@";

fn rates(per_second: f64, burst: f64) -> CallRates {
    CallRates::new(
        Rate::new(per_second, burst),
        Rate::new(per_second, burst),
        Rate::new(per_second, burst),
    )
}

fn namespace() -> Namespace {
    Namespace::parse("burst").unwrap()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// A worker: `CALLS` reservations at `rate` (`per_second/burst`), each reported as the
/// time its call may go.
async fn worker(dir: &str, rate: &str) {
    let (per_second, burst) = rate.split_once('/').unwrap();
    let rates = rates(per_second.parse().unwrap(), burst.parse().unwrap());
    let budget = FileMetadataStore::new(dir).call_budget(&namespace(), rates);
    for _ in 0..CALLS {
        let r = budget.reserve(CallClass::Launch, 1).await.unwrap();
        println!("{MARK}go {:.3}", now_ms() + r.wait.as_secs_f64() * 1000.0);
    }
}

/// The holder: takes the budget's lock as the store does (flock on its lock file), says so,
/// and waits to be killed.
fn holder(dir: &str) {
    let path = std::path::Path::new(dir).join(format!("{}_budget.lock", namespace()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    println!("{MARK}locked");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// A child process killed when the test ends, whichever way it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, dir: &str, rate: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "processes_share_the_budget_and_a_killed_holder_loses_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, role)
        .env(DIR_ENV, dir)
        .env(RATE_ENV, rate)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `WORKERS` workers at `rate` on `dir` and returns their go times, sorted.
fn run_workers(dir: &str, rate: &str, before_waiting: impl FnOnce()) -> Vec<f64> {
    let workers: Vec<_> = (0..WORKERS).map(|_| spawn("worker", dir, rate)).collect();
    before_waiting();
    let mut go: Vec<f64> = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((_, at)) = line.split_once(&format!("{MARK}go ")) {
                go.push(at.trim().parse().unwrap());
            }
        }
    }
    assert_eq!(go.len(), WORKERS * CALLS, "every reservation reported");
    go.sort_by(f64::total_cmp);
    go
}

fn launch_tokens(store: &FileMetadataStore) -> f64 {
    let bytes = std::fs::read(store.call_budget_path(&namespace())).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    state["launch"]["tokens"].as_f64().unwrap()
}

fn private_dir(tmp: &tempfile::TempDir, name: &str) -> String {
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn processes_share_the_budget_and_a_killed_holder_loses_nothing() {
    if let (Ok(role), Ok(dir), Ok(rate)) = (
        std::env::var(WORKER_ENV),
        std::env::var(DIR_ENV),
        std::env::var(RATE_ENV),
    ) {
        match role.as_str() {
            "holder" => holder(&dir),
            _ => worker(&dir, &rate).await,
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // 1. Every reservation counts, whatever the interleaving, and a holder killed with the
    //    lock costs nothing. A bucket that refills (almost) never: its tokens are exactly
    //    the ones not reserved.
    let dir = private_dir(&tmp, "exact");
    let store = FileMetadataStore::new(&dir);
    let slow = "0.0001/1000";
    let (per_second, burst) = (0.0001, 1000.0);
    store
        .call_budget(&namespace(), rates(per_second, burst))
        .reserve(CallClass::Launch, 1)
        .await
        .unwrap();
    let before = launch_tokens(&store);
    assert_eq!(before, burst - 1.0);
    let mut holder = Killed(spawn("holder", &dir, slow));
    // libtest prints its own lines first.
    let locked = BufReader::new(holder.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.ends_with(&format!("{MARK}locked")));
    assert!(locked, "the holder took the lock");
    // The workers queue behind the holder's lock; it dies holding it.
    run_workers(&dir, slow, || {
        holder.0.kill().unwrap();
        holder.0.wait().unwrap();
    });
    let after = launch_tokens(&store);
    let reserved = before - after;
    assert!(
        (reserved - (WORKERS * CALLS) as f64).abs() < 0.01,
        "{reserved} tokens taken for {} reservations: an update was lost",
        WORKERS * CALLS
    );

    // 2. Together the workers keep to the bucket: calls i..=j (in go order) fit the burst
    //    plus what the rate added between them (one call of slack for the readings of the
    //    clock), and the whole takes about its floor.
    let (rate, burst) = (10.0, 5.0);
    let dir = private_dir(&tmp, "spacing");
    let go = run_workers(&dir, "10/5", || {});
    for i in 0..go.len() {
        for j in i..go.len() {
            let calls = (j - i + 1) as f64;
            let allowed = burst + rate * (go[j] - go[i]) / 1000.0 + 1.0;
            assert!(
                calls <= allowed,
                "{calls} calls between {:.0} and {:.0} ms exceed the budget ({allowed:.1})",
                go[i],
                go[j]
            );
        }
    }
    let floor_ms = ((WORKERS * CALLS) as f64 - burst) / rate * 1000.0;
    let span = go[go.len() - 1] - go[0];
    assert!(
        span >= floor_ms - 1000.0 / rate,
        "calls spread over {span:.0} ms, floor {floor_ms:.0} ms"
    );
}
