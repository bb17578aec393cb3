//! End to end: the real `fargate` binary, driven the way gitlab-runner drives it, against a
//! local Fargate (moto's ECS emulator plus one real sshd per task, all on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Rig, assert_failed_at_prepare, joined, keeper_pids, run_fargate};
use fargate_testkit::fault_proxy::Fault;
use fargate_testkit::local_fargate::LocalFargateOptions;
use fargate_testkit::runner::{Job, JobResult, JobStatus, KillPoint, OnOutput};

async fn rig_with(options: LocalFargateOptions, edit: impl FnOnce(String) -> String) -> Rig {
    Rig::start(options, |config, _| edit(config)).await
}

async fn rig() -> Rig {
    rig_with(LocalFargateOptions::default(), |c| c).await
}

impl Rig {
    async fn assert_no_task_running(&self, result: &JobResult) {
        let running = self.fargate.running_tasks().await;
        assert!(
            running.is_empty(),
            "tasks left running: {running:?}\n{}",
            result.log
        );
        // Cleanup waits for the keeper it asks to quit; one whose prepare was killed before
        // it listened ends by itself once the record is gone (checked every 0.5 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut keepers = self.keepers();
        while !keepers.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            keepers = self.keepers();
        }
        assert!(
            keepers.is_empty(),
            "connection keepers left running: {keepers:?}\n{}",
            result.log
        );
    }

    /// The pids of this rig's connection keeper processes (`fargate ... keeper --socket
    /// <metadata dir>/...`; a process that exited has no command line).
    fn keepers(&self) -> Vec<u32> {
        keeper_pids(&self.metadata())
    }
}

/// A rig whose driver logs at debug level, where stages say whether they ran through the
/// job's connection keeper.
async fn debug_rig() -> Rig {
    rig_with(LocalFargateOptions::default(), |c| {
        c.replace("LogLevel = \"info\"", "LogLevel = \"debug\"")
    })
    .await
}

impl Rig {
    /// The names in the metadata directory, sorted.
    /// What the metadata directory holds besides the namespace's claim (`<ns>.namespace`,
    /// which stays while the runner entry exists; see docs/ownership.md).
    fn metadata_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.metadata())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            // The namespace's claim and API budget stay: they belong to the runner entry.
            .filter(|n| {
                let ns = fargate_testkit::local_fargate::NAMESPACE;
                n != &format!("{ns}.namespace") && n != &format!("{ns}.budget")
            })
            .collect();
        names.sort();
        names
    }

    /// Waits until no keeper socket in the metadata directory accepts a connection.
    fn wait_until_no_keeper_listens(&self) {
        let metadata = self.metadata();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let listening = std::fs::read_dir(&metadata)
                .unwrap()
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .any(|p| std::os::unix::net::UnixStream::connect(p).is_ok());
            if !listening {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a killed keeper still listens"
            );
            // Not a synchronisation sleep: the next connection attempt is the check.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// SIGKILL to `pid`.
fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL {pid}");
}

