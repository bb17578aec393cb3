//! Job images on ECS: derived task definitions registered in moto (with the fixture's ECS
//! rules), reused by hash, raced for, and never holding a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, TaskDefinition, TaskDefinitionField,
};
use fargate_aws::derived::{DERIVED_FROM, DERIVED_HASH, GC_MARK, LAST_USED, MAX_BASE_TAGS};
use fargate_aws::derived_gc::DEREGISTER_GRACE;
use fargate_aws::{EcsLauncher, MAX_OVERRIDES_CHARS};
use fargate_core::images::{ImageDecision, ImageRequest, decide};
use fargate_core::job::JobImage;
use fargate_core::options::ImagePolicy;
use fargate_core::testing::{MemoryShell, MemoryStore};
use fargate_core::{
    Driver, DriverOptions, ErrorKind, JobContext, JobResponse, Namespace, TaskLauncher, TaskSpec,
};
use fargate_testkit::fault_proxy::FaultProxy;
use fargate_testkit::moto::{CONTAINER, Moto, MotoEcs};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The options of namespace `fixture` with base task definition `base` and job images under
/// `images`.
fn options_with(base: &str, images: ImagePolicy) -> DriverOptions {
    DriverOptions::builder()
        .namespace(Namespace::parse("fixture").unwrap())
        .task_definition(base)
        .images(images)
        .build()
        .unwrap()
}

fn options(ecs: &MotoEcs) -> DriverOptions {
    options_with(
        &ecs.task_definition,
        ImagePolicy::allowing(["rust:*", "alpine:*"], ["postgres:*", "redis:*"]),
    )
}

/// A driver of `options` on `launcher` (shell and store in memory).
fn driver_with(options: DriverOptions, launcher: &EcsLauncher) -> Driver {
    Driver::new(
        options,
        Arc::new(launcher.clone()),
        Arc::new(MemoryShell::new()),
        Arc::new(MemoryStore::new()),
    )
}

fn response(id: u64, image: &str, services: Vec<JobImage>) -> JobResponse {
    let mut r = JobResponse::new(id);
    r.image = Some(JobImage::new(image));
    r.services = services;
    r
}

fn postgres() -> JobImage {
    JobImage::new("postgres:16")
        .with_alias("db")
        .with_command(vec!["postgres".into(), "-c".into(), "fsync=off".into()])
        .with_variable("POSTGRES_PASSWORD", "s3cret-pw")
}

/// What `options` decide for job `r`: a derived definition.
fn derived(options: &DriverOptions, r: &JobResponse) -> Box<ImageRequest> {
    match decide(options, Some(r)).unwrap() {
        ImageDecision::Derived(request) => request,
        other => panic!("not derived: {other:?}"),
    }
}

fn request(ecs: &MotoEcs, r: &JobResponse) -> Box<ImageRequest> {
    derived(&options(ecs), r)
}

fn spec_with(ecs: &MotoEcs, id: u64, request: Box<ImageRequest>) -> TaskSpec {
    let mut spec = ecs.spec(id);
    spec.images = Some(request);
    spec
}

/// [`spec_with`] on base task definition `base`.
fn spec_on(ecs: &MotoEcs, id: u64, base: &str, request: Box<ImageRequest>) -> TaskSpec {
    let mut spec = spec_with(ecs, id, request);
    spec.task_definition = base.to_owned();
    spec
}

