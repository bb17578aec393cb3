//! End to end, through the real `fargate` binary against the local Fargate: per-job task
//! shapes under the administrator's policy (see `e2e.rs` for the rig).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use common::Rig;
use fargate_testkit::local_fargate::LocalFargateOptions;
use fargate_testkit::runner::{Job, JobStatus};

const DEPLOY_ROLE: &str = "arn:aws:iam::123456789012:role/ci-deploy";

/// The shape part of the administrator's `fargate.toml`.
const POLICY: &str = r#"
[Fargate.TaskShape]
  MaxCPU = 2048
  MaxMemory = 4096
  MemoryOverMax = "refuse"
[[Fargate.ProjectRule]]
  Name = "deploy"
  Projects = ["infra/site"]
  TaskRoles = ["arn:aws:iam::123456789012:role/ci-deploy"]
"#;

async fn rig() -> Rig {
    // The [Fargate.*] tables go after the generated file's own tables.
    Rig::start(LocalFargateOptions::default(), |config, _| {
        format!("{config}\n{POLICY}")
    })
    .await
}

fn task_overrides(request: &serde_json::Value) -> serde_json::Value {
    let mut o = request["overrides"].clone();
    o.as_object_mut().unwrap().remove("containerOverrides");
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_are_granted_clamped_and_logged_or_refused_before_any_ecs_call() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    let mut job = Job::new(1, &["echo sized"]);
    job.variables = vec![
        ("FARGATE_CPU".into(), "8 vCPU".into()),
        ("FARGATE_MEMORY".into(), "3000".into()),
    ];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    let requests = rig.fargate.moto().run_task_requests();
    assert_eq!(
        task_overrides(&requests[0]["request"]),
        serde_json::json!({"cpu": "2048", "memory": "4096"})
    );
    for line in [
        "task shape: CPU 2048 units, memory 4096 MiB",
        "FARGATE_CPU=8 vCPU is above this runner's maximum of 2048 CPU units",
    ] {
        assert!(
            result.log.contains(line),
            "missing {line:?} in\n{}",
            result.log
        );
    }

    let mut job = Job::new(2, &["echo never"]);
    job.variables = vec![("FARGATE_MEMORY".into(), "8 GB".into())];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(1), "{}", result.log);
    assert!(
        result
            .log
            .contains("FARGATE_MEMORY=8 GB is above this runner's maximum of 4096 MiB"),
        "{}",
        result.log
    );
    assert_eq!(
        rig.fargate.moto().run_task_requests().len(),
        1,
        "no RunTask for job 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_project_variable_gets_no_role_and_the_rules_project_does() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig().await;
    // Project group/project claims to be infra/site through every variable it controls.
    let mut forged = Job::new(10, &["echo never"]);
    forged.variables = vec![
        ("FARGATE_TASK_ROLE".into(), "ci-deploy".into()),
        ("CI_PROJECT_PATH".into(), "infra/site".into()),
        ("CI_PROJECT_ID".into(), "7".into()),
        ("CI_PROJECT_NAMESPACE".into(), "infra".into()),
    ];
    let result = rig.run(forged).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(1), "{}", result.log);
    assert!(
        result
            .log
            .contains("which no project rule of this runner grants to project group/project"),
        "{}",
        result.log
    );
    assert!(rig.fargate.moto().run_task_requests().is_empty());

    let mut deploy = Job::new(11, &["echo deployed"]);
    deploy.project_url = "https://gitlab.example.com/infra/site".into();
    deploy.variables = vec![("FARGATE_TASK_ROLE".into(), "ci-deploy".into())];
    let result = rig.run(deploy).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    let requests = rig.fargate.moto().run_task_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        task_overrides(&requests[0]["request"]),
        serde_json::json!({"taskRoleArn": DEPLOY_ROLE})
    );
    assert!(
        result.log.contains(&format!("task role {DEPLOY_ROLE}")),
        "{}",
        result.log
    );
}