const THROUGH_KEEPER: &str = "running the script through the job's connection keeper";
const DIRECT: &str = "connecting directly, not through the keeper";

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_unicode_output_on_both_streams_succeeds() {
    fargate_testkit::require_fixture!(LocalFargate);
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
    // The task got its deadline (the job's timeout is 1 h) as a tag and in its environment.
    let requests = rig.fargate.moto().run_task_requests();
    let request = &requests[0]["request"];
    let tag = request["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == fargate_aws::tags::DEADLINE)
        .and_then(|t| t["value"].as_str())
        .expect("a deadline tag");
    let deadline = fargate_aws::tags::parse_deadline(tag).expect("an RFC 3339 deadline");
    let secs = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3600) && left < Duration::from_secs(24 * 3600));
    let environment = &request["overrides"]["containerOverrides"][0]["environment"];
    assert!(
        environment.as_array().into_iter().flatten().any(
            |e| e["name"] == "FARGATE_TASK_DEADLINE" && e["value"] == secs.to_string().as_str()
        ),
        "{environment}"
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_script_reports_its_exit_code_and_after_script_runs() {
    fargate_testkit::require_fixture!(LocalFargate);
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
    fargate_testkit::require_fixture!(LocalFargate);
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
    fargate_testkit::require_fixture!(LocalFargate);
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
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let mut job = Job::new(5, &["echo started-sleep", "sleep 600"]);
    job.on_output = vec![("started-sleep".into(), OnOutput::Cancel)];
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
    fargate_testkit::require_fixture!(LocalFargate);
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
    assert_failed_at_prepare(&result);
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
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let fargate = rig.fargate.clone();
    let mut job = Job::new(7, &["echo step-started", "sleep 600"]);
    job.on_output = vec![(
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
    )];
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
    fargate_testkit::require_fixture!(LocalFargate);
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
    fargate_testkit::require_fixture!(LocalFargate);
    // With ECS hiding new tasks for 1 s (the rig's default lag), as real ECS may, and sshd
    // starting 1.5 s after the task (prepare gets the address from RunTask's answer and
    // would otherwise be done in a few hundred ms, before the later kill points).
    let rig = rig_with(
        LocalFargateOptions {
            sshd_delay: Duration::from_millis(1500),
            ..LocalFargateOptions::default()
        },
        |c| c,
    )
    .await;
    for (i, point) in [
        KillPoint::RecordPhase("launch_requested".into()),
        KillPoint::RecordPhase("launched".into()),
        // While ECS does not show the task yet, and while SSH is probed and logged in to
        // (the record reaches "ready" only as prepare exits, too late to kill it).
        KillPoint::After(Duration::from_millis(300)),
        KillPoint::After(Duration::from_millis(900)),
        KillPoint::After(Duration::from_millis(1400)),
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

fn lagging(lag: Duration) -> LocalFargateOptions {
    LocalFargateOptions {
        visibility_lag: lag,
        ..Default::default()
    }
}

/// Blocks on `fut` from a runner emulator hook (a plain thread).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_succeeds_while_ecs_does_not_show_its_task_yet() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(lagging(Duration::from_secs(3)), |c| {
        c.replace("LogLevel = \"info\"", "LogLevel = \"debug\"")
    })
    .await;
    let result = rig.run(Job::new(400, &["echo visible-at-last"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains("visible-at-last"), "{}", result.log);
    let prepare = result.stage("prepare");
    assert_eq!(prepare.len(), 1, "no prepare retry: {}", result.log);
    // Issue 15: RunTask's answer carries the address, so prepare does not wait for ECS to
    // show the task.
    assert!(
        prepare[0].wall < Duration::from_secs(3),
        "prepare waited for ECS to show the task: {:?}",
        prepare[0].wall
    );
    assert!(
        result
            .log
            .contains("task IP address known from the launch answer"),
        "{}",
        result.log
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_half_a_second_after_run_task_leaves_no_task() {
    fargate_testkit::require_fixture!(LocalFargate);
    // sshd starts late, so that prepare (which has the address from RunTask's answer) is
    // still probing when the cancel comes.
    let rig = rig_with(
        LocalFargateOptions {
            sshd_delay: Duration::from_secs(2),
            ..lagging(Duration::from_secs(3))
        },
        |c| c,
    )
    .await;
    let mut job = Job::new(401, &["echo never"]);
    job.on_output = vec![(
        "starting a Fargate task".into(),
        OnOutput::CancelAfter(Duration::from_millis(500)),
    )];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Canceled, "{}", result.log);
    assert!(!result.log.contains("\nnever"), "{}", result.log);
    let prepare = result.stage("prepare");
    assert!(
        prepare[0].exit_after_term.is_some(),
        "the cancel must have hit prepare: {}",
        result.log
    );
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_stops_the_task_after_the_metadata_directory_was_wiped() {
    fargate_testkit::require_fixture!(LocalFargate);
    // No visibility lag: the whole job now runs within the default 1 s lag, and a search
    // by key (ListTasks) may miss a task launched moments ago (`TaskLauncher::find`).
    let rig = rig_with(lagging(Duration::ZERO), |c| c).await;
    let metadata = rig.emu.metadata_dir.clone().expect("metadata dir");
    let mut job = Job::new(402, &["echo wipe-now"]);
    job.on_output = vec![(
        "wipe-now".into(),
        OnOutput::Call(Box::new(move || {
            for entry in std::fs::read_dir(&metadata)
                .expect("metadata dir")
                .flatten()
            {
                // The job's keeper may remove its own socket meanwhile.
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        panic!("wiping the metadata directory: {e}")
                    }
                    _ => {}
                }
            }
        })),
    )];
    let result = rig.run(job).await;
    // The record is gone, so cleanup must find the task by its startedBy, with a ListTasks
    // that ECS accepts (startedBy as the only filter: the fixture refuses anything else).
    assert!(result.log.contains("wipe-now"), "{}", result.log);
    assert_eq!(
        result.stage("cleanup")[0].exit_code,
        Some(0),
        "{}",
        result.log
    );
    assert!(
        result.log.contains("found a task of the job by its key"),
        "{}",
        result.log
    );
    let searches = rig.fargate.proxy().requests_of("ListTasks");
    assert!(!searches.is_empty());
    for search in searches {
        let body = search.json();
        assert!(body["startedBy"].is_string(), "{body}");
        assert!(body.get("desiredStatus").is_none(), "{body}");
    }
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_stops_a_second_task_of_the_same_job() {
    fargate_testkit::require_fixture!(LocalFargate);
    // No visibility lag: a task ECS does not list yet cannot be found by anyone, and the
    // point here is the union of recorded and found tasks.
    let rig = rig_with(lagging(Duration::ZERO), |c| c).await;
    let fargate = rig.fargate.clone();
    let mut job = Job::new(403, &["echo stray-now"]);
    // Another task of this job, as an earlier attempt whose RunTask answer was lost would
    // have left it: same startedBy and job-key tag, another client token.
    job.on_output = vec![(
        "stray-now".into(),
        OnOutput::Call(Box::new(move || {
            block_on(fargate.start_stray_task("local-403"));
        })),
    )];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_forging_another_jobs_id_never_reaches_its_task() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = Arc::new(rig().await);
    let flag = rig.dir.path().join("victim-may-finish");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut victim = Job::new(
        410,
        &[
            "echo victim-started",
            &format!(
                "for i in $(seq 600); do [ -e {} ] && break; sleep 0.2; done",
                flag.display()
            ),
            "echo victim-done",
        ],
    );
    victim.on_output = vec![(
        "victim-started".into(),
        OnOutput::Call(Box::new(move || {
            let _ = started_tx.send(());
        })),
    )];
    let emu = rig.emu.clone();
    let victim_run = tokio::task::spawn_blocking(move || emu.run(victim));
    tokio::task::spawn_blocking(move || started_rx.recv())
        .await
        .expect("waiting thread")
        .expect("the victim job started its script");
    let victim_tasks = rig.fargate.running_tasks().await;
    assert_eq!(victim_tasks.len(), 1);

    // Job 411 of the same project sets every identity variable to job 410's values; once
    // with an allowed task definition, once asking for one it may not have.
    for extra in [None, Some(("FARGATE_TASK_DEFINITION", "admin-only:1"))] {
        let mut attacker = Job::new(411, &["echo attacker-ran"]);
        attacker.variables = vec![
            ("CI_JOB_ID".into(), "410".into()),
            ("CI_PIPELINE_ID".into(), "100".into()),
            (
                "CI_PROJECT_URL".into(),
                "https://gitlab.example.com/group/project".into(),
            ),
            ("CI_RUNNER_SHORT_TOKEN".into(), "zxcv1234".into()),
        ];
        attacker
            .variables
            .extend(extra.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let result = rig.run(attacker).await;
        match extra {
            None => assert_eq!(result.status, JobStatus::Success, "{}", result.log),
            Some(_) => assert_eq!(result.status, JobStatus::ScriptFailure(1), "{}", result.log),
        }
        assert!(
            result
                .log
                .contains("is not its id (411); the variable is ignored"),
            "{}",
            result.log
        );
        let running = rig.fargate.running_tasks().await;
        assert_eq!(running, victim_tasks, "{extra:?}: {}", result.log);
    }

    std::fs::write(&flag, "").expect("flag file");
    let result = victim_run.await.expect("victim thread");
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains("victim-done"), "{}", result.log);
    rig.assert_no_task_running(&result).await;
    // Stopped by its own cleanup, which names the job's own key.
    let task = rig
        .fargate
        .moto()
        .describe_task(&rig.fargate.ecs.cluster, &victim_tasks[0])
        .await;
    assert_eq!(
        task.stopped_reason(),
        Some("fargate driver: job local-410 finished")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sshd_offering_only_a_key_exchange_libssh2_lacks_fails_prepare_fast() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(
        LocalFargateOptions {
            sshd_config: vec!["KexAlgorithms sntrup761x25519-sha512@openssh.com".into()],
            ..Default::default()
        },
        |c| c,
    )
    .await;
    let result = rig.run(Job::new(420, &["echo never"])).await;
    assert_failed_at_prepare(&result);
    assert!(result.log.contains("KexAlgorithms"), "{}", result.log);
    for attempt in result.stage("prepare") {
        assert!(
            attempt.wall < Duration::from_secs(5),
            "prepare took {:?}: {}",
            attempt.wall,
            result.log
        );
    }
    rig.assert_no_task_running(&result).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_directory_others_may_write_is_refused_before_any_task_starts() {
    fargate_testkit::require_fixture!(LocalFargate);
    use std::os::unix::fs::PermissionsExt;
    let rig = rig().await;
    let metadata = rig.emu.metadata_dir.clone().expect("metadata dir");
    std::fs::create_dir_all(&metadata).expect("metadata dir");
    std::fs::set_permissions(&metadata, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let result = rig.run(Job::new(421, &["echo never"])).await;
    assert_failed_at_prepare(&result);
    assert!(result.log.contains("chmod 700"), "{}", result.log);
    assert!(
        rig.fargate.moto().run_task_requests().is_empty(),
        "no task may be started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_describe_never_stalls_the_output_or_a_cancel() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(LocalFargateOptions::default(), |c| {
        c.replace(
            "StopTimeout = \"30s\"",
            "StopTimeout = \"30s\"\n  WatchInterval = \"1s\"",
        )
    })
    .await;
    let fargate = rig.fargate.clone();
    let mut job = Job::new(
        430,
        &[
            "echo slow-api-from-now",
            "for i in $(seq 40); do echo tick-$i; sleep 0.1; done",
            "echo ticks-done",
            "sleep 600",
        ],
    );
    job.on_output = vec![
        (
            // From the build script on, every DescribeTasks takes 20 s to answer.
            "slow-api-from-now".into(),
            OnOutput::Call(Box::new(move || {
                fargate
                    .proxy()
                    .inject(Fault::delay("DescribeTasks", Duration::from_secs(20)).times(1000));
            })),
        ),
        (
            "ticks-done".into(),
            OnOutput::CancelAfter(Duration::from_millis(500)),
        ),
    ];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Canceled, "{}", result.log);
    let build = &result.stage("build_script")[0];
    let gap = build
        .longest_output_gap("tick-1\n", "ticks-done")
        .expect("the ticks were streamed");
    assert!(gap < Duration::from_secs(1), "output stalled for {gap:?}");
    let after_term = build.exit_after_term.expect("cancelled");
    assert!(
        after_term < Duration::from_secs(2),
        "the cancel took {after_term:?}"
    );
    assert!(
        !rig.fargate.proxy().requests_of("DescribeTasks").is_empty(),
        "the watch must have described the task"
    );
    rig.assert_no_task_running(&result).await;
}

/// Runs `fargate gc` with `args` against the rig's cluster and metadata; returns its exit
/// code and stdout.
fn gc_command(config: &Path, env: &[(String, String)], args: &[&str]) -> (i32, String) {
    joined(run_fargate(config, env, &[&["gc"], args].concat()))
}

impl Rig {
    fn gc(&self, args: &[&str]) -> (i32, String) {
        gc_command(&self.config(), &self.fargate.driver_env(), args)
    }

    /// Runs only the prepare stage of `job`, as a runner that dies right after it would.
    fn prepare_only(&self, job: &Job) {
        let dir = self.dir.path().join(format!("job-{}", job.job_id));
        std::fs::create_dir_all(&dir).unwrap();
        let out = self
            .emu
            .stage_command(job, &dir, &["custom", "prepare"])
            .output()
            .expect("prepare");
        assert!(
            out.status.success(),
            "prepare failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_stops_the_task_of_a_runner_that_died_after_prepare() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(lagging(Duration::ZERO), |c| c).await;
    // A task of no namespace of ours (no namespace tag): gc must never touch it.
    let foreign = rig.fargate.start_stray_task("elsewhere-1").await;
    rig.prepare_only(&Job::new(500, &["echo never"]));
    let task = {
        let running = rig.fargate.running_tasks().await;
        assert_eq!(running.len(), 2, "{running:?}");
        running.into_iter().find(|t| *t != foreign).unwrap()
    };

    // Its job is young: an alive job for all gc can tell, kept.
    let (code, out) = rig.gc(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("kept task {task}")), "{out}");

    // Once the job is older than it could run (its record was created whole seconds ago),
    // a dry run says it would stop the task and stops nothing.
    std::thread::sleep(Duration::from_secs(2));
    let (code, out) = rig.gc(&["--max-age", "1s", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("would stop task {task}")), "{out}");
    assert!(out.contains("maximum age"), "{out}");
    assert_eq!(rig.fargate.running_tasks().await.len(), 2);
    assert!(rig.fargate.proxy().requests_of("StopTask").is_empty());

    let (code, out) = rig.gc(&["--max-age", "1s", "--json"]);
    assert_eq!(code, 0, "{out}");
    let json = out.split("\n--- stderr:").next().unwrap();
    let report: serde_json::Value = serde_json::from_str(json).expect(json);
    assert_eq!(report["tasks"][0]["task"], task.as_str(), "{report}");
    assert_eq!(report["tasks"][0]["action"], "removed", "{report}");
    assert_eq!(
        rig.fargate.running_tasks().await,
        std::slice::from_ref(&foreign)
    );

    // The second run finds nothing to do: the task is stopping, its record is gone.
    let (code, out) = rig.gc(&["--max-age", "1s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(rig.fargate.running_tasks().await, [foreign]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_stops_a_task_past_its_deadline_tag() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(lagging(Duration::ZERO), |c| c).await;
    rig.prepare_only(&Job::new(501, &["echo never"]));
    let task = rig.fargate.running_tasks().await.pop().unwrap();
    rig.fargate
        .moto()
        .ecs_client()
        .tag_resource()
        .resource_arn(&task)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key(fargate_aws::tags::DEADLINE)
                .value("2020-01-01T00:00:00Z")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (code, out) = rig.gc(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("stopped task {task}")), "{out}");
    assert!(out.contains("past its deadline"), "{out}");
    assert!(rig.fargate.running_tasks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_while_jobs_run_touches_none_of_their_tasks() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let config = rig.config();
    let env = rig.fargate.driver_env();
    let outputs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..10 {
        let mut job = Job::new(600 + i, &["echo gc-now", "echo job-done"]);
        let (config, env, outputs) = (config.clone(), env.clone(), outputs.clone());
        // Each job runs gc from its script, while the others prepare, run or clean up.
        job.on_output = vec![(
            "gc-now".into(),
            OnOutput::Call(Box::new(move || {
                let result = gc_command(&config, &env, &["--max-age", "1h"]);
                outputs.lock().unwrap().push(result);
            })),
        )];
        let emu = rig.emu.clone();
        handles.push(tokio::task::spawn_blocking(move || (i, emu.run(job))));
    }
    for h in handles {
        let (i, result) = h.await.expect("job thread");
        assert_eq!(result.status, JobStatus::Success, "job {i}: {}", result.log);
        assert!(result.log.contains("job-done"), "job {i}: {}", result.log);
    }
    let outputs = std::mem::take(&mut *outputs.lock().unwrap());
    assert_eq!(outputs.len(), 10);
    for (code, out) in &outputs {
        assert_eq!(*code, 0, "{out}");
        assert!(!out.contains("stopped task"), "{out}");
        // The job that ran it was in its script: its task was kept, or (a job now reaches its
        // script within ECS's visibility lag) not listed yet and its record kept for that.
        assert!(
            out.contains("kept task") || out.contains("its task may not be listed yet"),
            "{out}"
        );
    }
    for stop in rig.fargate.proxy().requests_of("StopTask") {
        let body = stop.json();
        assert!(!body["reason"].as_str().unwrap().contains("gc"), "{body}");
    }
    let running = rig.fargate.running_tasks().await;
    assert!(running.is_empty(), "{running:?}");
}

/// Issue 15: prepare leaves a connection keeper; every `run` stage goes through it (no
/// direct connection), and cleanup ends it (checked by `assert_no_task_running`).
#[tokio::test(flavor = "multi_thread")]
async fn every_run_stage_goes_through_the_jobs_keeper_and_cleanup_ends_it() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = debug_rig().await;
    let result = rig
        .run(Job::new(1501, &["echo one", "echo two >&2", "exit 0"]))
        .await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    let runs = result
        .stages
        .iter()
        .filter(|s| !matches!(s.name.as_str(), "config" | "prepare" | "cleanup"))
        .count();
    assert!(runs >= 3, "{runs} run stages\n{}", result.log);
    assert_eq!(
        result.log.matches(THROUGH_KEEPER).count(),
        runs,
        "{}",
        result.log
    );
    assert!(!result.log.contains(DIRECT), "{}", result.log);
    for expected in ["one", "two"] {
        assert!(result.log.contains(expected), "{}", result.log);
    }
    rig.assert_no_task_running(&result).await;
}

/// A failing script's exit code comes through the keeper as it does over a direct
/// connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_script_failure_through_the_keeper_keeps_its_exit_code() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = debug_rig().await;
    let result = rig.run(Job::new(1502, &["echo before", "exit 42"])).await;
    assert_eq!(
        result.status,
        JobStatus::ScriptFailure(42),
        "{}",
        result.log
    );
    assert!(result.log.contains(THROUGH_KEEPER), "{}", result.log);
    assert!(!result.log.contains(DIRECT), "{}", result.log);
    rig.assert_no_task_running(&result).await;
}

/// SIGKILL the job's keeper: its stages connect directly and the job succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_keeper_leaves_the_stages_to_direct_connections() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = Arc::new(debug_rig().await);
    let mut job = Job::new(1503, &["echo still-running"]);
    let killer = Arc::clone(&rig);
    // Prepare prints this (debug) line once the keeper listens, as its last.
    job.on_output = vec![(
        "connection keeper listening".into(),
        OnOutput::Call(Box::new(move || {
            let keepers = killer.keepers();
            assert_eq!(keepers.len(), 1, "{keepers:?}");
            kill(keepers[0]);
            // SIGKILL is delivered at once, but the dying process closes its socket a
            // moment later: the next stage must find nobody listening.
            killer.wait_until_no_keeper_listens();
        })),
    )];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains("still-running"), "{}", result.log);
    assert!(result.log.contains(DIRECT), "{}", result.log);
    assert!(!result.log.contains(THROUGH_KEEPER), "{}", result.log);
    rig.assert_no_task_running(&result).await;
    // Issue 21: cleanup removed the dead keeper's socket; nothing of the job is left.
    assert_eq!(rig.metadata_names(), Vec::<String>::new(), "{}", result.log);
}

/// SIGKILL the keeper while a script runs through it: the stage fails at once as a lost
/// connection (a system failure naming the keeper), never hangs, and cleanup still stops
/// the task.
#[tokio::test(flavor = "multi_thread")]
async fn a_keeper_killed_while_a_script_runs_fails_that_stage_promptly() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = Arc::new(debug_rig().await);
    let mut job = Job::new(1504, &["echo step-started", "sleep 600"]);
    let killer = Arc::clone(&rig);
    job.on_output = vec![(
        "step-started".into(),
        OnOutput::Call(Box::new(move || {
            for pid in killer.keepers() {
                kill(pid);
            }
        })),
    )];
    let result = rig.run(job).await;
    assert_eq!(
        result.status,
        JobStatus::SystemFailure("build_script".into()),
        "{}",
        result.log
    );
    assert!(
        result.log.contains("connection keeper ended"),
        "{}",
        result.log
    );
    let build = result.stage("build_script");
    assert!(
        build[0].wall < Duration::from_secs(60),
        "{:?}",
        build[0].wall
    );
    rig.assert_no_task_running(&result).await;
    assert_eq!(rig.metadata_names(), Vec::<String>::new(), "{}", result.log);
}

/// Issue 21: `fargate gc` removes from the metadata directory what has no live owner (a
/// killed keeper's socket, a killed holder's lock file of a job without record, a dead
/// writer's temporary file) and keeps what has one; `--dry-run` only names them.
#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_leftovers_without_a_live_owner() {
    use std::os::unix::fs::DirBuilderExt as _;
    use std::os::unix::net::UnixListener;
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let meta = rig.metadata();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&meta)
        .unwrap();
    let dead_socket = meta.join("keeper-00000000000000aa.sock");
    drop(UnixListener::bind(&dead_socket).unwrap());
    let live_socket = meta.join("keeper-00000000000000bb.sock");
    let _live = UnixListener::bind(&live_socket).unwrap();
    std::fs::write(meta.join("gone-1.lock"), "").unwrap();
    // The pid of a process that has exited: a writer that died mid-write.
    let dead_pid = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let dead_temp = format!(".gone-2.tmp-{dead_pid}-abc");
    std::fs::write(meta.join(&dead_temp), "").unwrap();
    let live_temp = format!(".gone-3.tmp-{}-abc", std::process::id());
    std::fs::write(meta.join(&live_temp), "").unwrap();
    std::fs::write(meta.join("unrelated.txt"), "").unwrap();
    let before = rig.metadata_names();
    let removed = {
        let mut r = vec![
            dead_socket.display().to_string(),
            meta.join("gone-1.lock").display().to_string(),
            meta.join(&dead_temp).display().to_string(),
        ];
        r.sort();
        r
    };

    let (code, out) = rig.gc(&["--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(out.split("\n--- stderr:").next().unwrap()).expect(&out);
    let listed: Vec<String> = json["leftovers"]["removed"]
        .as_array()
        .expect(&out)
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, removed, "{out}");
    assert_eq!(json["leftovers"]["dry_run"], true, "{out}");
    assert_eq!(rig.metadata_names(), before, "a dry run removed something");

    let (code, out) = rig.gc(&[]);
    assert_eq!(code, 0, "{out}");
    for path in &removed {
        assert!(out.contains(&format!("removed leftover {path}\n")), "{out}");
    }
    assert!(
        out.contains("metadata directory: removed 3 leftovers"),
        "{out}"
    );
    let mut left = vec![
        "keeper-00000000000000bb.sock".to_owned(),
        live_temp,
        "unrelated.txt".to_owned(),
    ];
    left.sort();
    assert_eq!(rig.metadata_names(), left);
}

/// A cancel reaches the script through the keeper: the stage ends within 2 s of SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_through_the_keeper_ends_the_stage_within_two_seconds() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = debug_rig().await;
    let mut job = Job::new(1505, &["echo started-sleep", "sleep 600"]);
    job.on_output = vec![("started-sleep".into(), OnOutput::Cancel)];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Canceled, "{}", result.log);
    assert!(result.log.contains(THROUGH_KEEPER), "{}", result.log);
    let build = result.stage("build_script");
    let after_term = build[0].exit_after_term.expect("SIGTERM was sent");
    assert!(
        after_term < Duration::from_secs(2),
        "the stage took {after_term:?} to exit after SIGTERM"
    );
    rig.assert_no_task_running(&result).await;
}

