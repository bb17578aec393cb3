//! `EcsLauncher` against a real moto server (see `fargate_testkit::moto`), with injected faults
//! for what moto cannot do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fargate_aws::{Capacity, CapacityProviderItem, EcsConfig, EcsLauncher, SdkTransport, tags};
use fargate_core::testing::{MemoryShell, MemoryStore};
use fargate_core::{
    Driver, DriverOptions, ErrorKind, JobContext, JobResponse, Namespace, RetryPolicy, StopOutcome,
    TaskLauncher, TaskRef, TaskState,
};
use fargate_testkit::fault_proxy::{Fault, FaultProxy};
use fargate_testkit::moto::{Moto, MotoEcs};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const MISSING: &str =
    "arn:aws:ecs:us-east-1:123456789012:task/ci/00000000-0000-4000-8000-000000000000";

fn fast_transport() -> SdkTransport {
    let mut t = SdkTransport::default();
    t.initial_backoff = Duration::from_millis(5);
    t.max_backoff = Duration::from_millis(20);
    t.operation_timeout = Duration::from_secs(20);
    t
}

async fn moto() -> (Moto, MotoEcs) {
    let moto = Moto::start();
    let ecs = moto.setup().await;
    (moto, ecs)
}

fn launcher(config: EcsConfig, sdk: &aws_config::SdkConfig) -> EcsLauncher {
    EcsLauncher::new(config, sdk).expect("launcher")
}

fn first_ip(cidr: &str) -> IpAddr {
    let net: Ipv4Addr = cidr.trim_end_matches("/24").parse().unwrap();
    let [a, b, c, _] = net.octets();
    IpAddr::V4(Ipv4Addr::new(a, b, c, 1))
}

fn env_of(request: &Value) -> Value {
    request["overrides"]["containerOverrides"][0].clone()
}

