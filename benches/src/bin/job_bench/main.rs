//! Whole-job benchmarks of the `fargate` binary (issue #5), driven the way gitlab-runner
//! drives it (`fargate_testkit::runner`) against a local Fargate (moto + one sshd per task,
//! all on loopback). Every figure that has a natural baseline is reported as a ratio
//! against that baseline measured in the same run, interleaved with it, because the
//! machine is shared and noisy.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/fargate-target FARGATE_MOTO_PYTHON=/opt/fargate-moto/bin/python
//! cargo build --release -p fargate-cli
//! cargo run --release -p fargate-benches --bin job_bench [-- JOBS CONFIG_SPAWNS RUN_ROUNDS]
//! ```
//!
//! 1. JOBS (default 5) jobs of `true`: per stage type, median wall and peak RSS, CPU of
//!    all driver processes of a job, ECS `DescribeTasks` calls from the "task is ready" log.
//! 2. `fargate custom config` wall: median of CONFIG_SPAWNS (default 50) spawns with the
//!    runner's environment, against `/bin/true` spawned the same way. Target < 5 ms.
//!    `fargate --version` (the binary's start-up alone) is shown too.
//! 3. `fargate custom run <script> build_script` of `true` on a prepared job, RUN_ROUNDS
//!    (default 20) times, against `ssh -o BatchMode=yes ... user@task true` on the same
//!    sshd with the same cipher (OpenSSH's default kex sntrup761 and, like libssh2,
//!    curve25519). Target ≤ 1.25 × `ssh`.
//! 4. ECS API calls per job, counted by operation through a recording proxy in front of
//!    moto (one extra job, so the proxy does not slow down the timed ones).
//!
//! Peak RSS of each stage process (in 1): `wait4`'s `ru_maxrss` of a `posix_spawn`ed child
//! is never below the spawning process's own peak (Linux counts the pre-`execve` address
//! space, which a vfork child shares with its parent), so it is shown next to `/bin/true`
//! spawned the same way, and an extra job runs every stage under GNU `/usr/bin/time` (a
//! small forking parent) for the process's own peak. Target < 20 MB.
//!
//! Needs root (sshd fixtures), OpenSSH client and server, and moto (`FARGATE_MOTO_PYTHON`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool: failing loudly with the cause is its error handling"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fargate_testkit::fault_proxy::FaultProxy;
use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_testkit::runner::{Job, JobResult, JobStatus, RunnerEmu, StageRun, runner_script};

use fargate_benches::{CIPHER, median};

mod measure;

use measure::{
    STAGE_TYPES, Sample, fargate_binary, gnu_time_lines, json_files, log_field, mb, measure, ms,
    stage_type, verdict,
};
const GNU_TIME: &str = "/usr/bin/time";
const CONFIG_TARGET_MS: f64 = 5.0;
const RUN_TARGET_RATIO: f64 = 1.25;
const RSS_TARGET_KB: u64 = 20 * 1024;

fn run_job(emu: &RunnerEmu, id: i64, script: &[&str]) -> JobResult {
    let result = emu.run(Job::new(id, script));
    assert_eq!(
        result.status,
        JobStatus::Success,
        "job {id}:\n{}",
        result.log
    );
    result
}

fn ssh_command(key: &Path, user: &str, ip: &str, port: u16, extra: &[&str]) -> Command {
    fargate_benches::openssh(key, user, ip, port, extra, "true")
}

struct Row {
    metric: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: String,
}

/// What every part of the bench uses: the local Fargate, the runner emulator and the
/// run's parameters.
struct Bench {
    fargate: Arc<LocalFargate>,
    emu: RunnerEmu,
    fargate_bin: PathBuf,
    /// Holds the configuration, the metadata directory and the scratch files.
    dir: tempfile::TempDir,
    metadata: PathBuf,
    jobs: i64,
    config_spawns: usize,
    run_rounds: usize,
}

/// What part 1 measured that later rows compare against.
struct JobCpu {
    median: Duration,
    run_stages: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = Bench::start().await;
    let (rss_rows, job_cpu) = whole_jobs(&bench).await;
    let config_row = config_stage(&bench);
    let (run_rows, ssh_cpu) = run_stage(&bench);
    let api_row = api_calls(&bench).await;

    let mut rows = vec![config_row];
    rows.extend(run_rows);
    rows.extend(rss_rows);
    rows.push(cpu_row(&job_cpu, ssh_cpu));
    rows.push(api_row);
    print_summary(&rows);
    let running = bench.fargate.running_tasks().await;
    assert!(running.is_empty(), "tasks left running: {running:?}");
}

