//! Keeping a failed job's task for debugging (project rule `KeepFailedFor`): only for a
//! script failure of a user step of a trusted project that opted in; released early or by
//! its time.

use super::*;
use crate::options::{ProjectRule, ShapePolicy};
use crate::testing::Determinism;

const KEEP: Duration = Duration::from_secs(1800);

/// A driver whose project `infra/site` keeps failed tasks for 30 minutes.
fn keep_config() -> DriverOptions {
    let mut rule = ProjectRule::new("debug");
    rule.projects = vec!["infra/site".into()];
    rule.keep_failed_for = Some(KEEP);
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

/// Job `id` of `project` as `JOB_RESPONSE_FILE` names it.
fn job_of(id: u64, project: &str) -> JobContext {
    let mut response = JobResponse::new(id);
    response.project_path = Some(project.into());
    response.project_id = Some(7);
    JobContext::new(response).with_variable("CI_JOB_ID", id.to_string())
}

fn keep_rig(job: JobContext) -> (Rig, Arc<Recorder>) {
    let mut r = rig_with(keep_config(), BootPlan::default());
    let recorder = Arc::new(Recorder::default());
    r.driver = r.driver.clone().with_observer(recorder.clone());
    r.job = job;
    (r, recorder)
}

impl Rig {
    async fn run_stage(&self, stage: &str, s: &str) -> (std::result::Result<(), Failure>, String) {
        let mut out = CapturedOutput::default();
        let r = self
            .driver
            .run(
                &self.job,
                stage,
                script(s),
                &mut out,
                &CancellationToken::new(),
            )
            .await;
        (r, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The deadline scripts the shell ran (a kept task's self-stop).
    fn deadline_writes(&self) -> Vec<String> {
        self.shell
            .runs()
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.script).into_owned())
            .filter(|s| s.contains("fargate-deadline"))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_of_an_opted_in_project_keeps_its_task_until_its_time() {
    let _clock = Determinism::install(27);
    let (r, events) = keep_rig(job_of(41, "infra/site"));
    r.prepare().await.unwrap();
    let task = r.launcher.running()[0].clone();
    let (_, fake) = &r.launcher.tasks()[0];
    assert!(fake.spec.shape.debug_access, "started with shell access");

    let (res, out) = r.run_stage("build_script", "echo oops; exit 3").await;
    assert_eq!(script_failure(res.unwrap_err()).0, 3);
    assert!(
        out.starts_with("oops\n"),
        "the message follows the output: {out}"
    );
    for line in [
        "its task stays up for 30 min after the job ends, for debugging (project rule \"debug\")",
        "secrets",
        &format!("    fake-exec --task {task} --container ci-coordinator /bin/sh\n"),
        "    fargate release 41\n",
        &format!("    fake-stop --task {task}\n"),
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert_eq!(
        r.store.peek(&r.key()).unwrap().failed_step.as_deref(),
        Some("build_script")
    );
    // after_script says nothing; the last run stage says it again, last.
    let (_, out) = r.run_stage("after_script", "echo after").await;
    assert_eq!(out, "after\n");
    let (_, out) = r.run_stage(crate::driver::LAST_RUN_STAGE, "true").await;
    assert!(out.contains("fargate release 41"), "{out}");

    let now = crate::world::now();
    let report = r.driver.cleanup(&r.job).await.unwrap();
    let kept = report.kept.clone().expect("the task is kept");
    assert!(report.stopped.is_empty(), "{report:?}");
    // Its summary (and so its cost estimate) counts the time it is kept.
    assert_eq!(report.summary.as_ref().unwrap().kept_for, Some(KEEP));
    let until = crate::world::whole_seconds_after(now, KEEP);
    assert_eq!(kept.until, crate::world::unix_seconds(until));
    assert_eq!(kept.task, task);
    assert_eq!(kept.failed_step.as_deref(), Some("build_script"));
    assert_eq!(r.launcher.running(), std::slice::from_ref(&task));
    // The record keeps it owned; its label and its self-stop have the new deadline.
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.phase, Phase::Kept);
    assert_eq!(record.kept_until, Some(kept.until));
    assert_eq!(r.launcher.tasks()[0].1.deadline, Some(until));
    let writes = r.deadline_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].contains(&format!("printf '%s\\n' {} >", kept.until)),
        "{}",
        writes[0]
    );
    assert!(events.0.lock().unwrap().contains(&"kept".to_owned()));
    // Listed, with how long it has left.
    let listed = r.driver.kept_tasks().await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&kept));
    assert_eq!(listed[0].remaining(crate::world::now()), KEEP);

    // gc keeps it until its time and stops it after.
    let options = crate::gc::GcOptions::default();
    tokio::time::advance(KEEP - Duration::from_secs(1)).await;
    let gc = crate::gc::collect(&*r.launcher, &*r.store, r.driver.namespace(), &options)
        .await
        .unwrap();
    assert_eq!(gc.tasks[0].action, crate::gc::Action::Kept, "{gc}");
    tokio::time::advance(Duration::from_secs(1)).await;
    let gc = crate::gc::collect(&*r.launcher, &*r.store, r.driver.namespace(), &options)
        .await
        .unwrap();
    assert_eq!(gc.tasks[0].action, crate::gc::Action::Removed, "{gc}");
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn successful_cancelled_and_system_failed_jobs_are_stopped_as_usual() {
    // Success.
    let (r, _) = keep_rig(job_of(42, "infra/site"));
    r.prepare().await.unwrap();
    let (res, out) = r.run_stage("build_script", "echo fine").await;
    res.unwrap();
    assert_eq!(out, "fine\n");
    // A failed after_script does not fail the job.
    let (_, out) = r.run_stage("after_script", "exit 1").await;
    assert!(!out.contains("fargate release"), "{out}");
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert!(report.kept.is_none() && report.stopped.len() == 1);
    r.assert_clean();

    // Cancelled while its script runs.
    let (r, _) = keep_rig(job_of(43, "infra/site"));
    r.prepare().await.unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        trigger.cancel();
    });
    let mut out = CapturedOutput::default();
    let res = r
        .driver
        .run(
            &r.job,
            "build_script",
            script("sleep 600"),
            &mut out,
            &cancel,
        )
        .await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::Cancelled);
    assert!(out.stdout.is_empty());
    assert_eq!(r.store.peek(&r.key()).unwrap().failed_step, None);
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert!(report.kept.is_none());
    r.assert_clean();

    // The task stopped under the script (a system failure): nothing to keep.
    let (r, _) = keep_rig(job_of(44, "infra/site"));
    r.prepare().await.unwrap();
    let task = r.launcher.running()[0].clone();
    r.launcher.kill(&task, "Essential container in task exited");
    r.shell.set_down(IpAddr::V4(Ipv4Addr::LOCALHOST), true);
    let (res, out) = r.run_stage("build_script", "echo hi").await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::TaskStopped);
    assert!(!out.contains("fargate release"), "{out}");
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_project_that_only_claims_to_be_opted_in_is_stopped_as_usual() {
    // GitLab names another project; the pipeline's variables claim the opted-in one.
    let job = job_of(45, "app/web")
        .with_variable("CI_PROJECT_PATH", "infra/site")
        .with_variable("CI_PROJECT_ID", "7")
        .with_variable("CI_PROJECT_URL", "https://gitlab.example/infra/site");
    let (r, _) = keep_rig(job);
    r.prepare().await.unwrap();
    assert!(!r.launcher.tasks()[0].1.spec.shape.debug_access);
    let (res, out) = r.run_stage("build_script", "exit 1").await;
    script_failure(res.unwrap_err());
    assert!(out.is_empty(), "{out}");
    assert_eq!(r.store.peek(&r.key()).unwrap().failed_step, None);
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert!(report.kept.is_none());
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_task_that_cannot_be_told_its_new_deadline_is_stopped() {
    let (r, _) = keep_rig(job_of(46, "infra/site"));
    r.prepare().await.unwrap();
    let (res, _) = r.run_stage("build_script", "exit 2").await;
    script_failure(res.unwrap_err());
    // SSH to the task fails from now on: the keep cannot reach its self-stop.
    r.shell.set_down(IpAddr::V4(Ipv4Addr::LOCALHOST), true);
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert!(report.kept.is_none());
    assert_eq!(report.stopped.len(), 1);
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn release_stops_only_a_kept_task() {
    let (r, events) = keep_rig(job_of(47, "infra/site"));
    r.prepare().await.unwrap();
    // A job that runs is not released: its cleanup stops its task.
    let err = r.driver.release_kept(47).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(r.launcher.running().len(), 1);
    let err = r.driver.release_kept(99).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let (res, _) = r.run_stage("step_release", "exit 1").await;
    script_failure(res.unwrap_err());
    assert!(r.driver.cleanup(&r.job).await.unwrap().kept.is_some());
    let stopped = r.driver.release_kept(47).await.unwrap();
    assert_eq!(stopped.len(), 1);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .contains(&"stopped by release".to_owned())
    );
    r.assert_clean();
    assert!(r.driver.kept_tasks().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_job_that_may_be_kept_never_takes_a_warm_task() {
    let mut config = keep_config();
    config.pool = crate::options::WarmPoolOptions {
        size: 1,
        ..crate::options::WarmPoolOptions::default()
    };
    let mut r = rig_with(config, BootPlan::default());
    r.job = job_of(48, "infra/site");
    let filled = r.driver.pool_fill(true).await.unwrap();
    let warm = TaskRef::new(filled.started[0].clone());
    r.prepare().await.unwrap();
    // The job launched its own task, with shell access; the warm one still idles.
    let record = r.store.peek(&r.key()).unwrap();
    assert_ne!(record.task.as_ref(), Some(&warm));
    assert!(record.spec.unwrap().shape.debug_access);
    assert!(r.launcher.running().contains(&warm));
}
