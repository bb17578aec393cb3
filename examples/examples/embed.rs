//! Embedding `fargate_core::Driver` in an orchestration service.
//!
//! The service below runs whole CI jobs itself (no gitlab-runner, no process per stage):
//! prepare, a series of stage scripts whose output is streamed line by line with a prefix,
//! then cleanup. It uses the in-memory backends of `fargate_core::testing`, so it needs no
//! AWS account, no network and no SSH server; swap in `fargate_aws::EcsLauncher`,
//! `fargate_ssh::Ssh2Shell` and `fargate_core::FileMetadataStore` for the real thing.
//!
//! Three jobs run concurrently:
//!
//! * job 101 succeeds;
//! * job 102's `build_script` exits 3: a *build* failure, its `after_script` still runs;
//! * job 103's task is stopped by the platform (a simulated Spot interruption) while the
//!   job runs: a *system* failure whose message carries the stop reason.
//!
//! It also loads the annotated sample `examples/fargate.toml`, which must load without
//! errors or warnings. At the end it prints how each outcome maps to the custom executor's exit codes, and it
//! exits non-zero if anything did not happen as described (CI runs it:
//! `cargo run -p fargate-examples --example embed`).

use std::error::Error as StdError;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fargate_core::observe::{Event, Observer, StopCause};

use fargate_core::testing::{BootPlan, MemoryLauncher, MemoryShell, MemoryStore};
use fargate_core::{
    Driver, DriverOptions, ErrorKind, ExitDecision, Failure, JobContext, JobResponse,
    MetadataStore, Namespace, OutputSink,
};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The driver's options, built in code: only what the driver itself needs (the backends
/// have their own configuration; the `fargate` command reads all of it from
/// `fargate.toml`). `build` checks them and lists every problem.
fn options() -> Result<DriverOptions, BoxError> {
    let ms = Duration::from_millis;
    Ok(DriverOptions::builder()
        .namespace(Namespace::parse("embed-example")?)
        .task_definition("ci-coordinator:1")
        // Fast polling: the in-memory tasks boot in a few describe calls.
        .poll_intervals(ms(20), ms(50))
        .ready_timeout(Duration::from_secs(10))
        .stop_timeout(Duration::from_secs(5))
        .probe_interval(ms(20))
        .build()?)
}

/// An [`OutputSink`] that prefixes every line with the job and stage, and writes whole
/// lines only (so that the output of concurrent jobs does not interleave mid-line).
struct PrefixSink {
    prefix: String,
    partial: [Vec<u8>; 2],
    lines: usize,
}

impl PrefixSink {
    fn new(job: u64, stage: &str) -> Self {
        PrefixSink {
            prefix: format!("[job {job} {stage:>14}]"),
            partial: [Vec::new(), Vec::new()],
            lines: 0,
        }
    }

    fn write(&mut self, stream: usize, chunk: &[u8]) -> io::Result<()> {
        let tag = if stream == 0 { "out" } else { "err" };
        self.partial[stream].extend_from_slice(chunk);
        while let Some(end) = self.partial[stream].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "{} {tag}| {text}", self.prefix)?;
            self.lines += 1;
        }
        Ok(())
    }

    /// Writes what is left of unterminated lines.
    fn finish(&mut self) -> io::Result<()> {
        for stream in 0..2 {
            if !self.partial[stream].is_empty() {
                self.partial[stream].push(b'\n');
                self.write(stream, &[])?;
            }
        }
        Ok(())
    }
}

impl OutputSink for PrefixSink {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write(0, chunk)
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write(1, chunk)
    }
}

/// What happened to one job.
struct JobOutcome {
    job: u64,
    /// The first failure of the job, if any (prepare, or the first failing stage).
    failure: Option<Failure>,
    /// Stages that ran, in order.
    stages_run: Vec<String>,
    /// The exit decision the `fargate` binary would carry out.
    decision: Option<ExitDecision>,
    elapsed: Duration,
}

/// The orchestration service: one [`Driver`] shared by every job.
struct CiService {
    driver: Driver,
    launcher: Arc<MemoryLauncher>,
    shell: Arc<MemoryShell>,
}

