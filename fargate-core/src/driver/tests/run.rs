//! The run stage: failure classes, cancellation, the pinned host key, a task stopping under
//! a script, output never stalled by a describe.

use super::*;

#[tokio::test(start_paused = true)]
async fn run_failures_are_classified() {
    let r = rig();
    r.prepare().await.unwrap();

    let (res, _) = r.run("kill -KILL $$").await;
    let (exit_code, message) = script_failure(res.unwrap_err());
    assert_eq!(exit_code, 137);
    assert!(message.contains("killed by signal KILL"));

    // The task dies mid-job: the error names ECS's reason.
    let task = r.launcher.running()[0].clone();
    r.launcher.kill(&task, "Essential container in task exited");
    r.shell.set_down(IpAddr::V4(Ipv4Addr::LOCALHOST), true);
    let (res, _) = r.run("echo hi").await;
    let err = system_error(res.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::TaskStopped);
    assert!(
        err.message().contains("Essential container in task exited"),
        "{err}"
    );
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();

    // No record: prepare never succeeded.
    let (res, _) = r.run("echo hi").await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn run_can_be_cancelled_and_pins_the_host_key() {
    let r = rig();
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

    // A record whose pinned key differs from what the host presents.
    let mut record = r.store.peek(&r.key()).unwrap();
    record.host_key = Some(HostKey {
        algorithm: "ssh-ed25519".into(),
        fingerprint: "SHA256:other".into(),
    });
    r.store.put(&record).await.unwrap();
    let (res, out) = r.run("echo secret").await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::HostKeyMismatch);
    assert!(out.stdout.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_stopping_during_a_long_script_fails_the_stage_at_the_next_check() {
    let r = rig();
    r.prepare().await.unwrap();
    let launcher = r.launcher.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(100)).await;
        let task = launcher.running()[0].clone();
        launcher.kill(&task, "Your Spot Task was interrupted.");
    });
    let start = Instant::now();
    // The fake connection stays up: only the watch can notice.
    let (res, _) = r.run("sleep 3600").await;
    let err = system_error(res.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::TaskStopped);
    assert!(
        err.message()
            .contains("while the build_script script was running: Your Spot Task was interrupted."),
        "{err}"
    );
    // Checked every 30 s: noticed at the first check after 100 s.
    assert_eq!(start.elapsed(), Duration::from_secs(120));
}

/// A sink that notes when each chunk arrived.
#[derive(Default)]
struct TimedSink {
    arrivals: Vec<Instant>,
}

impl crate::shell::OutputSink for TimedSink {
    fn stdout(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        self.arrivals.push(Instant::now());
        Ok(())
    }
    fn stderr(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        self.arrivals.push(Instant::now());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_describe_never_stalls_the_output_or_delays_a_cancel() {
    let mut c = config();
    c.timeouts.watch = Duration::from_secs(1);
    let r = rig_with(c, BootPlan::default());
    r.prepare().await.unwrap();
    // From now on every DescribeTasks takes 20 s.
    r.launcher
        .faults
        .inject_always(Op::Describe, Fault::Delay(Duration::from_secs(20)));
    let body: String = (0..60)
        .map(|i| format!("echo line {i}\nsleep 0.5\n"))
        .collect();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(24_800)).await;
        trigger.cancel();
    });
    let mut sink = TimedSink::default();
    let start = Instant::now();
    let res = r
        .driver
        .run(&r.job, "build_script", script(&body), &mut sink, &cancel)
        .await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::Cancelled);
    let ended = start.elapsed();
    assert!(
        ended < Duration::from_secs(27),
        "the cancel at 24.8 s took effect at {ended:?}"
    );
    let mut previous = start;
    let mut longest = Duration::ZERO;
    for t in &sink.arrivals {
        longest = longest.max(*t - previous);
        previous = *t;
    }
    assert_eq!(sink.arrivals.len(), 50, "lines before the cancel");
    assert!(
        longest <= Duration::from_millis(500),
        "output stalled for {longest:?}"
    );
}

/// The last liveness mark on `task` ([`TaskLauncher::mark_alive`]).
fn alive_at(r: &Rig, task: &TaskRef) -> Option<std::time::SystemTime> {
    r.launcher
        .tasks()
        .into_iter()
        .find(|(t, _)| t == task)
        .and_then(|(_, t)| t.alive_at)
}

