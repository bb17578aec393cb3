#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::error::{Failure, FailureClass};
use crate::job::{JobKey, JobResponse};
use crate::launcher::{StopOutcome, TaskLauncher, TaskSpec, TaskState, TaskStatus};
use crate::metadata::{AttemptOutcome, MetadataStore, Phase};
use crate::options::DriverOptions;
use crate::shell::{CapturedOutput, RunRequest};
use crate::testing::{BootPlan, Fault, MemoryLauncher, MemoryShell, MemoryStore, Op};
use std::net::{IpAddr, Ipv4Addr};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Rig {
    launcher: Arc<MemoryLauncher>,
    shell: Arc<MemoryShell>,
    store: Arc<MemoryStore>,
    driver: Driver,
    job: JobContext,
}

fn config() -> DriverOptions {
    DriverOptions::builder()
        .namespace(Namespace::parse("ci").unwrap())
        .task_definition("ci-coordinator:1")
        .allowed_task_definitions(["ci-*"])
        .build()
        .unwrap()
}

/// Job `id` as gitlab-runner 14.1+ describes it: the payload and the predefined variables.
fn job(id: u64) -> JobContext {
    JobContext::new(JobResponse::new(id))
        .with_variable("CI_JOB_ID", id.to_string())
        .with_variable("CI_PIPELINE_ID", "7")
        .with_variable("CI_RUNNER_SHORT_TOKEN", "tok")
        .with_variable("CI_PROJECT_URL", "https://gitlab.example/p")
}

fn key_of(job: &JobContext) -> JobKey {
    job.identity(&Namespace::parse("ci").unwrap())
        .unwrap()
        .key()
}

fn identity_of(job: &JobContext) -> JobIdentity {
    job.identity(&Namespace::parse("ci").unwrap()).unwrap()
}

fn rig_with(config: DriverOptions, plan: BootPlan) -> Rig {
    let launcher = Arc::new(MemoryLauncher::with_plan(plan));
    let shell = Arc::new(MemoryShell::new());
    let store = Arc::new(MemoryStore::new());
    let driver = Driver::new(config, launcher.clone(), shell.clone(), store.clone());
    Rig {
        launcher,
        shell,
        store,
        driver,
        job: job(1),
    }
}

fn rig() -> Rig {
    rig_with(config(), BootPlan::default())
}

fn script(s: &str) -> Arc<[u8]> {
    Arc::from(s.as_bytes())
}

impl Rig {
    fn key(&self) -> JobKey {
        key_of(&self.job)
    }

    /// The stage scripts the shell ran (not prepare's empty login check).
    fn script_runs(&self) -> Vec<RunRequest> {
        self.shell
            .runs()
            .into_iter()
            .filter(|r| &r.script[..] != LOGIN_CHECK_SCRIPT)
            .collect()
    }

    async fn prepare(&self) -> std::result::Result<PrepareReport, Failure> {
        self.driver
            .prepare(&self.job, &CancellationToken::new())
            .await
    }

    async fn run(&self, s: &str) -> (std::result::Result<(), Failure>, CapturedOutput) {
        let mut out = CapturedOutput::default();
        let r = self
            .driver
            .run(
                &self.job,
                "build_script",
                script(s),
                &mut out,
                &CancellationToken::new(),
            )
            .await;
        (r, out)
    }

    /// No task left running and no record left behind.
    fn assert_clean(&self) {
        assert!(
            self.launcher.running().is_empty(),
            "tasks left running: {:?}",
            self.launcher.running()
        );
        assert!(self.store.peek(&self.key()).is_none(), "record left behind");
    }
}

fn system_kind(f: Failure) -> ErrorKind {
    system_error(f).kind()
}

/// The error of a system failure.
fn system_error(f: Failure) -> Error {
    assert_eq!(
        f.class(),
        FailureClass::System,
        "expected a system failure: {f}"
    );
    f.into_error().expect("a system failure has an error")
}

