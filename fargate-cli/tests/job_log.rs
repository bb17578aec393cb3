//! Golden tests of the job log: the exact lines the real `fargate` binary prints for each
//! stage (run by the runner emulator against the local Fargate), with what changes from run
//! to run (task ARN, address, durations, cost) replaced by placeholders. No timestamps, no
//! module paths, no fact twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::Arc;

use common::{assert_failed_at_prepare, no_lag, run_job, runner_emu};
use fargate_testkit::local_fargate::LocalFargate;
use fargate_testkit::runner::{Job, JobResult, JobStatus, OnOutput};

async fn run(job: Job, fargate: Arc<LocalFargate>) -> JobResult {
    run_with(job, fargate, |c| c).await.0
}

/// Runs `job` with `fargate.toml` as `edit` makes it; also returns the log file's text when
/// the file sets `LogFile = "driver.log"` (in the test's directory).
async fn run_with(
    job: Job,
    fargate: Arc<LocalFargate>,
    edit: impl FnOnce(String) -> String,
) -> (JobResult, String) {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata");
    let config = dir.path().join("fargate.toml");
    let log_file = dir.path().join("driver.log");
    let text = edit(fargate.fargate_toml(&metadata)).replace(
        "\"driver.log\"",
        &format!("{:?}", log_file.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    let result = run_job(&runner_emu(&fargate, &config, metadata), job).await;
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    drop(dir);
    (result, log)
}

/// What the driver process of `stage` printed, normalized.
fn stage_log(result: &JobResult, stage: &str) -> String {
    let runs = result.stage(stage);
    let run = runs.first().unwrap_or_else(|| panic!("no {stage} stage"));
    let text: String = run.output.iter().map(|(_, s)| s.as_str()).collect();
    normalize(&text)
}

/// Replaces the task ARN, the address, durations and amounts with placeholders.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let mut out = Vec::with_capacity(words.len());
            for (i, w) in words.iter().enumerate() {
                let next = words.get(i + 1).copied().unwrap_or("");
                let numeric = !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.');
                let amount = w.strip_prefix('$').is_some_and(|a| {
                    !a.is_empty() && a.chars().all(|c| c.is_ascii_digit() || c == '.')
                });
                let word = if w.starts_with("arn:aws:ecs:") && w.contains(":task/") {
                    let tail = &w[w.trim_end_matches([')', ',']).len()..];
                    format!("<task>{tail}")
                } else if w.starts_with("127.") {
                    "<address>".to_owned()
                } else if numeric && (next.starts_with('s') || next.starts_with("min")) {
                    "N".to_owned()
                } else if w.starts_with("subnet-") {
                    let tail = &w[w.trim_end_matches([';', ',']).len()..];
                    format!("<subnet>{tail}")
                } else if amount {
                    "$N".to_owned()
                } else {
                    (*w).to_owned()
                };
                out.push(word);
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_lines(got: &str, want: &[&str]) {
    assert_eq!(got, want.join("\n"), "\n--- got ---\n{got}\n");
    let lines: Vec<&str> = got.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(!lines[..i].contains(l), "line {l:?} appears twice");
    }
}

fn prepare_lines(task_definition: &str) -> Vec<String> {
    vec![
        format!("starting a Fargate task from task definition {task_definition}"),
        "task <task> is ready at <address> after N s".into(),
        // What the job asked for and got (task shape policy), then what ECS reports.
        "task shape: CPU task definition's, memory task definition's, disk default, \
         capacity runner default, task role task definition's"
            .into(),
        "summary: accepted N s, provisioning N s, image pull N s, container start N s, SSH ready N s".into(),
        "  shape: 0.25 vCPU, 0.5 GiB memory, 20 GiB storage, X86_64, platform 1.4.0, us-east-1a".into(),
        "  run time N s, estimated cost $N (list price, us-east-1 x86, billed N min N s)".into(),
    ]
}

fn cleanup_lines() -> Vec<String> {
    vec![
        "summary at cleanup: running N s".into(),
        "  shape: 0.25 vCPU, 0.5 GiB memory, 20 GiB storage, X86_64, platform 1.4.0, us-east-1a"
            .into(),
        "  run time N s, estimated cost $N (list price, us-east-1 x86, billed N min N s)".into(),
        "stopped task <task>".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_job() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let td = fargate.ecs.task_definition.clone();
    assert!(!td.contains(":task/"), "{td}");
    // With a log file, the job log keeps its short lines and the file gets the structured
    // form: timestamps and every figure as a field.
    let (result, file) = run_with(Job::new(1601, &["echo hello"]), fargate, |c| {
        format!("LogFile = \"driver.log\"\n{c}")
    })
    .await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    for structured in [
        "task_definition=",
        "elapsed_ms=",
        "is ready at",
        "cause=\"cleanup\"",
        "estimated_cost=",
    ] {
        assert!(
            file.contains(structured),
            "missing {structured:?} in\n{file}"
        );
    }
    let stamped = file.lines().filter(|l| l.starts_with("20")).count();
    assert_eq!(
        stamped,
        file.lines().count(),
        "every line has its time:\n{file}"
    );
    println!("{}", result.log); // shown with --nocapture: the README's sample
    assert_lines(&stage_log(&result, "prepare"), &strs(&prepare_lines(&td)));
    assert_lines(
        &stage_log(&result, "build_script"),
        &["$ echo hello", "hello"],
    );
    assert_lines(&stage_log(&result, "cleanup"), &strs(&cleanup_lines()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_script() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let result = run(Job::new(1602, &["echo before", "exit 3"]), fargate).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(3), "{}", result.log);
    // The script's output comes on the driver's stdout, the driver's own lines on its
    // stderr: two pipes, read separately (by the runner too), so their relative order is
    // not defined. Each keeps its own order.
    let log = stage_log(&result, "build_script");
    let (driver, script): (Vec<&str>, Vec<&str>) =
        log.lines().partition(|l| l.starts_with("ERROR:"));
    assert_lines(&script.join("\n"), &["$ echo before", "before", "$ exit 3"]);
    assert_lines(
        &driver.join("\n"),
        &["ERROR: the build_script script exited with status 3"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_stopped_mid_step() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let killer = fargate.clone();
    let mut job = Job::new(1603, &["echo step-started", "sleep 600"]);
    job.on_output = vec![(
        "step-started".into(),
        OnOutput::Call(Box::new(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for arn in killer.running_tasks().await {
                    killer
                        .stop_task(&arn, "Essential container in task exited")
                        .await;
                }
            });
        })),
    )];
    let result = run(job, fargate).await;
    assert_eq!(
        result.status,
        JobStatus::SystemFailure("build_script".into()),
        "{}",
        result.log
    );
    assert_lines(
        &stage_log(&result, "build_script"),
        &[
            "$ echo step-started",
            "step-started",
            "$ sleep 600",
            "ERROR: the task stopped: Essential container in task exited; stop code UserInitiated; \
             container ci-coordinator exited with 0 (the connection to the SSH server at <address> \
             was lost while the script was running: transport read) (task: <task>)",
            "hint: the reason comes from the launcher (e.g. the container ran out of memory, or spot capacity was reclaimed)",
        ],
    );
}

/// The fallback that exists today: a capacity error in the first subnets moves the launch
/// on to the next ones (per-job capacity profiles with Spot-to-on-demand fallback are
/// another issue's).
#[tokio::test(flavor = "multi_thread")]
async fn a_capacity_error_moving_on_to_the_next_subnet() {
    use fargate_testkit::fault_proxy::Fault;
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let td = fargate.ecs.task_definition.clone();
    fargate.proxy().inject(Fault::run_task_failure(
        "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        None,
    ));
    let result = run(Job::new(1604, &["echo hello"]), fargate).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    let mut want = prepare_lines(&td);
    want.insert(
        1,
        "WARNING: RunTask failed in <subnet>, <subnet>, <subnet>, <subnet>, <subnet>, <subnet>; \
         trying the next subnet: RunTask: Capacity is unavailable at this time. Please try again \
         later or in a different availability zone"
            .into(),
    );
    assert_lines(&stage_log(&result, "prepare"), &strs(&want));
}

/// A prepare that fails: the error once, with its hint, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn a_prepare_failure() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let (result, _) = run_with(Job::new(1605, &["echo never"]), fargate, |c| {
        c.lines()
            .map(|l| match l.trim_start().starts_with("TaskDefinition") {
                true => "  TaskDefinition = \"does-not-exist:1\"".to_owned(),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    assert_failed_at_prepare(&result);
    assert_lines(
        &stage_log(&result, "prepare"),
        &[
            "starting a Fargate task from task definition does-not-exist:1",
            "ERROR: RunTask: ClientException: Unable to describe task definition.: service error",
            "hint: check the task definition (family, family:revision or ARN) and the region",
        ],
    );
}
