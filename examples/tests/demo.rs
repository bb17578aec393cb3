//! The demo binary (`scripts/demo` runs it): a job through the real `fargate` binary against
//! a local Fargate succeeds, its log is printed, and nothing the demo started is left
//! running, also when it is interrupted mid-job.
//!
//! Needs what the end-to-end tests need (root, `/usr/sbin/sshd`, moto via
//! `FARGATE_MOTO_PYTHON`; `scripts/test` installs them), so it runs only with
//! `FARGATE_TEST_FIXTURES=1`, and the `fargate` binary next to the demo's, which
//! `cargo test --workspace` builds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn demo() -> Command {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_demo"));
    let fargate = demo.with_file_name("fargate");
    assert!(
        fargate.is_file(),
        "{} is missing: build it first with `cargo build -p fargate-cli` \
         (`cargo test --workspace` and scripts/test build it)",
        fargate.display()
    );
    let mut command = Command::new(demo);
    command.arg("--fargate").arg(fargate).stdin(Stdio::null());
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The PIDs of moto and the sshds from the demo's last line about them.
fn local_fargate_pids(stdout: &str) -> Vec<i32> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Stopped the local Fargate ("))
        .unwrap_or_else(|| panic!("no teardown line in\n{stdout}"));
    let pids: Vec<i32> = line
        .split("pid ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!pids.is_empty(), "no PIDs in {line:?}");
    pids
}

/// Asserts that the demo's teardown left nothing running.
fn assert_all_stopped(stdout: &str) {
    assert!(stdout.contains("none left running"), "{stdout}");
    for pid in local_fargate_pids(stdout) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            !(stat.contains("(python") || stat.contains("(sshd")) || stat.contains(") Z "),
            "process {pid} of the local Fargate is still running: {stat}"
        );
    }
}

#[test]
fn the_demo_runs_a_job_through_the_driver_and_stops_everything() {
    fargate_testkit::require_fixture!(LocalFargate);
    let output = demo().output().expect("running the demo");
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        "Running job 4242",
        "is ready at",
        "summary: accepted ",
        ", estimated cost $",
        // No "summary at cleanup": the demo's job is over before the local Fargate's ECS
        // shows the task (its visibility lag), and a summary without ECS's figures is left
        // out rather than guessed.
        "$ uname -a",
        "Hello from job demo on main: héllo wörld, 你好 ✓",
        "Grüße aus dem Build ✓",
        "test result: ok. 3 passed; 0 failed ✅",
        "after_script: the job's status is success",
        "stopped task",
        "Job succeeded",
        "Tasks still running in the local Fargate after cleanup: none",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}\nstderr:\n{stderr}"
        );
    }
    for stage in [
        "config",
        "prepare",
        "build_script",
        "after_script",
        "cleanup",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{stage} ")) && l.contains(" 0 ")),
            "no successful {stage} row in\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "a private key reached the output"
    );
    // The job's scripts run in the builds directory, which its login user may write.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("user ") && l.ends_with("/builds")),
        "the scripts did not run in the builds directory:\n{stdout}"
    );
    assert!(!stdout.contains("Permission denied"), "{stdout}");
    assert_all_stopped(&stdout);
}