fn tag_map(request: &Value) -> BTreeMap<String, String> {
    request["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_owned(),
                t["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn conformance() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let spec = ecs.spec(1);
    let started = Instant::now();
    let missing = TaskRef {
        id: MISSING.into(),
        cluster: Some(ecs.cluster.clone()),
    };
    fargate_core::testing::conformance::launcher(
        &l,
        &spec,
        &missing,
        fargate_core::testing::conformance::LauncherCaps::default(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    // Every stop reached StopTask, the missing task's included (never gated on a describe).
    assert_eq!(
        l.api_calls().get("StopTask"),
        3,
        "{:?}",
        l.api_calls().snapshot()
    );
    let runs = moto.run_task_requests();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[1]["replay"], true,
        "the second launch replayed the first"
    );
}

#[tokio::test]
async fn launch_returns_at_once_and_describe_gives_the_eni_address() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    moto.set_provisioning_describes(4);
    let l = launcher(ecs.config(), &moto.sdk_config());
    let started = Instant::now();
    let task = l.launch(&ecs.spec(2)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(task.cluster.as_deref(), Some("ci"));
    let mut states = Vec::new();
    for _ in 0..6 {
        let s = l.describe(&task).await.unwrap();
        assert_eq!(s.address, Some(first_ip(moto.task_cidr())), "{s:?}");
        assert_eq!(s.stop, None);
        states.push(s.state);
    }
    use TaskState::*;
    assert_eq!(
        states,
        [
            Provisioning,
            Provisioning,
            Pending,
            Pending,
            Running,
            Running
        ]
    );
    assert_eq!(l.api_calls().get("DescribeTasks"), 6);
    assert_eq!(l.api_calls().get("RunTask"), 1);
}

/// Issue 15: the RunTask answer describes the task; when it carries the ENI's private
/// address (moto's does), `launch_observed` hands it over, so prepare probes SSH at once.
#[tokio::test]
async fn the_run_task_answer_carries_the_private_address() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    moto.set_provisioning_describes(4);
    let l = launcher(ecs.config(), &moto.sdk_config());
    let launched = l.launch_observed(&ecs.spec(2)).await.unwrap();
    let status = launched.status.clone().expect("the answer's status");
    assert_eq!(status.state, TaskState::Provisioning);
    assert_eq!(launched.address(), Some(first_ip(moto.task_cidr())));
    assert_eq!(
        l.describe(&launched.task).await.unwrap().address,
        launched.address()
    );
    assert_eq!(l.api_calls().get("RunTask"), 1);
}

#[tokio::test]
async fn run_task_request_with_launch_type() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.assign_public_ip = true;
    config.enable_execute_command = true;
    config.tags = BTreeMap::from([("team".into(), "ci platform".into())]);
    config.propagate_task_definition_tags = true;
    config.enable_ecs_managed_tags = true;
    let l = launcher(config, &moto.sdk_config());
    let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_101_200);
    let mut spec = ecs.spec(42).with_deadline(deadline);
    spec.platform_version = Some("1.4.0".into());
    spec.job.project_path = Some("group/pro ject?x=1".into());
    let task = l.launch(&spec).await.unwrap();

    let req = moto.run_task_request(&task.id).expect("request recorded");
    assert_eq!(req["cluster"], "ci");
    assert_eq!(req["taskDefinition"], ecs.task_definition.as_str());
    assert_eq!(req["count"], 1);
    assert_eq!(req["launchType"], "FARGATE");
    assert!(req.get("capacityProviderStrategy").is_none(), "{req}");
    assert_eq!(req["platformVersion"], "1.4.0");
    assert_eq!(req["clientToken"], spec.client_token.as_str());
    assert_eq!(req["startedBy"], tags::started_by(&spec.key).as_str());
    assert_eq!(req["enableExecuteCommand"], true);
    assert_eq!(req["propagateTags"], "TASK_DEFINITION");
    assert_eq!(req["enableECSManagedTags"], true);
    let vpc = &req["networkConfiguration"]["awsvpcConfiguration"];
    assert_eq!(vpc["subnets"], serde_json::json!(ecs.subnets[..2]));
    assert_eq!(
        vpc["securityGroups"],
        serde_json::json!(ecs.security_groups)
    );
    assert_eq!(vpc["assignPublicIp"], "ENABLED");
    let over = env_of(&req);
    assert_eq!(over["name"], "ci-coordinator");
    assert_eq!(over["environment"][0]["name"], "SSH_PUBLIC_KEY");
    assert_eq!(
        over["environment"][0]["value"],
        spec.environment["SSH_PUBLIC_KEY"].as_str()
    );
    let t = tag_map(&req);
    assert_eq!(t["team"], "ci platform");
    assert_eq!(t[tags::JOB_KEY], spec.key.as_str());
    assert_eq!(t[tags::JOB_ID], "42");
    assert_eq!(t[tags::NAMESPACE], "fixture");
    assert_eq!(t[tags::PROJECT_ID], "17");
    assert_eq!(t[tags::JOB_NAME], "build");
    assert_eq!(t[tags::PROJECT], "group/pro ject_x=1");
    assert_eq!(t[tags::DEADLINE], "2026-12-01T05:00:00Z");

    // And as moto stored the task.
    let stored = moto.describe_task("ci", &task.id).await;
    assert_eq!(
        stored.started_by(),
        Some(tags::started_by(&spec.key).as_str())
    );
    assert_eq!(stored.platform_version(), Some("1.4.0"));
    assert_eq!(stored.tags().len(), 8);
    let stored_deadline = stored
        .tags()
        .iter()
        .find(|t| t.key() == Some(tags::DEADLINE))
        .and_then(|t| tags::parse_deadline(t.value()?));
    assert_eq!(stored_deadline, Some(deadline));
    let env = &stored.overrides().unwrap().container_overrides()[0];
    assert_eq!(env.name(), Some("ci-coordinator"));
    assert_eq!(env.environment()[0].name(), Some("SSH_PUBLIC_KEY"));
}

/// Issue 27: only a task whose shape asks for shell access (a project that keeps failed
/// jobs' tasks) gets ECS Exec when the runner does not give it to every task; relabelling
/// it with a later deadline (as its cleanup does) keeps the job's tags.
#[tokio::test]
async fn debug_access_enables_ecs_exec_for_that_task_only() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let plain = l.launch(&ecs.spec(5)).await.unwrap();
    let mut spec = ecs.spec(6);
    spec.shape = spec.shape.with_debug_access();
    let kept = l.launch(&spec).await.unwrap();
    let req = moto.run_task_request(&plain.id).unwrap();
    assert!(req.get("enableExecuteCommand").is_none(), "{req}");
    let req = moto.run_task_request(&kept.id).unwrap();
    assert_eq!(req["enableExecuteCommand"], true, "{req}");

    let later = std::time::UNIX_EPOCH + Duration::from_secs(1_796_101_200);
    l.adopt(&kept, &spec.clone().with_deadline(later))
        .await
        .unwrap();
    let stored = moto.describe_task("ci", &kept.id).await;
    let t: BTreeMap<&str, &str> = stored
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(t[tags::DEADLINE], "2026-12-01T05:00:00Z");
    assert_eq!(t[tags::JOB_KEY], spec.key.as_str());
    assert_eq!(t[tags::PROJECT], "group/project");

    let c = l.debug_commands(&kept, "ci-coordinator").unwrap();
    assert!(
        c.enter.contains(&format!(
            "--cluster ci --task {} --container ci-coordinator --interactive --command /bin/sh",
            kept.id
        )),
        "{}",
        c.enter
    );
    assert!(c.stop.starts_with("aws ecs stop-task "), "{}", c.stop);
}

