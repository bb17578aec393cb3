#![doc = include_str!("../README.md")]

mod args;
mod backends;
mod commands;
mod config;
mod context;
mod detached;
mod driver;
mod errors;
pub mod exit_codes;
mod human_log;
mod job_log;
mod logging;
mod metrics;
mod shared_files;
mod signals;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Args, Command, DoctorArgs, GcArgs, KeeperArgs, Stage, normalize};

/// The driver's version, as shown by the runner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the `fargate` command with `args` (including the program name); the exit codes are
/// [`exit_codes`]'.
pub fn main_impl(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(normalize(args)) {
        Ok(args) => args,
        Err(err) => {
            // Help and version go to stdout on request; errors to stderr, never stdout
            // (the config stage's stdout is JSON for the runner).
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(exit_codes::usage_failure())
            } else {
                ExitCode::from(exit_codes::SUCCESS as u8)
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: fargate: cannot start the async runtime: {e}");
            return ExitCode::from(exit_codes::usage_failure());
        }
    };
    let code = runtime.block_on(commands::execute(args));
    // Do not wait for blocking threads (an SSH session being torn down) at exit.
    runtime.shutdown_background();
    exit_codes::exit_code(code, exit_codes::usage_failure())
}
