//! Issue 15 benchmarks: how fast a job starts and how much a `run` stage's connection
//! costs, with the `fargate` binary next to this executable, driven like gitlab-runner
//! drives it (`fargate_testkit::runner`) against a local Fargate (moto + one sshd per task,
//! on loopback) whose tasks are visible and ready at once. Every figure is shown with a
//! baseline measured in the same run, interleaved with it.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/fargate-target FARGATE_MOTO_PYTHON=/opt/fargate-moto/bin/python
//! cargo build --release -p fargate-cli
//! # optional: an older build, for prepare before/after (e.g. `git worktree add` the old commit)
//! export FARGATE_BASELINE_BIN=/path/to/old/fargate
//! cargo run --release -p fargate-benches --bin start_bench [-- PREPARES JOBS STAGE_ROUNDS]
//! ```
//!
//! 1. PREPARES (default 10) `fargate custom prepare` of a job whose task is ready at once
//!    (each followed by an untimed cleanup; default `PollInitialInterval`, 2 s), against
//!    `FARGATE_BASELINE_BIN`'s prepare when
//!    given, and against one `ssh user@task true` with the job's key (the floor: one
//!    connection). Target ≤ 0.3 s.
//!    Then PREPARES prepares of a job that claims a warm task (`[Fargate.WarmPool] Size = 1`,
//!    filled with `fargate pool fill --wait` before each, untimed): claim, key swap,
//!    verification and the refill's launch, against a cold prepare of a task ready at once,
//!    interleaved. Target ≤ 1.5 s.
//! 2. JOBS (default 5) whole jobs of `true` (the runner's ~10 `run` stages): the sum of
//!    the driver processes' wall times with the connection keeper (`[SSH]
//!    ConnectionKeeper`, the default) against the same job with it off.
//! 3. STAGE_ROUNDS (default 20) `fargate custom run` of `true` on one prepared job through
//!    its keeper, against the same stage with the keeper off (a new SSH connection),
//!    `ssh` through an OpenSSH ControlMaster (a new channel on a kept connection: the
//!    baseline for the per-stage cost) and a fresh `ssh` (curve25519, as libssh2).
//!    Targets: ≤ 0.05 s and ≤ 0.2 × the fresh connection.
//!
//! Needs root (sshd fixtures), OpenSSH client and server, and moto (`FARGATE_MOTO_PYTHON`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool: failing loudly with the cause is its error handling"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fargate_benches::median;
use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_testkit::runner::{Job, JobStatus, RunnerEmu, runner_script};

const PREPARE_TARGET: Duration = Duration::from_millis(300);
const WARM_TARGET: Duration = Duration::from_millis(1500);
const STAGE_TARGET: Duration = Duration::from_millis(50);
const STAGE_TARGET_RATIO: f64 = 0.2;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `cmd` to its end with its output drained; its wall time. Panics when it fails.
fn timed(cmd: Command, what: &str) -> Duration {
    fargate_benches::timed(cmd, what).0
}

