//! Multi-process stress test of [`FileMetadataStore`] (issue 21): real OS processes (this
//! test executable, re-run as workers) share one metadata directory, and some of them are
//! killed with SIGKILL at a point chosen by a seed.
//!
//! - **Mutual exclusion:** every worker locks the counter record, reads it, writes it + 1
//!   and unlocks, many times; the counter ends at the number of increments done, and no
//!   value is written twice (a lost update would write one twice).
//! - **Claims:** 40 slot records, claimed as the warm pool claims (`claim.rs`): try the
//!   slot's lock without waiting, re-read under it, mark `claimed_by`, put, unlock; every
//!   slot ends claimed by exactly one worker, none claimed twice.
//! - **Kills:** two workers SIGKILL themselves, holding a lock (before or after their put,
//!   or after writing half a temporary file as a `put` killed mid-write leaves it); the
//!   survivors finish, no lock is lost (each is taken again at once), and afterwards the
//!   directory holds only the records once the leftovers of the killed workers (lock files,
//!   which their next holder removes, and temporary files, which `remove_leftovers` does)
//!   are gone.
//!
//! Set `FARGATE_STRESS_SEED` to replay a seed; every failure message names it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fargate_core::launcher::TaskRef;
use fargate_core::metadata::PoolSlot;
use fargate_core::{
    ErrorKind, FileMetadataStore, JobIdentity, JobKey, JobRecord, MetadataStore, Namespace,
    PrivateKey,
};

/// Worker processes.
const WORKERS: usize = 6;
/// Increments of the counter per worker (that is not killed before).
const INCREMENTS: u64 = 30;
/// Slot records to claim.
const SLOTS: u64 = 40;
/// The whole test, workers included, must end within this.
const TIME_LIMIT: Duration = Duration::from_secs(50);

const WORKER_ENV: &str = "FARGATE_STRESS_WORKER";
const DIR_ENV: &str = "FARGATE_STRESS_DIR";
const SEED_ENV: &str = "FARGATE_STRESS_SEED";
const KILL_ENV: &str = "FARGATE_STRESS_KILL";
/// Marks a worker's report lines in its output (libtest prints its own lines there too).
const MARK: &str = "@@";

fn namespace() -> Namespace {
    Namespace::parse("stress").unwrap()
}

fn counter_key() -> JobKey {
    JobIdentity::from_untrusted_job_id(namespace(), 1).key()
}

fn slot_key(slot: u64) -> JobKey {
    JobIdentity::pool_slot(namespace(), slot).key()
}

/// The job key a worker claims slots for.
fn worker_key(worker: usize) -> JobKey {
    JobIdentity::from_untrusted_job_id(namespace(), 1000 + worker as u64).key()
}

fn private_key() -> PrivateKey {
    PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n".into())
}

/// The counter's value: the record's task id.
fn counter(record: &JobRecord) -> u64 {
    record.task.as_ref().unwrap().id.parse().unwrap()
}

/// splitmix64: a small seeded generator, so that a seed replays the same plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where a worker kills itself (always holding a lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    /// Holding the lock, after reading, before writing.
    Locked,
    /// Holding the lock, after writing half a temporary file (a `put` killed mid-write).
    MidWrite,
    /// Holding the lock, after the put.
    AfterPut,
}

/// A worker's planned death: in the counter phase at increment `index`, or in the claim
/// phase at its `index`th claim (not reached when others claim the slots first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    Counter(u64, Point),
    Claim(u64, Point),
}

impl Kill {
    fn encode(self) -> String {
        let (phase, index, point) = match self {
            Kill::Counter(i, p) => ("counter", i, p),
            Kill::Claim(i, p) => ("claim", i, p),
        };
        format!("{phase}:{index}:{point:?}")
    }

    fn decode(s: &str) -> Kill {
        let mut parts = s.split(':');
        let (phase, index, point) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            match parts.next().unwrap() {
                "Locked" => Point::Locked,
                "MidWrite" => Point::MidWrite,
                _ => Point::AfterPut,
            },
        );
        match phase {
            "counter" => Kill::Counter(index, point),
            _ => Kill::Claim(index, point),
        }
    }
}

/// SIGKILL to this process, as the OOM killer or a `kill -9` would send it: no destructor,
/// no unlock; the kernel drops the process's `flock`s.
fn die() -> ! {
    let _ = Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // The signal arrives while `status` waits; this is never reached.
    std::process::abort()
}

/// A worker's life, when this executable runs as worker `FARGATE_STRESS_WORKER`; as a
/// normal test it does nothing.
#[test]
fn stress_worker() {
    let Ok(id) = std::env::var(WORKER_ENV) else {
        return;
    };
    let id: usize = id.parse().unwrap();
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let kill = std::env::var(KILL_ENV).ok().map(|k| Kill::decode(&k));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // libtest may have started a line ("test stress_worker ... "): report on fresh lines.
    println!();
    runtime.block_on(work(id, &dir, seed, kill));
}

