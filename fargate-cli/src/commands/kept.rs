//! `fargate kept`: the failed jobs' tasks this runner keeps for debugging
//! ([`fargate_core::Driver::kept_tasks`]), as their records say.

use std::io::Write;
use std::sync::Arc;

use fargate_core::observe::NoopObserver;

use crate::args::KeptArgs;
use crate::context::Context;
use crate::errors::print_plain;
use crate::{driver, exit_codes};

/// Runs `fargate kept`; returns [`exit_codes::SUCCESS`], or [`exit_codes::COMMAND_FAILED`]
/// when the records cannot be read.
pub(super) async fn run(args: &KeptArgs, context: Context) -> i32 {
    let driver = driver::build(
        context.config,
        context.overrides,
        Arc::new(NoopObserver),
        None,
    );
    let kept = match driver.kept_tasks().await {
        Ok(kept) => kept,
        Err(err) => {
            print_plain(&err);
            return exit_codes::COMMAND_FAILED;
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&kept).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        let mut lines: Vec<String> = kept.iter().map(ToString::to_string).collect();
        lines.push(format!("{} task(s) kept for debugging", kept.len()));
        lines.join("\n")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    exit_codes::SUCCESS
}
