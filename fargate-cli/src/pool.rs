//! `fargate pool status|fill|drain`: the warm pool's admin commands
//! ([`fargate_core::driver::pool`]).

use std::io::Write;
use std::sync::Arc;

use fargate_core::driver::pool::PoolReport;
use fargate_core::observe::StageOutcome;

use crate::args::{Args, PoolAction, PoolArgs};
use crate::config::FileConfig;
use crate::metrics::Metrics;
use crate::stages::{driver, print_plain};

/// Runs `fargate pool` with the resolved configuration; returns the exit code: 0 when all
/// went well, 2 when something failed.
pub(crate) async fn run(args: &Args, pool: &PoolArgs, config: FileConfig) -> i32 {
    let metrics = Metrics::new(config.metrics_file.clone());
    let driver = driver(args, config, Arc::new(metrics.clone()), None);
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
            if report.failures.is_empty() { 0 } else { 2 }
        }
        Err(err) => {
            print_plain(err);
            2
        }
    };
    metrics.finish(
        name,
        None,
        if code == 0 {
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
