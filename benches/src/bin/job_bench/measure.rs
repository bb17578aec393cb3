//! Measuring the driver's processes: one process's wall time and resource usage, the
//! stage types, and what the stages leave (GNU time lines, log fields, JSON files).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fargate_testkit::runner::{Usage, wait_usage};

/// One measured process.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) wall: Duration,
    pub(super) usage: Usage,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// The release `fargate` binary next to this executable.
pub(super) fn fargate_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this executable");
    let dir = exe.parent().expect("this executable's directory");
    let bin = dir.join("fargate");
    if !bin.is_file() {
        eprintln!(
            "job_bench: {} is missing.\n  Build it first, with the same CARGO_TARGET_DIR and profile:\n    cargo build --release -p fargate-cli",
            bin.display()
        );
        std::process::exit(2);
    }
    if !dir.ends_with("release") {
        eprintln!(
            "job_bench: warning: {} is not a release build; run with --release",
            bin.display()
        );
    }
    bin
}

/// Spawns `cmd`, drains its stdout and stderr (as the runner does), and reaps it with
/// `wait4`. Panics when it fails.
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait_usage (wait4), not by Child::wait"
)]
pub(super) fn measure(mut cmd: Command, what: &str) -> Sample {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut err = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out);
    let (status, usage) = wait_usage(child.id()).expect("wait4");
    let wall = started.elapsed();
    let err = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "{what} failed: {status}\nstdout: {out}\nstderr: {err}"
    );
    Sample { wall, usage }
}

/// The stage type of a driver process: `config`, `prepare`, `run` or `cleanup`.
pub(super) fn stage_type(name: &str) -> &'static str {
    match name {
        "config" => "config",
        "prepare" => "prepare",
        "cleanup" => "cleanup",
        _ => "run",
    }
}

pub(super) const STAGE_TYPES: [&str; 4] = ["config", "prepare", "run", "cleanup"];

/// `key=<number>` in a log.
pub(super) fn log_field(log: &str, key: &str) -> Option<u64> {
    let at = log.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// GNU time lines `<maxrss KiB> <user s> <sys s>`, one per stage, in order.
pub(super) fn gnu_time_lines(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

pub(super) fn json_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}