/// The container `name` of `td`.
fn container<'a>(td: &'a TaskDefinition, name: &str) -> &'a ContainerDefinition {
    td.container_definitions()
        .iter()
        .find(|c| c.name() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

async fn setup() -> (Moto, MotoEcs, EcsLauncher) {
    let moto = Moto::start();
    let ecs = moto.setup().await;
    let launcher = EcsLauncher::new(ecs.config(), &moto.sdk_config()).unwrap();
    (moto, ecs, launcher)
}

async fn definition(moto: &Moto, name: &str) -> (TaskDefinition, Vec<(String, String)>) {
    let out = moto
        .ecs_client()
        .describe_task_definition()
        .task_definition(name)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .unwrap();
    let tags = out
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
        .collect();
    (out.task_definition.unwrap(), tags)
}

fn task_definition_of(moto: &Moto, task: &str) -> String {
    moto.run_task_request(task).unwrap()["taskDefinition"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn overrides_of(moto: &Moto, task: &str) -> Vec<Value> {
    moto.run_task_request(task).unwrap()["overrides"]["containerOverrides"]
        .as_array()
        .unwrap()
        .clone()
}

fn env(overrides: &[Value], container: &str, name: &str) -> Option<String> {
    overrides.iter().find(|o| o["name"] == container)?["environment"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_derived_definition_as_registered() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let r = response(1, "rust:1.85", vec![postgres(), JobImage::new("redis:7")]);
    let task = launcher
        .launch(&spec_with(&ecs, 1, request(&ecs, &r)))
        .await
        .unwrap();

    let arn = task_definition_of(&moto, &task.id);
    let (td, tags) = definition(&moto, &arn).await;
    let (base, _) = definition(&moto, &ecs.task_definition).await;
    let family = td.family().unwrap();
    assert!(
        family.starts_with("ci-coordinator-") && family.len() == "ci-coordinator-".len() + 16,
        "{family}"
    );
    let tag = |k: &str| {
        tags.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(tag(DERIVED_HASH).unwrap().len(), 64);
    assert!(
        tag(DERIVED_HASH)
            .unwrap()
            .starts_with(&family["ci-coordinator-".len()..])
    );
    assert_eq!(tag(DERIVED_FROM).as_deref(), base.task_definition_arn());
    assert!(tag(LAST_USED).is_some());
    // Task-level settings come from the base.
    assert_eq!(td.cpu(), base.cpu());
    assert_eq!(td.memory(), base.memory());
    assert_eq!(td.network_mode(), base.network_mode());

    let names: Vec<&str> = td
        .container_definitions()
        .iter()
        .map(|c| c.name().unwrap())
        .collect();
    assert_eq!(
        names,
        [CONTAINER, "fargate-bundle", "job", "service-1", "service-2"]
    );
    let c = |name: &str| container(&td, name).clone();
    let helper = c(CONTAINER);
    assert_eq!(
        helper.image(),
        Some("registry.example/ci-coordinator:latest")
    );
    assert_eq!(
        helper.mount_points()[0].source_volume(),
        Some("fargate-builds")
    );
    assert_eq!(helper.mount_points()[0].container_path(), Some("/builds"));

    let bundle = c("fargate-bundle");
    assert_eq!(
        bundle.image(),
        helper.image(),
        "the bundle comes from the task image"
    );
    assert_eq!(bundle.essential(), Some(false));
    assert_eq!(
        bundle.entry_point(),
        ["cp", "-a", "/opt/fargate-bundle/.", "/opt/fargate/"]
    );

    let job = c("job");
    assert_eq!(job.image(), Some("rust:1.85"));
    assert_eq!(job.essential(), Some(true));
    assert_eq!(
        job.entry_point(),
        ["/opt/fargate/bin/sh", "/opt/fargate/entrypoint.sh"]
    );
    assert_eq!(job.port_mappings()[0].container_port(), Some(2222));
    assert_eq!(job.port_mappings()[0].host_port(), Some(2222));
    let mounts: Vec<(&str, &str)> = job
        .mount_points()
        .iter()
        .map(|m| (m.source_volume().unwrap(), m.container_path().unwrap()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("fargate-builds", "/builds"),
            ("fargate-bundle", "/opt/fargate")
        ]
    );
    let deps: Vec<(&str, ContainerCondition)> = job
        .depends_on()
        .iter()
        .map(|d| (d.container_name(), d.condition().clone()))
        .collect();
    assert_eq!(
        deps,
        [
            ("fargate-bundle", ContainerCondition::Success),
            ("service-1", ContainerCondition::Start),
            ("service-2", ContainerCondition::Start)
        ]
    );
    let job_env: Vec<(&str, &str)> = job
        .environment()
        .iter()
        .map(|e| (e.name().unwrap(), e.value().unwrap()))
        .collect();
    assert!(
        job_env.contains(&("FARGATE_SERVICE_HOSTS", "db redis")),
        "{job_env:?}"
    );
    assert!(
        job_env.contains(&("FARGATE_SSH_PORT", "2222")),
        "{job_env:?}"
    );

    let pg = c("service-1");
    assert_eq!(pg.image(), Some("postgres:16"));
    assert_eq!(pg.essential(), Some(false));
    assert_eq!(pg.command(), ["postgres", "-c", "fsync=off"]);
    assert!(pg.environment().is_empty());
    assert!(pg.port_mappings().is_empty());
    let volumes: Vec<&str> = td.volumes().iter().map(|v| v.name().unwrap()).collect();
    assert_eq!(volumes, ["fargate-builds", "fargate-bundle"]);

    // No secret in the definition; the service variable and the job's key in the overrides.
    assert!(!format!("{td:?}").contains("s3cret-pw"));
    assert!(!format!("{td:?}").contains("POSTGRES_PASSWORD"));
    let overrides = overrides_of(&moto, &task.id);
    assert_eq!(
        env(&overrides, "service-1", "POSTGRES_PASSWORD").as_deref(),
        Some("s3cret-pw")
    );
    let key = ecs.spec(1).environment["SSH_PUBLIC_KEY"].clone();
    assert_eq!(
        env(&overrides, CONTAINER, "SSH_PUBLIC_KEY"),
        Some(key.clone())
    );
    assert_eq!(env(&overrides, "job", "SSH_PUBLIC_KEY"), Some(key));
    assert_eq!(env(&overrides, CONTAINER, "POSTGRES_PASSWORD"), None);
}

#[tokio::test]
async fn the_same_content_is_registered_once_and_reused() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let r = response(1, "rust:1.85", vec![postgres()]);
    let first = launcher
        .launch(&spec_with(&ecs, 1, request(&ecs, &r)))
        .await
        .unwrap();
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 1);
    // Another job with the same image and services: no new registration, same revision,
    // although its service password differs (secrets are not content).
    let other = response(
        2,
        "rust:1.85",
        vec![postgres().with_variable("POSTGRES_PASSWORD", "other")],
    );
    let second = launcher
        .launch(&spec_with(&ecs, 2, request(&ecs, &other)))
        .await
        .unwrap();
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 1);
    assert_eq!(
        task_definition_of(&moto, &first.id),
        task_definition_of(&moto, &second.id)
    );
    // Other content: another family.
    let third = response(3, "alpine:3.20", vec![]);
    let third = launcher
        .launch(&spec_with(&ecs, 3, request(&ecs, &third)))
        .await
        .unwrap();
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 2);
    assert_ne!(
        task_definition_of(&moto, &first.id),
        task_definition_of(&moto, &third.id)
    );
    // A deregistered derived definition is not reused: a new revision is registered.
    moto.ecs_client()
        .deregister_task_definition()
        .task_definition(task_definition_of(&moto, &first.id))
        .send()
        .await
        .unwrap();
    let fourth = launcher
        .launch(&spec_with(&ecs, 4, request(&ecs, &r)))
        .await
        .unwrap();
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 3);
    let (old, _) = definition(&moto, &task_definition_of(&moto, &first.id)).await;
    let (new, _) = definition(&moto, &task_definition_of(&moto, &fourth.id)).await;
    assert_eq!(old.family(), new.family());
    assert_eq!(new.revision(), old.revision() + 1);
}

#[tokio::test]
async fn two_prepares_racing_for_new_content_both_launch() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    // Each registration takes 300 ms: the second, concurrent one is refused as ECS refuses
    // concurrent revisions of a family, then reuses the first's.
    moto.set_register_hold(Duration::from_millis(300));
    let r = response(1, "rust:1.85", vec![postgres()]);
    let (a, b) = (
        spec_with(&ecs, 1, request(&ecs, &r)),
        spec_with(&ecs, 2, request(&ecs, &r)),
    );
    let (ra, rb) = tokio::join!(launcher.launch(&a), launcher.launch(&b));
    let (ta, tb) = (ra.unwrap(), rb.unwrap());
    let (da, _) = definition(&moto, &task_definition_of(&moto, &ta.id)).await;
    let (db, _) = definition(&moto, &task_definition_of(&moto, &tb.id)).await;
    assert_eq!(da.family(), db.family());
    assert_eq!(da.container_definitions(), db.container_definitions());
    assert!(
        launcher.api_calls().get("RegisterTaskDefinition") >= 2,
        "the race did not happen: {:?}",
        launcher.api_calls().snapshot()
    );
}

#[tokio::test]
async fn a_refused_image_makes_no_ecs_call() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, launcher) = setup().await;
    let driver = driver_with(options(&ecs), &launcher);
    let job = JobContext::new(response(5, "evil/miner:latest", vec![]));
    let failure = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(
        err.to_string().contains("allowed images: rust:*, alpine:*"),
        "{err}"
    );
    let job = JobContext::new(response(6, "rust:1.85", vec![JobImage::new("mysql:8")]));
    let failure = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        failure
            .to_string()
            .contains("allowed services: postgres:*, redis:*"),
        "{failure}"
    );
    assert_eq!(
        launcher.api_calls().total(),
        0,
        "{:?}",
        launcher.api_calls().snapshot()
    );
}