/// `[SSH] HostKeySource = "task-log"`: the task announces its host key in its CloudWatch
/// Logs stream (moto's, written by the local Fargate as the example entry point does); the
/// driver reads it with GetLogEvents and accepts the server's key because it is the one
/// announced.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_key_announced_in_the_tasks_log_is_accepted() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig_with(LocalFargateOptions::default(), |c| {
        format!("{c}  HostKeySource = \"task-log\"\n")
    })
    .await;
    let result = rig.run(Job::new(430, &["echo announced-ok"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains("announced-ok"), "{}", result.log);
    assert!(
        result
            .log
            .contains("the SSH server's host key is one the task announced"),
        "{}",
        result.log
    );
    rig.assert_no_task_running(&result).await;
}

/// Someone else answers for the task's address (the server's key is not the one the task
/// announced): prepare fails as a system failure with a hint, before the job's key or any
/// script reaches that server, and the task is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_key_the_task_did_not_announce_fails_prepare_and_sends_nothing() {
    fargate_testkit::require_fixture!(LocalFargate);
    use fargate_testkit::local_fargate::AnnouncedHostKeys;
    let rig = rig_with(
        LocalFargateOptions {
            announced_host_keys: AnnouncedHostKeys::Other,
            ..LocalFargateOptions::default()
        },
        |c| format!("{c}  HostKeySource = \"task-log\"\n"),
    )
    .await;
    let result = rig.run(Job::new(431, &["echo never-sent"])).await;
    assert_failed_at_prepare(&result);
    assert!(
        result.log.contains("did not announce") && result.log.contains("nothing was sent to it"),
        "{}",
        result.log
    );
    assert!(
        result.log.contains("another host answered"),
        "{}",
        result.log
    );
    assert!(!result.log.contains("never-sent\n"), "{}", result.log);
    assert!(result.stage("run").is_empty(), "{}", result.log);
    rig.assert_no_task_running(&result).await;
}
