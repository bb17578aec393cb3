//! Per-job task shapes on ECS, against moto (`fargate_testkit::moto`): the `RunTask`
//! requests as sent, Spot fallback within one prepare, and the interruption memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fargate_aws::{EcsConfig, EcsLauncher, is_spot_interruption};
use fargate_core::driver::{CAPACITY_VARIABLE, CPU_VARIABLE, MEMORY_VARIABLE, TASK_ROLE_VARIABLE};
use fargate_core::options::{CapacityProfile, OverMax, ProjectRule, ShapePolicy, SizeLimit};
use fargate_core::testing::MemoryShell;
use fargate_core::{
    CapacityChoice, CapacityProvider, Driver, DriverOptions, ErrorKind, FailureClass,
    FileMetadataStore, JobContext, JobResponse, Namespace, TaskLauncher, TaskShape,
};
use fargate_testkit::moto::{Moto, MotoEcs};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DEPLOY_ROLE: &str = "arn:aws:iam::123456789012:role/ci/deploy";

async fn moto() -> (Moto, MotoEcs) {
    let moto = Moto::start();
    let ecs = moto.setup().await;
    (moto, ecs)
}

fn launcher(config: EcsConfig, moto: &Moto) -> EcsLauncher {
    EcsLauncher::new(config, &moto.sdk_config()).expect("launcher")
}

fn spot() -> CapacityChoice {
    CapacityChoice::new("spot", vec![CapacityProvider::new("FARGATE_SPOT")])
}

/// The task-level part of a request's `overrides` (without the container overrides).
fn task_overrides(request: &Value) -> Value {
    let mut o = request["overrides"].clone();
    o.as_object_mut().unwrap().remove("containerOverrides");
    o
}

#[tokio::test]
async fn run_task_overrides_are_exact_for_each_size_and_absent_when_nothing_is_asked() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto);

    let plain = l.launch(&ecs.spec(1)).await.unwrap();
    let req = moto.run_task_request(&plain.id).unwrap();
    assert_eq!(task_overrides(&req), json!({}), "{req}");
    assert_eq!(req["launchType"], "FARGATE");

    for (n, shape, want) in [
        (
            2,
            TaskShape::default().with_size(1024, 3072),
            json!({"cpu": "1024", "memory": "3072"}),
        ),
        (
            3,
            TaskShape::default().with_ephemeral_storage(100),
            json!({"ephemeralStorage": {"sizeInGiB": 100}}),
        ),
        (
            4,
            TaskShape::default()
                .with_size(16384, 122_880)
                .with_ephemeral_storage(200)
                .with_task_role(DEPLOY_ROLE),
            json!({"cpu": "16384", "memory": "122880", "ephemeralStorage": {"sizeInGiB": 200}, "taskRoleArn": DEPLOY_ROLE}),
        ),
    ] {
        let task = l.launch(&ecs.spec(n).with_shape(shape)).await.unwrap();
        let req = moto.run_task_request(&task.id).unwrap();
        assert_eq!(task_overrides(&req), want, "{req}");
        // The container overrides are still there.
        assert_eq!(
            req["overrides"]["containerOverrides"][0]["name"],
            "ci-coordinator"
        );
        if let Some(cpu) = want.get("cpu") {
            let stored = moto.describe_task("ci", &task.id).await;
            assert_eq!(stored.cpu(), cpu.as_str());
            assert_eq!(stored.memory(), want["memory"].as_str());
        }
    }
}