#[tokio::test]
async fn service_variables_beyond_the_override_limit_are_refused_before_any_call() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let big = JobImage::new("postgres:16").with_variable("BIG", "x".repeat(MAX_OVERRIDES_CHARS));
    let r = response(1, "rust:1.85", vec![big]);
    let err = launcher
        .launch(&spec_with(&ecs, 1, request(&ecs, &r)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("8192"), "{err}");
    assert_eq!(launcher.api_calls().total(), 0);
    assert!(moto.run_task_requests().is_empty());
    // Just under the limit passes, all of it in the overrides.
    let fits = JobImage::new("postgres:16").with_variable("BIG", "x".repeat(7000));
    let r = response(2, "rust:1.85", vec![fits]);
    let task = launcher
        .launch(&spec_with(&ecs, 2, request(&ecs, &r)))
        .await
        .unwrap();
    assert_eq!(
        env(&overrides_of(&moto, &task.id), "service-1", "BIG")
            .unwrap()
            .len(),
        7000
    );
}

#[tokio::test]
async fn a_base_without_the_helper_container_is_a_configuration_error() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, launcher) = setup().await;
    let r = response(1, "rust:1.85", vec![]);
    let mut spec = spec_with(&ecs, 1, request(&ecs, &r));
    spec.images.as_mut().unwrap().plan.helper = "nope".into();
    let err = launcher.launch(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string().contains("has no container \"nope\""),
        "{err}"
    );
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 0);
    assert_eq!(launcher.api_calls().get("RunTask"), 0);
}

#[tokio::test]
async fn gc_removes_unused_derived_families_and_keeps_the_bound() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let mut families = Vec::new();
    for (id, image) in [(1, "alpine:3.18"), (2, "alpine:3.19"), (3, "alpine:3.20")] {
        let r = response(id, image, vec![]);
        let task = launcher
            .launch(&spec_with(&ecs, id, request(&ecs, &r)))
            .await
            .unwrap();
        let arn = task_definition_of(&moto, &task.id);
        families.push((
            definition(&moto, &arn).await.0.family().unwrap().to_owned(),
            arn,
        ));
    }
    // The first was last used 8 days ago, the second 2 hours ago, the third just now.
    let now = unix_now();
    for (i, ago) in [(0, 8 * 24 * 3600), (1, 2 * 3600)] {
        set_tag(&moto, &families[i].1, LAST_USED, now - ago).await;
    }
    let week = Duration::from_secs(7 * 24 * 3600);
    let dry = launcher
        .prune_derived(&ecs.task_definition, week, 10, true)
        .await
        .unwrap();
    assert_eq!(dry.pending, [families[0].0.clone()], "{dry}");
    assert!(
        dry.removed.is_empty() && dry.deregistered.is_empty(),
        "{dry}"
    );
    assert_eq!(dry.kept.len(), 2);
    assert!(
        mark_of(&moto, &families[0].1).await.is_none(),
        "a dry run changes nothing"
    );

    // The first run only marks the unused family.
    let report = launcher
        .prune_derived(&ecs.task_definition, week, 10, false)
        .await
        .unwrap();
    assert_eq!(report.pending, [families[0].0.clone()], "{report}");
    assert!(
        report.removed.is_empty() && report.failed.is_empty(),
        "{report}"
    );
    assert!(mark_of(&moto, &families[0].1).await.is_some());
    assert!(definition_exists(&moto, &families[0].1).await);
    // Within the grace, a run changes nothing.
    let report = launcher
        .prune_derived(&ecs.task_definition, week, 10, false)
        .await
        .unwrap();
    assert_eq!(report.pending, [families[0].0.clone()], "{report}");
    assert!(definition_exists(&moto, &families[0].1).await);
    // A grace later (the mark backdated): deregistered and deleted.
    age_mark(&moto, &families[0].1).await;
    let dry = launcher
        .prune_derived(&ecs.task_definition, week, 10, true)
        .await
        .unwrap();
    assert_eq!(dry.removed, [families[0].0.clone()], "{dry}");
    assert!(definition_exists(&moto, &families[0].1).await);
    let report = launcher
        .prune_derived(&ecs.task_definition, week, 10, false)
        .await
        .unwrap();
    assert_eq!(report.removed, [families[0].0.clone()], "{report}");
    assert_eq!(report.deregistered, [families[0].1.clone()], "{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert!(
        !definition_exists(&moto, &families[0].1).await,
        "deregistered and deleted"
    );
    // At most one derived family: the least recently used of the others goes, a grace
    // after it was marked.
    let report = launcher
        .prune_derived(&ecs.task_definition, week, 1, false)
        .await
        .unwrap();
    assert_eq!(report.pending, [families[1].0.clone()], "{report}");
    age_mark(&moto, &families[1].1).await;
    let report = launcher
        .prune_derived(&ecs.task_definition, week, 1, false)
        .await
        .unwrap();
    assert_eq!(report.removed, [families[1].0.clone()], "{report}");
    assert_eq!(report.kept, [families[2].0.clone()], "{report}");
    // The base is never touched; a job of a removed family registers it again.
    assert!(definition_exists(&moto, &ecs.task_definition).await);
    let r = response(4, "alpine:3.18", vec![]);
    launcher
        .launch(&spec_with(&ecs, 4, request(&ecs, &r)))
        .await
        .unwrap();
}

