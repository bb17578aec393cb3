//! Cleanup: stopping the job's tasks exactly once, retries, and what was never recorded.

use super::*;

#[tokio::test(start_paused = true)]
async fn throttled_stops_are_retried() {
    let r = rig();
    r.prepare().await.unwrap();
    r.launcher
        .faults
        .inject_next(Op::Stop, Fault::Fail(ErrorKind::Throttled));
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn failures_in_cleanup_keep_the_record_until_the_task_is_stopped() {
    let r = rig();
    r.prepare().await.unwrap();
    for (op, fault) in [
        (Op::Stop, Fault::Fail(ErrorKind::PermissionDenied)),
        (Op::Stop, Fault::Hang),
        (Op::Get, Fault::Fail(ErrorKind::Io)),
    ] {
        match op {
            Op::Get => r.store.faults.inject_next(op, fault),
            _ => r.launcher.faults.inject_next(op, fault),
        }
        r.driver.cleanup(&r.job).await.unwrap_err();
        assert!(
            r.store.peek(&r.key()).is_some(),
            "{op:?}: record deleted before the task stopped"
        );
        assert_eq!(r.launcher.running().len(), 1, "{op:?}");
    }
    // A failed search keeps the record too (it may have missed a task), but the recorded
    // task is stopped first.
    r.launcher
        .faults
        .inject_next(Op::Find, Fault::Fail(ErrorKind::PermissionDenied));
    r.driver.cleanup(&r.job).await.unwrap_err();
    assert!(r.store.peek(&r.key()).is_some());
    assert!(r.launcher.running().is_empty());
    // A failure to delete after stopping leaves a record of a stopped task: harmless.
    r.store
        .faults
        .inject_next(Op::Delete, Fault::Fail(ErrorKind::Io));
    r.driver.cleanup(&r.job).await.unwrap_err();
    assert!(r.launcher.running().is_empty());
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn cleanup_finds_a_task_whose_launch_was_never_recorded() {
    let r = rig();
    // A driver killed between RunTask and recording the ARN leaves a LaunchRequested record.
    r.store.faults.inject_at(Op::Put, 2, Fault::Hang);
    let cancel = CancellationToken::new();
    let prepare = r.driver.prepare(&r.job, &cancel);
    // Dropping the future mid-way is what SIGKILL does to the process.
    let _ = tokio::time::timeout(Duration::from_secs(1), prepare).await;
    assert_eq!(r.launcher.running().len(), 1);
    assert_eq!(
        r.store.peek(&r.key()).unwrap().phase,
        Phase::LaunchRequested
    );
    r.store.faults.clear();
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert_eq!(report.stopped.len(), 1);
    r.assert_clean();

    // Without any record at all.
    let r = rig();
    r.prepare().await.unwrap();
    r.store.delete(&r.key()).await.unwrap();
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn cleanup_stops_the_recorded_task_exactly_once_and_searches_once() {
    use crate::launcher::MockTaskLauncher;
    let mut launcher = MockTaskLauncher::new();
    launcher
        .expect_stop()
        .withf(|task, reason| task.id == "arn:recorded" && reason.contains("finished"))
        .times(1)
        .returning(|_, _| Ok(StopOutcome::Stopping));
    launcher
        .expect_find()
        .withf(|key| key.as_str() == "ci-9")
        .times(1)
        .returning(|_| Ok(Vec::new()));
    launcher.expect_launch().never();
    // One describe for the job's summary, before the stop.
    launcher
        .expect_describe()
        .withf(|task| task.id == "arn:recorded")
        .times(1)
        .returning(|_| Ok(TaskStatus::new(TaskState::Running)));
    let store = Arc::new(MemoryStore::new());
    let job = job(9);
    let mut record = JobRecord::new(identity_of(&job), crate::shell::PrivateKey::new("k".into()));
    record.phase = Phase::Ready;
    record.task = Some(TaskRef::new("arn:recorded"));
    store.put(&record).await.unwrap();
    let driver = Driver::new(
        config(),
        Arc::new(launcher),
        Arc::new(MemoryShell::new()),
        store.clone(),
    );
    let report = driver.cleanup(&job).await.unwrap();
    assert_eq!(report.stopped, vec![TaskRef::new("arn:recorded")]);
    assert!(store.peek(&key_of(&job)).is_none());
}

#[tokio::test(start_paused = true)]
async fn cleanup_replays_an_unanswered_launch_even_before_ecs_shows_the_task() {
    let r = lagging_rig(Duration::from_secs(10));
    // Killed right after the launch call went out (the answer never recorded).
    r.store.faults.inject_at(Op::Put, 2, Fault::Hang);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        r.driver.prepare(&r.job, &CancellationToken::new()),
    )
    .await;
    assert_eq!(r.launcher.running().len(), 1);
    r.store.faults.clear();
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert_eq!(report.stopped.len(), 1);
    assert_eq!(
        r.launcher.tasks().len(),
        1,
        "the replay started another task"
    );
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn cleanup_stops_every_task_of_the_job_not_only_the_recorded_one() {
    let r = rig();
    r.prepare().await.unwrap();
    // A task of the same job whose launch answer an earlier attempt lost, with another token.
    let stray = TaskSpec::new(identity_of(&r.job), "ci-coordinator:1").with_client_token("x");
    r.launcher.launch(&stray).await.unwrap();
    // And a task of another job, which must be left alone.
    let other = TaskSpec::new(identity_of(&job(2)), "ci-coordinator:1").with_client_token("y");
    let other = r.launcher.launch(&other).await.unwrap();
    assert_eq!(r.launcher.running().len(), 3);
    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert_eq!(report.stopped.len(), 2, "{report:?}");
    assert_eq!(r.launcher.running(), vec![other]);
}