/// The stages of a job, in the order gitlab-runner runs them, with their scripts.
fn stages(job: u64) -> Vec<(&'static str, String)> {
    let build = match job {
        102 => "echo compiling; echo error: tests failed >&2; exit 3".to_owned(),
        _ => "echo compiling; echo 42 tests passed".to_owned(),
    };
    vec![
        (
            "prepare_script",
            format!("echo Running on task of job {job}"),
        ),
        (
            "get_sources",
            "echo Fetching changes; echo Checking out abc123".into(),
        ),
        ("build_script", build),
        (
            "after_script",
            "echo after_script runs even after a failed build".into(),
        ),
        ("cleanup_file_variables", "true".into()),
    ]
}

impl CiService {
    /// Runs one job from prepare to cleanup, as gitlab-runner would call the stages.
    async fn run_job(&self, job: u64) -> Result<JobOutcome, BoxError> {
        let start = Instant::now();
        // The job's identity comes from the job payload (what gitlab-runner writes to
        // JOB_RESPONSE_FILE), never from job variables, which the pipeline author writes.
        // Exit codes default to the runner's: 1 for a build failure, 2 for a system failure.
        let ctx = JobContext::new(JobResponse::new(job));
        let cancel = CancellationToken::new();
        let mut outcome = JobOutcome {
            job,
            failure: None,
            stages_run: Vec::new(),
            decision: None,
            elapsed: Duration::ZERO,
        };

        let mut task = None;
        match self.driver.prepare(&ctx, &cancel).await {
            Ok(report) => {
                task = Some((report.task.clone(), report.endpoint.ip));
                println!(
                    "[job {job}] task {} ready at {} (host key {}) after {} ms, {} DescribeTasks, {} SSH probes",
                    report.task,
                    report.endpoint,
                    report.host_key,
                    report.ssh_ready.as_millis(),
                    report.describe_calls,
                    report.probes,
                );
            }
            Err(failure) => outcome.failure = Some(failure),
        }

        if outcome.failure.is_none() {
            let mut build_failed = false;
            for (stage, script) in stages(job) {
                // Like gitlab-runner: after a failed build only after_script and the
                // cleanup of file variables still run.
                if build_failed && !matches!(stage, "after_script" | "cleanup_file_variables") {
                    continue;
                }
                if let (103, "build_script", Some((task, ip))) = (job, stage, &task) {
                    // Simulate the platform taking the task away mid-job (a Spot
                    // interruption): ECS stops it and its SSH server no longer answers.
                    self.launcher
                        .kill(task, "SpotInterruption: Your Spot Task was interrupted.");
                    self.shell.set_down(*ip, true);
                }
                let mut sink = PrefixSink::new(job, stage);
                let result = self
                    .driver
                    .run(
                        &ctx,
                        stage,
                        Arc::from(script.into_bytes()),
                        &mut sink,
                        &cancel,
                    )
                    .await;
                sink.finish()?;
                outcome.stages_run.push(stage.to_owned());
                if let Err(failure) = result {
                    println!("[job {job}] stage {stage} failed: {failure}");
                    let system = failure.as_system().is_some();
                    if outcome.failure.is_none() {
                        outcome.failure = Some(failure);
                    }
                    if system {
                        break; // the task is gone: nothing else can run
                    }
                    build_failed = true;
                }
            }
        }

        // Cleanup always runs, and is never cancelled.
        let report = self.driver.cleanup(&ctx).await?;
        println!(
            "[job {job}] cleanup stopped {} task(s) (record found: {})",
            report.stopped.len(),
            report.had_record
        );
        outcome.decision = outcome.failure.as_ref().map(|f| f.exit(&ctx.exit_codes));
        outcome.elapsed = start.elapsed();
        Ok(outcome)
    }
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected outcome: {what}").into())
    }
}

/// Counts the driver's events (`fargate_core::observe`), as a service's metrics would.
#[derive(Debug, Default)]
struct EventCounts {
    calls: AtomicU32,
    stops: AtomicU32,
    summaries: AtomicU32,
}