/// Issue 21: "gc can deregister a derived task definition between a prepare's reuse check
/// and its RunTask". The prepare's RunTask is held at a proxy right after its check while
/// gc runs with `UnusedAfter` 30 min on a definition last used 45 min ago (too recent for
/// the prepare to refresh its mark of use, which it does hourly). Before the fix gc
/// deregistered the definition there and the RunTask was refused ("TaskDefinition is
/// inactive"); now gc only marks it, the prepare launches, later launches use a new
/// revision, and the marked one goes a grace after its mark.
#[tokio::test]
async fn gc_never_deregisters_a_definition_between_a_prepares_check_and_its_run_task() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let r = response(1, "rust:1.85", vec![]);
    let first = launcher
        .launch(&spec_with(&ecs, 1, request(&ecs, &r)))
        .await
        .unwrap();
    let rev1 = task_definition_of(&moto, &first.id);
    let family = definition(&moto, &rev1)
        .await
        .0
        .family()
        .unwrap()
        .to_owned();
    set_tag(&moto, &rev1, LAST_USED, unix_now() - 45 * 60).await;

    let proxy = FaultProxy::start(&moto.endpoint_url());
    let via_proxy = EcsLauncher::new(ecs.config(), &proxy.sdk_config()).unwrap();
    let mut held = proxy.hold("RunTask");
    let spec = spec_with(&ecs, 2, request(&ecs, &r));
    let prepare = tokio::spawn(async move { via_proxy.launch(&spec).await });
    held.arrived().await; // the prepare found rev1 usable and sent its RunTask

    let unused_after = Duration::from_secs(30 * 60);
    let report = launcher
        .prune_derived(&ecs.task_definition, unused_after, 10, false)
        .await
        .unwrap();
    held.release();
    let second = prepare.await.unwrap();
    let second = second.unwrap_or_else(|e| panic!("gc broke the prepare: {e}; gc: {report}"));
    assert_eq!(task_definition_of(&moto, &second.id), rev1);
    assert_eq!(report.pending, std::slice::from_ref(&family), "{report}");
    assert!(report.deregistered.is_empty(), "{report}");

    // A launch after the mark does not use the marked revision: a new one of the family.
    let third = launcher
        .launch(&spec_with(&ecs, 3, request(&ecs, &r)))
        .await
        .unwrap();
    let rev2 = task_definition_of(&moto, &third.id);
    assert_ne!(rev2, rev1);
    assert_eq!(
        definition(&moto, &rev2).await.0.family(),
        Some(family.as_str())
    );
    assert!(mark_of(&moto, &rev2).await.is_none());

    // A grace after the mark, the marked revision goes; the family, used now, stays.
    age_mark(&moto, &rev1).await;
    let report = launcher
        .prune_derived(&ecs.task_definition, unused_after, 10, false)
        .await
        .unwrap();
    assert_eq!(report.deregistered, std::slice::from_ref(&rev1), "{report}");
    assert_eq!(report.kept, [family], "{report}");
    assert!(
        !definition_exists(&moto, &rev1).await,
        "deregistered and deleted"
    );
    assert!(definition_exists(&moto, &rev2).await);
    // The job launched from rev1 runs on.
    let task = moto.describe_task(&ecs.cluster, &second.id).await;
    assert_eq!(task.last_status(), Some("RUNNING"));
}