async fn work(id: usize, dir: &Path, seed: u64, kill: Option<Kill>) {
    let store = FileMetadataStore::new(dir);
    let key = counter_key();
    for i in 0..INCREMENTS {
        let lock = store.lock(&key, Duration::from_secs(30)).await.unwrap();
        let mut record = store.get(&key).await.unwrap().unwrap();
        let next = counter(&record) + 1;
        match kill {
            Some(Kill::Counter(at, Point::Locked)) if at == i => die(),
            Some(Kill::Counter(at, Point::MidWrite)) if at == i => {
                // What `put` writes first, cut short: `.<key>.tmp-<pid>-<hex>`.
                let tmp = dir.join(format!(".{key}.tmp-{}-{:x}", std::process::id(), seed));
                std::fs::write(tmp, "{\"format\":").unwrap();
                die()
            }
            _ => {}
        }
        record.task = Some(TaskRef::new(next.to_string()));
        store.put(&record).await.unwrap();
        println!("{MARK}inc {next}");
        if kill == Some(Kill::Counter(i, Point::AfterPut)) {
            die()
        }
        store.unlock(lock).await.unwrap();
    }

    // Claims, in an order of this worker's own, until this worker has seen every slot
    // claimed while holding its lock (so a slot whose claimer died holding the lock is
    // claimed by someone else, and its lock is taken again).
    let mut rng = Rng(seed ^ (id as u64).wrapping_mul(0x1234_5678_9abc_def1));
    let mut order: Vec<u64> = (0..SLOTS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let me = worker_key(id);
    let mut seen_claimed = BTreeSet::new();
    let mut claims = 0;
    while seen_claimed.len() < order.len() {
        let mut progress = false;
        for &slot in &order {
            if seen_claimed.contains(&slot) {
                continue;
            }
            let key = slot_key(slot);
            // Never waits: a slot another process holds is left for the next pass.
            let lock = match store.lock(&key, Duration::ZERO).await {
                Ok(lock) => lock,
                Err(err) if err.kind() == ErrorKind::Timeout => continue,
                Err(err) => panic!("locking slot {slot}: {err}"),
            };
            let mut record = store.get(&key).await.unwrap().unwrap();
            let pool = record.pool.as_mut().unwrap();
            if pool.claimed_by.is_none() {
                if kill == Some(Kill::Claim(claims, Point::Locked)) {
                    die()
                }
                pool.claimed_by = Some(me.clone());
                record.touch();
                store.put(&record).await.unwrap();
                println!("{MARK}claim {slot}");
                if kill == Some(Kill::Claim(claims, Point::AfterPut)) {
                    die()
                }
                claims += 1;
            }
            seen_claimed.insert(slot);
            progress = true;
            store.unlock(lock).await.unwrap();
        }
        if !progress {
            // Every slot left is held by someone: let the holders run.
            std::thread::yield_now();
        }
    }
}

/// What one worker was told and did.
#[derive(Debug)]
struct Outcome {
    kill: Option<Kill>,
    killed: bool,
    pid: u32,
    increments: Vec<u64>,
    claims: Vec<u64>,
}

#[test]
fn processes_share_the_file_store_without_races() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return; // a worker runs only `stress_worker`
    }
    let seed: u64 = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().unwrap(),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let ctx = format!("seed {seed} (replay with {SEED_ENV}={seed})");
    eprintln!("{ctx}");
    let mut rng = Rng(seed);
    // Two victims, each with a death in one of the phases.
    let first = rng.below(WORKERS as u64) as usize;
    let second = (first + 1 + rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
    let mut plan: Vec<Option<Kill>> = vec![None; WORKERS];
    for victim in [first, second] {
        plan[victim] = Some(if rng.below(2) == 0 {
            let point = [Point::Locked, Point::MidWrite, Point::AfterPut][rng.below(3) as usize];
            Kill::Counter(rng.below(INCREMENTS), point)
        } else {
            let point = [Point::Locked, Point::AfterPut][rng.below(2) as usize];
            Kill::Claim(rng.below(2), point)
        });
    }
    let ctx = format!("{ctx}, deaths {plan:?}");
    eprintln!("{ctx}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("metadata");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = FileMetadataStore::new(&dir);
    runtime.block_on(async {
        let mut record = JobRecord::new(
            JobIdentity::from_untrusted_job_id(namespace(), 1),
            private_key(),
        );
        record.task = Some(TaskRef::new("0"));
        store.put(&record).await.unwrap();
        for slot in 0..SLOTS {
            let mut record =
                JobRecord::new(JobIdentity::pool_slot(namespace(), slot), private_key());
            record.pool = Some(PoolSlot::new(u64::MAX));
            store.put(&record).await.unwrap();
        }
    });

    let started = std::time::Instant::now();
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for (id, kill) in plan.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "stress_worker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, id.to_string())
        .env(DIR_ENV, &dir)
        .env(SEED_ENV, seed.to_string())
        .env_remove(KILL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some(kill) = kill {
            cmd.env(KILL_ENV, kill.encode());
        }
        children.push(cmd.spawn().unwrap());
    }
    // Each worker's output is read to its end and its exit collected on a thread of its
    // own; the test waits for all of them, up to the time limit (a hung worker, e.g. one
    // waiting for a lost lock, fails the test, and is killed).
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let (done, results) = mpsc::channel();
    for (id, mut child) in children.into_iter().enumerate() {
        let done = done.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let lines: Vec<String> = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect();
            let status = child.wait().unwrap();
            let _ = done.send((id, lines, status));
        });
    }
    drop(done);
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    while outcomes.len() < WORKERS {
        let left = TIME_LIMIT.saturating_sub(started.elapsed());
        let Ok((id, lines, status)) = results.recv_timeout(left) else {
            for (id, pid) in pids.iter().enumerate() {
                if !outcomes.contains_key(&id) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
            panic!("workers still running after {TIME_LIMIT:?}; {ctx}");
        };
        let reports = |what: &str| -> Vec<u64> {
            lines
                .iter()
                .filter_map(|l| l.split_once(MARK)?.1.strip_prefix(what)?.parse().ok())
                .collect()
        };
        let killed = status.signal() == Some(libc::SIGKILL);
        assert!(
            killed || status.success(),
            "worker {id} failed ({status}); {ctx}\n{}",
            lines.join("\n")
        );
        outcomes.insert(
            id,
            Outcome {
                kill: plan[id],
                killed,
                pid: pids[id],
                increments: reports("inc "),
                claims: reports("claim "),
            },
        );
    }
    eprintln!("{WORKERS} workers took {:?}", started.elapsed());

    // Who died as planned: a death in the counter phase is always reached.
    let mut expected_increments = 0;
    for (id, o) in &outcomes {
        match o.kill {
            None => assert!(!o.killed, "worker {id} died unplanned; {ctx}"),
            Some(Kill::Counter(at, point)) => {
                assert!(o.killed, "worker {id} was not killed; {ctx}");
                expected_increments += at + u64::from(point == Point::AfterPut);
                continue;
            }
            Some(Kill::Claim(..)) => {} // killed, or survived: the others claimed first
        }
        expected_increments += INCREMENTS;
    }

    // (a) Mutual exclusion: every increment counted, none written twice.
    let mut written: Vec<u64> = outcomes
        .values()
        .flat_map(|o| o.increments.clone())
        .collect();
    written.sort_unstable();
    assert_eq!(
        written,
        (1..=expected_increments).collect::<Vec<_>>(),
        "increments lost or written twice; {ctx}"
    );

    // The leftovers before anyone else touches the directory: besides the records, only
    // lock files and temporary files of killed workers.
    let killed_pids: BTreeSet<u32> = outcomes
        .values()
        .filter(|o| o.killed)
        .map(|o| o.pid)
        .collect();
    let killed_holders = killed_pids.len();
    let leftover_locks: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| !n.ends_with(".json"))
        .filter(|n| {
            if n.ends_with(".lock") {
                return true;
            }
            let pid = n.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            assert!(
                n.starts_with('.') && pid.is_some_and(|p| killed_pids.contains(&p)),
                "{n} left by a worker that was not killed; {ctx}"
            );
            false
        })
        .collect();
    assert!(
        leftover_locks.len() <= killed_holders,
        "lock files {leftover_locks:?} but {killed_holders} killed holders; {ctx}"
    );

    runtime.block_on(async {
        // No lock is lost: each one is free at once (Duration::ZERO), also those whose
        // holder was killed, and the counter holds every increment.
        let lock = store.lock(&counter_key(), Duration::ZERO).await.unwrap();
        let record = store.get(&counter_key()).await.unwrap().unwrap();
        assert_eq!(counter(&record), expected_increments, "{ctx}");
        store.unlock(lock).await.unwrap();
        // (b) Every slot claimed by exactly one worker, who reported it once.
        let mut reported: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (id, o) in &outcomes {
            for &slot in &o.claims {
                reported.entry(slot).or_default().push(*id);
            }
        }
        for slot in 0..SLOTS {
            let key = slot_key(slot);
            let lock = store.lock(&key, Duration::ZERO).await.unwrap();
            let record = store.get(&key).await.unwrap().unwrap();
            let claimer = record.pool.unwrap().claimed_by;
            let by = reported.get(&slot).cloned().unwrap_or_default();
            assert_eq!(by.len(), 1, "slot {slot} claimed by workers {by:?}; {ctx}");
            assert_eq!(claimer, Some(worker_key(by[0])), "slot {slot}; {ctx}");
            store.unlock(lock).await.unwrap();
        }
    });

    // (c) The killed workers' temporary files have no live writer: removed as leftovers;
    // then only the records are left.
    let removed = store.remove_leftovers().unwrap();
    assert!(
        removed.iter().all(|p| p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))),
        "{removed:?}; {ctx}"
    );
    let mut records: Vec<String> = std::iter::once(counter_key())
        .chain((0..SLOTS).map(slot_key))
        .map(|k| format!("{k}.json"))
        .collect();
    records.sort();
    assert_eq!(names(&dir), records, "{ctx}");
    assert!(
        started.elapsed() < TIME_LIMIT,
        "took {:?}; {ctx}",
        started.elapsed()
    );
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