#[tokio::test]
async fn run_task_request_with_capacity_strategy_and_private_ip() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.capacity = Capacity::Strategy(vec![
        CapacityProviderItem::new("FARGATE_SPOT", 3, 0),
        CapacityProviderItem::new("FARGATE", 1, 1),
    ]);
    let l = launcher(config, &moto.sdk_config());
    let task = l.launch(&ecs.spec(3)).await.unwrap();
    let req = moto.run_task_request(&task.id).unwrap();
    assert!(req.get("launchType").is_none(), "{req}");
    assert!(req.get("enableExecuteCommand").is_none(), "{req}");
    assert!(req.get("platformVersion").is_none(), "{req}");
    assert!(req.get("propagateTags").is_none(), "{req}");
    assert!(req.get("enableECSManagedTags").is_none(), "{req}");
    assert!(!tag_map(&req).contains_key(tags::DEADLINE), "{req}");
    assert_eq!(
        req["capacityProviderStrategy"],
        serde_json::json!([
            {"capacityProvider": "FARGATE_SPOT", "weight": 3},
            {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
        ])
    );
    assert_eq!(
        req["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
    let stored = moto.describe_task("ci", &task.id).await;
    assert_eq!(stored.capacity_provider_name(), Some("FARGATE_SPOT"));
}

#[tokio::test]
async fn a_task_that_dies_reports_stopping_then_stopped() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let task = l.launch(&ecs.spec(4)).await.unwrap();
    moto.set_task_transition(2);
    let mut states = Vec::new();
    let mut last = None;
    for _ in 0..12 {
        let s = l.describe(&task).await.unwrap();
        states.push(s.state);
        if s.state == TaskState::Stopped {
            last = Some(s);
            break;
        }
        if s.state == TaskState::Stopping {
            assert!(s.stop.is_some(), "{s:?}");
        }
    }
    let last = last.unwrap_or_else(|| panic!("never stopped: {states:?}"));
    assert_eq!(states[0], TaskState::Running);
    assert!(states.contains(&TaskState::Stopping), "{states:?}");
    let stop = last.stop.unwrap();
    assert_eq!(stop.containers[0].name, "ci-coordinator");
    assert!(l.find(&ecs.spec(4).key).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_task_stopped_by_someone_else_reports_the_reason() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let task = l.launch(&ecs.spec(5)).await.unwrap();
    moto.ecs_client()
        .stop_task()
        .cluster("ci")
        .task(&task.id)
        .reason("Essential container in task exited")
        .send()
        .await
        .unwrap();
    let s = l.describe(&task).await.unwrap();
    assert_eq!(s.state, TaskState::Stopped);
    let stop = s.stop.unwrap();
    assert_eq!(
        stop.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert!(stop.to_string().contains("Essential container"), "{stop}");
}

#[tokio::test]
async fn stop_always_calls_stop_task_and_respects_the_reason_limit() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let a = l.launch(&ecs.spec(6)).await.unwrap();
    assert_eq!(
        l.stop(&a, "fargate driver: job ci-6 finished")
            .await
            .unwrap(),
        StopOutcome::Stopping
    );
    let stored = moto.describe_task("ci", &a.id).await;
    assert_eq!(
        stored.stopped_reason(),
        Some("fargate driver: job ci-6 finished")
    );
    let b = l.launch(&ecs.spec(7)).await.unwrap();
    l.stop(&b, &"é".repeat(400)).await.unwrap();
    let stored = moto.describe_task("ci", &b.id).await;
    assert_eq!(stored.stopped_reason().unwrap().chars().count(), 255);
    // A stopped task is stopped again without harm; an unknown one is reported as such.
    let before = l.api_calls().get("StopTask");
    assert_eq!(l.stop(&a, "again").await.unwrap(), StopOutcome::Stopping);
    assert_eq!(
        l.stop(&TaskRef::new(MISSING), "gone").await.unwrap(),
        StopOutcome::NotFound
    );
    assert_eq!(l.api_calls().get("StopTask"), before + 2);
    assert_eq!(
        l.api_calls().get("DescribeTasks"),
        0,
        "stop must not describe first"
    );
}

#[tokio::test]
async fn find_returns_only_the_jobs_running_tasks() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let a = l.launch(&ecs.spec(8)).await.unwrap();
    let b = l.launch(&ecs.spec(9)).await.unwrap();
    // A task of another job that reused our startedBy but not our tag is not ours.
    let foreign = moto
        .ecs_client()
        .run_task()
        .cluster("ci")
        .task_definition(&ecs.task_definition)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .started_by(tags::started_by(&ecs.spec(8).key))
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key(tags::JOB_KEY)
                .value("someone-else")
                .build(),
        )
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets(&ecs.subnets[0])
                        .security_groups(&ecs.security_groups[0])
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.tasks().len(), 1);
    let found = l.find(&ecs.spec(8).key).await.unwrap();
    assert_eq!(found, vec![a.clone()]);
    assert_eq!(l.find(&ecs.spec(9).key).await.unwrap(), vec![b]);
    l.stop(&a, "done").await.unwrap();
    assert!(l.find(&ecs.spec(8).key).await.unwrap().is_empty());
    assert!(l.find(&ecs.spec(10).key).await.unwrap().is_empty());
}