/// Issue 21: derived definitions carry the base definition's tags (so that
/// `propagateTags = TASK_DEFINITION` keeps cost tags for image jobs), updated at the next
/// reuse when the base's change; a base with more tags than fit is refused before any
/// registration.
#[tokio::test]
async fn derived_definitions_carry_the_base_definitions_tags() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, _) = setup().await;
    let mut config = ecs.config();
    config.tags = [("owner".to_owned(), "ops".to_owned())].into();
    let launcher = EcsLauncher::new(config, &moto.sdk_config()).unwrap();
    set_tag(&moto, &ecs.task_definition, "cost-center", "ci-42").await;
    set_tag(&moto, &ecs.task_definition, "team", "platform").await;
    let r = response(1, "rust:1.85", vec![postgres()]);
    let task = launcher
        .launch(&spec_with(&ecs, 1, request(&ecs, &r)))
        .await
        .unwrap();
    let arn = task_definition_of(&moto, &task.id);
    let tags = tags_of(&moto, &arn).await;
    assert_eq!(tags["cost-center"], "ci-42", "{tags:?}");
    assert_eq!(tags["team"], "platform");
    assert_eq!(tags["owner"], "ops");
    assert!(tags.contains_key(DERIVED_HASH) && tags.contains_key(LAST_USED));
    assert!(!tags.contains_key(GC_MARK));

    // The base's cost tag changes: the next job reusing the definition copies it over.
    set_tag(&moto, &ecs.task_definition, "cost-center", "ci-43").await;
    let again = launcher
        .launch(&spec_with(&ecs, 2, request(&ecs, &r)))
        .await
        .unwrap();
    assert_eq!(task_definition_of(&moto, &again.id), arn, "reused");
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 1);
    assert_eq!(tags_of(&moto, &arn).await["cost-center"], "ci-43");

    // A base with more tags than a derived definition can carry: a clear error, nothing
    // registered.
    for i in 0..MAX_BASE_TAGS {
        set_tag(&moto, &ecs.task_definition, &format!("k{i}"), "v").await;
    }
    let other = response(3, "alpine:3.20", vec![]);
    let err = launcher
        .launch(&spec_with(&ecs, 3, request(&ecs, &other)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("remove at least 2 tags"), "{err}");
    assert_eq!(launcher.api_calls().get("RegisterTaskDefinition"), 1);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn set_tag(moto: &Moto, arn: &str, key: &str, value: impl ToString) {
    moto.ecs_client()
        .tag_resource()
        .resource_arn(arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key(key)
                .value(value.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn tags_of(moto: &Moto, arn: &str) -> BTreeMap<String, String> {
    definition(moto, arn).await.1.into_iter().collect()
}

async fn mark_of(moto: &Moto, arn: &str) -> Option<String> {
    tags_of(moto, arn).await.remove(GC_MARK)
}

/// Backdates `arn`'s gc mark by the grace (and a minute): as if it was set a grace ago.
async fn age_mark(moto: &Moto, arn: &str) {
    let mark: u64 = mark_of(moto, arn).await.expect("marked").parse().unwrap();
    let aged = mark - DEREGISTER_GRACE.as_secs() - 60;
    set_tag(moto, arn, GC_MARK, aged).await;
}

/// Whether ECS still has task definition `arn` (active or inactive, not deleted).
/// The job's own definition task `task` of `spec` ran from: in the job's family (of base
/// `base`), tagged with the job's key, and `secret` in none of it nor its tags. Its ARN, it
/// and its tags.
async fn job_definition(
    moto: &Moto,
    task: &str,
    base: &str,
    spec: &TaskSpec,
    secret: &str,
) -> (String, TaskDefinition, Vec<(String, String)>) {
    let arn = task_definition_of(moto, task);
    let (td, tags) = definition(moto, &arn).await;
    assert_eq!(
        td.family(),
        Some(fargate_aws::job_secrets::job_family(base, &spec.key).as_str())
    );
    assert!(!format!("{td:?}{tags:?}").contains(secret));
    assert!(tags.contains(&("fargate:job-key".to_owned(), spec.key.to_string())));
    (arn, td, tags)
}

/// A replay of the spec `recorded` (its record's form) cannot recreate the job's secret:
/// refused before any call. Cleanup's release (from the record) removes the secret and the
/// job's own definition `arn`; twice is harmless.
async fn assert_replay_refused_and_released(
    moto: &Moto,
    launcher: &EcsLauncher,
    recorded: &str,
    arn: &str,
) {
    let replay: TaskSpec = serde_json::from_str(recorded).unwrap();
    let runs = moto.run_task_requests().len();
    let err = launcher.launch(&replay).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(moto.run_task_requests().len(), runs);

    launcher.release(&replay).await.unwrap();
    assert!(secret_names(moto).is_empty());
    assert!(!definition_exists(moto, arn).await);
    launcher.release(&replay).await.unwrap();
}

async fn definition_exists(moto: &Moto, arn: &str) -> bool {
    let Ok(out) = moto
        .ecs_client()
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
    else {
        return false;
    };
    out.task_definition().is_some()
}

// --- Secret variables of services ([Fargate.Images] ServiceSecrets) -----------------------

/// A base definition like the fixture's, with an execution role (ECS reads container
/// secrets with it).
async fn base_with_execution_role(moto: &Moto) -> String {
    use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode, PortMapping};
    moto.ecs_client()
        .register_task_definition()
        .family("ci-secrets")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .execution_role_arn("arn:aws:iam::123456789012:role/fargate-ci-task-execution")
        .container_definitions(
            ContainerDefinition::builder()
                .name(CONTAINER)
                .image("registry.example/ci-coordinator:latest")
                .memory(512)
                .essential(true)
                .port_mappings(PortMapping::builder().container_port(22).build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_owned()
}

const PASSWORD: &str = "hunter2-hunter2";

/// A job whose postgres service takes the masked project variable DB_PASSWORD.
fn secret_job(id: u64) -> JobResponse {
    let mut r = response(
        id,
        "rust:1.85",
        vec![
            JobImage::new("postgres:16")
                .with_alias("db")
                .with_variable("POSTGRES_PASSWORD", "$DB_PASSWORD")
                .with_variable("POSTGRES_DB", "test"),
        ],
    );
    r.sensitive = vec![fargate_core::job::SensitiveVariable::new(
        "DB_PASSWORD",
        PASSWORD,
        fargate_core::job::Sensitivity::Masked,
    )];
    r
}

fn secret_options(base: &str) -> DriverOptions {
    let mut images = ImagePolicy::allowing(["rust:*"], ["postgres:*"]);
    images.secrets = fargate_core::options::SecretPolicy::Store;
    options_with(base, images)
}

fn secrets_manager(moto: &Moto, operation: &str, input: Value) -> Value {
    moto.aws_json("secretsmanager", "secretsmanager", operation, &input)
}

fn secret_names(moto: &Moto) -> Vec<String> {
    secrets_manager(moto, "ListSecrets", serde_json::json!({}))["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap().to_owned())
        .collect()
}

/// By default a secret service variable fails the job before any ECS call, naming it.
#[tokio::test]
async fn a_secret_service_variable_is_refused_before_any_call() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let driver = driver_with(options(&ecs), &launcher);
    let job = JobContext::new(secret_job(7));
    let failure = driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(
        err.to_string()
            .contains("POSTGRES_PASSWORD refers to the masked variable DB_PASSWORD"),
        "{err}"
    );
    assert!(!err.chain().contains(PASSWORD));
    assert_eq!(launcher.api_calls().total(), 0);
    assert!(moto.run_task_requests().is_empty());
}

/// With the secret store, the value is in no RunTask request, override, tag, task
/// definition or record: the job's own definition references a per-job secret, which
/// cleanup removes with the definition; a replay from the record is refused.
#[tokio::test]
async fn secret_service_variables_go_through_a_per_job_secret_only() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let base = base_with_execution_role(&moto).await;
    let options = secret_options(&base);
    let request = derived(&options, &secret_job(8));
    let spec = spec_on(&ecs, 8, &base, request);
    let task = launcher.launch(&spec).await.unwrap();

    // RunTask: the job's own family, the plain variable only.
    let run = moto.run_task_request(&task.id).unwrap();
    assert!(!run.to_string().contains(PASSWORD), "{run}");
    let overrides = overrides_of(&moto, &task.id);
    assert_eq!(
        env(&overrides, "service-1", "POSTGRES_DB").as_deref(),
        Some("test")
    );
    assert_eq!(env(&overrides, "service-1", "POSTGRES_PASSWORD"), None);
    let (arn, td, tags) = job_definition(&moto, &task.id, &base, &spec, PASSWORD).await;
    assert!(tags.iter().all(|(k, _)| k != DERIVED_HASH), "{tags:?}");
    let service = container(&td, "service-1");
    let secret = &service.secrets()[0];
    assert_eq!(secret.name(), "POSTGRES_PASSWORD");
    let value_from = secret.value_from();
    assert!(
        value_from.contains(":secret:fargate/fixture-8")
            && value_from.ends_with(":service-1.POSTGRES_PASSWORD::"),
        "{value_from}"
    );
    // The secret holds the value, under the container's and variable's names.
    let stored = secrets_manager(
        &moto,
        "GetSecretValue",
        serde_json::json!({"SecretId": "fargate/fixture-8"}),
    );
    let values: Value = serde_json::from_str(stored["SecretString"].as_str().unwrap()).unwrap();
    assert_eq!(values["service-1.POSTGRES_PASSWORD"], PASSWORD);
    // The record's form of the spec keeps the name, never the value.
    let recorded = serde_json::to_string(&spec).unwrap();
    assert!(!recorded.contains(PASSWORD) && recorded.contains("POSTGRES_PASSWORD"));
    // The shared derived family stays reusable: a job with the same image and services
    // but no secret reuses it (no registration).
    let registered = launcher.api_calls().get("RegisterTaskDefinition");
    assert_eq!(registered, 2, "the derived definition and the job's own");
    let mut plain = secret_job(13);
    plain.sensitive.clear();
    plain.services[0] = JobImage::new("postgres:16")
        .with_alias("db")
        .with_variable("POSTGRES_PASSWORD", "test")
        .with_variable("POSTGRES_DB", "test");
    let request = derived(&options, &plain);
    let other = spec_on(&ecs, 13, &base, request);
    let other_task = launcher.launch(&other).await.unwrap();
    assert_eq!(
        launcher.api_calls().get("RegisterTaskDefinition"),
        registered
    );
    let shared = task_definition_of(&moto, &other_task.id);
    assert_ne!(shared, arn);
    assert!(
        definition(&moto, &shared)
            .await
            .1
            .iter()
            .any(|(k, _)| k == DERIVED_HASH)
    );

    assert_replay_refused_and_released(&moto, &launcher, &recorded, &arn).await;
}

/// Without an execution role the task could not read the secret: a configuration error
/// before any secret is written.
#[tokio::test]
async fn secrets_without_an_execution_role_are_refused_before_any_secret() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let options = secret_options(&ecs.task_definition);
    let request = derived(&options, &secret_job(9));
    let spec = spec_with(&ecs, 9, request);
    let err = launcher.launch(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("no execution role"), "{err}");
    assert!(secret_names(&moto).is_empty());
    assert!(moto.run_task_requests().is_empty());
}

/// The driver's cleanup removes the job's secret; gc removes those of jobs past their
/// deadline whose cleanup never ran, and keeps the others.
#[tokio::test]
async fn cleanup_and_gc_remove_the_job_secrets() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let base = base_with_execution_role(&moto).await;
    let driver = driver_with(secret_options(&base), &launcher);
    let job = JobContext::new(secret_job(10));
    driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(secret_names(&moto), ["fargate/fixture-10"]);
    driver.cleanup(&job).await.unwrap();
    assert!(secret_names(&moto).is_empty());

    // Two jobs whose cleanup never runs: one past its deadline, one not.
    for (id, deadline) in [
        (11, std::time::SystemTime::now() - Duration::from_secs(3600)),
        (12, std::time::SystemTime::now() + Duration::from_secs(3600)),
    ] {
        let request = derived(&secret_options(&base), &secret_job(id));
        let mut spec = ecs.spec(id).with_deadline(deadline);
        spec.task_definition = base.clone();
        spec.images = Some(request);
        launcher.launch(&spec).await.unwrap();
    }
    let namespace = Namespace::parse("fixture").unwrap();
    let dry = launcher.prune_job_secrets(&namespace, true).await.unwrap();
    assert_eq!(dry.removed, ["fargate/fixture-11"]);
    assert_eq!(secret_names(&moto).len(), 2);
    let report = launcher.prune_job_secrets(&namespace, false).await.unwrap();
    assert_eq!(report.removed, ["fargate/fixture-11"]);
    assert_eq!(report.kept, 1);
    assert_eq!(secret_names(&moto), ["fargate/fixture-12"]);
    let gone = fargate_aws::job_secrets::job_family(&base, &ecs.spec(11).key);
    assert!(!definition_exists(&moto, &gone).await);
    // Another namespace's secrets are not gc's business.
    let other = Namespace::parse("other").unwrap();
    assert!(
        launcher
            .prune_job_secrets(&other, false)
            .await
            .unwrap()
            .removed
            .is_empty()
    );
}

// --- Private registries ([[Fargate.Images.Registry]]) --------------------------------------

const REGISTRY: &str = "registry.gitlab.example.com";
const REGISTRY_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci/gitlab-registry-AbCdEf";
/// The login of the administrator's deploy token for [`REGISTRY`].
const DEPLOY_USER: &str = "deploy-token-7";
const DEPLOY_PASSWORD: &str = "gldt-deploy-token-secret";

/// The administrator's secret with the deploy token's login, as an ARN.
fn deploy_token_secret(moto: &Moto) -> String {
    secrets_manager(
        moto,
        "CreateSecret",
        serde_json::json!({
            "Name": "ci/gitlab-registry",
            "SecretString": serde_json::json!({"username": DEPLOY_USER, "password": DEPLOY_PASSWORD}).to_string(),
        }),
    )["ARN"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn registry_options(base: &str, credentials: Option<&str>) -> DriverOptions {
    let mut images = ImagePolicy::allowing([format!("{REGISTRY}/*")], Vec::<String>::new());
    if let Some(arn) = credentials {
        images.registries = vec![fargate_core::options::RegistryCredentials::new(
            REGISTRY, arn,
        )];
    }
    options_with(base, images)
}

fn registry_job(id: u64) -> JobResponse {
    let mut r = response(id, "$CI_REGISTRY_IMAGE/builder:1", vec![]);
    r.variables = fargate_core::job::JobVariables::new()
        .with("CI_REGISTRY_IMAGE", format!("{REGISTRY}/group/app"));
    r
}

/// An image of a private registry without configured credentials: the fixture refuses the
/// pull as ECS does, and prepare fails with ECS's reason and a hint naming the registry and
/// the missing configuration (no SSH error); with the registry's credentials configured,
/// the derived definition's job container carries them as `repositoryCredentials` and the
/// task starts.
#[tokio::test]
async fn a_private_registry_needs_its_credentials_in_the_derived_definition() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    moto.set_private_registries(&[(REGISTRY, DEPLOY_USER, DEPLOY_PASSWORD)]);
    let base = base_with_execution_role(&moto).await;
    let deploy_token = deploy_token_secret(&moto);

    let driver = driver_with(registry_options(&base, None), &launcher);
    let failure = driver
        .prepare(
            &JobContext::new(registry_job(31)),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::TaskStopped, "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("could not pull an image: CannotPullContainerError:")
            && shown.contains("stop code TaskFailedToStart"),
        "{shown}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains(&format!(
            "comes from registry {REGISTRY}, for which this runner has no credentials"
        )) && hint.contains(&format!(
            "[[Fargate.Images.Registry]] Host = \"{REGISTRY}\""
        )),
        "{hint}"
    );
    assert!(!shown.to_ascii_lowercase().contains("ssh"), "{shown}");

    // Configured: the job container pulls with the secret, and the task starts.
    let options = registry_options(&base, Some(&deploy_token));
    let request = derived(&options, &registry_job(32));
    let spec = spec_on(&ecs, 32, &base, request);
    let task = launcher.launch(&spec).await.unwrap();
    let (td, _) = definition(&moto, &task_definition_of(&moto, &task.id)).await;
    let job = container(&td, fargate_core::images::JOB_CONTAINER);
    assert_eq!(
        job.image(),
        Some(&*format!("{REGISTRY}/group/app/builder:1"))
    );
    assert_eq!(
        job.repository_credentials()
            .map(|c| c.credentials_parameter()),
        Some(deploy_token.as_str())
    );
    let bundle = container(&td, fargate_core::images::BUNDLE_CONTAINER);
    assert!(
        bundle.repository_credentials().is_none(),
        "the task image needs none"
    );
    let status = launcher.describe(&task).await.unwrap();
    assert!(!status.state.is_terminal(), "{status:?}");
}

/// Registry credentials need the base's execution role: refused before any registration.
#[tokio::test]
async fn registry_credentials_without_an_execution_role_are_a_configuration_error() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, launcher) = setup().await;
    let options = registry_options(&ecs.task_definition, Some(REGISTRY_SECRET));
    let request = derived(&options, &registry_job(33));
    let err = launcher
        .launch(&spec_with(&ecs, 33, request))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("has no execution role"), "{err}");
}

