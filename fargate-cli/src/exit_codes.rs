//! Every exit code of `fargate`, in one table.
//!
//! The stages (`fargate custom ...`) exit with the codes gitlab-runner asks for in their
//! environment; the administrator's commands (`doctor`, `gc`, `pool`, `store`) and the hidden
//! `keeper` with fixed ones.
//!
//! | Code | Who | When |
//! |---|---|---|
//! | [`SUCCESS`] (0) | every command | a stage succeeded; `doctor`: every check passed; `gc`, `pool`: all went well; `store`: the table is usable; `--help`, `--version` |
//! | `$BUILD_FAILURE_EXIT_CODE` (unset: [`DEFAULT_BUILD_FAILURE`], 1) | a stage | the job's script failed (its own code written to `$BUILD_EXIT_CODE_FILE` when the runner sets it), or the job asked for something it may not use (a task definition, a platform version, ...) |
//! | `$SYSTEM_FAILURE_EXIT_CODE` (unset: [`DEFAULT_SYSTEM_FAILURE`], 2) | a stage | anything else: the configuration, AWS, SSH, the task, a cancellation |
//! | [`COMMAND_FAILED`] (2) | a stage | the runner's variables cannot be read (e.g. an exit-code variable that is not a number in 1..=255) |
//! | [`CHECKS_FAILED`] (1) | `doctor`, `store` | a check failed (the checklist says which, with a fix); `store`: the table is missing or unusable |
//! | [`COMMAND_FAILED`] (2) | `doctor`, `gc`, `pool`, `store`, `keeper` | the command could not start (configuration, logging, metadata directory; `store`: no table configured, AWS unreachable) or, for `gc`, `pool` and `keeper`, failed or did not do all of its work |
//! | [`usage_failure`] (`$SYSTEM_FAILURE_EXIT_CODE`, else 2) | every command | the command line is wrong, or the process cannot start its async runtime |
//!
//! The stage codes are the runner's ([`fargate_core::ExitCodes`], read by
//! [`fargate_core::JobContext::from_env`]; [`fargate_core::Failure::exit`] chooses between
//! them).

use std::process::ExitCode;

/// Success: a stage, or a command with nothing failed; also `--help` and `--version`.
pub const SUCCESS: i32 = 0;

/// A stage whose job's script failed, when the runner does not set
/// `BUILD_FAILURE_EXIT_CODE` ([`fargate_core::ExitCodes::default`]).
pub const DEFAULT_BUILD_FAILURE: i32 = 1;

/// A stage that failed for any other reason, when the runner does not set
/// `SYSTEM_FAILURE_EXIT_CODE` ([`fargate_core::ExitCodes::default`]).
pub const DEFAULT_SYSTEM_FAILURE: i32 = 2;

/// `fargate doctor`: at least one check failed; `fargate store`: the table is not usable.
pub const CHECKS_FAILED: i32 = 1;

/// A command that failed: `doctor`, `gc`, `pool` or `keeper` could not start (a setup
/// error, printed on stderr), `gc` or `pool` left something undone, the `keeper` ended
/// with an error; a stage that cannot read the runner's variables.
pub const COMMAND_FAILED: i32 = 2;

/// The exit code for a failure before any command runs (a wrong command line, no async
/// runtime): `SYSTEM_FAILURE_EXIT_CODE` when it is a number in 1..=255 (the runner's stages
/// fail as a system failure), [`COMMAND_FAILED`] otherwise.
pub fn usage_failure() -> u8 {
    usage_failure_from(std::env::var("SYSTEM_FAILURE_EXIT_CODE").ok().as_deref())
}

fn usage_failure_from(system_failure: Option<&str>) -> u8 {
    system_failure
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|c| *c != 0)
        .unwrap_or(COMMAND_FAILED as u8)
}

/// The process's exit code for a command's `code`; one that is not in 0..=255 (never
/// returned) exits as `fallback`.
pub(crate) fn exit_code(code: i32, fallback: u8) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_defaults_are_the_runners() {
        let codes = fargate_core::ExitCodes::default();
        assert_eq!(codes.build_failure, DEFAULT_BUILD_FAILURE);
        assert_eq!(codes.system_failure, DEFAULT_SYSTEM_FAILURE);
        assert_eq!(i32::from(usage_failure_from(None)), DEFAULT_SYSTEM_FAILURE);
    }

    #[test]
    fn usage_failures_follow_the_runners_system_failure_code() {
        assert_eq!(usage_failure_from(Some(" 7\n")), 7);
        for unusable in ["0", "256", "-1", "x", ""] {
            assert_eq!(usage_failure_from(Some(unusable)), 2, "{unusable:?}");
        }
    }
}