/// The exit code and message of a script failure.
fn script_failure(f: Failure) -> (i32, String) {
    assert_eq!(
        f.class(),
        FailureClass::Script,
        "expected a script failure: {f:?}"
    );
    (
        f.script_exit_code()
            .expect("a script failure has an exit code"),
        f.to_string(),
    )
}

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
async fn a_task_that_stops_while_booting_fails_with_its_reason() {
    let r = rig_with(
        config(),
        BootPlan {
            describes_until_address: 3,
            ..BootPlan::default()
        },
    );
    let launcher = r.launcher.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let task = launcher.running()[0].clone();
        launcher.kill(
            &task,
            "CannotPullContainerError: pull access denied for ci-image",
        );
    });
    let err = r.prepare().await.unwrap_err();
    let err = system_error(err);
    assert_eq!(err.kind(), ErrorKind::TaskStopped);
    assert!(
        err.message()
            .contains("CannotPullContainerError: pull access denied"),
        "{err}"
    );
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn ssh_never_answering_times_out_with_a_hint() {
    let mut c = config();
    c.timeouts.ready = Duration::from_secs(30);
    let r = rig_with(c, BootPlan::default());
    r.shell.set_down(IpAddr::V4(Ipv4Addr::LOCALHOST), true);
    let start = Instant::now();
    let err = system_error(r.prepare().await.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.hint()
            .unwrap()
            .contains("SSH on port 22 never answered"),
        "{err:?}"
    );
    assert!(start.elapsed() <= Duration::from_secs(31));
    r.assert_clean();
}

/// The figure issue 4 asks for: API calls while a task needs 40 s to boot, and how late the
/// caller learns the IP.
#[tokio::test(start_paused = true)]
async fn a_forty_second_boot_costs_few_describe_calls() {
    // Describes come at 0, 2, 5, 9.5 s (then every 10 s); the IP appears with the 3rd;
    // sshd answers at 40 s.
    let r = rig_with(
        config(),
        BootPlan {
            describes_until_address: 2,
            describes_until_running: 5,
            ..BootPlan::default()
        },
    );
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    r.shell.set_down(ip, true);
    let shell = r.shell.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(40)).await;
        shell.set_down(ip, false);
    });
    let report = r.prepare().await.unwrap();
    assert!(
        report.ssh_ready >= Duration::from_secs(40)
            && report.ssh_ready <= Duration::from_millis(40_300),
        "{:?}",
        report.ssh_ready
    );
    // At most one DescribeTasks per 5 s of boot.
    assert!(
        report.describe_calls <= 8,
        "{} describes",
        report.describe_calls
    );
    assert_eq!(r.launcher.faults.calls(Op::Describe), report.describe_calls);
    // The caller learns the address at the describe that first reports it.
    assert_eq!(report.address_known, Duration::from_millis(5000));
    assert!(report.probes >= 100, "{} probes", report.probes);
}

/// Issue 15: no idle wait. A task that is ready at once is described at once and probed at
/// once: prepare takes no (tokio) time, where it waited `PollInitialInterval` (2 s) before.
#[tokio::test(start_paused = true)]
async fn a_task_ready_at_once_is_described_and_probed_without_waiting() {
    let r = rig();
    let start = Instant::now();
    let report = r.prepare().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(report.address_known, Duration::ZERO);
    assert_eq!(report.describe_calls, 1);
    assert_eq!(report.probes, 1);
}

/// An address in the launch answer (moto's RunTask answer carries one) is probed before any
/// describe; describing then only watches for an early stop, on the sparse schedule.
#[tokio::test(start_paused = true)]
async fn an_address_in_the_launch_answer_is_probed_before_any_describe() {
    let r = rig_with(
        config(),
        BootPlan {
            describes_until_address: 100,
            describes_until_running: 100,
            address_in_launch_answer: true,
            ..BootPlan::default()
        },
    );
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    r.shell.set_down(ip, true);
    let shell = r.shell.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        shell.set_down(ip, false);
    });
    let report = r.prepare().await.unwrap();
    assert_eq!(report.address_known, Duration::ZERO);
    // The probes start at once; describes only at 2 s (PollInitialInterval) and later.
    assert_eq!(report.describe_calls, 1);
    assert!(report.probes >= 12, "{} probes", report.probes);
    assert!(
        report.ssh_ready < Duration::from_millis(3300),
        "{:?}",
        report.ssh_ready
    );
}

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
async fn job_variables_cannot_pick_unallowed_task_definitions() {
    let r = rig();
    let job = job(2).with_variable(TASK_DEFINITION_VARIABLE, "admin-role:1");
    let err = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let (exit_code, message) = script_failure(err);
    assert_eq!(exit_code, 1);
    assert!(message.contains("\"admin-role:1\""), "{message}");
    assert!(message.contains("allowed: ci-*"), "{message}");
    // The disallowed request keeps its kind and hint.
    let err = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let cause = err.error().expect("the refusal is an error");
    assert_eq!(cause.kind(), ErrorKind::NotAllowed);
    assert_eq!(cause.hint(), Some("allowed: ci-*"));
    assert!(r.launcher.tasks().is_empty(), "nothing may be launched");

    let job = job
        .with_variable(TASK_DEFINITION_VARIABLE, "ci-node:3")
        .with_variable(PLATFORM_VERSION_VARIABLE, "1.4.0");
    r.driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.task_definition, "ci-node:3");
    assert_eq!(task.spec.platform_version.as_deref(), Some("1.4.0"));
}