/// Runs the demo with `args`, which must succeed, print each of `expected` and stop
/// everything it started; its stdout.
#[allow(
    clippy::expect_used,
    reason = "a test helper: a demo that cannot start fails the test"
)]
fn successful_demo(args: &[&str], expected: &[&str]) -> String {
    let output = demo().args(args).output().expect("running the demo");
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in expected.iter().chain(&[
        "Job succeeded",
        "Tasks still running in the local Fargate after cleanup: none",
    ]) {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert_all_stopped(&stdout);
    stdout
}

#[test]
fn the_demo_runs_a_job_on_a_warm_task_and_drains_the_pool() {
    fargate_testkit::require_fixture!(LocalFargate);
    let stdout = successful_demo(
        &["--warm"],
        &[
            "$ fargate pool fill --wait",
            "1 idle task(s)",
            "using a warm task from the pool",
            "summary: warm task from the pool (idle ",
            "$ fargate pool drain",
        ],
    );
    assert!(!stdout.contains("cannot serve the job"), "{stdout}");
}

#[test]
fn the_fleet_demo_runs_two_hosts_on_one_table_and_one_pool() {
    fargate_testkit::require_fixture!(LocalFargate);
    let stdout = successful_demo(
        &["--fleet"],
        &[
            "[host-a] $ fargate --config host-a.toml store init",
            "table fargate-demo-fleet is usable",
            "[host-a] $ fargate --config host-a.toml pool fill --wait",
            "[host-b] $ fargate --config host-b.toml pool status",
            "================ job 4242 on host-a ================",
            "================ job 4243 on host-b ================",
            "Fleet summary: 2 hosts on DynamoDB table fargate-demo-fleet",
            "[host-b] $ fargate --config host-b.toml pool drain",
        ],
    );
    // Host B sees the two tasks host A started; each job claimed one of them.
    let status = stdout
        .split("pool status\n")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.contains("idle task(s)")));
    assert_eq!(status, Some("  2 idle task(s)"), "{stdout}");
    let claims: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.contains(": claimed warm task ") && l.contains("(filled by host-a); succeeded")
        })
        .collect();
    assert_eq!(claims.len(), 2, "{stdout}");
    assert!(claims[0].starts_with("  job 4242 on host-a:"), "{stdout}");
    assert!(claims[1].starts_with("  job 4243 on host-b:"), "{stdout}");
    let task = |line: &str| line.split_whitespace().nth(7).unwrap_or("").to_owned();
    assert_ne!(task(claims[0]), task(claims[1]), "{stdout}");
}

#[test]
fn the_fleet_demo_refuses_warm_and_image() {
    let output = demo()
        .args(["--fleet", "--warm"])
        .output()
        .expect("running the demo");
    assert_eq!(output.status.code(), Some(2));
    let (_, stderr) = text(&output);
    assert!(stderr.contains("leave out --warm and --image"), "{stderr}");
}

#[test]
fn the_demo_runs_a_job_with_an_image_in_two_containers() {
    fargate_testkit::require_fixture!(LocalFargate);
    successful_demo(
        &["--image", "alpine:3.20"],
        &[
            "the job runs in image alpine:3.20",
            "sources checked out in the helper container",
            "this script runs in the job container",
        ],
    );
}

#[test]
fn a_failing_job_makes_the_demo_exit_1_with_the_scripts_exit_code() {
    fargate_testkit::require_fixture!(LocalFargate);
    let output = demo().arg("--fail").output().expect("running the demo");
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Job failed: the script exited with 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("after_script: the job's status is failed"),
        "{stdout}"
    );
    assert_all_stopped(&stdout);
}

#[test]
fn an_interrupted_demo_cancels_the_job_cleans_up_and_stops_everything() {
    fargate_testkit::require_fixture!(LocalFargate);
    // A number of seconds no other test uses, so that the remote `sleep` can be found.
    let secs = (600 + std::process::id() % 1000).to_string();
    let mut child = demo()
        .args(["--sleep", &secs])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the demo");
    let stdout = child.stdout.take().expect("stdout");
    let stdout_reader =
        std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("▸ build_script") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = rx.recv_timeout(Duration::from_secs(120));
    // Interrupt once the job's script sleeps (the local Fargate runs it on this machine).
    let sleeping = format!("sleep {secs}");
    let waiting = Instant::now();
    while !Command::new("pgrep")
        .args(["-fx", &sleeping])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the job's `{sleeping}` never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the demo did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = interrupted.elapsed();
    let stdout = stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    assert!(
        started.is_ok(),
        "build_script never started:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        status.code(),
        Some(130),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the demo took {took:?} to stop after SIGINT"
    );
    assert!(stdout.contains("Job canceled"), "{stdout}");
    assert!(
        stdout.contains("SIGTERM"),
        "the driver was not cancelled:\n{stdout}"
    );
    assert!(
        stdout.contains("stopped task"),
        "cleanup did not stop the task:\n{stdout}"
    );
    assert!(
        stdout.contains("Tasks still running in the local Fargate after cleanup: none"),
        "{stdout}"
    );
    assert_all_stopped(&stdout);
}