impl Observer for EventCounts {
    fn observe(&self, event: &Event) {
        let counter = match event {
            Event::ApiCall { .. } => &self.calls,
            Event::Stopped {
                cause: StopCause::Cleanup,
                ..
            } => &self.stops,
            Event::Summary(_) => &self.summaries,
            _ => return,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = options()?;
    // Tasks report their address on the 2nd describe and run from the 3rd.
    let launcher = Arc::new(MemoryLauncher::with_plan(BootPlan {
        describes_until_address: 1,
        describes_until_running: 2,
        ..BootPlan::default()
    }));
    let shell = Arc::new(MemoryShell::new());
    let store = Arc::new(MemoryStore::new());
    let events = Arc::new(EventCounts::default());
    let service = CiService {
        driver: Driver::new(options, launcher.clone(), shell.clone(), store.clone())
            .with_observer(events.clone()),
        launcher: launcher.clone(),
        shell,
    };

    let (a, b, c) = tokio::join!(
        service.run_job(101),
        service.run_job(102),
        service.run_job(103)
    );
    let outcomes = [a?, b?, c?];

    println!();
    println!("job  outcome                                   exit  BUILD_EXIT_CODE_FILE  time");
    for o in &outcomes {
        let (what, exit, file) = match (&o.failure, o.decision) {
            (None, _) => ("success".to_owned(), 0, "-".to_owned()),
            (Some(f), Some(d)) => {
                let kind = match (f.script_exit_code(), f.as_system()) {
                    (Some(code), _) => format!("build failure (script exit {code})"),
                    (None, Some(e)) => format!("system failure ({})", e.kind()),
                    (None, None) => "failure".to_owned(),
                };
                let file = d
                    .build_exit_code
                    .map_or_else(|| "not written".to_owned(), |c| c.to_string());
                (kind, d.exit_code, file)
            }
            (Some(_), None) => ("?".to_owned(), -1, "?".to_owned()),
        };
        println!(
            "{:<4} {:<41} {:<5} {:<21} {} ms",
            o.job,
            what,
            exit,
            file,
            o.elapsed.as_millis()
        );
    }
    let (calls, stops, summaries) = (
        events.calls.load(Ordering::SeqCst),
        events.stops.load(Ordering::SeqCst),
        events.summaries.load(Ordering::SeqCst),
    );
    println!(
        "\nevents: {calls} launcher calls, {stops} tasks stopped by cleanup, {summaries} job summaries"
    );
    check(
        stops == 3,
        "each job's cleanup should report one stopped task",
    )?;
    check(summaries >= 3, "each prepared job should have a summary")?;
    if let Some(e) = outcomes[2].failure.as_ref().and_then(Failure::as_system) {
        println!("\njob 103's error, as the job log would show it:\n  {e}");
    }

    // What CI checks: every job ended as described above, and nothing was left behind.
    let [ok, build, system] = &outcomes;
    check(ok.failure.is_none(), "job 101 should succeed")?;
    check(
        ok.stages_run.len() == 5,
        "job 101 should run all five stages",
    )?;
    check(
        matches!(
            build.decision,
            Some(ExitDecision {
                exit_code: 1,
                build_exit_code: Some(3)
            })
        ),
        "job 102 should be a build failure (exit 1) with script exit code 3",
    )?;
    check(
        build.stages_run
            == [
                "prepare_script",
                "get_sources",
                "build_script",
                "after_script",
                "cleanup_file_variables",
            ],
        "job 102 should still run after_script and cleanup_file_variables",
    )?;
    check(
        matches!(
            system.decision,
            Some(ExitDecision {
                exit_code: 2,
                build_exit_code: None
            })
        ),
        "job 103 should be a system failure (exit 2)",
    )?;
    check(
        system
            .failure
            .as_ref()
            .and_then(Failure::as_system)
            .is_some_and(|e| {
                e.kind() == ErrorKind::TaskStopped && e.message().contains("SpotInterruption")
            }),
        "job 103's error should name ECS's stop reason",
    )?;
    check(launcher.running().is_empty(), "no task may be left running")?;
    check(launcher.tasks().len() == 3, "exactly one task per job")?;
    check(
        store.list().await?.is_empty(),
        "no job record may be left behind",
    )?;
    println!("\nall jobs ended as expected; no task or record left behind");
    Ok(())
}