// --- The job's own registry login ([Fargate.Images] JobRegistryCredentials) ---------------

/// The job token of job `id`, as GitLab sends it in the payload's `credentials`.
fn job_token(id: u64) -> String {
    format!("glcbt-64-job-token-of-{id}")
}

/// [`registry_job`] with its payload's registry login for [`REGISTRY`].
fn login_job(id: u64) -> JobResponse {
    let mut r = registry_job(id);
    r.registry_logins = vec![fargate_core::job::RegistryLogin::new(
        REGISTRY,
        "gitlab-ci-token",
        job_token(id),
    )];
    r
}

fn login_options(base: &str) -> DriverOptions {
    let mut options = registry_options(base, None);
    options.images.job_registry_credentials = vec![REGISTRY.to_owned()];
    options
}

fn login_spec(ecs: &MotoEcs, base: &str, id: u64) -> TaskSpec {
    spec_on(ecs, id, base, derived(&login_options(base), &login_job(id)))
}

/// A registry that accepts the job tokens of `ids`.
fn accept_job_tokens(moto: &Moto, ids: &[u64]) {
    let tokens: Vec<String> = ids.iter().map(|id| job_token(*id)).collect();
    let logins: Vec<(&str, &str, &str)> = tokens
        .iter()
        .map(|t| (REGISTRY, "gitlab-ci-token", t.as_str()))
        .collect();
    moto.set_private_registries(&logins);
}

