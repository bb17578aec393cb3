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