#[tokio::test]
async fn moto_errors_are_typed_with_hints() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.transport = fast_transport();
    let l = launcher(config.clone(), &moto.sdk_config());
    let mut spec = ecs.spec(11);
    spec.task_definition = "no-such-family".into();
    let err = l.launch(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(
        err.message().contains("Unable to describe task definition"),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("task definition"));
    assert_eq!(err.backend(), Some("ecs"));

    config.cluster = "nope".into();
    let l = launcher(config, &moto.sdk_config());
    let err = l.launch(&ecs.spec(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(err.hint().unwrap().contains("cluster"), "{err:?}");
    assert!(!err.is_temporary());
}

async fn proxied() -> (Moto, MotoEcs, FaultProxy) {
    let (moto, ecs) = moto().await;
    let proxy = FaultProxy::start(&moto.endpoint_url());
    (moto, ecs, proxy)
}

#[tokio::test]
async fn capacity_failure_moves_on_to_the_next_subnet_with_a_new_token() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, proxy) = proxied().await;
    let mut config = ecs.config();
    config.transport = fast_transport();
    let l = launcher(config, &proxy.sdk_config());
    let spec = ecs.spec(12);
    proxy.inject(Fault::run_task_failure(
        "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        None,
    ));
    let task = l.launch(&spec).await.unwrap();
    let runs = proxy.requests_of("RunTask");
    assert_eq!(runs.len(), 2);
    let (first, second) = (runs[0].json(), runs[1].json());
    assert!(runs[0].faulted && !runs[1].faulted);
    assert_eq!(first["clientToken"], spec.client_token.as_str());
    assert_ne!(second["clientToken"], spec.client_token.as_str());
    assert_eq!(
        first["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
        serde_json::json!(ecs.subnets[..2])
    );
    assert_eq!(
        second["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
        serde_json::json!([ecs.subnets[0]])
    );
    assert_eq!(
        moto.run_task_request(&task.id).unwrap()["clientToken"],
        second["clientToken"]
    );
    assert_eq!(proxy.pending_faults(), 0);
}

#[tokio::test]
async fn capacity_everywhere_is_a_temporary_capacity_error() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, proxy) = proxied().await;
    let mut config = ecs.config();
    config.transport = fast_transport();
    let l = launcher(config, &proxy.sdk_config());
    proxy.inject(Fault::run_task_failure("RESOURCE:ENI", Some("no free IP addresses")).times(10));
    let err = l.launch(&ecs.spec(13)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CapacityUnavailable, "{err:?}");
    assert!(err.is_temporary());
    assert!(err.hint().is_some());
    assert_eq!(
        err.context_value("other subnet attempts"),
        Some("2"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("(other subnet attempts: 2, their errors: ")
    );
    // All subnets, then each of the two alone; tokens all distinct.
    let runs = proxy.requests_of("RunTask");
    assert_eq!(runs.len(), 3);
    let tokens: std::collections::BTreeSet<String> = runs
        .iter()
        .map(|r| r.json()["clientToken"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 3);
}

#[tokio::test]
async fn run_task_failures_map_to_kinds() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, proxy) = proxied().await;
    let mut config = ecs.config();
    config.transport = fast_transport();
    let l = launcher(config, &proxy.sdk_config());
    let cases = [
        (
            Fault::run_task_failure(
                "You've reached the limit on the number of vCPUs you can run concurrently",
                None,
            ),
            ErrorKind::CapacityUnavailable,
            1,
        ),
        (
            Fault::error(
                "RunTask",
                400,
                "AccessDeniedException",
                "User: x is not authorized to perform: ecs:RunTask",
            ),
            ErrorKind::PermissionDenied,
            1,
        ),
        (
            Fault::error(
                "RunTask",
                400,
                "InvalidParameterException",
                "Override for container named ci is not a container in the TaskDefinition.",
            ),
            ErrorKind::InvalidConfig,
            1,
        ),
        (
            Fault::error(
                "RunTask",
                400,
                "InvalidParameterException",
                "No Container Instances were found in your cluster.",
            ),
            ErrorKind::InvalidConfig,
            1,
        ),
        (
            Fault::error(
                "RunTask",
                400,
                "InvalidParameterException",
                "Capacity is unavailable at this time.",
            ),
            ErrorKind::CapacityUnavailable,
            3,
        ),
    ];
    for (fault, kind, calls) in cases {
        let before = proxy.requests_of("RunTask").len();
        proxy.inject(fault.clone().times(calls));
        let err = l.launch(&ecs.spec(14)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{fault:?}: {err:?}");
        assert!(err.hint().is_some(), "{err:?}");
        assert_eq!(
            proxy.requests_of("RunTask").len() - before,
            calls,
            "{fault:?}"
        );
        assert_eq!(proxy.pending_faults(), 0);
    }
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_then_reported() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, proxy) = proxied().await;
    let mut config = ecs.config();
    config.transport = fast_transport();
    config.transport.max_attempts = 3;
    let l = launcher(config, &proxy.sdk_config());
    proxy.inject(Fault::throttling("RunTask").times(2));
    let task = l.launch(&ecs.spec(15)).await.unwrap();
    assert_eq!(proxy.requests_of("RunTask").len(), 3);
    assert_eq!(l.api_calls().get("RunTask"), 3, "SDK attempts are counted");

    proxy.inject(Fault::throttling("DescribeTasks").times(3));
    let err = l.describe(&task).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err:?}");
    assert!(err.is_temporary());
    assert_eq!(proxy.requests_of("DescribeTasks").len(), 3);
    assert_eq!(l.describe(&task).await.unwrap().state, TaskState::Running);
}

