//! End to end (issue 27): a failed job of a project whose rule has `KeepFailedFor` leaves
//! its task running for debugging, with ECS Exec, a new deadline and the commands in the
//! job log; `fargate kept` and `fargate gc` show it, gc stops it once its time is up (and
//! not before), `fargate release` stops it early. Successful, cancelled and forged jobs are
//! stopped as usual. The real `fargate` binary through the runner emulator, against the
//! local Fargate (moto's ECS plus one sshd per task, on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Rig, joined, no_lag};
use fargate_core::gc::{Action, GcOptions, collect};
use fargate_core::testing::Determinism;
use fargate_core::{FileMetadataStore, Namespace};
use fargate_testkit::local_fargate::NAMESPACE;
use fargate_testkit::runner::{Job, JobStatus, OnOutput};

/// The project rule under test: `group/project` (the emulator's default project) keeps
/// failed jobs' tasks for 30 minutes.
const RULE: &str = "\n[[Fargate.ProjectRule]]\n  Name = \"debug\"\n  Projects = [\"group/project\"]\n  KeepFailedFor = \"30m\"\n";

const KEEP: Duration = Duration::from_secs(1800);

async fn rig() -> Rig {
    // No visibility lag: gc's listing must show the task at once.
    Rig::start(no_lag(), |config, _| format!("{config}{RULE}")).await
}

impl Rig {
    /// Whether the RunTask of `task` asked for ECS Exec, as the fixture recorded it (moto
    /// keeps no such field).
    fn exec_enabled(&self, task: &str) -> bool {
        let request = self
            .fargate
            .moto()
            .run_task_request(task)
            .unwrap_or_else(|| panic!("no RunTask recorded for {task}"));
        request["enableExecuteCommand"] == true
    }

    /// The task's tag `key`, as ECS has it now.
    async fn tag(&self, task: &str, key: &str) -> Option<String> {
        let out = self
            .fargate
            .moto()
            .ecs_client()
            .describe_tasks()
            .cluster(&self.fargate.ecs.cluster)
            .tasks(task)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .unwrap();
        out.tasks()[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value().map(str::to_owned))
    }

