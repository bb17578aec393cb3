//! Per-project concurrency limits (project rule `MaxConcurrentJobs`): the job over the
//! limit waits and starts when one ends; the project is `JOB_RESPONSE_FILE`'s, so job
//! variables cannot move a job to another project's count.

use super::*;
use crate::options::{ProjectRule, ShapePolicy};

/// A driver whose project `group/app` (id 7) runs at most one job at a time.
fn limited_config() -> DriverOptions {
    let mut rule = ProjectRule::new("one-at-a-time");
    rule.project_ids = vec![7];
    rule.max_concurrent_jobs = Some(1);
    rule.slot_wait = Some(Duration::from_secs(600));
    DriverOptions::builder()
        .namespace(Namespace::parse("ci").unwrap())
        .task_definition("ci-coordinator:1")
        .shape_policy(ShapePolicy {
            project_rules: vec![rule],
            ..ShapePolicy::default()
        })
        .build()
        .unwrap()
}

/// Job `id` of project `project_id` as `JOB_RESPONSE_FILE` names it.
fn job_of(id: u64, project_id: u64) -> JobContext {
    let mut response = JobResponse::new(id);
    response.project_path = Some(format!("group/app-{project_id}"));
    response.project_id = Some(project_id);
    JobContext::new(response).with_variable("CI_JOB_ID", id.to_string())
}

fn launched(r: &Rig) -> usize {
    r.launcher.tasks().len()
}