#[tokio::test]
async fn the_jobs_capacity_replaces_the_launch_type_and_project_network_applies() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto);
    let shape = TaskShape::default()
        .with_capacity(Some(spot()))
        .with_network(vec![ecs.subnets[2].clone()], vec!["sg-deploy".into()]);
    let task = l.launch(&ecs.spec(1).with_shape(shape)).await.unwrap();
    let req = moto.run_task_request(&task.id).unwrap();
    assert!(req.get("launchType").is_none(), "{req}");
    assert_eq!(
        req["capacityProviderStrategy"],
        json!([{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    );
    let vpc = &req["networkConfiguration"]["awsvpcConfiguration"];
    assert_eq!(vpc["subnets"], json!([ecs.subnets[2]]));
    let mut groups = ecs.security_groups.clone();
    groups.push("sg-deploy".into());
    assert_eq!(vpc["securityGroups"], json!(groups));
    assert_eq!(task_overrides(&req), json!({}));
    let stored = moto.describe_task("ci", &task.id).await;
    assert_eq!(stored.capacity_provider_name(), Some("FARGATE_SPOT"));
}

#[tokio::test]
async fn overrides_over_the_size_limit_are_refused_before_sending() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto);
    let mut spec = ecs.spec(1).with_shape(
        TaskShape::default()
            .with_size(1024, 2048)
            .with_task_role(DEPLOY_ROLE),
    );
    // Fits without the shape's 100-odd characters, not with them.
    let base = {
        let mut s = ecs.spec(1);
        s.environment.insert("PAD".into(), String::new());
        serde_json::to_string(&json!({"containerOverrides": [{"name": "ci-coordinator", "environment": s.environment.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()}]})).unwrap().len()
    };
    spec.environment.insert(
        "PAD".into(),
        "x".repeat(fargate_aws::MAX_OVERRIDES_CHARS - base - 20),
    );
    let err = l.launch(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.message().contains("at most 8192"), "{err}");
    assert!(moto.run_task_requests().is_empty());
    // Without the role and sizes it fits, and the fixture (ECS's limit) accepts it.
    spec.shape = TaskShape::default();
    l.launch(&spec).await.unwrap();
}

#[tokio::test]
async fn the_fixture_refuses_sizes_fargate_does_not_offer() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto);
    for shape in [
        TaskShape::default().with_size(256, 4096),
        TaskShape::default().with_ephemeral_storage(201),
    ] {
        let err = l.launch(&ecs.spec(1).with_shape(shape)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    }
}

#[test]
fn spot_interruptions_are_recognised_by_code_or_reason() {
    assert!(is_spot_interruption(Some("SpotInterruption"), None));
    assert!(is_spot_interruption(
        Some("TerminationNotice"),
        Some("Your Spot Task was interrupted.")
    ));
    assert!(is_spot_interruption(
        None,
        Some("Your Spot Task was interrupted.")
    ));
    assert!(!is_spot_interruption(
        Some("EssentialContainerExited"),
        Some("Essential container in task exited")
    ));
    assert!(!is_spot_interruption(Some("UserInitiated"), None));
}

/// A driver on moto whose policy offers `spot` (falling back to `on-demand`) as the
/// default capacity, 512-4096 CPU units (clamped), memory up to 8 GB (refused above), and
/// the deploy role to project `infra/site`; interruption notes in `dir`.
fn driver(moto: &Moto, ecs: &MotoEcs, dir: &std::path::Path) -> (Driver, Arc<EcsLauncher>) {
    let mut deploy = ProjectRule::new("deploy");
    deploy.projects = vec!["infra/site".into()];
    deploy.task_roles = vec![DEPLOY_ROLE.into()];
    let mut policy = ShapePolicy::default();
    policy.cpu = SizeLimit::new(None, Some(4096), OverMax::Clamp);
    policy.memory = SizeLimit::new(None, Some(8192), OverMax::Refuse);
    policy.capacity_profiles = vec![
        CapacityProfile::new("spot", vec![CapacityProvider::new("FARGATE_SPOT")])
            .with_fallback("on-demand"),
        CapacityProfile::new("on-demand", vec![CapacityProvider::new("FARGATE")]),
    ];
    policy.default_capacity = Some("spot".into());
    policy.project_rules = vec![deploy];
    policy.sizes = Some(fargate_aws::fargate_sizes());
    let options = DriverOptions::builder()
        .namespace(Namespace::parse("shape").unwrap())
        .task_definition(ecs.task_definition.clone())
        .watch_interval(Duration::from_millis(100))
        .shape_policy(policy)
        .build()
        .unwrap();
    let launcher = Arc::new(launcher(ecs.config(), moto));
    let store = Arc::new(FileMetadataStore::new(dir));
    let driver = Driver::new(
        options,
        launcher.clone(),
        Arc::new(MemoryShell::new()),
        store.clone(),
    )
    .with_interruption_memory(store);
    (driver, launcher)
}

/// Job `id` of project `path` on commit `c0ffee`, named `compile`.
fn job(id: u64, path: &str) -> JobContext {
    let payload = format!(
        r#"{{"id": {id}, "job_info": {{"name": "compile", "project_id": {id}0}},
            "git_info": {{"repo_url": "https://gitlab.example/{path}.git", "sha": "c0ffee"}}}}"#
    );
    JobContext::new(JobResponse::parse(payload.as_bytes()).unwrap())
}

fn strategy(request: &Value) -> Value {
    request["capacityProviderStrategy"].clone()
}