/// Issue 23: a run stage notes its job's signs of life in the store; only when the store
/// misses one (its host cut off from a shared store, while the stage works from the host's
/// copy of the record) does it mark the job's task alive instead.
#[tokio::test(start_paused = true)]
async fn a_run_stage_marks_its_task_alive_only_when_the_store_misses_the_heartbeat() {
    let _determinism = crate::testing::Determinism::install(23);
    let r = rig();
    r.prepare().await.unwrap();
    let task = r.launcher.running()[0].clone();

    // The store answers: prepare's heartbeat, the stage's first and one every 30 s of a
    // 95 s script, and no launcher call.
    r.run("sleep 95").await.0.unwrap();
    assert_eq!(r.store.faults.calls(Op::Heartbeat), 5);
    assert_eq!(r.launcher.faults.calls(Op::MarkAlive), 0);
    assert_eq!(alive_at(&r, &task), None);

    // The store fails every heartbeat: each goes on the task instead.
    r.store
        .faults
        .inject_always(Op::Heartbeat, Fault::Fail(ErrorKind::Unreachable));
    let start = crate::world::now();
    r.run("sleep 95").await.0.unwrap();
    assert_eq!(r.store.faults.calls(Op::Heartbeat), 9);
    assert_eq!(r.launcher.faults.calls(Op::MarkAlive), 4);
    let marked = alive_at(&r, &task).unwrap();
    assert_eq!(marked, start + Duration::from_secs(90));

    // A store that never answers: the task is marked once the heartbeat's bound is over.
    r.store.faults.clear();
    r.store.faults.inject_always(Op::Heartbeat, Fault::Hang);
    let start = crate::world::now();
    r.run("sleep 45").await.0.unwrap();
    assert_eq!(r.launcher.faults.calls(Op::MarkAlive), 6);
    assert_eq!(
        alive_at(&r, &task),
        Some(start + Duration::from_secs(30) + HEARTBEAT_TIMEOUT)
    );

    // A launcher that cannot mark either: the stage goes on as before.
    r.launcher
        .faults
        .inject_always(Op::MarkAlive, Fault::Fail(ErrorKind::Unsupported));
    let (res, out) = r.run("echo still here").await;
    res.unwrap();
    assert_eq!(out.stdout, b"still here\n");
}

/// Issue 23, end to end in memory: `gc --dead-after` on another host keeps the task of a
/// job whose host cannot reach the store but runs it (its task marked alive), and stops
/// it once the marks stop too.
#[tokio::test(start_paused = true)]
async fn gc_keeps_the_task_of_a_live_job_cut_off_from_the_store() {
    let _determinism = crate::testing::Determinism::install(24);
    let r = rig();
    r.prepare().await.unwrap();
    let task = r.launcher.running()[0].clone();
    let ns = Namespace::parse("ci").unwrap();
    let options = crate::gc::GcOptions::default();
    assert_eq!(options.dead_after, Some(Duration::from_secs(600)));
    r.store
        .faults
        .inject_always(Op::Heartbeat, Fault::Fail(ErrorKind::Unreachable));
    // A script of almost 20 minutes; gc runs 11 minutes in, when the store's last
    // heartbeat (prepare's) and the record are 11 minutes old.
    let gc = async {
        tokio::time::sleep(Duration::from_secs(11 * 60 + 10)).await;
        crate::gc::collect(&*r.launcher, &*r.store, &ns, &options)
            .await
            .unwrap()
    };
    let start = crate::world::now();
    let ((res, _), report) = tokio::join!(r.run("sleep 1190"), gc);
    res.unwrap();
    let decision = report.tasks.iter().find(|t| t.task == task.id).unwrap();
    assert_eq!(decision.action, crate::gc::Action::Kept, "{report}");
    assert_eq!(r.launcher.running(), std::slice::from_ref(&task));
    let marked = alive_at(&r, &task).unwrap();
    assert_eq!(marked, start + Duration::from_secs(1170));
    // The job's host goes silent: eleven minutes later its task is stopped, judged by
    // the last mark.
    tokio::time::advance(Duration::from_secs(11 * 60)).await;
    let report = crate::gc::collect(&*r.launcher, &*r.store, &ns, &options)
        .await
        .unwrap();
    let decision = report.tasks.iter().find(|t| t.task == task.id).unwrap();
    assert_eq!(decision.action, crate::gc::Action::Removed, "{report}");
    assert!(
        decision.reason.contains("no sign of life for 680 s"),
        "{report}"
    );
    assert!(r.launcher.running().is_empty());
}