/// `key=<number>` in a log.
fn log_field(log: &str, key: &str) -> Option<u64> {
    let at = log.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The `fargate` binary next to this executable.
fn fargate_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this executable");
    let bin = exe.parent().expect("its directory").join("fargate");
    if !bin.is_file() {
        eprintln!(
            "start_bench: {} is missing; build it first: cargo build [--release] -p fargate-cli",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

struct Row {
    metric: String,
    value: Duration,
    baseline: String,
    ratio: f64,
    target: String,
    pass: Option<bool>,
}

struct Bench {
    fargate: LocalFargate,
    dir: tempfile::TempDir,
    metadata: PathBuf,
    /// The driver, keeper on (the default configuration).
    emu: RunnerEmu,
    /// The driver with `[SSH] ConnectionKeeper = false`.
    direct: RunnerEmu,
    /// The driver with a warm pool of one task.
    pooled: RunnerEmu,
    /// `FARGATE_BASELINE_BIN`, same configuration.
    baseline: Option<RunnerEmu>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: usize| args.next().map_or(default, |a| a.parse().expect("a count"));
    let (prepares, jobs, rounds) = (arg(10), arg(5), arg(20));
    let bin = fargate_binary();
    let options = LocalFargateOptions {
        visibility_lag: Duration::ZERO,
        ..LocalFargateOptions::default()
    };
    let fargate = LocalFargate::start(options).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let metadata = dir.path().join("metadata");
    // The default PollInitialInterval (2 s), not the fixture's shorter one: the "before"
    // figure is what a default configuration waited.
    let toml = fargate
        .fargate_toml(&metadata)
        .replace("  PollInitialInterval = \"500ms\"\n", "");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    };
    let keeper_cfg = write("fargate.toml", &toml);
    let direct_cfg = write(
        "direct.toml",
        &toml.replace("[SSH]\n", "[SSH]\n  ConnectionKeeper = false\n"),
    );
    assert!(
        std::fs::read_to_string(&direct_cfg)
            .unwrap()
            .contains("ConnectionKeeper = false"),
        "the fixture's configuration has no [SSH] section"
    );
    let emu_for = |bin: &Path, cfg: &Path| {
        let mut emu = RunnerEmu::new(bin, cfg, fargate.driver_env());
        emu.metadata_dir = Some(metadata.clone());
        emu
    };
    let pool_cfg = write(
        "pool.toml",
        &format!("{toml}[Fargate.WarmPool]\n  Size = 1\n"),
    );
    let emu = emu_for(&bin, &keeper_cfg);
    let direct = emu_for(&bin, &direct_cfg);
    let pooled = emu_for(&bin, &pool_cfg);
    let baseline = std::env::var_os("FARGATE_BASELINE_BIN").map(|b| {
        // An older binary may not know the keeper's keys: the plain configuration.
        let plain = write("baseline.toml", &toml);
        emu_for(Path::new(&b), &plain)
    });
    println!(
        "start_bench: {} ; baseline {} ; {prepares} prepares, {jobs} jobs, {rounds} stage rounds",
        bin.display(),
        baseline
            .as_ref()
            .map_or("(none: set FARGATE_BASELINE_BIN)".into(), |b| b
                .driver
                .display()
                .to_string())
    );
    let bench = Bench {
        fargate,
        dir,
        metadata,
        emu,
        direct,
        pooled,
        baseline,
    };
    let (rows, bench) = tokio::task::spawn_blocking(move || {
        let mut rows = prepare_rows(&bench, prepares);
        rows.extend(warm_rows(&bench, prepares));
        rows.extend(job_rows(&bench, jobs));
        rows.extend(stage_rows(&bench, rounds));
        (rows, bench)
    })
    .await
    .expect("bench thread");
    print_summary(&rows);
    let running = bench.fargate.running_tasks().await;
    assert!(running.is_empty(), "tasks left running: {running:?}");
}

/// A prepared job: its task's address and a key file for `ssh`.
struct Prepared {
    ip: String,
    port: u16,
    key: PathBuf,
}

/// Times the prepare stage of `job` with `emu`, and reads the job's record.
fn prepare(bench: &Bench, emu: &RunnerEmu, job: &Job, dir: &Path) -> (Duration, Prepared) {
    let before = records(&bench.metadata);
    let (wall, log) = fargate_benches::timed(
        emu.stage_command(job, dir, &["custom", "prepare"]),
        "prepare",
    );
    let phases: Vec<String> = [
        "launch_accepted_ms",
        "address_known_ms",
        "ssh_ready_ms",
        "probes",
    ]
    .iter()
    .map(|k| {
        format!(
            "{k}={}",
            log_field(&log, k).map_or("-".into(), |v| v.to_string())
        )
    })
    .collect();
    println!(
        "  prepare of job {} ({}): {:.1} ms; {}",
        job.job_id,
        emu.driver.display(),
        ms(wall),
        phases.join(" ")
    );
    // The job's record (a warm pool's new slots have records too).
    let record = records(&bench.metadata)
        .into_iter()
        .find(|p| !before.contains(p) && !p.to_string_lossy().contains("_pool_"))
        .expect("prepare wrote a record");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).expect("read record")).expect("JSON");
    let key = bench.dir.path().join(format!("key-{}", job.job_id));
    fargate_benches::write_private_key(&key, record["private_key"].as_str().expect("key"))
        .expect("write key");
    let prepared = Prepared {
        ip: record["endpoint"]["ip"].as_str().expect("ip").to_owned(),
        port: record["endpoint"]["port"].as_u64().expect("port") as u16,
        key,
    };
    (wall, prepared)
}