/// The stacking rule of the crate docs: under a driver whose policy allows 3 attempts, a
/// `RunTask` that is always throttled is sent 3 × 2 times (2: the SDK's default transport
/// attempts), never more.
#[tokio::test]
async fn driver_and_sdk_attempts_multiply_to_at_most_their_product() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, proxy) = proxied().await;
    let mut config = ecs.config();
    config.subnets.truncate(1);
    config.transport = fast_transport();
    assert_eq!(config.transport.max_attempts, 2, "the default");
    let launcher = Arc::new(launcher(config, &proxy.sdk_config()));
    let policy = RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(20));
    let options = DriverOptions::builder()
        .namespace(Namespace::parse("stacking").unwrap())
        .task_definition(ecs.task_definition.clone())
        .retry(policy)
        .build()
        .unwrap();
    let driver = Driver::new(
        options,
        launcher.clone(),
        Arc::new(MemoryShell::new()),
        Arc::new(MemoryStore::new()),
    );
    proxy.inject(Fault::throttling("RunTask").times(100));
    let job = JobContext::new(JobResponse::new(1));
    let failure = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let err = failure.as_system().unwrap_or_else(|| panic!("{failure:?}"));
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err:?}");
    assert_eq!(err.operation(), Some("starting the task"), "{err}");
    assert_eq!(err.context_value("attempts"), Some("3"), "{err}");
    assert_eq!(proxy.requests_of("RunTask").len(), 3 * 2);
    assert_eq!(launcher.api_calls().get("RunTask"), 3 * 2);
}

#[tokio::test]
async fn describe_tasks_missing_failure_is_missing() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, proxy) = proxied().await;
    let l = launcher(ecs.config(), &proxy.sdk_config());
    proxy.inject(Fault {
        operation: "DescribeTasks".into(),
        status: 200,
        body: format!(
            r#"{{"tasks": [], "failures": [{{"arn": "{MISSING}", "reason": "MISSING"}}]}}"#
        ),
        times: 1,
    });
    let s = l.describe(&TaskRef::new(MISSING)).await.unwrap();
    assert_eq!(s.state, TaskState::Missing);
}

#[tokio::test]
async fn public_ip_appears_once_associated_and_ec2_is_asked_only_until_then() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.assign_public_ip = true;
    config.use_public_ip = true;
    let l = launcher(config, &moto.sdk_config());
    let task = l.launch(&ecs.spec(16)).await.unwrap();
    let s = l.describe(&task).await.unwrap();
    assert_eq!(s.state, TaskState::Running);
    assert_eq!(s.address, None, "no public IP yet");
    assert_eq!(l.api_calls().get("DescribeNetworkInterfaces"), 1);
    let eni = moto.task_eni("ci", &task.id).await;
    let public = Ipv4Addr::new(127, 1, 2, 3);
    moto.associate_public_ip(&eni, public);
    for _ in 0..3 {
        let s = l.describe(&task).await.unwrap();
        assert_eq!(s.address, Some(IpAddr::V4(public)));
    }
    assert_eq!(l.api_calls().get("DescribeNetworkInterfaces"), 2);
}