/// Without the administrator's opt-in, the payload's login is not used: the pull fails
/// with ECS's error and the hint names the configuration; with it, the job's own
/// definition has the job container pull with a per-job secret holding the login, the
/// task starts, and the token is in no request, override, definition, tag or record;
/// cleanup's release removes the secret and the definition.
#[tokio::test]
async fn a_job_pulls_with_its_own_registry_login_through_a_per_job_secret() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    accept_job_tokens(&moto, &[40, 41]);
    let base = base_with_execution_role(&moto).await;

    // Not opted in: ECS's pull error, the hint naming both ways.
    let driver = driver_with(registry_options(&base, None), &launcher);
    let failure = driver
        .prepare(&JobContext::new(login_job(41)), &CancellationToken::new())
        .await
        .unwrap_err();
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::TaskStopped, "{err}");
    assert!(
        err.to_string().contains("CannotPullContainerError"),
        "{err}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains(&format!(
            "[Fargate.Images] JobRegistryCredentials = [\"{REGISTRY}\"]"
        )),
        "{hint}"
    );
    assert!(secret_names(&moto).is_empty());

    // Opted in.
    let spec = login_spec(&ecs, &base, 40);
    let token = job_token(40);
    let task = launcher.launch(&spec).await.unwrap();
    let status = launcher.describe(&task).await.unwrap();
    assert!(!status.state.is_terminal(), "{status:?}");
    let run = moto.run_task_request(&task.id).unwrap();
    assert!(!run.to_string().contains(&token), "{run}");
    let (arn, td, _) = job_definition(&moto, &task.id, &base, &spec, &token).await;
    let job = container(&td, fargate_core::images::JOB_CONTAINER);
    let parameter = job
        .repository_credentials()
        .map(|c| c.credentials_parameter())
        .unwrap();
    assert!(
        parameter.contains(":secret:fargate/fixture-40/registry-1"),
        "{parameter}"
    );
    let stored = secrets_manager(
        &moto,
        "GetSecretValue",
        serde_json::json!({"SecretId": parameter}),
    );
    let login: Value = serde_json::from_str(stored["SecretString"].as_str().unwrap()).unwrap();
    assert_eq!(
        login,
        serde_json::json!({"username": "gitlab-ci-token", "password": token})
    );
    let recorded = serde_json::to_string(&spec).unwrap();
    assert!(!recorded.contains(&token) && recorded.contains(REGISTRY));
    assert_eq!(
        launcher.api_calls().get("RegisterTaskDefinition"),
        2,
        "the derived definition and the job's own"
    );

    assert_replay_refused_and_released(&moto, &launcher, &recorded, &arn).await;
}

/// Without an execution role ECS could not read the login: a configuration error before
/// any secret is written.
#[tokio::test]
async fn job_logins_without_an_execution_role_are_refused_before_any_secret() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let err = launcher
        .launch(&login_spec(&ecs, &ecs.task_definition, 48))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.to_string()
            .contains("images pull with the job's registry login, and the task definition"),
        "{err}"
    );
    assert!(secret_names(&moto).is_empty());
    assert!(moto.run_task_requests().is_empty());
}

/// The fixture refuses what ECS refuses: a per-job secret that no longer exists (the
/// agent cannot read the registry auth) and a login the registry does not accept (a job
/// token of another job).
#[tokio::test]
async fn a_deleted_or_wrong_login_fails_the_pull_as_on_ecs() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    accept_job_tokens(&moto, &[42]);
    let base = base_with_execution_role(&moto).await;

    // Job 43's token is not one the registry accepts: a refused pull.
    let task = launcher.launch(&login_spec(&ecs, &base, 43)).await.unwrap();
    let status = launcher.describe(&task).await.unwrap();
    let stop = status.stop.clone().unwrap();
    assert!(
        stop.reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("CannotPullContainerError")
            && stop
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("401 Unauthorized"),
        "{stop:?}"
    );
    assert!(stop.pull_failed.is_some(), "{stop:?}");

    // Job 42's definition run again once its secret is deleted: the registry auth cannot
    // be read.
    let spec = login_spec(&ecs, &base, 42);
    let task = launcher.launch(&spec).await.unwrap();
    assert!(!launcher.describe(&task).await.unwrap().state.is_terminal());
    let arn = task_definition_of(&moto, &task.id);
    secrets_manager(
        &moto,
        "DeleteSecret",
        serde_json::json!({"SecretId": "fargate/fixture-42/registry-1", "ForceDeleteWithoutRecovery": true}),
    );
    let mut rerun = ecs.spec(47);
    rerun.task_definition = arn.clone();
    let again = launcher.launch(&rerun).await.unwrap();
    let described = moto
        .ecs_client()
        .describe_tasks()
        .cluster(&ecs.cluster)
        .tasks(&again.id)
        .send()
        .await
        .unwrap();
    let stopped = &described.tasks()[0];
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert!(
        stopped
            .stopped_reason()
            .unwrap_or_default()
            .starts_with("ResourceInitializationError: unable to pull secrets or registry auth"),
        "{stopped:?}"
    );
    // The driver reports it as a failed pull (with the registry's hint).
    let stop = launcher.describe(&again).await.unwrap().stop.unwrap();
    assert_eq!(stop.pull_failed, Some(Vec::new()), "{stop:?}");
    launcher.release(&spec).await.unwrap();
}

