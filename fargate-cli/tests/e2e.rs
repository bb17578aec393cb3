//! End to end: the real `fargate` binary, driven the way gitlab-runner drives it, against a
//! local Fargate (moto's ECS emulator plus one real sshd per task, all on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fargate_examples::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_examples::runner::{Job, JobResult, JobStatus, KillPoint, OnOutput, RunnerEmu};

struct Rig {
    fargate: Arc<LocalFargate>,
    emu: RunnerEmu,
    _dir: tempfile::TempDir,
}

async fn rig_with(options: LocalFargateOptions, edit: impl FnOnce(String) -> String) -> Rig {
    let fargate = Arc::new(LocalFargate::start(options).await);
    let dir = tempfile::tempdir().expect("temp dir");
    let metadata = dir.path().join("metadata");
    let config = dir.path().join("fargate.toml");
    std::fs::write(&config, edit(fargate.fargate_toml(&metadata))).expect("write fargate.toml");
    let mut emu = RunnerEmu::new(
        &PathBuf::from(env!("CARGO_BIN_EXE_fargate")),
        &config,
        fargate.driver_env(),
    );
    emu.metadata_dir = Some(metadata);
    Rig {
        fargate,
        emu,
        _dir: dir,
    }
}

async fn rig() -> Rig {
    rig_with(LocalFargateOptions::default(), |c| c).await
}

impl Rig {
    async fn run(&self, job: Job) -> JobResult {
        let emu = self.emu.clone();
        tokio::task::spawn_blocking(move || emu.run(job))
            .await
            .expect("runner thread")
    }