#[tokio::test]
async fn fixture_hands_out_loopback_addresses_in_order() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let a = l.launch(&ecs.spec(17)).await.unwrap();
    let b = l.launch(&ecs.spec(18)).await.unwrap();
    let (sa, sb) = (l.describe(&a).await.unwrap(), l.describe(&b).await.unwrap());
    let IpAddr::V4(ip) = sb.address.unwrap() else {
        panic!()
    };
    assert!(ip.is_loopback() && ip.octets()[1] >= 64, "{ip}");
    assert_eq!(sa.address, Some(first_ip(moto.task_cidr())));
    assert_ne!(sa.address, sb.address);
    let other = Moto::builder().task_cidr("127.99.1.0/24").start();
    assert_eq!(other.task_cidr(), "127.99.1.0/24");
    assert_ne!(other.port(), moto.port());
}

#[tokio::test]
async fn list_pages_through_the_cluster_and_keeps_only_the_namespace() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, proxy) = proxied().await;
    let l = launcher(ecs.config(), &proxy.sdk_config());
    let mut ours = Vec::new();
    for id in 0..5 {
        ours.push(l.launch(&ecs.spec(700 + id)).await.unwrap().id);
    }
    for id in 0..2 {
        let mut spec = ecs.spec(800 + id);
        spec.job.namespace = Namespace::parse("another-runner").unwrap();
        spec.key = spec.job.key();
        spec.client_token = format!("fgt-other-{id}");
        l.launch(&spec).await.unwrap();
    }
    // One of ours stopped (left out), one with a deadline tag (reported).
    let stopped = ours.pop().unwrap();
    l.stop(&TaskRef::new(&stopped), "test").await.unwrap();
    moto.ecs_client()
        .tag_resource()
        .resource_arn(&ours[0])
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key(tags::DEADLINE)
                .value("2026-12-01T05:00:00Z")
                .build(),
        )
        .send()
        .await
        .unwrap();

    let ns = Namespace::parse("fixture").unwrap();
    let listed = l.list_paged(&ns, 2).await.unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|t| t.task.id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = ours.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);
    let tagged = listed.iter().find(|t| t.task.id == ours[0]).unwrap();
    assert_eq!(
        tagged.deadline,
        tags::parse_deadline("2026-12-01T05:00:00Z")
    );
    assert!(
        listed
            .iter()
            .all(|t| t.key.is_some() && t.started_at.is_some())
    );
    // Six tasks desired running (ListTasks leaves out the stopped one) in pages of two:
    // three ListTasks following nextToken, each within the API's rules (no startedBy,
    // maxResults 1-100), each page described in one DescribeTasks.
    let lists = proxy.requests_of("ListTasks");
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists[1].json()["nextToken"].is_string());
    for r in &lists {
        let body = r.json();
        assert_eq!(body["maxResults"], 2, "{body}");
        assert!(body.get("startedBy").is_none(), "{body}");
    }
    for r in proxy.requests_of("DescribeTasks") {
        let body = r.json();
        assert!(body["tasks"].as_array().unwrap().len() <= 2, "{body}");
    }
    // The trait's listing (pages of 100) finds the same.
    assert_eq!(l.list(&ns).await.unwrap().len(), 4);
}

#[tokio::test]
async fn describe_reports_the_timeline_and_shape_for_the_summary() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    moto.set_provisioning_describes(2);
    let l = launcher(ecs.config(), &moto.sdk_config());
    let task = l.launch(&ecs.spec(3)).await.unwrap();
    let provisioning = l.describe(&task).await.unwrap().details;
    assert!(provisioning.created_at.is_some(), "{provisioning:?}");
    assert_eq!(provisioning.pull_started_at, None);
    assert_eq!(provisioning.started_at, None);
    let pending = l.describe(&task).await.unwrap();
    assert_eq!(pending.state, TaskState::Pending);
    assert!(pending.details.pull_started_at.is_some(), "{pending:?}");
    assert_eq!(pending.details.started_at, None);
    let running = l.describe(&task).await.unwrap();
    assert_eq!(running.state, TaskState::Running);
    let d = running.details;
    let order = [
        d.created_at,
        d.pull_started_at,
        d.pull_stopped_at,
        d.started_at,
    ];
    assert!(order.iter().all(Option::is_some), "{d:?}");
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
    assert_eq!(d.pull_started_at, pending.details.pull_started_at);
    assert_eq!((d.cpu_units, d.memory_mib), (Some(256), Some(512)));
    assert_eq!(d.ephemeral_storage_gib, Some(20));
    assert_eq!(d.cpu_architecture.as_deref(), Some("X86_64"));
    assert_eq!(d.platform_version.as_deref(), Some("1.4.0"));
    assert!(
        d.availability_zone
            .as_deref()
            .is_some_and(|az| az.starts_with("us-east-1")),
        "{d:?}"
    );
    assert_eq!(d.region.as_deref(), Some("us-east-1"));
}

