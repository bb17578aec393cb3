//! `fargate custom config|prepare|run|cleanup`: the custom executor's stages, run by
//! gitlab-runner; each turns its outcome into the exit code the runner asked for.

use std::io::Write;
use std::sync::Arc;

use fargate_core::driver::config_output;
use fargate_core::observe::{Observers, StageOutcome};
use fargate_core::{DriverOptions, Error, Failure, JobContext, StdioSink};
use tokio_util::sync::CancellationToken;

use crate::args::Stage;
use crate::context::Context;
use crate::detached::{keeper_socket, start_keeper, start_refill, stop_keeper};
use crate::errors::log_failure;
use crate::exit_codes;
use crate::job_log::JobLog;
use crate::metrics::Metrics;
use crate::{VERSION, driver, signals};

/// Runs `stage` of `job` with `context` (a setup error, already printed, fails the stage);
/// returns the exit code: [`exit_codes::SUCCESS`], or the runner's build or system failure
/// code ([`Failure::exit`]), having written the script's exit code to
/// `BUILD_EXIT_CODE_FILE` for a build failure.
pub(super) async fn run(
    stage: &Stage,
    job: &JobContext,
    context: fargate_core::Result<Context>,
) -> i32 {
    let mut metrics = Metrics::new(None);
    let mut job_key = None;
    let result = match context {
        Ok(context) => {
            metrics = Metrics::new(context.config.metrics_file.clone());
            job_key = context
                .config
                .options
                .namespace
                .as_ref()
                .and_then(|ns| job.identity(ns).ok())
                .map(|id| id.key().to_string());
            run_stage(stage, context, job, &metrics).await
        }
        Err(err) => Err(err.into()),
    };
    let (name, step) = match stage {
        Stage::Config => ("config", None),
        Stage::Prepare => ("prepare", None),
        Stage::Run { stage, .. } => ("run", Some(stage.as_str())),
        Stage::Cleanup => ("cleanup", None),
    };
    metrics.finish(name, step, outcome(&result), job_key.as_deref());
    let Err(failure) = result else {
        return exit_codes::SUCCESS;
    };
    log_failure(&failure);
    let decision = failure.exit(&job.exit_codes);
    if let (Some(code), Some(path)) = (decision.build_exit_code, &job.build_exit_code_file)
        && let Err(e) = std::fs::write(path, format!("{code}\n"))
    {
        tracing::error!(
            "cannot write the script's exit code to {}: {e}",
            path.display()
        );
    }
    decision.exit_code
}

/// The outcome label of a stage's result: `success`, `script_failure`, `system_failure` or
/// `cancelled`.
fn outcome(result: &Result<(), Failure>) -> &'static str {
    StageOutcome::of(result).as_str()
}

async fn run_stage(
    stage: &Stage,
    context: Context,
    job: &JobContext,
    metrics: &Metrics,
) -> Result<(), Failure> {
    let Context {
        config,
        overrides,
        relaunch,
        ..
    } = context;
    if let Stage::Config = stage {
        return print_config(&config.options, job);
    }
    let cancel = CancellationToken::new();
    if let Err(e) = signals::cancel_on_signals(cancel.clone()) {
        tracing::warn!("cannot listen for signals: {e}");
    }
    let keeper = keeper_socket(&config, job);
    let pool = config.options.pool.enabled();
    let observer = Arc::new(Observers(vec![Arc::new(JobLog), Arc::new(metrics.clone())]));
    let driver = driver::build(
        config,
        overrides,
        observer,
        keeper.as_deref().filter(|_| is_run(stage)),
    );
    match stage {
        Stage::Config => Ok(()),
        Stage::Prepare => {
            // The job log's lines come from the driver's events (`JobLog`).
            let prepared = driver.prepare(job, &cancel).await;
            // The pool's refill runs in a process of its own, whatever became of the job.
            if pool {
                start_refill(&relaunch);
            }
            prepared?;
            if let Some(socket) = &keeper {
                start_keeper(&relaunch, socket, &driver.identity(job)?.key()).await;
            }
            Ok(())
        }
        Stage::Run { script, stage, .. } => {
            let bytes = tokio::fs::read(script).await.map_err(|e| {
                Error::io(
                    format!("cannot read the stage script {}", script.display()),
                    e,
                )
            })?;
            let mut sink = StdioSink;
            driver
                .run(job, stage, Arc::from(bytes), &mut sink, &cancel)
                .await
        }
        Stage::Cleanup => {
            if let Some(socket) = &keeper {
                stop_keeper(socket);
            }
            // Cleanup is never cancelled: it finishes its stop under its own deadline.
            driver.cleanup(job).await.map(drop)
        }
    }
}

fn is_run(stage: &Stage) -> bool {
    matches!(stage, Stage::Run { .. })
}

fn print_config(options: &DriverOptions, job: &JobContext) -> Result<(), Failure> {
    let out = config_output(options, job, VERSION);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing the configuration for the runner", e).into())
}
