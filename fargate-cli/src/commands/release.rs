//! `fargate release <job id>`: stops a failed job's task kept for debugging before its time
//! is up ([`fargate_core::Driver::release_kept`]).

use std::sync::Arc;

use fargate_core::observe::StageOutcome;

use crate::args::ReleaseArgs;
use crate::context::Context;
use crate::errors::print_plain;
use crate::metrics::Metrics;
use crate::{driver, exit_codes};

/// Runs `fargate release`; returns [`exit_codes::SUCCESS`] when the task was stopped,
/// [`exit_codes::COMMAND_FAILED`] otherwise (the error says why).
pub(super) async fn run(args: &ReleaseArgs, context: Context) -> i32 {
    let metrics = Metrics::new(context.config.metrics_file.clone());
    let driver = driver::build(
        context.config,
        context.overrides,
        Arc::new(metrics.clone()),
        None,
    );
    let (code, outcome) = match driver.release_kept(args.job_id).await {
        Ok(stopped) => {
            for task in &stopped {
                println!("stopped task {task} of job {}", args.job_id);
            }
            (exit_codes::SUCCESS, StageOutcome::Success)
        }
        Err(err) => {
            print_plain(&err);
            (exit_codes::COMMAND_FAILED, StageOutcome::SystemFailure)
        }
    };
    metrics.finish("release", None, outcome.as_str(), None);
    code
}