#[tokio::test]
async fn prepare_and_cleanup_summaries_carry_ecs_figures_and_a_cost() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let launcher = Arc::new(launcher(ecs.config(), &moto.sdk_config()));
    let options = DriverOptions::builder()
        .namespace(Namespace::parse("summary").unwrap())
        .task_definition(ecs.task_definition.clone())
        .build()
        .unwrap();
    let driver = Driver::new(
        options,
        launcher,
        Arc::new(MemoryShell::new()),
        Arc::new(MemoryStore::new()),
    )
    .with_price_table(fargate_aws::fargate_prices());
    let job = JobContext::new(JobResponse::new(5));
    let report = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    let s = &report.summary;
    assert_eq!(s.task, report.task);
    assert!(s.details.started_at.is_some(), "{s:?}");
    let phases = s.phases();
    assert!(
        phases.accepted.is_some() && phases.image_pull.is_some(),
        "{phases:?}"
    );
    let cost = s.cost.as_ref().expect("us-east-1 has a list price");
    assert!(!cost.spot);
    assert_eq!(cost.billed, Duration::from_secs(60));
    // A quarter vCPU and half a GB for the one-minute minimum, at the us-east-1 list price.
    let want = (0.25 * 0.04048 + 0.5 * 0.004445) / 60.0;
    assert!((cost.amount - want).abs() < 1e-12, "{cost:?}");
    let text = s.to_string();
    assert!(text.contains("256") || text.contains("0.25 vCPU"), "{text}");
    let cleaned = driver.cleanup(&job).await.unwrap();
    let at_cleanup = cleaned.summary.expect("a summary at cleanup");
    assert_eq!(at_cleanup.details.started_at, s.details.started_at);
    assert!(at_cleanup.run_time() >= s.run_time());
}

/// Issue 21 (a claim makes the task the job's): `adopt` relabels a warm pool slot's task
/// with one `TagResource` (and an `UntagResource` of what the job does not set): exactly the
/// tags `RunTask` would have sent for the job, so `list` reports the task under the job's
/// key and deadline. `startedBy` cannot change: `find` of the job does not return it.
#[tokio::test]
async fn adopt_relabels_a_slot_task_as_the_jobs() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.tags = BTreeMap::from([("team".to_owned(), "ci".to_owned())]);
    let l = launcher(config.clone(), &moto.sdk_config());
    let ns = Namespace::parse("fixture").unwrap();
    let at = |secs: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let slot_spec = |slot: u64| {
        let mut spec = ecs.spec(0);
        spec.job = fargate_core::JobIdentity::pool_slot(ns.clone(), slot);
        spec.key = spec.job.key();
        spec.client_token = format!("fgt-slot-{slot}");
        spec.deadline = Some(at(1_900_000_000));
        spec
    };
    let tags_of = |t: &aws_sdk_ecs::types::Task| -> BTreeMap<String, String> {
        t.tags()
            .iter()
            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
            .collect()
    };

    let slot = slot_spec(3);
    let task = l.launch(&slot).await.unwrap();
    let listed = l.list(&ns).await.unwrap();
    assert_eq!(
        listed[0].key.as_ref(),
        Some(&slot.key),
        "a slot's task at first"
    );
    let mut job = ecs.spec(42);
    job.deadline = Some(at(1_800_000_000));
    l.adopt(&task, &job).await.unwrap();

    let listed = l.list(&ns).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].task.id, task.id);
    assert_eq!(listed[0].key.as_ref(), Some(&job.key));
    assert_eq!(listed[0].deadline, Some(at(1_800_000_000)));
    let described = moto.describe_task("ci", &task.id).await;
    let want: BTreeMap<String, String> = tags::task_tags(&config.tags, &job.job, job.deadline)
        .into_iter()
        .collect();
    assert_eq!(tags_of(&described), want, "exactly the job's RunTask tags");
    assert_eq!(want[tags::JOB_ID], "42");
    assert_eq!(want[tags::PROJECT], "group/project");
    assert_eq!(
        described.started_by(),
        Some(tags::started_by(&slot.key).as_str()),
        "startedBy stays the slot's"
    );
    assert!(l.find(&job.key).await.unwrap().is_empty());
    assert!(
        l.find(&slot.key).await.unwrap().is_empty(),
        "no longer the slot's"
    );

    // A job without a deadline: the slot's deadline does not survive.
    let other = l.launch(&slot_spec(4)).await.unwrap();
    let mut undated = ecs.spec(43);
    undated.deadline = None;
    l.adopt(&other, &undated).await.unwrap();
    let described = moto.describe_task("ci", &other.id).await;
    assert!(!tags_of(&described).contains_key(tags::DEADLINE));
    let listed = l.list(&ns).await.unwrap();
    let entry = listed.iter().find(|t| t.task.id == other.id).unwrap();
    assert_eq!(entry.key.as_ref(), Some(&undated.key));
    assert_eq!(entry.deadline, None);
    assert_eq!(l.api_calls().get("TagResource"), 2);
    assert_eq!(l.api_calls().get("UntagResource"), 1);

    // An unknown task: NotFound, naming the task and the job.
    let err = l.adopt(&TaskRef::new(MISSING), &job).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context_value("task"), Some(MISSING));
    assert_eq!(err.context_value("job"), Some(job.key.as_str()));
    assert!(err.to_string().contains("TagResource"), "{err}");
}

