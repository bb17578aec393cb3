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
    assert_eq!(project.project, "group/app-7", "the path from the holder's record");
    assert_eq!((project.limit, project.free, project.counted), (Some(1), Some(0), 1));
    assert_eq!(project.rule.as_deref(), Some("one-at-a-time"));
    assert!(project.at_limit());
    let [holder] = project.holders.as_slice() else {
        panic!("one holder: {project:?}");
    };
    assert_eq!((holder.job.as_str(), holder.job_id), ("ci-1", Some(1)));
    assert_eq!(holder.standing, crate::metadata::SlotStanding::Time);
    assert_eq!(holder.phase, Some(Phase::Ready));
    let text = report.to_string();
    assert!(text.contains("project group/app-7 (id 7): 1 of 1 slots held, 0 free"), "{text}");
    assert!(text.contains("job 1 (ci-1)"), "{text}");
    assert!(text.ends_with("1 project counter(s) in namespace ci, 1 at its limit"), "{text}");

    r.driver.cleanup(&job_of(1, 7)).await.unwrap();
    let report = r.driver.project_slots().await.unwrap();
    let [project] = report.projects.as_slice() else {
        panic!("the counter stays: {report:?}");
    };
    assert_eq!((project.counted, project.free), (0, Some(1)));
    assert!(project.holders.is_empty(), "{project:?}");
}