fn records(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

fn cleanup(emu: &RunnerEmu, job: &Job, dir: &Path) {
    timed(
        emu.stage_command(job, dir, &["custom", "cleanup"]),
        "cleanup",
    );
}

fn ssh(bench: &Bench, p: &Prepared, extra: &[&str]) -> Command {
    fargate_benches::openssh(
        &p.key,
        bench.fargate.ssh_username(),
        &p.ip,
        p.port,
        extra,
        "true",
    )
}

const CURVE: [&str; 2] = ["-o", "KexAlgorithms=curve25519-sha256"];

/// Part 1: prepare of a task ready at once.
fn prepare_rows(bench: &Bench, n: usize) -> Vec<Row> {
    let (mut ours, mut old, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=n {
        let dir = tempfile::tempdir().expect("temp dir");
        let job = Job::new(15_000 + i as i64, &["true"]);
        let (wall, p) = prepare(bench, &bench.emu, &job, dir.path());
        let ssh_wall = timed(ssh(bench, &p, &CURVE), "ssh true");
        cleanup(&bench.emu, &job, dir.path());
        if let Some(b) = &bench.baseline {
            let job = Job::new(16_000 + i as i64, &["true"]);
            let (w, _) = prepare(bench, b, &job, dir.path());
            cleanup(b, &job, dir.path());
            if i > 0 {
                old.push(w);
            }
        }
        // Round 0 warms the page cache and moto.
        if i > 0 {
            ours.push(wall);
            floor.push(ssh_wall);
        }
    }
    let (m, f) = (median(&ours), median(&floor));
    println!();
    println!("== 1. prepare, task ready at once, median of {n}, interleaved");
    println!("fargate custom prepare      {:8.1} ms", ms(m));
    let mut rows = Vec::new();
    if !old.is_empty() {
        let o = median(&old);
        println!(
            "baseline binary prepare     {:8.1} ms   ratio {:.3}",
            ms(o),
            ms(m) / ms(o)
        );
        rows.push(Row {
            metric: "prepare, ready at once".into(),
            value: m,
            baseline: format!("{:.1} ms previous build", ms(o)),
            ratio: ms(m) / ms(o),
            target: "<= 300 ms".into(),
            pass: Some(m <= PREPARE_TARGET),
        });
    }
    println!(
        "ssh true (one connection)   {:8.1} ms   ratio {:.2}",
        ms(f),
        ms(m) / ms(f)
    );
    rows.push(Row {
        metric: "prepare, ready at once".into(),
        value: m,
        baseline: format!("{:.1} ms one ssh true", ms(f)),
        ratio: ms(m) / ms(f),
        target: "<= 300 ms".into(),
        pass: Some(m <= PREPARE_TARGET),
    });
    rows
}

/// `fargate pool <action>` with the pool configuration; panics when it fails.
fn pool(bench: &Bench, action: &[&str]) {
    let mut cmd = Command::new(&bench.pooled.driver);
    cmd.args(&bench.pooled.args)
        .arg("pool")
        .args(action)
        .envs(bench.fargate.driver_env());
    timed(cmd, "fargate pool");
}

/// Part 1b: prepare with a warm task (claim, key swap, verification; the refill's launch
/// included) against prepare of a cold task that is ready at once, interleaved.
fn warm_rows(bench: &Bench, n: usize) -> Vec<Row> {
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let dir = tempfile::tempdir().expect("temp dir");
        pool(bench, &["fill", "--wait"]);
        let job = Job::new(17_000 + i as i64, &["true"]);
        let (w, _) = prepare(bench, &bench.pooled, &job, dir.path());
        cleanup(&bench.pooled, &job, dir.path());
        let job = Job::new(18_000 + i as i64, &["true"]);
        let (c, _) = prepare(bench, &bench.emu, &job, dir.path());
        cleanup(&bench.emu, &job, dir.path());
        if i > 0 {
            warm.push(w);
            cold.push(c);
        }
    }
    pool(bench, &["drain"]);
    let (w, c) = (median(&warm), median(&cold));
    println!();
    println!("== 1b. prepare with a warm task vs a cold task ready at once, median of {n}");
    println!("warm (claim, key swap, verify) {:8.1} ms", ms(w));
    println!(
        "cold (launch, wait, log in)    {:8.1} ms   ratio {:.2}",
        ms(c),
        ms(w) / ms(c)
    );
    vec![Row {
        metric: "prepare, warm task".into(),
        value: w,
        baseline: format!("{:.1} ms cold task ready at once", ms(c)),
        ratio: ms(w) / ms(c),
        target: "<= 1500 ms".into(),
        pass: Some(w <= WARM_TARGET),
    }]
}

/// Part 2: whole jobs with and without the keeper.
fn job_rows(bench: &Bench, n: usize) -> Vec<Row> {
    let total = |emu: &RunnerEmu, id: i64| {
        let r = emu.run(Job::new(id, &["true"]));
        assert_eq!(r.status, JobStatus::Success, "{}", r.log);
        let runs = r
            .stages
            .iter()
            .filter(|s| !matches!(s.name.as_str(), "config" | "prepare" | "cleanup"))
            .count();
        let all: Duration = r.stages.iter().map(|s| s.wall).sum();
        let run: Duration = r
            .stages
            .iter()
            .filter(|s| !matches!(s.name.as_str(), "config" | "prepare" | "cleanup"))
            .map(|s| s.wall)
            .sum();
        (all, run, runs)
    };
    let (mut with, mut without, mut with_runs, mut without_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut stages = 0;
    for i in 0..=n {
        let a = total(&bench.emu, 17_000 + i as i64);
        let b = total(&bench.direct, 18_000 + i as i64);
        if i > 0 {
            with.push(a.0);
            with_runs.push(a.1);
            without.push(b.0);
            without_runs.push(b.1);
            stages = a.2;
        }
    }
    let (w, wo) = (median(&with), median(&without));
    let (wr, wor) = (median(&with_runs), median(&without_runs));
    println!();
    println!(
        "== 2. whole job of `true` ({stages} run stages), sum of driver wall times, median of {n}, interleaved"
    );
    println!(
        "with keeper     {:8.1} ms (run stages {:8.1} ms)",
        ms(w),
        ms(wr)
    );
    println!(
        "without keeper  {:8.1} ms (run stages {:8.1} ms)",
        ms(wo),
        ms(wor)
    );
    println!(
        "ratio {:.2} (run stages {:.2}); saved {:.0} ms per job",
        ms(w) / ms(wo),
        ms(wr) / ms(wor),
        ms(wo) - ms(w)
    );
    vec![Row {
        metric: format!("job driver time ({stages} runs)"),
        value: w,
        baseline: format!("{:.1} ms without keeper", ms(wo)),
        ratio: ms(w) / ms(wo),
        target: "(clear gain)".into(),
        pass: None,
    }]
}

/// Part 3: one `run` stage of `true`, through the keeper and its baselines.
fn stage_rows(bench: &Bench, n: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = Job::new(19_000, &["true"]);
    let (_, p) = prepare(bench, &bench.emu, &job, dir.path());
    let script = dir.path().join("true.sh");
    std::fs::write(&script, runner_script("true")).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let script = script.display().to_string();
    let run_args = ["custom", "run", script.as_str(), "build_script"];
    let control = bench.dir.path().join("cm.sock").display().to_string();
    let control_opt = format!("ControlPath={control}");
    let mut master = ssh(bench, &p, &["-o", &control_opt, "-M", "-N", "-f"]);
    master.args(CURVE);
    // `-f` leaves the master in the background holding its stdio: not captured.
    let started = master
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh ControlMaster");
    assert!(started.success(), "ssh ControlMaster: {started}");
    let (mut kept, mut fresh, mut cm, mut ssh_fresh) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..=n {
        let a = timed(
            bench.emu.stage_command(&job, dir.path(), &run_args),
            "run via keeper",
        );
        let b = timed(
            bench.direct.stage_command(&job, dir.path(), &run_args),
            "run direct",
        );
        let c = timed(ssh(bench, &p, &["-o", &control_opt]), "ssh via master");
        let d = timed(ssh(bench, &p, &CURVE), "ssh fresh");
        if i > 0 {
            kept.push(a);
            fresh.push(b);
            cm.push(c);
            ssh_fresh.push(d);
        }
    }
    let mut exit = ssh(bench, &p, &["-o", &control_opt, "-O", "exit"]);
    exit.stderr(Stdio::null());
    let _ = exit.status();
    cleanup(&bench.emu, &job, dir.path());
    let (k, f, c, s) = (
        median(&kept),
        median(&fresh),
        median(&cm),
        median(&ssh_fresh),
    );
    println!();
    println!("== 3. run stage of `true`, median of {n}, interleaved");
    for (name, v) in [
        ("fargate custom run, through the keeper", k),
        ("fargate custom run, new connection", f),
        ("ssh via ControlMaster (new channel)", c),
        ("ssh, new connection (curve25519)", s),
    ] {
        println!("{name:<40} {:8.1} ms", ms(v));
    }
    println!(
        "keeper / new connection {:.2}; keeper / ControlMaster ssh {:.2}",
        ms(k) / ms(f),
        ms(k) / ms(c)
    );
    vec![
        Row {
            metric: "run stage `true`, keeper".into(),
            value: k,
            baseline: format!("{:.1} ms new connection", ms(f)),
            ratio: ms(k) / ms(f),
            target: "<= 0.2x, 50 ms".into(),
            pass: Some(ms(k) / ms(f) <= STAGE_TARGET_RATIO && k <= STAGE_TARGET),
        },
        Row {
            metric: "run stage `true`, keeper".into(),
            value: k,
            baseline: format!("{:.1} ms ssh ControlMaster", ms(c)),
            ratio: ms(k) / ms(c),
            target: "(baseline)".into(),
            pass: None,
        },
    ]
}

fn print_summary(rows: &[Row]) {
    println!();
    println!("== summary");
    println!(
        "{:<30} {:>10}  {:<30} {:>6}  {:<15} verdict",
        "metric", "value", "baseline (same run)", "ratio", "target"
    );
    for r in rows {
        println!(
            "{:<30} {:>7.1} ms  {:<30} {:>5.2}x  {:<15} {}",
            r.metric,
            ms(r.value),
            r.baseline,
            r.ratio,
            r.target,
            match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "-",
            }
        );
    }
}