/// The driver's cleanup removes the job's login secret and definition; gc removes those
/// of a job past its deadline whose cleanup never ran, and keeps a running job's.
#[tokio::test]
async fn cleanup_and_gc_remove_the_job_login_secrets() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    accept_job_tokens(&moto, &[44, 45, 46]);
    let base = base_with_execution_role(&moto).await;
    let driver = driver_with(login_options(&base), &launcher);
    let job = JobContext::new(login_job(44));
    driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(secret_names(&moto), ["fargate/fixture-44/registry-1"]);
    driver.cleanup(&job).await.unwrap();
    assert!(secret_names(&moto).is_empty());
    let family = fargate_aws::job_secrets::job_family(&base, &ecs.spec(44).key);
    assert!(!definition_exists(&moto, &family).await);

    // Two jobs whose cleanup never runs (killed): one past its deadline, one not.
    for (id, deadline) in [
        (45, std::time::SystemTime::now() - Duration::from_secs(3600)),
        (46, std::time::SystemTime::now() + Duration::from_secs(3600)),
    ] {
        let spec = login_spec(&ecs, &base, id).with_deadline(deadline);
        launcher.launch(&spec).await.unwrap();
    }
    let namespace = Namespace::parse("fixture").unwrap();
    let report = launcher.prune_job_secrets(&namespace, false).await.unwrap();
    assert_eq!(report.removed, ["fargate/fixture-45/registry-1"]);
    assert_eq!(report.kept, 1);
    assert_eq!(secret_names(&moto), ["fargate/fixture-46/registry-1"]);
    let gone = fargate_aws::job_secrets::job_family(&base, &ecs.spec(45).key);
    assert!(!definition_exists(&moto, &gone).await);
    let kept = fargate_aws::job_secrets::job_family(&base, &ecs.spec(46).key);
    assert!(definition_exists(&moto, &kept).await);
}

// --- ARM64 per job (FARGATE_CPU_ARCHITECTURE) -----------------------------------------------

/// A job's architecture goes into its derived definition's runtime platform, in a family of
/// its own (the same images on x86 keep theirs), and the task reports it: the summary's
/// cost estimate takes the ARM price.
#[tokio::test]
async fn an_arm64_job_gets_a_derived_definition_of_its_architecture() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let r = response(41, "rust:1.85", vec![]);
    let x86 = launcher
        .launch(&spec_with(&ecs, 41, request(&ecs, &r)))
        .await
        .unwrap();
    let mut spec = spec_with(&ecs, 42, request(&ecs, &r));
    spec.shape.cpu_architecture = Some("ARM64".into());
    let arm = launcher.launch(&spec).await.unwrap();

    let x86_td = task_definition_of(&moto, &x86.id);
    let arm_td = task_definition_of(&moto, &arm.id);
    let (x86_def, _) = definition(&moto, &x86_td).await;
    let (arm_def, _) = definition(&moto, &arm_td).await;
    assert_ne!(
        x86_def.family(),
        arm_def.family(),
        "one family per architecture"
    );
    assert_eq!(
        arm_def
            .runtime_platform()
            .and_then(|p| p.cpu_architecture())
            .map(|a| a.as_str()),
        Some("ARM64")
    );
    assert_eq!(
        arm_def
            .runtime_platform()
            .and_then(|p| p.operating_system_family())
            .map(|a| a.as_str()),
        Some("LINUX")
    );
    assert_ne!(
        x86_def
            .runtime_platform()
            .and_then(|p| p.cpu_architecture())
            .map(|a| a.as_str()),
        Some("ARM64")
    );
    let details = launcher.describe(&arm).await.unwrap().details;
    assert!(details.is_arm(), "{details:?}");
    let prices = fargate_aws::fargate_prices();
    let estimate = prices
        .estimate(&details, Duration::from_secs(3600))
        .expect("an estimate");
    assert!(estimate.key.arm, "{estimate:?}");

    // The same job again reuses its architecture's definition.
    let mut again = spec_with(&ecs, 43, request(&ecs, &r));
    again.shape.cpu_architecture = Some("ARM64".into());
    let again = launcher.launch(&again).await.unwrap();
    assert_eq!(task_definition_of(&moto, &again.id), arm_td);
}

// --- Building images without privileges (docs/images.md, kaniko) ---------------------------

/// The kaniko recipe of docs/images.md: the job's `image:` is kaniko's debug image with its
/// entry point cleared; its derived definition must give the job container what kaniko
/// needs on Fargate (the image's own user, root; a writable root file system; no privileged
/// mode, which Fargate refuses; the builds directory the helper checked the sources out to)
/// and no credentials for the public gcr.io; the job's scripts run in it, the checkout in
/// the helper.
#[tokio::test]
async fn a_kaniko_job_gets_what_the_recipe_needs() {
    use fargate_core::images::{BUNDLE_ENTRY_POINT, StageContainer, stage_container};
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, launcher) = setup().await;
    let options = options_with(
        &ecs.task_definition,
        ImagePolicy::allowing(
            ["gcr.io/kaniko-project/executor:debug"],
            Vec::<String>::new(),
        ),
    );
    let mut r = JobResponse::new(61);
    r.image = Some(
        JobImage::new("gcr.io/kaniko-project/executor:${KANIKO_TAG}")
            .with_entrypoint(vec![String::new()]),
    );
    r.variables = fargate_core::job::JobVariables::new().with("KANIKO_TAG", "debug");
    let request = derived(&options, &r);
    let task = launcher
        .launch(&spec_with(&ecs, 61, request))
        .await
        .unwrap();
    let (td, _) = definition(&moto, &task_definition_of(&moto, &task.id)).await;
    let job = container(&td, fargate_core::images::JOB_CONTAINER);
    assert_eq!(job.image(), Some("gcr.io/kaniko-project/executor:debug"));
    assert_eq!(
        job.entry_point(),
        BUNDLE_ENTRY_POINT,
        "the bundle's SSH server"
    );
    assert!(
        job.command().is_empty(),
        "kaniko's own entry point never runs"
    );
    assert_eq!(job.user(), None, "the image's user: root, as kaniko needs");
    assert_ne!(
        job.privileged(),
        Some(true),
        "Fargate has no privileged mode"
    );
    assert_ne!(
        job.readonly_root_filesystem(),
        Some(true),
        "kaniko unpacks into /"
    );
    assert!(job.repository_credentials().is_none(), "gcr.io is public");
    let builds: Vec<_> = job
        .mount_points()
        .iter()
        .filter(|m| m.source_volume() == Some(fargate_core::images::BUILDS_VOLUME))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "the checkout is shared with the job container"
    );
    let helper = container(&td, CONTAINER);
    assert!(
        helper
            .mount_points()
            .iter()
            .any(|m| m.source_volume() == builds[0].source_volume()
                && m.container_path() == builds[0].container_path()),
        "the helper sees the same builds directory"
    );
    assert_eq!(stage_container("get_sources"), StageContainer::Helper);
    assert_eq!(stage_container("step_script"), StageContainer::Job);
    assert_eq!(stage_container("build_script"), StageContainer::Job);
}