/// Issue 23 follow-up: `mark_alive` sets the `fargate:alive` tag with one `TagResource`
/// (nothing else of the task changes), and `list` reads it back as `alive_at`, which gc
/// counts as a sign of life of the task's job. A task with every administrator tag there is
/// room for still takes the mark (ECS allows 50 tags).
#[tokio::test]
async fn mark_alive_tags_the_task_and_list_reads_it_back() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let mut config = ecs.config();
    config.tags = (0..tags::MAX_ADMIN_TAGS)
        .map(|i| (format!("admin-{i}"), "x".to_owned()))
        .collect();
    let l = launcher(config, &moto.sdk_config());
    let ns = Namespace::parse("fixture").unwrap();
    let at = |secs: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let tags_of = |t: &aws_sdk_ecs::types::Task| -> BTreeMap<String, String> {
        t.tags()
            .iter()
            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
            .collect()
    };
    let mut spec = ecs.spec(7);
    spec.deadline = Some(at(1_900_000_000));
    let task = l.launch(&spec).await.unwrap();
    let listed = l.list(&ns).await.unwrap();
    assert_eq!(listed[0].alive_at, None, "no mark at launch");
    let launched = tags_of(&moto.describe_task("ci", &task.id).await);
    assert_eq!(launched.len(), tags::MAX_TAGS - 1, "{launched:?}");

    l.mark_alive(&task, at(1_800_000_000)).await.unwrap();
    let marked = tags_of(&moto.describe_task("ci", &task.id).await);
    assert_eq!(marked[tags::ALIVE], "2027-01-15T08:00:00Z");
    let mut want = launched.clone();
    want.insert(tags::ALIVE.to_owned(), "2027-01-15T08:00:00Z".to_owned());
    assert_eq!(marked, want, "only the mark is new");
    let listed = l.list(&ns).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].alive_at, Some(at(1_800_000_000)));
    assert_eq!(listed[0].key.as_ref(), Some(&spec.key));
    assert_eq!(listed[0].deadline, Some(at(1_900_000_000)));

    // A later mark replaces it.
    l.mark_alive(&task, at(1_800_000_030)).await.unwrap();
    let listed = l.list(&ns).await.unwrap();
    assert_eq!(listed[0].alive_at, Some(at(1_800_000_030)));
    assert_eq!(l.api_calls().get("TagResource"), 2);
    assert_eq!(l.api_calls().get("UntagResource"), 0);

    // An unknown task: NotFound, naming the task; an id that is no ARN: refused unsent.
    let err = l
        .mark_alive(&TaskRef::new(MISSING), at(1_800_000_000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context_value("task"), Some(MISSING));
    let err = l
        .mark_alive(&TaskRef::new("not-an-arn"), at(1_800_000_000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(l.api_calls().get("TagResource"), 3);
}

/// `resolve_task_definition`: a family means its latest revision now; a name with its
/// revision is itself (no call); an unknown family is `NotFound`.
#[tokio::test]
async fn a_family_resolves_to_its_latest_revision() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs) = moto().await;
    let l = launcher(ecs.config(), &moto.sdk_config());
    let first = moto.register_task_definition("resolve-me").await;
    assert_eq!(
        l.resolve_task_definition("resolve-me").await.unwrap(),
        first
    );
    let second = moto.register_task_definition("resolve-me").await;
    assert_ne!(first, second);
    assert_eq!(
        l.resolve_task_definition("resolve-me").await.unwrap(),
        second
    );
    assert_eq!(
        l.resolve_task_definition("resolve-me:1").await.unwrap(),
        "resolve-me:1"
    );
    assert_eq!(l.resolve_task_definition(&first).await.unwrap(), first);
    let err = l
        .resolve_task_definition("no-such-family")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
}