impl Bench {
    /// Parses `[JOBS CONFIG_SPAWNS RUN_ROUNDS]` and starts the local Fargate.
    async fn start() -> Bench {
        let mut args = std::env::args().skip(1);
        let jobs: i64 = args.next().map_or(5, |a| a.parse().expect("JOBS"));
        let config_spawns: usize = args
            .next()
            .map_or(50, |a| a.parse().expect("CONFIG_SPAWNS"));
        let run_rounds: usize = args.next().map_or(20, |a| a.parse().expect("RUN_ROUNDS"));
        let fargate_bin = fargate_binary();

        // Jobs log in as a user with bash as login shell and a fresh home, as in a task
        // image: root's rc files on the bench machine (which may run slow tools on every
        // SSH command) would add the same constant to the driver and to `ssh`.
        let options = LocalFargateOptions {
            login_shell: Some("/bin/bash".into()),
            ..LocalFargateOptions::default()
        };
        let fargate = Arc::new(LocalFargate::start(options).await);
        let dir = tempfile::tempdir().expect("temp dir");
        let metadata = dir.path().join("metadata");
        let config = dir.path().join("fargate.toml");
        std::fs::write(&config, fargate.fargate_toml(&metadata)).expect("write fargate.toml");
        let mut emu = RunnerEmu::new(&fargate_bin, &config, fargate.driver_env());
        emu.metadata_dir = Some(metadata.clone());
        println!(
            "job_bench: {} ; moto {} ; {jobs} jobs, {config_spawns} config spawns, {run_rounds} run rounds",
            fargate_bin.display(),
            fargate.moto().endpoint_url()
        );
        Bench {
            fargate,
            emu,
            fargate_bin,
            dir,
            metadata,
            jobs,
            config_spawns,
            run_rounds,
        }
    }
}

/// Part 1: whole jobs of `true`, per stage type; one peak-RSS row per stage type.
async fn whole_jobs(bench: &Bench) -> (Vec<Row>, JobCpu) {
    let jobs = bench.jobs;
    let results = {
        let emu = bench.emu.clone();
        tokio::task::spawn_blocking(move || {
            // Warm-up (page cache, moto's first requests), not counted.
            run_job(&emu, 900, &["true"]);
            (0..jobs)
                .map(|i| run_job(&emu, 1000 + i, &["true"]))
                .collect::<Vec<_>>()
        })
        .await
        .expect("job thread")
    };
    let clean_rss = clean_rss(bench).await;
    let true_clean_kb = clean_rss.as_ref().map(|_| {
        let log = bench.dir.path().join("gnu-time-true.log");
        let mut cmd = Command::new(GNU_TIME);
        cmd.args(["-o", &log.display().to_string(), "-f", "%M", "/bin/true"]);
        measure(cmd, "time /bin/true");
        gnu_time_lines(&log).first().copied().unwrap_or(0)
    });

    println!();
    println!(
        "== 1. {jobs} jobs of `true` (after 1 warm-up job); emulator polls stages at 1 ms, backing off to 20 ms"
    );
    println!(
        "{:<9} {:>5} {:>11} {:>16} {:>16} {:>12}",
        "stage", "procs", "wall med", "maxRSS (wait4)", "maxRSS (own)", "CPU med"
    );
    let mut rows = Vec::new();
    let all: Vec<&StageRun> = results.iter().flat_map(|r| r.stages.iter()).collect();
    for ty in STAGE_TYPES {
        let of: Vec<&&StageRun> = all.iter().filter(|s| stage_type(&s.name) == ty).collect();
        let clean: Vec<u64> = clean_rss
            .iter()
            .flatten()
            .filter(|(n, _)| stage_type(n) == ty)
            .map(|(_, kb)| *kb)
            .collect();
        let clean_max = clean.iter().max().copied();
        let rss_med = median(&of.iter().map(|s| s.max_rss_kb).collect::<Vec<_>>());
        println!(
            "{:<9} {:>5} {:>8.1} ms {:>13.1} MB {:>16} {:>9.1} ms",
            ty,
            of.len(),
            ms(median(&of.iter().map(|s| s.wall).collect::<Vec<_>>())),
            mb(rss_med),
            clean_max.map_or("-".into(), |kb| format!("{:.1} MB max", mb(kb))),
            ms(median(&of.iter().map(|s| s.cpu).collect::<Vec<_>>())),
        );
        let worst = clean_max.unwrap_or_else(|| of.iter().map(|s| s.max_rss_kb).max().unwrap_or(0));
        rows.push(Row {
            metric: format!("peak RSS, {ty} process"),
            value: format!("{:.1} MB", mb(worst)),
            baseline: true_clean_kb.map_or("-".into(), |kb| format!("{:.1} MB /bin/true", mb(kb))),
            ratio: true_clean_kb.map_or("-".into(), |kb| {
                format!("{:.1}x", worst as f64 / kb.max(1) as f64)
            }),
            target: "< 20 MB".into(),
            verdict: verdict(worst < RSS_TARGET_KB).into(),
        });
    }
    let job_cpu: Vec<Duration> = results
        .iter()
        .map(|r| r.stages.iter().map(|s| s.cpu).sum())
        .collect();
    let job_wall: Vec<Duration> = results
        .iter()
        .map(|r| r.stages.iter().map(|s| s.wall).sum())
        .collect();
    let procs = results[0].stages.len();
    let run_stages = results[0]
        .stages
        .iter()
        .filter(|s| stage_type(&s.name) == "run")
        .count();
    println!(
        "per job ({procs} driver processes, {run_stages} run stages): CPU total median {:.1} ms (min {:.1}, max {:.1}); wall total median {:.0} ms",
        ms(median(&job_cpu)),
        ms(*job_cpu.iter().min().expect("jobs")),
        ms(*job_cpu.iter().max().expect("jobs")),
        ms(median(&job_wall)),
    );
    let describes: Vec<u64> = results
        .iter()
        .filter_map(|r| log_field(&r.log, "describe_calls"))
        .collect();
    if !describes.is_empty() {
        println!("DescribeTasks during prepare (\"task is ready\" describe_calls): {describes:?}");
    }
    let cpu = JobCpu {
        median: median(&job_cpu),
        run_stages,
    };
    (rows, cpu)
}