    /// gc in this process, with the driver's wall clock at `at` ([`Determinism::install_at`]:
    /// the clock the driver reads, not the machine's), on a thread of its own (that clock
    /// is the thread's).
    fn gc_at(&self, at: SystemTime) -> fargate_core::gc::GcReport {
        let config = self.fargate.ecs.config();
        let sdk = self.fargate.moto().sdk_config();
        let metadata = self.metadata();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _clock = Determinism::install_at(27, at);
                let launcher = fargate_aws::EcsLauncher::new(config, &sdk).unwrap();
                let store = FileMetadataStore::new(metadata);
                let namespace = Namespace::parse(NAMESPACE).unwrap();
                collect(&launcher, &store, &namespace, &GcOptions::default())
                    .await
                    .unwrap()
            })
        })
        .join()
        .expect("gc thread")
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_keeps_its_task_until_its_time_and_release_or_gc_ends_it() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let mut job = Job::new(2701, &["echo before-the-failure", "exit 3"]);
    job.after_script = vec!["echo after-script-ran".into()];
    let before = SystemTime::now();
    let result = rig.run(job).await;
    let after = SystemTime::now();
    assert_eq!(result.status, JobStatus::ScriptFailure(3), "{}", result.log);

    // The task runs on, with ECS Exec, and a deadline 30 minutes after the job.
    let running = rig.fargate.running_tasks().await;
    assert_eq!(running.len(), 1, "{running:?}\n{}", result.log);
    let task = &running[0];
    assert!(
        rig.exec_enabled(task),
        "RunTask without enableExecuteCommand"
    );
    let tag = rig.tag(task, fargate_aws::tags::DEADLINE).await.unwrap();
    let deadline = unix(fargate_aws::tags::parse_deadline(&tag).unwrap());
    assert!(
        (unix(before + KEEP)..=unix(after + KEEP)).contains(&deadline),
        "deadline {tag} is not 30 min after the job"
    );
    assert_eq!(
        rig.fargate.task_deadline(task),
        Some(deadline),
        "the task's self-stop has the new deadline"
    );
    // The job's own tags stay.
    assert_eq!(
        rig.tag(task, fargate_aws::tags::JOB_KEY).await.as_deref(),
        Some(format!("{NAMESPACE}-2701").as_str())
    );

    // The job log says how long, how to enter and how to stop it, right after the failed
    // script's output and again as the last run stage's last lines.
    let enter = format!(
        "aws ecs execute-command --region us-east-1 --cluster {} --task {task} --container ci-coordinator --interactive --command /bin/sh",
        rig.fargate.ecs.cluster
    );
    let stop = format!(
        "aws ecs stop-task --region us-east-1 --cluster {} --task {task}",
        rig.fargate.ecs.cluster
    );
    let build: Vec<&str> = result.stage("build_script")[0]
        .output
        .iter()
        .map(|(_, l)| l.as_str())
        .collect();
    let build = build.join("\n");
    for line in [
        "its task stays up for 30 min after the job ends, for debugging (project rule \"debug\")",
        "secrets",
        &enter,
        "fargate release 2701",
        &stop,
    ] {
        assert!(build.contains(line), "missing {line:?} in\n{build}");
    }
    let last: String = result.stage("cleanup_file_variables")[0]
        .output
        .iter()
        .map(|(_, chunk)| chunk.as_str())
        .collect();
    let last: Vec<&str> = last
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(last.last().copied(), Some(stop.as_str()), "{last:?}");
    assert!(last.contains(&enter.as_str()), "{last:?}");
    assert!(result.log.contains("after-script-ran"), "{}", result.log);

    // `fargate kept` lists it, with its time left and the commands.
    let (code, out) = joined(rig.fargate(&["kept"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "job 2701 (group/project, build_script failed): task {task}, kept 29 min"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("enter: {enter}")), "{out}");
    assert!(out.contains("1 task(s) kept for debugging"), "{out}");
    let (code, out) = joined(rig.fargate(&["kept", "--json"]));
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(out.split("\n--- stderr:").next().unwrap()).expect(&out);
    assert_eq!(json[0]["job_id"], 2701, "{json}");
    assert_eq!(json[0]["until"], deadline, "{json}");

    // gc keeps it while its time runs (a dry run says so with the time left), also when
    // the job is older than gc's maximum age.
    let (code, out) = joined(rig.fargate(&["gc", "--dry-run"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "kept task {task} ({NAMESPACE}-2701): kept for debugging its failed job, 29 min"
        )),
        "{out}"
    );
    let (code, out) = joined(rig.fargate(&["gc", "--max-age", "1s"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("kept task {task}")), "{out}");
    // Just before its time, still kept.
    let until = UNIX_EPOCH + Duration::from_secs(deadline);
    let report = rig.gc_at(until - Duration::from_secs(10));
    assert_eq!(report.tasks.len(), 1, "{report}");
    assert_eq!(report.tasks[0].action, Action::Kept, "{report}");
    assert_eq!(rig.fargate.running_tasks().await, running);

    // `release` of a job that has no kept task stops nothing.
    let (code, out) = joined(rig.fargate(&["release", "9999"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("has no task kept for debugging"), "{out}");
    assert_eq!(rig.fargate.running_tasks().await, running);

    // Once its time is up, gc stops it (its deadline label says the same as its record)
    // and forgets the job.
    let report = rig.gc_at(until + Duration::from_secs(1));
    assert_eq!(report.tasks.len(), 1, "{report}");
    assert_eq!(report.tasks[0].action, Action::Removed, "{report}");
    assert!(
        report.tasks[0].reason.contains("past its deadline"),
        "{report}"
    );
    assert!(rig.fargate.running_tasks().await.is_empty());
    let (code, out) = joined(rig.fargate(&["kept"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 task(s) kept for debugging"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn release_stops_a_kept_task_early() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let result = rig.run(Job::new(2702, &["false"])).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(1), "{}", result.log);
    let running = rig.fargate.running_tasks().await;
    assert_eq!(running.len(), 1, "{}", result.log);
    let (code, out) = joined(rig.fargate(&["release", "2702"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("stopped task {} of job 2702", running[0])),
        "{out}"
    );
    assert!(rig.fargate.running_tasks().await.is_empty());
    let stops = rig.fargate.proxy().requests_of("StopTask");
    assert_eq!(stops.len(), 1);
    // Released once: a second release finds nothing.
    let (code, out) = joined(rig.fargate(&["release", "2702"]));
    assert_eq!(code, 2, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn successful_and_cancelled_jobs_are_stopped_as_usual() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let result = rig.run(Job::new(2703, &["echo fine"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(!result.log.contains("fargate release"), "{}", result.log);
    let requests = rig.fargate.moto().run_task_requests();
    assert_eq!(
        requests[0]["request"]["enableExecuteCommand"], true,
        "the project's tasks get ECS Exec, failed or not"
    );
    assert!(
        rig.fargate.running_tasks().await.is_empty(),
        "{}",
        result.log
    );

    let mut job = Job::new(2704, &["echo started-sleep", "sleep 600"]);
    job.on_output = vec![("started-sleep".into(), OnOutput::Cancel)];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Canceled, "{}", result.log);
    assert!(!result.log.contains("fargate release"), "{}", result.log);
    assert!(
        rig.fargate.running_tasks().await.is_empty(),
        "{}",
        result.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_variables_claim_the_project_cannot_keep_its_task() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    // GitLab says the job is of other/app; its variables say group/project.
    let mut job = Job::new(2705, &["exit 4"]);
    job.project_url = "https://gitlab.example.com/other/app".into();
    job.project_id = 99;
    job.variables = vec![
        ("CI_PROJECT_PATH".into(), "group/project".into()),
        ("CI_PROJECT_ID".into(), "42".into()),
        (
            "CI_PROJECT_URL".into(),
            "https://gitlab.example.com/group/project".into(),
        ),
    ];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(4), "{}", result.log);
    assert!(!result.log.contains("fargate release"), "{}", result.log);
    let requests = rig.fargate.moto().run_task_requests();
    assert!(
        requests[0]["request"].get("enableExecuteCommand").is_none(),
        "{}",
        requests[0]
    );
    assert!(
        rig.fargate.running_tasks().await.is_empty(),
        "{}",
        result.log
    );
}
