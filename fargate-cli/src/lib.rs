//! The `fargate` command: a drop-in replacement for GitLab's Fargate custom executor
//! driver, built from `fargate-core`, `fargate-aws` and `fargate-ssh`.
//!
//! It reads the Go driver's `fargate.toml` (its reader lives here, not in the libraries) into
//! the driver's options, the ECS and SSH backends' configurations, the log settings and the
//! metadata directory, then runs one stage.
//!
//! Exit codes: 0 on success; `$BUILD_FAILURE_EXIT_CODE` (default 1) when the job's script
//! failed, with the script's own code written to `$BUILD_EXIT_CODE_FILE`; and
//! `$SYSTEM_FAILURE_EXIT_CODE` (default 2) for everything else (configuration, AWS, SSH,
//! the task, cancellation). The decision is `fargate_core::Failure::exit`.

mod args;
mod backends;
mod config;
mod logging;
mod signals;
mod stages;

pub use args::{Args, Command, Stage, normalize};
pub use stages::{VERSION, main_impl};