/// The same job with every stage under GNU time, for each process's own peak RSS:
/// `(stage name, KiB)`, or `None` without GNU time.
async fn clean_rss(bench: &Bench) -> Option<Vec<(String, u64)>> {
    if !Path::new(GNU_TIME).is_file() {
        println!("({GNU_TIME} not found: no clean RSS figures)");
        return None;
    }
    let log = bench.dir.path().join("gnu-time.log");
    let mut timed = bench.emu.clone();
    timed.driver = PathBuf::from(GNU_TIME);
    timed.args = [
        "-a",
        "-o",
        &log.display().to_string(),
        "-f",
        "%M %U %S",
        &bench.fargate_bin.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(bench.emu.args.iter().cloned())
    .collect();
    let result = tokio::task::spawn_blocking(move || run_job(&timed, 950, &["true"]))
        .await
        .expect("job thread");
    let rss = gnu_time_lines(&log);
    assert_eq!(
        rss.len(),
        result.stages.len(),
        "one GNU time line per stage"
    );
    Some(
        result
            .stages
            .iter()
            .map(|s| s.name.clone())
            .zip(rss)
            .collect(),
    )
}

/// Part 2: the config stage against `/bin/true` spawned the same way.
fn config_stage(bench: &Bench) -> Row {
    let (emu, config_spawns) = (&bench.emu, bench.config_spawns);
    let job = Job::new(2000, &["true"]);
    let cfg_dir = tempfile::Builder::new()
        .prefix("custom-executor")
        .tempdir()
        .expect("temp dir");
    let mut true_emu = emu.clone();
    true_emu.driver = PathBuf::from("/bin/true");
    // `fargate --version`: the binary's own start-up (loading, clap), no configuration.
    let mut version_emu = emu.clone();
    version_emu.args.clear();
    let mut cfg = Vec::new();
    let mut tru = Vec::new();
    let mut version = Vec::new();
    for i in 0..config_spawns + 2 {
        let a = measure(
            emu.stage_command(&job, cfg_dir.path(), &["custom", "config"]),
            "fargate custom config",
        );
        let b = measure(
            true_emu.stage_command(&job, cfg_dir.path(), &["custom", "config"]),
            "/bin/true",
        );
        let c = measure(
            version_emu.stage_command(&job, cfg_dir.path(), &["--version"]),
            "fargate --version",
        );
        // The first two rounds warm the page cache.
        if i >= 2 {
            cfg.push(a);
            tru.push(b);
            version.push(c);
        }
    }
    let cfg_wall = median(&cfg.iter().map(|s| s.wall).collect::<Vec<_>>());
    let true_wall = median(&tru.iter().map(|s| s.wall).collect::<Vec<_>>());
    let true_rss = median(&tru.iter().map(|s| s.usage.max_rss_kb).collect::<Vec<_>>());
    println!();
    println!(
        "== 2. config stage, median of {config_spawns} spawns each, interleaved, same env and stdio"
    );
    println!(
        "fargate custom config {:7.2} ms (CPU {:.2} ms, maxRSS {:.1} MB)   /bin/true {:7.2} ms (maxRSS {:.1} MB)   ratio {:.2}, overhead {:+.2} ms",
        ms(cfg_wall),
        ms(median(
            &cfg.iter().map(|s| s.usage.cpu()).collect::<Vec<_>>()
        )),
        mb(median(
            &cfg.iter().map(|s| s.usage.max_rss_kb).collect::<Vec<_>>()
        )),
        ms(true_wall),
        mb(true_rss),
        cfg_wall.as_secs_f64() / true_wall.as_secs_f64(),
        ms(cfg_wall) - ms(true_wall),
    );
    let version_wall = median(&version.iter().map(|s| s.wall).collect::<Vec<_>>());
    println!(
        "fargate --version     {:7.2} ms (CPU {:.2} ms): binary start-up alone; config - --version = {:+.2} ms",
        ms(version_wall),
        ms(median(
            &version.iter().map(|s| s.usage.cpu()).collect::<Vec<_>>()
        )),
        ms(cfg_wall) - ms(version_wall),
    );
    println!(
        "(maxRSS via wait4 of a posix_spawn child includes this bench's own peak: /bin/true shows that floor, {:.1} MB)",
        mb(true_rss)
    );
    Row {
        metric: "config stage wall".into(),
        value: format!("{:.2} ms", ms(cfg_wall)),
        baseline: format!("{:.2} ms /bin/true", ms(true_wall)),
        ratio: format!("{:.2}x", cfg_wall.as_secs_f64() / true_wall.as_secs_f64()),
        target: "< 5 ms".into(),
        verdict: verdict(ms(cfg_wall) < CONFIG_TARGET_MS).into(),
    }
}

/// Where a prepared job's task answers, from its record: address, port and a key file.
struct PreparedTask {
    ip: String,
    port: u16,
    key_path: PathBuf,
}

/// Runs the prepare stage of `job` and reads the task's endpoint and key from its record.
fn prepare_task(bench: &Bench, job: &Job, run_dir: &Path) -> PreparedTask {
    let before = json_files(&bench.metadata);
    measure(
        bench
            .emu
            .stage_command(job, run_dir, &["custom", "prepare"]),
        "fargate custom prepare",
    );
    let record_path = json_files(&bench.metadata)
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("prepare wrote a job record");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("read record"))
            .expect("record JSON");
    let ip = record["endpoint"]["ip"]
        .as_str()
        .expect("endpoint.ip")
        .to_owned();
    let port = record["endpoint"]["port"].as_u64().expect("endpoint.port") as u16;
    let key_path = bench.dir.path().join("job_key");
    fargate_benches::write_private_key(
        &key_path,
        record["private_key"].as_str().expect("private_key"),
    )
    .expect("write key");
    PreparedTask { ip, port, key_path }
}

