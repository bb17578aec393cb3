//! `fargate slots`: who holds the slots of each limited project
//! ([`fargate_core::Driver::project_slots`]), as the metadata store holds them.

use std::io::Write;
use std::sync::Arc;

use fargate_core::observe::NoopObserver;

use crate::args::SlotsArgs;
use crate::context::Context;
use crate::errors::print_plain;
use crate::{driver, exit_codes};

/// Runs `fargate slots`; returns [`exit_codes::SUCCESS`], or
/// [`exit_codes::COMMAND_FAILED`] when the store cannot be read.
pub(super) async fn run(args: &SlotsArgs, context: Context) -> i32 {
    let driver = driver::build(
        context.config,
        context.overrides,
        Arc::new(NoopObserver),
        None,
    );
    let report = match driver.project_slots().await {
        Ok(report) => report,
        Err(err) => {
            print_plain(&err);
            return exit_codes::COMMAND_FAILED;
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    exit_codes::SUCCESS
}
