//! Capacity fallbacks: Spot to on-demand, reclaimed tasks remembered, refused shapes.

use super::*;

/// A job whose payload names its project, commit and name (what interruption notes and
/// project rules use), with a Spot profile falling back to on-demand as its default.
fn spot_rig() -> Rig {
    use crate::options::{CapacityProfile, ShapePolicy};
    use crate::shape::CapacityProvider;
    let mut c = config();
    c.shape = ShapePolicy {
        capacity_profiles: vec![
            CapacityProfile::new("spot", vec![CapacityProvider::new("FARGATE_SPOT")])
                .with_fallback("on-demand"),
            CapacityProfile::new("on-demand", vec![CapacityProvider::new("FARGATE")]),
        ],
        default_capacity: Some("spot".into()),
        ..ShapePolicy::default()
    };
    let mut r = rig_with(c, BootPlan::default());
    r.driver = r.driver.clone().with_interruption_memory(r.store.clone());
    r.job = spot_job(1);
    r
}

fn spot_job(id: u64) -> JobContext {
    let payload = format!(
        r#"{{"id": {id}, "job_info": {{"name": "compile", "project_id": 3}},
            "git_info": {{"repo_url": "https://h.example/g/p.git", "sha": "c0ffee"}}}}"#
    );
    JobContext::new(JobResponse::parse(payload.as_bytes()).unwrap())
}

fn capacity_of(spec: &TaskSpec) -> String {
    spec.shape.capacity.as_ref().unwrap().profile.clone()
}

#[tokio::test]
async fn no_spot_capacity_falls_back_to_on_demand_within_the_same_prepare() {
    let r = spot_rig();
    r.launcher
        .faults
        .inject_next(Op::Launch, Fault::Fail(ErrorKind::CapacityUnavailable));
    let report = r.prepare().await.unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "on-demand");
    // One refused attempt on Spot (not retried there), then one on on-demand.
    assert_eq!(r.launcher.faults.calls(Op::Launch), 2);
    let tasks = r.launcher.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(capacity_of(&tasks[0].1.spec), "on-demand");
    // The record replays what was launched last.
    let record = r.store.get(&r.key()).await.unwrap().unwrap();
    assert_eq!(capacity_of(record.spec.as_ref().unwrap()), "on-demand");
}

#[tokio::test]
async fn without_a_fallback_capacity_errors_are_retried_as_before() {
    let mut r = rig();
    r.launcher
        .faults
        .inject_next(Op::Launch, Fault::Fail(ErrorKind::CapacityUnavailable));
    let mut c = config();
    c.retry = crate::RetryPolicy::default()
        .with_backoff(Duration::from_millis(1), Duration::from_millis(1));
    r.driver = Driver::new(c, r.launcher.clone(), r.shell.clone(), r.store.clone());
    let report = r.prepare().await.unwrap();
    assert_eq!(report.shape, crate::TaskShape::default());
    assert_eq!(r.launcher.faults.calls(Op::Launch), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reclaimed_task_makes_the_retry_of_the_same_job_use_on_demand() {
    let r = spot_rig();
    let report = r.prepare().await.unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "spot");
    r.launcher
        .reclaim(&report.task, "Your Spot Task was interrupted.");
    let (res, _) = r.run("sleep 3600").await;
    assert_eq!(
        system_error(res.unwrap_err()).kind(),
        ErrorKind::TaskStopped
    );
    r.driver.cleanup(&r.job).await.unwrap();

    // GitLab's retry: another job id, same project, commit and name.
    let mut retry = spot_rig();
    retry.job = spot_job(2);
    retry.driver = Driver::new(
        retry.driver.options().clone(),
        retry.launcher.clone(),
        retry.shell.clone(),
        r.store.clone(),
    )
    .with_interruption_memory(r.store.clone());
    let report = retry.prepare().await.unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "on-demand");

    // Another job name of the same pipeline still starts on Spot.
    let payload = br#"{"id": 3, "job_info": {"name": "lint", "project_id": 3},
        "git_info": {"sha": "c0ffee"}}"#;
    let mut other = spot_rig();
    other.job = JobContext::new(JobResponse::parse(payload).unwrap());
    other.driver = other
        .driver
        .clone()
        .with_interruption_memory(r.store.clone());
    let report = other.prepare().await.unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "spot");
}

#[tokio::test]
async fn a_refused_shape_is_a_build_failure_before_any_launch() {
    let r = rig();
    let job = job(1).with_variable(crate::driver::CPU_VARIABLE, "4096");
    let failure = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(failure.class(), FailureClass::Script);
    assert_eq!(failure.error().unwrap().kind(), ErrorKind::NotAllowed);
    assert_eq!(r.launcher.faults.calls(Op::Launch), 0);
    assert!(r.store.get(&r.key()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_reclaim_found_when_ssh_breaks_is_remembered_too() {
    let r = spot_rig();
    let report = r.prepare().await.unwrap();
    // Spot's SIGTERM ends sshd: the connection breaks before any watch check.
    r.launcher
        .reclaim(&report.task, "Your Spot Task was interrupted.");
    r.shell
        .faults
        .inject_next(Op::Run, Fault::Fail(ErrorKind::Unreachable));
    let (res, _) = r.run("echo hi").await;
    let err = system_error(res.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::TaskStopped);
    assert!(
        err.message().contains("Your Spot Task was interrupted."),
        "{err}"
    );
    r.driver.cleanup(&r.job).await.unwrap();
    let mut retry = spot_rig();
    retry.job = spot_job(2);
    retry.driver = retry
        .driver
        .clone()
        .with_interruption_memory(r.store.clone());
    let report = retry.prepare().await.unwrap();
    assert_eq!(report.shape.capacity.unwrap().profile, "on-demand");
}