#[test]
fn task_definition_precedence() {
    let mut c = config();
    c.task.allowed_task_definitions.clear();
    c.task.allow_platform_version_override = false;
    c.task.platform_version = Some("1.3.0".into());
    let j = job(1);
    let none = AdminOverrides::default();
    let choice = |td: &str, pv: &str| TaskDefinitionChoice {
        task_definition: td.into(),
        platform_version: Some(pv.into()),
        images: None,
    };
    assert_eq!(
        resolve_task_definition(&c, &none, &j).unwrap(),
        choice("ci-coordinator:1", "1.3.0")
    );
    let admin = AdminOverrides {
        task_definition: Some("admin-td".into()),
        platform_version: Some("1.4.0".into()),
    };
    assert_eq!(
        resolve_task_definition(&c, &admin, &j).unwrap(),
        choice("admin-td", "1.4.0")
    );
    // A job asking for the default is fine even with nothing allowed.
    let asks = |name: &str, value: &str| j.clone().with_variable(name, value);
    resolve_task_definition(
        &c,
        &none,
        &asks(TASK_DEFINITION_VARIABLE, "ci-coordinator:1"),
    )
    .unwrap();
    let err =
        resolve_task_definition(&c, &none, &asks(TASK_DEFINITION_VARIABLE, "other")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.hint().unwrap().contains("AllowedTaskDefinitions"));
    let err =
        resolve_task_definition(&c, &none, &asks(PLATFORM_VERSION_VARIABLE, "LATEST")).unwrap_err();
    assert!(err.hint().unwrap().contains("AllowPlatformVersionOverride"));
}

#[test]
fn config_stage_output_matches_the_go_driver() {
    let mut c = config();
    let j = JobContext::from_vars([
        ("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "token"),
        ("CUSTOM_ENV_CI_PROJECT_URL", "project-URL"),
        ("CUSTOM_ENV_CI_PIPELINE_ID", "1"),
        ("CUSTOM_ENV_CI_JOB_ID", "1"),
    ])
    .unwrap();
    let out = serde_json::to_string(&config_output(&c, &j, "0.1.0")).unwrap();
    assert_eq!(
        out,
        r#"{"driver":{"name":"fargate","version":"0.1.0"},"hostname":"token-96688db3e5e6c32b47fe3d59f4384354c5509e27b0d48742809a8c35cca0e88d"}"#
    );
    c.builds_dir = Some("/builds".into());
    let out = serde_json::to_string(&config_output(&c, &j, "0.1.0")).unwrap();
    assert!(out.ends_with(r#","builds_dir":"/builds"}"#), "{out}");
}

#[tokio::test(start_paused = true)]
async fn in_memory_backends_pass_the_conformance_suites() {
    use crate::testing::conformance::{self, LauncherCaps, ShellCaps};
    let spec = TaskSpec::new(identity_of(&job(1)), "td").with_client_token("t");
    conformance::launcher(
        &MemoryLauncher::new(),
        &spec,
        &TaskRef::new("nope"),
        LauncherCaps::default(),
    )
    .await;
    let lagging = MemoryLauncher::with_plan(BootPlan {
        invisible_for: Duration::from_secs(3),
        ..BootPlan::default()
    });
    conformance::launcher(
        &lagging,
        &spec,
        &TaskRef::new("nope"),
        LauncherCaps::eventually_consistent(Duration::from_secs(3)),
    )
    .await;

    let shell = MemoryShell::new();
    shell.set_down(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), true);
    let target = crate::testing::conformance::ShellTarget {
        endpoint: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 22,
        },
        host_key: shell.host_key(),
        username: "root".into(),
        private_key: crate::shell::PrivateKey::new("k".into()),
        closed: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            port: 22,
        },
    };
    // In memory, a cancel needs no round trip: it must be as prompt as the cancel itself.
    conformance::shell(
        &shell,
        &target,
        ShellCaps::cancel_within(Duration::from_secs(1)),
    )
    .await;

    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    let caps = crate::testing::conformance::LockCaps::released_on_drop();
    crate::testing::conformance::store(&MemoryStore::new(), &record, caps).await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_locks_like_a_database_with_leases() {
    use crate::testing::conformance::{LockCaps, store_lock};
    let key = identity_of(&job(1)).key();
    let caps = LockCaps::released_on_drop();
    store_lock(&MemoryStore::new(), &key, caps).await;
    let lease = Duration::from_secs(60);
    store_lock(
        &MemoryStore::new().with_lock_lease(lease),
        &key,
        caps.with_lease(lease),
    )
    .await;
}

#[tokio::test]
async fn the_file_store_passes_the_conformance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    let store = crate::metadata::FileMetadataStore::new(tmp.path());
    let caps = crate::testing::conformance::LockCaps::released_on_drop();
    crate::testing::conformance::store(&store, &record, caps).await;
}

