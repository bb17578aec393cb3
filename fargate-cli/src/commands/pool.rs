//! `fargate pool status|fill|drain`: the warm pool's admin commands
//! ([`fargate_core::driver::pool`]).

use std::io::Write;
use std::sync::Arc;

use fargate_core::driver::pool::PoolReport;
use fargate_core::observe::StageOutcome;

use crate::args::{PoolAction, PoolArgs};
use crate::context::Context;
use crate::errors::print_plain;
use crate::metrics::Metrics;
use crate::{driver, exit_codes};

/// Runs `fargate pool`; returns the exit code: [`exit_codes::SUCCESS`] when all went well,
/// [`exit_codes::COMMAND_FAILED`] when something failed.
pub(super) async fn run(pool: &PoolArgs, context: Context) -> i32 {
    let metrics = Metrics::new(context.config.metrics_file.clone());
    let driver = driver::build(
        context.config,
        context.overrides,
        Arc::new(metrics.clone()),
        None,
    );
    let (name, result) = match pool.action {
        PoolAction::Status => ("pool_status", driver.pool_status().await),
        PoolAction::Fill {
            background: true, ..
        } => {
            let cancel = tokio_util::sync::CancellationToken::new();
            if let Err(e) = crate::signals::cancel_on_signals(cancel.clone()) {
                tracing::warn!("cannot listen for signals: {e}");
            }
            ("pool_refill", Ok(driver.pool_refill(&cancel).await))
        }
        PoolAction::Fill { wait, .. } => ("pool_fill", driver.pool_fill(wait).await),
        PoolAction::Drain => ("pool_drain", driver.pool_drain().await),
    };
    let code = match &result {
        Ok(report) => {
            print(report, pool.json);
            if report.failures.is_empty() {
                exit_codes::SUCCESS
            } else {
                exit_codes::COMMAND_FAILED
            }
        }
        Err(err) => {
            print_plain(err);
            exit_codes::COMMAND_FAILED
        }
    };
    metrics.finish(
        name,
        None,
        if code == exit_codes::SUCCESS {
            StageOutcome::Success
        } else {
            StageOutcome::SystemFailure
        }
        .as_str(),
        None,
    );
    code
}

fn print(report: &PoolReport, json: bool) {
    let text = if json {
        serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