    async fn assert_no_task_running(&self, result: &JobResult) {
        let running = self.fargate.running_tasks().await;
        assert!(
            running.is_empty(),
            "tasks left running: {running:?}\n{}",
            result.log
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_unicode_output_on_both_streams_succeeds() {
    let rig = rig().await;
    let result = rig
        .run(Job::new(
            1,
            &["echo 'héllo wörld ✓'", "echo 'on stderr ✗' >&2", "uname -s"],
        ))
        .await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    for expected in [
        "héllo wörld ✓",
        "on stderr ✗",
        "Linux",
        "Running prepare_script",
        "is ready at",
    ] {
        assert!(
            result.log.contains(expected),
            "missing {expected:?} in\n{}",
            result.log
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&result.config_output).expect("config JSON");
    assert_eq!(config["driver"]["name"], "fargate");
    assert!(
        config["hostname"]
            .as_str()
            .unwrap_or_default()
            .starts_with("zxcv1234-")
    );
    let names: Vec<&str> = result.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["config", "prepare", "prepare_script", "get_sources"]
    );
    assert_eq!(names.last(), Some(&"cleanup"));
    assert!(
        !result.log.contains("PRIVATE KEY"),
        "a private key reached the job log"
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_script_reports_its_exit_code_and_after_script_runs() {
    let rig = rig().await;
    let mut job = Job::new(2, &["echo before", "exit 3", "echo never"]);
    job.after_script = vec!["echo after-script-ran with $CI_JOB_STATUS".into()];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(3), "{}", result.log);
    assert!(
        result.log.contains("after-script-ran with failed"),
        "{}",
        result.log
    );
    assert!(!result.log.contains("\nnever"), "{}", result.log);
    assert!(result.stage("upload_artifacts_on_failure").len() == 1);
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_with_one_mebibyte_of_exported_variables_succeeds() {
    let rig = rig().await;
    let mut job = Job::new(3, &["echo \"sizes ${#BIG_0} ${#BIG_63} ${BIG_63:0:5}\""]);
    job.variables = (0..64)
        .map(|i| {
            (
                format!("BIG_{i}"),
                format!("{i:05}{}", "x".repeat(16 * 1024 - 5)),
            )
        })
        .collect();
    let result = rig.run(job).await;
    assert_eq!(
        result.status,
        JobStatus::Success,
        "{}",
        &result.log[..result.log.len().min(4000)]
    );
    assert!(
        result.log.contains("sizes 16384 16384 00063"),
        "{}",
        &result.log[..result.log.len().min(4000)]
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_sshd_starts_late_still_runs_the_job_with_a_sh_login_user() {
    // Also an image whose SSH user has a plain POSIX `sh` as login shell (dash here, like
    // ash on Alpine).
    let rig = rig_with(
        LocalFargateOptions {
            sshd_delay: Duration::from_secs(5),
            login_shell: Some("/bin/sh".into()),
            ..Default::default()
        },
        |c| c,
    )
    .await;
    let result = rig
        .run(Job::new(4, &["echo late-but-fine as $(id -un)"]))
        .await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(
        result.log.contains("late-but-fine as fargate-sh"),
        "{}",
        result.log
    );
    let prepare = result.stage("prepare");
    assert_eq!(prepare.len(), 1, "prepare must not need a retry");
    assert!(prepare[0].wall >= Duration::from_secs(5));
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_stops_promptly_and_cleanup_stops_the_task() {
    let rig = rig().await;
    let mut job = Job::new(5, &["echo started-sleep", "sleep 600"]);
    job.on_output = Some(("started-sleep".into(), OnOutput::Cancel));
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Canceled, "{}", result.log);
    let build = result.stage("build_script");
    let after_term = build[0].exit_after_term.expect("SIGTERM was sent");
    assert!(
        after_term < Duration::from_secs(5),
        "the stage took {after_term:?} to exit after SIGTERM"
    );
    assert_ne!(
        build[0].exit_code,
        Some(0),
        "a cancelled stage must not report success"
    );
    assert_eq!(result.stage("cleanup").len(), 1);
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_task_definition_is_a_system_failure_with_ecs_message() {
    let rig = rig_with(LocalFargateOptions::default(), |c| {
        c.lines()
            .map(|l| {
                if l.trim_start().starts_with("TaskDefinition") {
                    "  TaskDefinition = \"does-not-exist:1\"".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let result = rig.run(Job::new(6, &["echo never"])).await;
    assert_eq!(
        result.status,
        JobStatus::SystemFailure("prepare".into()),
        "{}",
        result.log
    );
    assert!(
        result.log.contains("Unable to describe task definition"),
        "{}",
        result.log
    );
    assert_eq!(
        result.stage("prepare").len(),
        3,
        "the runner retries prepare three times"
    );
    assert_eq!(
        result.stage("cleanup").len(),
        3,
        "and cleans up after each attempt"
    );
    assert!(
        result
            .stage("prepare")
            .iter()
            .all(|s| s.exit_code == Some(2))
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_stops_mid_step_is_a_system_failure_naming_the_reason() {
    let rig = rig().await;
    let fargate = rig.fargate.clone();
    let mut job = Job::new(7, &["echo step-started", "sleep 600"]);
    job.on_output = Some((
        "step-started".into(),
        OnOutput::Call(Box::new(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for arn in fargate.running_tasks().await {
                    fargate
                        .stop_task(&arn, "Essential container in task exited")
                        .await;
                }
            });
        })),
    ));
    let result = rig.run(job).await;
    assert_eq!(
        result.status,
        JobStatus::SystemFailure("build_script".into()),
        "{}",
        result.log
    );
    assert!(
        result.log.contains("Essential container in task exited"),
        "{}",
        result.log
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_jobs_succeed_and_see_only_their_own_variables() {
    let rig = rig().await;
    let mut handles = Vec::new();
    for i in 0..10 {
        let mut job = Job::new(100 + i, &["echo \"mine=$MY_SECRET\""]);
        job.variables = vec![("MY_SECRET".into(), format!("secret-of-job-{i}-"))];
        let emu = rig.emu.clone();
        handles.push(tokio::task::spawn_blocking(move || (i, emu.run(job))));
    }
    for h in handles {
        let (i, result) = h.await.expect("job thread");
        assert_eq!(result.status, JobStatus::Success, "job {i}: {}", result.log);
        assert!(
            result.log.contains(&format!("mine=secret-of-job-{i}-")),
            "job {i}: {}",
            result.log
        );
        for j in (0..10).filter(|j| *j != i) {
            assert!(
                !result.log.contains(&format!("secret-of-job-{j}-")),
                "job {i} saw job {j}'s variable"
            );
        }
    }
    let running = rig.fargate.running_tasks().await;
    assert!(running.is_empty(), "{running:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_killed_during_prepare_leaves_no_task_behind() {
    let rig = rig().await;
    for (i, point) in [
        KillPoint::RecordPhase("launch_requested".into()),
        KillPoint::RecordPhase("launched".into()),
        KillPoint::After(Duration::from_millis(300)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = Job::new(200 + i as i64, &["echo second-attempt-ran"]);
        job.kill_prepare = Some(point.clone());
        let result = rig.run(job).await;
        assert_eq!(
            result.status,
            JobStatus::Success,
            "{point:?}: {}",
            result.log
        );
        let prepares = result.stage("prepare");
        assert_eq!(
            prepares.len(),
            2,
            "{point:?}: the killed attempt must be retried: {}",
            result.log
        );
        assert_eq!(
            prepares[0].exit_code, None,
            "{point:?}: the first attempt must have been killed"
        );
        rig.assert_no_task_running(&result).await;
    }
}
