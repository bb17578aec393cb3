//! A whole job: its deadline, its stages, and what the observer hears.

use super::*;

#[tokio::test(start_paused = true)]
async fn the_task_gets_a_deadline_from_the_job_timeout() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut r = rig();
    let mut response = JobResponse::new(1);
    response.timeout = Some(Duration::from_secs(3600));
    r.job.response = Some(response);
    let before = secs(SystemTime::now());
    r.prepare().await.unwrap();
    let after = secs(SystemTime::now());
    let (_, task) = &r.launcher.tasks()[0];
    let deadline = secs(task.spec.deadline.expect("a deadline"));
    // 1 h + ReadyTimeout 10 min + StopTimeout 1 min + 10 min slack.
    let lifetime = 3600 + 600 + 60 + 600;
    assert!((before + lifetime..=after + lifetime).contains(&deadline));
    assert_eq!(
        task.spec.environment.get(TASK_DEADLINE_ENV),
        Some(&deadline.to_string())
    );
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.spec.and_then(|s| s.deadline), task.spec.deadline);

    // Without a timeout the maximum lifetime applies.
    let options = DriverOptions::builder()
        .namespace(Namespace::parse("ci").unwrap())
        .task_definition("ci-coordinator:1")
        .max_task_lifetime(Duration::from_secs(7200))
        .build()
        .unwrap();
    let r = rig_with(options, BootPlan::default());
    let before = secs(SystemTime::now());
    r.prepare().await.unwrap();
    let after = secs(SystemTime::now());
    let deadline = secs(r.launcher.tasks()[0].1.spec.deadline.unwrap());
    assert!((before + 7200..=after + 7200).contains(&deadline));
}

#[tokio::test(start_paused = true)]
async fn a_whole_job() {
    let r = rig();
    let report = r.prepare().await.unwrap();
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.phase, Phase::Ready);
    assert_eq!(record.task.as_ref(), Some(&report.task));
    assert_eq!(record.host_key, Some(r.shell.host_key()));
    assert_eq!(record.endpoint, Some(report.endpoint));
    assert_eq!(report.endpoint.port, 22);

    // The task got the job's public key, on the configured container.
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.container_name, "ci-coordinator");
    assert_eq!(task.spec.task_definition, "ci-coordinator:1");
    assert_eq!(
        task.spec.environment.get(SSH_PUBLIC_KEY_ENV),
        Some(&r.shell.generated_keys()[0])
    );
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(task.spec.client_token, record.attempts[0].client_token);
    assert_eq!(task.spec.client_token.len(), 32);
    assert_eq!(
        record.attempts[0].outcome,
        AttemptOutcome::Accepted {
            task: report.task.clone()
        }
    );
    assert_eq!(record.spec.as_ref().map(|s| &s.key), Some(&r.key()));
    // Prepare logged in once with the job's key, pinning the host key.
    let login = &r.shell.runs()[0];
    assert_eq!(&login.script[..], LOGIN_CHECK_SCRIPT);
    assert_eq!(login.host_key, Some(r.shell.host_key()));

    let (res, out) = r.run("echo hello\necho oops >&2\n").await;
    res.unwrap();
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(out.stderr, b"oops\n");
    let sent = &r.script_runs()[0];
    assert_eq!(
        sent.host_key,
        Some(r.shell.host_key()),
        "run must verify the pinned host key"
    );
    assert_eq!(sent.username, "root");

    let (res, _) = r.run("exit 3").await;
    let (exit_code, message) = script_failure(res.unwrap_err());
    assert_eq!(exit_code, 3);
    assert_eq!(message, "the build_script script exited with status 3");

    let report = r.driver.cleanup(&r.job).await.unwrap();
    assert_eq!(report.stopped.len(), 1);
    assert!(report.had_record);
    r.assert_clean();
    // Cleanup is idempotent.
    let again = r.driver.cleanup(&r.job).await.unwrap();
    assert!(again.stopped.is_empty() && !again.had_record);
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_a_whole_job_in_order() {
    let mut r = rig_with(
        config(),
        BootPlan {
            describes_until_address: 1,
            describes_until_running: 1,
            ..BootPlan::default()
        },
    );
    let recorder = Arc::new(Recorder::default());
    r.driver = r.driver.clone().with_observer(recorder.clone());
    let report = r.prepare().await.unwrap();
    assert_eq!(report.summary.details.cpu_units, Some(256));
    r.launcher
        .faults
        .inject_next(Op::Stop, Fault::Fail(ErrorKind::Throttled));
    let cleaned = r.driver.cleanup(&r.job).await.unwrap();
    assert!(cleaned.summary.is_some());
    r.assert_clean();
    let events = recorder.0.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "launching ci-coordinator:1",
            "phase Launching",
            "launch ok",
            "launched",
            "phase Accepted",
            "describe ok",
            "state Provisioning",
            "describe ok",
            "state Running",
            "phase AddressKnown",
            "phase SshUp",
            "ready",
            "summary Prepared 256",
            "describe ok",
            "summary Cleanup 256",
            "stop throttled",
            "retry stopping the task after attempt 1",
            "stop ok",
            "find ok",
            "stopped by cleanup",
        ],
        "{events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_prepare_reports_its_rollback_stop() {
    let mut r = rig();
    let recorder = Arc::new(Recorder::default());
    r.driver = r.driver.clone().with_observer(recorder.clone());
    r.launcher
        .faults
        .inject_next(Op::Describe, Fault::Fail(ErrorKind::PermissionDenied));
    assert!(r.prepare().await.is_err());
    r.assert_clean();
    let events = recorder.0.lock().unwrap().clone();
    assert!(
        events.contains(&"stopped by rollback".to_owned()),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.starts_with("summary")),
        "{events:#?}"
    );
}