/// Part 3: the run stage of `true` against `ssh host true`; two rows (ssh's default key
/// exchange, and curve25519 as libssh2 uses), and the median client CPU of one `ssh`.
fn run_stage(bench: &Bench) -> (Vec<Row>, Duration) {
    let (emu, run_rounds) = (&bench.emu, bench.run_rounds);
    let job = Job::new(3000, &["true"]);
    let run_dir = tempfile::Builder::new()
        .prefix("custom-executor")
        .tempdir()
        .expect("temp dir");
    let PreparedTask { ip, port, key_path } = prepare_task(bench, &job, run_dir.path());
    let script = run_dir.path().join("true.sh");
    std::fs::write(&script, runner_script("true")).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let script_arg = script.display().to_string();
    let run_args = ["custom", "run", script_arg.as_str(), "build_script"];
    let curve = ["-o", "KexAlgorithms=curve25519-sha256"];
    let user = bench.fargate.ssh_username();
    let (mut ours, mut ssh_default, mut ssh_curve) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..run_rounds + 1 {
        let a = measure(
            emu.stage_command(&job, run_dir.path(), &run_args),
            "fargate custom run",
        );
        let b = measure(ssh_command(&key_path, user, &ip, port, &[]), "ssh true");
        let c = measure(
            ssh_command(&key_path, user, &ip, port, &curve),
            "ssh curve25519 true",
        );
        if i >= 1 {
            ours.push(a);
            ssh_default.push(b);
            ssh_curve.push(c);
        }
    }
    measure(
        emu.stage_command(&job, run_dir.path(), &["custom", "cleanup"]),
        "fargate custom cleanup",
    );
    let walls = |v: &[Sample]| median(&v.iter().map(|s| s.wall).collect::<Vec<_>>());
    let cpus = |v: &[Sample]| median(&v.iter().map(|s| s.usage.cpu()).collect::<Vec<_>>());
    let (w_ours, w_def, w_curve) = (walls(&ours), walls(&ssh_default), walls(&ssh_curve));
    println!();
    println!(
        "== 3. run stage of `true` on task {ip}:{port}, median of {run_rounds}, interleaved, cipher {CIPHER}"
    );
    for (name, w, c) in [
        (
            "fargate custom run (libssh2, curve25519)",
            w_ours,
            cpus(&ours),
        ),
        ("ssh (default kex, sntrup761)", w_def, cpus(&ssh_default)),
        (
            "ssh -o KexAlgorithms=curve25519-sha256",
            w_curve,
            cpus(&ssh_curve),
        ),
    ] {
        println!(
            "{name:<42} wall {:7.1} ms   client CPU {:6.1} ms",
            ms(w),
            ms(c)
        );
    }
    let r_def = w_ours.as_secs_f64() / w_def.as_secs_f64();
    let r_curve = w_ours.as_secs_f64() / w_curve.as_secs_f64();
    println!("ratio vs ssh default {r_def:.2}, vs ssh curve25519 {r_curve:.2}");
    let row = |baseline: String, ratio: f64| Row {
        metric: "run stage `true` wall".into(),
        value: format!("{:.1} ms", ms(w_ours)),
        baseline,
        ratio: format!("{ratio:.2}x"),
        target: "<= 1.25x".into(),
        verdict: verdict(ratio <= RUN_TARGET_RATIO).into(),
    };
    let rows = vec![
        row(format!("{:.1} ms ssh", ms(w_def)), r_def),
        row(format!("{:.1} ms ssh curve25519", ms(w_curve)), r_curve),
    ];
    (rows, cpus(&ssh_curve))
}

