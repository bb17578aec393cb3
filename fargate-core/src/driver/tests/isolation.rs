//! One job never reaches another's task or record: forged job ids, records naming another
//! job, the Go driver's records.

use super::*;

#[tokio::test(start_paused = true)]
async fn go_driver_records_use_the_configured_port() {
    let mut c = config();
    c.ssh.port = 2222;
    let r = rig_with(c, BootPlan::default());
    let task = TaskRef::new("arn:old");
    // A Go driver record is named after the Go job id and knows no namespace.
    let mut record = JobRecord::new(
        identity_of(&r.job),
        crate::shell::PrivateKey::new("k".into()),
    );
    record.identity = None;
    record.key = r.job.go_job_id().record_key();
    record.phase = Phase::Ready;
    record.task = Some(task);
    record.endpoint = Some(Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
    });
    r.store.put(&record).await.unwrap();
    r.run("echo hi").await.0.unwrap();
    assert_eq!(r.script_runs()[0].endpoint.port, 2222);
    assert_eq!(r.script_runs()[0].host_key, None);
}

#[tokio::test(start_paused = true)]
async fn a_forged_job_id_never_reaches_another_jobs_task() {
    let r = rig();
    r.prepare().await.unwrap();
    let victim = r.launcher.running();
    // Job 2 of the same project sets every identity variable to job 1's values.
    let attacker = job(2)
        .with_variable("CI_JOB_ID", "1")
        .with_variable("CI_PIPELINE_ID", "7")
        .with_variable("CI_RUNNER_SHORT_TOKEN", "tok")
        .with_variable("CI_PROJECT_URL", "https://gitlab.example/p");
    // Its run stage does not find job 1's record; its cleanup stops nothing of job 1.
    let mut out = CapturedOutput::default();
    let res = r
        .driver
        .run(
            &attacker,
            "build_script",
            script("echo x"),
            &mut out,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(system_kind(res.unwrap_err()), ErrorKind::NotFound);
    r.driver.cleanup(&attacker).await.unwrap();
    // Its own prepare and cleanup neither.
    r.driver
        .prepare(&attacker, &CancellationToken::new())
        .await
        .unwrap();
    r.driver.cleanup(&attacker).await.unwrap();
    assert_eq!(r.launcher.running(), victim);
    assert!(r.store.peek(&r.key()).is_some());
    // Job 1 goes on.
    r.run("echo still here").await.0.unwrap();
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_forged_job_id_never_reaches_another_jobs_go_driver_record() {
    let r = rig();
    // Job 1 was prepared by the Go driver: its record is named after the Go id.
    let victim = TaskSpec::new(identity_of(&r.job), "td").with_client_token("go");
    let victim = r.launcher.launch(&victim).await.unwrap();
    let mut record = JobRecord::new(
        identity_of(&r.job),
        crate::shell::PrivateKey::new("k".into()),
    );
    record.identity = None;
    record.key = r.job.go_job_id().record_key();
    record.phase = Phase::Ready;
    record.task = Some(victim.clone());
    record.endpoint = Some(Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
    });
    r.store.put(&record).await.unwrap();
    let attacker = job(2)
        .with_variable("CI_JOB_ID", "1")
        .with_variable("CI_PIPELINE_ID", "7")
        .with_variable("CI_RUNNER_SHORT_TOKEN", "tok")
        .with_variable("CI_PROJECT_URL", "https://gitlab.example/p");
    assert_ne!(attacker.go_job_id().record_key(), record.key);
    r.driver.cleanup(&attacker).await.unwrap();
    assert_eq!(r.launcher.running(), vec![victim]);
    // The job itself still uses its record, and its cleanup stops its task.
    r.run("echo hi").await.0.unwrap();
    r.driver.cleanup(&r.job).await.unwrap();
    assert!(r.launcher.running().is_empty());
    assert!(r.store.peek(&record.key).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_record_that_names_another_job_is_refused_and_its_task_left_alone() {
    let r = rig();
    r.prepare().await.unwrap();
    let mut record = r.store.peek(&r.key()).unwrap();
    record.identity = Some(identity_of(&job(2)));
    r.store.put(&record).await.unwrap();
    let err = system_error(r.driver.cleanup(&r.job).await.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        err.context_value("record"),
        Some(r.key().to_string().as_str())
    );
    assert_eq!(r.launcher.running().len(), 1);
    assert_eq!(r.launcher.faults.calls(Op::Stop), 0);
}
