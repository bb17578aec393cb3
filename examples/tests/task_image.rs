//! The example task image's `until-deadline.sh` (what ends a task at its deadline), run
//! with `sh` and a stub in place of sshd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("task-image/until-deadline.sh")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `until-deadline.sh sh -c STUB stub ARG...` with `FARGATE_TASK_DEADLINE=deadline`.
fn until(deadline: Option<&str>, stub: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg(script()).args(["sh", "-c", stub, "stub"]).args(args);
    match deadline {
        Some(d) => c.env("FARGATE_TASK_DEADLINE", d),
        None => c.env_remove("FARGATE_TASK_DEADLINE"),
    };
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_command_is_stopped_at_the_deadline_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let deadline = now() + 2;
    let out = until(
        Some(&deadline.to_string()),
        r#"echo $$ > "$1"; exec sleep 600"#,
        &[pid_file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let ended = now();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(ended >= deadline, "ended at {ended}, before {deadline}");
    assert!(
        ended <= deadline + 3,
        "ended at {ended}, long after {deadline}"
    );
    assert!(stderr(&out).contains("the task's lifetime has ended"));
    // The stub (sshd) ran, and was stopped and reaped.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!Path::new("/proc").join(pid.trim()).exists(), "stub {pid}");
}

#[test]
fn a_later_deadline_in_the_deadline_file_extends_the_tasks_life() {
    // A job that took the task over from the warm pool wrote its own deadline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deadline");
    let first = now() + 1;
    let later = first + 2;
    std::fs::write(&file, format!("{later}\n")).unwrap();
    let out = until(Some(&first.to_string()), "exec sleep 600", &[])
        .env("FARGATE_DEADLINE_FILE", &file)
        .output()
        .unwrap();
    let ended = now();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        ended >= later,
        "ended at {ended}, before the file's {later}"
    );
    assert!(ended <= later + 3, "ended at {ended}, long after {later}");
}

#[test]
fn a_command_that_ends_first_ends_the_script_with_its_status() {
    let started = Instant::now();
    let out = until(Some(&(now() + 600).to_string()), "exit 3", &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn without_a_deadline_the_command_runs_as_before() {
    let out = until(None, "echo hello; exit 5", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(out.stdout, b"hello\n");
    let out = until(Some(""), "exit 0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_past_or_invalid_deadline_never_starts_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    for deadline in ["1", "soon"] {
        let out = until(Some(deadline), r#"touch "$1""#, &[marker.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{deadline}");
        assert!(!marker.exists(), "{deadline}: the command ran");
    }
}

#[test]
fn sigterm_is_passed_on_to_the_command() {
    let mut child = until(
        Some(&(now() + 600).to_string()),
        "echo ready; exec sleep 600",
        &[],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let started = Instant::now();
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().unwrap();
    // sleep ended by SIGTERM: 128 + 15.
    assert_eq!(status.code(), Some(143));
    assert!(started.elapsed() < Duration::from_secs(60));
}