#[tokio::test(start_paused = true)]
async fn the_job_over_the_limit_waits_and_starts_when_one_ends() {
    let r = rig_with(limited_config(), BootPlan::default());
    let first = job_of(1, 7);
    r.driver
        .prepare(&first, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(launched(&r), 1);

    let (second, cancel) = (job_of(2, 7), CancellationToken::new());
    let waiting = r.driver.prepare(&second, &cancel);
    tokio::pin!(waiting);
    // Virtual time: the second job asks every SLOT_POLL and launches nothing.
    tokio::select! {
        r = &mut waiting => panic!("the second job did not wait: {r:?}"),
        () = tokio::time::sleep(SLOT_NOTE_EVERY * 4) => {}
    }
    assert_eq!(launched(&r), 1, "the second job launched over the limit");

    // Another project is not held up.
    r.driver
        .prepare(&job_of(3, 8), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(launched(&r), 2);

    r.driver.cleanup(&first).await.unwrap();
    waiting.await.unwrap();
    assert_eq!(
        launched(&r),
        3,
        "the second job started once the first ended"
    );
}

#[tokio::test(start_paused = true)]
async fn forged_project_variables_do_not_escape_the_limit() {
    let r = rig_with(limited_config(), BootPlan::default());
    r.driver
        .prepare(&job_of(1, 7), &CancellationToken::new())
        .await
        .unwrap();
    // Project 7's job claims, in its variables, to be project 8 (which has no limit).
    let forged = job_of(2, 7)
        .with_variable("CI_PROJECT_ID", "8")
        .with_variable("CI_PROJECT_PATH", "group/app-8");
    let cancel = CancellationToken::new();
    tokio::select! {
        r = r.driver.prepare(&forged, &cancel) => panic!("the forged job did not wait: {r:?}"),
        () = tokio::time::sleep(SLOT_NOTE_EVERY * 2) => {}
    }
    assert_eq!(launched(&r), 1, "a forged project escaped its limit");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_waits_too_long_fails_as_a_system_failure_with_a_hint() {
    let r = rig_with(limited_config(), BootPlan::default());
    r.driver
        .prepare(&job_of(1, 7), &CancellationToken::new())
        .await
        .unwrap();
    let failure = r
        .driver
        .prepare(&job_of(2, 7), &CancellationToken::new())
        .await
        .unwrap_err();
    let err = system_error(failure);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string()
            .contains("project group/app-7 had 1 jobs running (limit 1"),
        "{err}"
    );
    assert!(err.hint().is_some_and(|h| h.contains("MaxConcurrentJobs")));
    assert_eq!(launched(&r), 1);
    // Its slot was never taken: the first job's end frees the project.
    r.driver.cleanup(&job_of(1, 7)).await.unwrap();
    r.driver
        .prepare(&job_of(3, 7), &CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_listing_names_who_holds_a_full_projects_slots() {
    let r = rig_with(limited_config(), BootPlan::default());
    let empty = r.driver.project_slots().await.unwrap();
    assert!(empty.projects.is_empty(), "{empty:?}");
    r.driver
        .prepare(&job_of(1, 7), &CancellationToken::new())
        .await
        .unwrap();
    // A project no rule limits takes no slot, and is not listed.
    r.driver
        .prepare(&job_of(3, 8), &CancellationToken::new())
        .await
        .unwrap();
    let report = r.driver.project_slots().await.unwrap();
    assert_eq!(report.namespace, "ci");
    let [project] = report.projects.as_slice() else {
        panic!("one limited project: {report:?}");
    };
    assert_eq!(project.counter, "ci.project-7");
    assert_eq!(
        project.project, "group/app-7",
        "the path from the holder's record"
    );
    assert_eq!(
        (project.limit, project.free, project.counted),
        (Some(1), Some(0), 1)
    );
    assert_eq!(project.rule.as_deref(), Some("one-at-a-time"));
    assert!(project.at_limit());
    let [holder] = project.holders.as_slice() else {
        panic!("one holder: {project:?}");
    };
    assert_eq!((holder.job.as_str(), holder.job_id), ("ci-1", Some(1)));
    assert_eq!(holder.standing, crate::metadata::SlotStanding::Time);
    assert_eq!(holder.phase, Some(Phase::Ready));
    let text = report.to_string();
    assert!(
        text.contains("project group/app-7 (id 7): 1 of 1 slots held, 0 free"),
        "{text}"
    );
    assert!(text.contains("job 1 (ci-1)"), "{text}");
    assert!(
        text.ends_with("1 project(s) of namespace ci hold slots, 1 at its limit"),
        "{text}"
    );

    r.driver.cleanup(&job_of(1, 7)).await.unwrap();
    let report = r.driver.project_slots().await.unwrap();
    assert!(
        report.projects.is_empty(),
        "all its slots are free: {report:?}"
    );
}

#[tokio::test]
async fn a_limit_that_depends_on_a_path_no_record_names_is_not_guessed() {
    // `group/*` at most 1, id 7 at most 5: a counter of id 7 whose only holder has no
    // record (a prepare that has not written it) cannot tell which applies.
    let mut by_path = ProjectRule::new("by-path");
    by_path.projects = vec!["group/*".into()];
    by_path.max_concurrent_jobs = Some(1);
    let mut by_id = ProjectRule::new("by-id");
    by_id.project_ids = vec![7];
    by_id.max_concurrent_jobs = Some(5);
    let config = DriverOptions::builder()
        .namespace(Namespace::parse("ci").unwrap())
        .task_definition("ci-coordinator:1")
        .shape_policy(ShapePolicy {
            project_rules: vec![by_path, by_id],
            ..ShapePolicy::default()
        })
        .build()
        .unwrap();
    let r = rig_with(config, BootPlan::default());
    let holder = JobKey::parse("ci-9").unwrap();
    let ttl = Duration::from_secs(600);
    r.store
        .acquire_slot("ci.project-7", &holder, 5, ttl)
        .await
        .unwrap();
    // Another namespace's counter is not listed.
    r.store
        .acquire_slot("cd.project-7", &holder, 5, ttl)
        .await
        .unwrap();
    let report = r.driver.project_slots().await.unwrap();
    let [project] = report.projects.as_slice() else {
        panic!("one project: {report:?}");
    };
    assert_eq!(
        (project.project_id, project.project_path.as_deref()),
        (Some(7), None)
    );
    assert!(!project.limit_known, "{project:?}");
    assert_eq!(
        (project.limit, project.free, project.counted),
        (None, None, 1)
    );
    assert_eq!(project.holders[0].job_id, Some(9));
    assert_eq!(project.holders[0].phase, None);
    assert!(
        report
            .to_string()
            .contains("project id 7: 1 slots held, limit not known"),
        "{report}"
    );

    // Once the holder's record names the path, the lower limit applies.
    let mut response = JobResponse::new(9);
    response.project_path = Some("group/app-7".into());
    response.project_id = Some(7);
    let identity = JobIdentity::from_response(Namespace::parse("ci").unwrap(), &response);
    r.store
        .put(&JobRecord::new(
            identity,
            crate::shell::PrivateKey::new("k".into()),
        ))
        .await
        .unwrap();
    let report = r.driver.project_slots().await.unwrap();
    let project = &report.projects[0];
    assert!(project.limit_known);
    assert_eq!(project.project, "group/app-7");
    assert_eq!((project.limit, project.free), (Some(1), Some(0)));
    assert_eq!(project.rule.as_deref(), Some("by-path"));
}