#[test]
fn task_state_terminality() {
    assert!(TaskState::Stopped.is_terminal() && TaskState::Stopping.is_terminal());
    // Unknown may mean "not visible yet": never terminal by itself.
    assert!(
        !TaskState::Running.is_terminal()
            && !TaskState::Provisioning.is_terminal()
            && !TaskState::Missing.is_terminal()
    );
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

fn lagging_rig(invisible_for: Duration) -> Rig {
    rig_with(
        config(),
        BootPlan {
            invisible_for,
            ..BootPlan::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn prepare_waits_for_a_task_that_ecs_does_not_show_yet() {
    let r = lagging_rig(Duration::from_secs(5));
    let report = r.prepare().await.unwrap();
    assert!(report.ssh_ready >= Duration::from_secs(5), "{report:?}");
    assert_eq!(r.launcher.tasks().len(), 1, "exactly one task");
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_task_still_unknown_after_the_consistency_window_fails_prepare() {
    let r = lagging_rig(Duration::from_secs(3600));
    let err = system_error(r.prepare().await.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::TaskStopped, "{err}");
    assert!(err.hint().unwrap().contains("ConsistencyWindow"), "{err:?}");
    // The record is kept: the task may still show up, and cleanup (or gc) must stop it.
    assert!(r.store.peek(&r.key()).is_some());
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

#[tokio::test(start_paused = true)]
async fn a_lost_launch_answer_is_retried_with_the_same_token() {
    let r = rig();
    r.launcher
        .faults
        .inject_at(Op::Launch, 1, Fault::LoseResponse(ErrorKind::Unreachable));
    r.prepare().await.unwrap();
    assert_eq!(
        r.launcher.tasks().len(),
        1,
        "the retry started a second task"
    );
    assert_eq!(r.launcher.faults.calls(Op::Launch), 2);
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
    assert!(matches!(
        record.attempts[0].outcome,
        AttemptOutcome::Accepted { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_launch_is_retried_with_a_new_token() {
    let r = rig();
    r.launcher
        .faults
        .inject_at(Op::Launch, 1, Fault::Fail(ErrorKind::CapacityUnavailable));
    r.prepare().await.unwrap();
    assert_eq!(r.launcher.tasks().len(), 1);
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.attempts.len(), 2, "{:?}", record.attempts);
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Refused);
    assert_ne!(
        record.attempts[0].client_token,
        record.attempts[1].client_token
    );
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.client_token, record.attempts[1].client_token);

    // A refusal that will not pass is not retried.
    let r = rig();
    r.launcher
        .faults
        .inject_always(Op::Launch, Fault::Fail(ErrorKind::NotFound));
    assert_eq!(
        system_kind(r.prepare().await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(r.launcher.faults.calls(Op::Launch), 1);
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

/// Every event, as a short line.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl crate::observe::Observer for Recorder {
    fn observe(&self, event: &crate::observe::Event) {
        use crate::observe::Event as E;
        let line = match event {
            E::Phase { phase, .. } => format!("phase {phase:?}"),
            E::Launching { task_definition } => format!("launching {task_definition}"),
            E::Launched { .. } => "launched".into(),
            E::Ready { .. } => "ready".into(),
            E::TaskState { state, .. } => format!("state {state:?}"),
            E::Stopped { cause, .. } => format!("stopped by {}", cause.as_str()),
            E::ApiCall { operation, outcome } => {
                format!("{} {}", operation.as_str(), outcome.as_str())
            }
            E::Retry {
                operation, attempt, ..
            } => format!("retry {operation} after attempt {attempt}"),
            E::Summary(s) => format!("summary {:?} {}", s.point, s.details.cpu_units.unwrap_or(0)),
            E::WarmPool { outcome } => format!("warm pool {}", outcome.as_str()),
        };
        self.0.lock().unwrap().push(line);
    }
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

mod images;
mod pool;
