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

fn lagging_rig(invisible_for: Duration) -> Rig {
    rig_with(
        config(),
        BootPlan {
            invisible_for,
            ..BootPlan::default()
        },
    )
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
            E::Kept { .. } => "kept".into(),
        };
        self.0.lock().unwrap().push(line);
    }
}

mod capacity;
mod cleanup;
mod conformance;
mod images;
mod isolation;
mod keep;
mod launch;
mod lifecycle;
mod limits;
mod pool;
mod ready;
mod rollback;
mod run;
mod task_definition;

/// Embedders spawn stages on a multi-threaded runtime (`tokio::spawn`): every stage's
/// future is `Send`. A compile-time check: this test module does not build otherwise.
#[allow(dead_code)]
fn stages_are_send(driver: &Driver, job: &JobContext, cancel: &CancellationToken) {
    fn send<T: Send>(_: &T) {}
    send(&driver.prepare(job, cancel));
    send(&driver.cleanup(job));
    let mut out = CapturedOutput::default();
    send(&driver.run(job, "build_script", Arc::from(&b""[..]), &mut out, cancel));
    send(&driver.pool_refill(cancel));
    send(&driver.pool_fill(true));
    send(&driver.pool_drain());
    send(&driver.release_kept(1));
    send(&driver.kept_tasks());
}
