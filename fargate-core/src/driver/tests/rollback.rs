//! Prepare failing, cancelled or dropped at every step: what it started is stopped, or left
//! for cleanup to find.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_failure_at_every_step_of_prepare_leaves_nothing_running() {
    use ErrorKind::*;
    let cases: Vec<(Op, u32, Fault, ErrorKind)> = vec![
        (Op::GenerateKey, 1, Fault::Fail(Unexpected), Unexpected),
        (Op::Put, 1, Fault::Fail(Io), Io),
        (Op::Put, 1, Fault::LoseResponse(Io), Io),
        (
            Op::Launch,
            1,
            Fault::Fail(PermissionDenied),
            PermissionDenied,
        ),
        (Op::Put, 2, Fault::Fail(Io), Io),
        (Op::Put, 2, Fault::LoseResponse(Io), Io),
        (
            Op::Describe,
            1,
            Fault::Fail(PermissionDenied),
            PermissionDenied,
        ),
        (
            Op::Probe,
            1,
            Fault::Fail(AuthenticationFailed),
            AuthenticationFailed,
        ),
        (Op::Put, 3, Fault::Fail(Io), Io),
        (Op::Describe, 1, Fault::Hang, Timeout),
        (Op::Probe, 1, Fault::Hang, Timeout),
        (Op::Run, 1, Fault::Fail(InvalidConfig), InvalidConfig),
        (Op::Run, 1, Fault::Hang, Timeout),
    ];
    for (op, nth, fault, kind) in cases {
        let r = rig();
        match op {
            Op::Put | Op::Get | Op::Delete => r.store.faults.inject_at(op, nth, fault),
            Op::GenerateKey | Op::Probe | Op::Run => r.shell.faults.inject_at(op, nth, fault),
            _ => r.launcher.faults.inject_at(op, nth, fault),
        }
        let err = r.prepare().await.unwrap_err();
        assert_eq!(system_kind(err), kind, "{op:?} #{nth} {fault:?}");
        assert!(
            r.launcher.running().is_empty(),
            "{op:?} #{nth} {fault:?}: task left running"
        );
        // The runner calls cleanup after a failed prepare: it must succeed and leave nothing.
        r.store.faults.clear();
        r.driver.cleanup(&r.job).await.unwrap();
        r.assert_clean();
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_at_every_wait_of_prepare_stops_the_task() {
    for (op, fault) in [
        (Op::Launch, Fault::Hang),
        (Op::Describe, Fault::Hang),
        (Op::Probe, Fault::Hang),
    ] {
        let r = rig();
        match op {
            Op::Probe => r.shell.faults.inject_at(op, 1, fault),
            _ => r.launcher.faults.inject_at(op, 1, fault),
        }
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            trigger.cancel();
        });
        let err = r.driver.prepare(&r.job, &cancel).await.unwrap_err();
        assert_eq!(system_kind(err), ErrorKind::Cancelled, "{op:?}");
        r.assert_clean();
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_rollback_keeps_the_record_for_cleanup() {
    let r = rig();
    r.launcher
        .faults
        .inject_at(Op::Describe, 1, Fault::Fail(ErrorKind::PermissionDenied));
    r.launcher
        .faults
        .inject_always(Op::Stop, Fault::Fail(ErrorKind::PermissionDenied));
    r.prepare().await.unwrap_err();
    assert_eq!(r.launcher.running().len(), 1);
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.phase, Phase::Stopping);
    r.launcher.faults.clear();
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

/// The documented cancel-safety guarantee of `prepare`: dropping its future at any instant
/// (an embedder's `timeout`) stops nothing but loses nothing either. The job's lock is
/// released with the future, and `cleanup` finds and stops whatever was started.
#[tokio::test(start_paused = true)]
async fn dropping_prepare_at_any_point_leaves_cleanup_able_to_stop_the_task() {
    let slow = Fault::Delay(Duration::from_millis(700));
    let mut dropped_with_a_task = 0;
    for step in 0.. {
        let r = lagging_rig(Duration::from_secs(2));
        for op in [Op::Put, Op::Get, Op::GenerateKey, Op::Probe, Op::Run] {
            match op {
                Op::Put | Op::Get => r.store.faults.inject_always(op, slow),
                _ => r.shell.faults.inject_always(op, slow),
            }
        }
        for op in [Op::Launch, Op::Describe] {
            r.launcher.faults.inject_always(op, slow);
        }
        let budget = Duration::from_millis(250) * step;
        let cancel = CancellationToken::new();
        let prepare = r.driver.prepare(&r.job, &cancel);
        let finished = tokio::time::timeout(budget, prepare).await.is_ok();
        if !r.launcher.tasks().is_empty() && !finished {
            dropped_with_a_task += 1;
        }
        r.store.faults.clear();
        r.shell.faults.clear();
        r.launcher.faults.clear();
        // Within the driver's lock wait: the dropped future released the lock.
        let cleanup = tokio::time::timeout(Duration::from_secs(5), r.driver.cleanup(&r.job));
        let report = cleanup
            .await
            .unwrap_or_else(|_| panic!("step {step}: cleanup waited for the job's lock"))
            .unwrap_or_else(|f| panic!("step {step}: {f}"));
        assert_eq!(
            report.stopped.len(),
            r.launcher.tasks().len(),
            "step {step}: cleanup must stop every task prepare started"
        );
        r.assert_clean();
        if finished {
            break;
        }
    }
    assert!(dropped_with_a_task > 3, "{dropped_with_a_task}");
}

#[tokio::test(start_paused = true)]
async fn a_leftover_record_of_an_earlier_attempt_is_stopped_first() {
    let r = rig();
    r.prepare().await.unwrap();
    let first = r.launcher.running();
    r.prepare().await.unwrap();
    let running = r.launcher.running();
    assert_eq!(running.len(), 1);
    assert_ne!(running, first, "the earlier attempt's task must be stopped");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_right_after_launch_stops_a_task_ecs_does_not_show_yet() {
    let r = lagging_rig(Duration::from_secs(5));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let err = r.driver.prepare(&r.job, &cancel).await.unwrap_err();
    assert_eq!(system_kind(err), ErrorKind::Cancelled);
    // Stopping was not skipped because ECS said "not found": it was tried until it worked.
    assert!(r.launcher.running().is_empty(), "the task was left running");
    assert!(r.launcher.faults.calls(Op::Stop) > 1);
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_launch_in_flight_is_waited_for_after_a_cancel() {
    let r = rig();
    // The launch call takes 3 s to answer; the cancel comes after 1 s.
    let launcher = r.launcher.clone();
    launcher
        .faults
        .inject_at(Op::Launch, 1, Fault::Delay(Duration::from_secs(3)));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let err = r.driver.prepare(&r.job, &cancel).await.unwrap_err();
    assert_eq!(system_kind(err), ErrorKind::Cancelled);
    assert_eq!(r.launcher.tasks().len(), 1);
    // It was stopped without replaying the launch: its answer was awaited.
    assert_eq!(r.launcher.faults.calls(Op::Launch), 1);
    r.assert_clean();
}