/// A job's driver CPU against the fair client baseline: one `ssh` (same key exchange as
/// libssh2) per run stage.
fn cpu_row(job_cpu: &JobCpu, ssh_cpu: Duration) -> Row {
    let run_stages = job_cpu.run_stages;
    let baseline = ssh_cpu * run_stages as u32;
    Row {
        metric: "CPU of a job's driver processes".into(),
        value: format!("{:.1} ms", ms(job_cpu.median)),
        baseline: format!("{run_stages} x ssh-curve25519 CPU {:.1} ms", ms(baseline)),
        ratio: format!(
            "{:.2}x",
            job_cpu.median.as_secs_f64() / baseline.as_secs_f64()
        ),
        target: "(none)".into(),
        verdict: "-".into(),
    }
}

/// Part 4: ECS API calls of one job, counted by a recording proxy in front of moto.
async fn api_calls(bench: &Bench) -> Row {
    let proxy = Arc::new(FaultProxy::start(&bench.fargate.moto().endpoint_url()));
    let mut counted = bench.emu.clone();
    for (k, v) in &mut counted.env {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint_url();
        }
    }
    let result = tokio::task::spawn_blocking(move || run_job(&counted, 4000, &["true"]))
        .await
        .expect("job thread");
    let mut by_op: BTreeMap<String, usize> = BTreeMap::new();
    for r in proxy.requests() {
        *by_op.entry(r.operation).or_default() += 1;
    }
    let total: usize = by_op.values().sum();
    println!();
    println!(
        "== 4. ECS API calls of one job (through a recording proxy): {total} {by_op:?}; describe_calls logged: {:?}",
        log_field(&result.log, "describe_calls")
    );
    Row {
        metric: "ECS API calls per job".into(),
        value: total.to_string(),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "(none)".into(),
        verdict: "-".into(),
    }
}

fn print_summary(rows: &[Row]) {
    println!();
    println!("== summary");
    println!(
        "{:<32} {:>11}  {:<38} {:>7}  {:<9} verdict",
        "metric", "value", "baseline (same run)", "ratio", "target"
    );
    for r in rows {
        println!(
            "{:<32} {:>11}  {:<38} {:>7}  {:<9} {}",
            r.metric, r.value, r.baseline, r.ratio, r.target, r.verdict
        );
    }
}