#[tokio::test]
async fn no_spot_capacity_launches_on_fargate_in_the_same_prepare() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let dir = tempfile::tempdir().unwrap();
    let (driver, _) = driver(&moto, &ecs, dir.path());
    moto.set_no_capacity(&["FARGATE_SPOT"]);
    let job = job(1, "app/web").with_variable(CPU_VARIABLE, "16384");
    let report = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "on-demand");
    // Spot in every subnet (the launcher's subnet failover: Spot capacity is per zone
    // too), then on-demand once.
    let requests = moto.run_task_requests();
    let (last, spot_attempts) = requests.split_last().unwrap();
    assert_eq!(spot_attempts.len(), 3, "{requests:?}");
    for attempt in spot_attempts {
        assert_eq!(
            strategy(&attempt["request"]),
            json!([{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
        );
        assert!(attempt["taskArns"].as_array().unwrap().is_empty());
        assert_ne!(
            attempt["request"]["clientToken"],
            last["request"]["clientToken"]
        );
    }
    let second = &last["request"];
    assert_eq!(
        strategy(second),
        json!([{"capacityProvider": "FARGATE", "weight": 1}])
    );
    // Clamped to the maximum, with the smallest memory of that size.
    assert_eq!(
        task_overrides(second),
        json!({"cpu": "4096", "memory": "8192"})
    );
    let stored = moto.describe_task("ci", &report.task.id).await;
    assert_eq!(stored.capacity_provider_name(), Some("FARGATE"));
    driver.cleanup(&job).await.unwrap();
}

#[tokio::test]
async fn a_spot_interruption_makes_the_retry_of_that_job_run_on_demand() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let dir = tempfile::tempdir().unwrap();
    let (driver, _) = driver(&moto, &ecs, dir.path());
    let first = job(1, "app/web");
    let report = driver
        .prepare(&first, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "spot");
    moto.interrupt_spot_task(&report.task.id);
    let mut out = fargate_core::CapturedOutput::default();
    let failure = driver
        .run(
            &first,
            "build_script",
            Arc::from(&b"sleep 60\n"[..]),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let err = failure.as_system().unwrap();
    assert_eq!(err.kind(), ErrorKind::TaskStopped);
    assert!(
        err.message().contains("Your Spot Task was interrupted."),
        "{err}"
    );
    driver.cleanup(&first).await.unwrap();

    // GitLab's `retry:` is a new job (id 2) of the same project, commit and name.
    let mut retry = job(2, "app/web");
    retry.response.as_mut().unwrap().project_id = Some(10);
    let report = driver
        .prepare(&retry, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "on-demand");
    let req = moto.run_task_request(&report.task.id).unwrap();
    assert_eq!(
        strategy(&req),
        json!([{"capacityProvider": "FARGATE", "weight": 1}])
    );
    driver.cleanup(&retry).await.unwrap();
}

#[tokio::test]
async fn roles_only_for_the_projects_rule_and_refusals_make_no_ecs_call() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let dir = tempfile::tempdir().unwrap();
    let (driver, launcher) = driver(&moto, &ecs, dir.path());
    let cancel = CancellationToken::new();

    // Another project asks for the deploy role, also with a forged project variable.
    let forged = job(1, "app/web")
        .with_variable(TASK_ROLE_VARIABLE, "deploy")
        .with_variable("CI_PROJECT_PATH", "infra/site")
        .with_variable("CI_PROJECT_ID", "10");
    let failure = driver.prepare(&forged, &cancel).await.unwrap_err();
    assert_eq!(failure.class(), FailureClass::Script, "{failure:?}");
    assert!(failure.to_string().contains("app/web"), "{failure}");
    // Too much memory, and an unknown capacity: refused too.
    for refused in [
        job(3, "app/web").with_variable(MEMORY_VARIABLE, "16 GB"),
        job(4, "app/web").with_variable(CAPACITY_VARIABLE, "gpu"),
    ] {
        let failure = driver.prepare(&refused, &cancel).await.unwrap_err();
        assert_eq!(failure.class(), FailureClass::Script, "{failure:?}");
    }
    assert!(moto.run_task_requests().is_empty());
    assert_eq!(launcher.api_calls().total(), 0);

    // The project the rule names gets the role.
    let deploy = job(5, "infra/site").with_variable(TASK_ROLE_VARIABLE, "deploy");
    let report = driver.prepare(&deploy, &cancel).await.unwrap();
    let req = moto.run_task_request(&report.task.id).unwrap();
    assert_eq!(task_overrides(&req), json!({"taskRoleArn": DEPLOY_ROLE}));
    driver.cleanup(&deploy).await.unwrap();
}
