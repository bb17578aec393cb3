//! Errors, and the one place where a failure becomes a build or a system failure.
//!
//! Every fallible operation of the driver and of its backends returns [`Error`]: a
//! [`ErrorKind`] that callers branch on, a message written for the person reading the job
//! log, an optional hint saying what to do, whether retrying may help, and the source chain.
//!
//! The stage operations of [`crate::driver::Driver`] return a [`Failure`], which is either a
//! failure of the job's own script ([`Failure::Script`], a *build failure* for GitLab) or a
//! failure of anything else ([`Failure::System`]). [`Failure::exit`] turns it into the exit
//! code the runner expects ([`ExitDecision`]); the CLI only carries that decision out.

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure an [`Error`] is. Callers branch on this, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The driver configuration (`fargate.toml`, flags) is invalid.
    InvalidConfig,
    /// Input from the runner (environment, arguments, script file) is invalid.
    InvalidInput,
    /// A job variable asked for something the administrator did not allow.
    NotAllowed,
    /// The thing asked for does not exist (task, record, task definition, cluster).
    NotFound,
    /// The credentials used are not allowed to do this.
    PermissionDenied,
    /// Authentication failed (AWS credentials or the SSH key).
    AuthenticationFailed,
    /// The API refused the call because of its rate limits. Retrying later helps.
    Throttled,
    /// There was no capacity to start the task (Fargate capacity, ENIs, IP addresses).
    CapacityUnavailable,
    /// A deadline passed before the operation completed.
    Timeout,
    /// The operation was cancelled (SIGTERM from the runner, job cancelled).
    Cancelled,
    /// The remote end could not be reached or the connection broke.
    Unreachable,
    /// The SSH host key differs from the one pinned when the task became ready.
    HostKeyMismatch,
    /// The task stopped (or was never able to start).
    TaskStopped,
    /// A stored job record is unreadable.
    CorruptRecord,
    /// A local I/O error (metadata directory, script file, log file).
    Io,
    /// The backend does not support this operation.
    Unsupported,
    /// Anything else: a bug, or an answer we did not expect.
    Unexpected,
}

impl ErrorKind {
    /// A short lowercase name for logs and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotAllowed => "not allowed",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::AuthenticationFailed => "authentication failed",
            ErrorKind::Throttled => "throttled",
            ErrorKind::CapacityUnavailable => "capacity unavailable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::HostKeyMismatch => "host key mismatch",
            ErrorKind::TaskStopped => "task stopped",
            ErrorKind::CorruptRecord => "corrupt job record",
            ErrorKind::Io => "i/o error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unexpected => "unexpected error",
        }
    }

    /// Whether an error of this kind is worth retrying by default.
    pub fn is_temporary_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::CapacityUnavailable | ErrorKind::Unreachable
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of the driver and its backends.
///
/// Its `Display` is the message, then the hint (if any); the source chain is available
/// through [`std::error::Error::source`] and [`Error::chain`].
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    temporary: bool,
    outcome_unknown: bool,
    backend: Option<&'static str>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message for the person reading the job log.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            temporary: kind.is_temporary_by_default(),
            outcome_unknown: matches!(
                kind,
                ErrorKind::Timeout | ErrorKind::Unreachable | ErrorKind::Cancelled
            ),
            backend: None,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Attaches a hint: what the reader can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Marks the error as worth (or not worth) retrying.
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// Says whether the remote side may have carried out the call despite this error (no
    /// answer, a lost connection, a server error), or definitely did not (it refused the
    /// call). Defaults to `true` for [`ErrorKind::Timeout`], [`ErrorKind::Unreachable`] and
    /// [`ErrorKind::Cancelled`], `false` otherwise.
    pub fn set_outcome_unknown(mut self, unknown: bool) -> Self {
        self.outcome_unknown = unknown;
        self
    }

    /// Names the backend the error comes from (`"ecs"`, `"ssh"`, `"file store"`).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Prefixes the message with what was being done: `"{context}: {message}"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without hint or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the reader can do about it, if we know.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether retrying the same call may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Whether the call may have taken effect although it failed (see
    /// [`Error::set_outcome_unknown`]). A launch that failed this way is retried with the
    /// same client token; one that definitely failed gets a new token.
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// The backend the error comes from, if named.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }

    /// The message followed by each cause, joined with `": "`.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut next = self.source.as_deref().map(|s| s as &dyn StdError);
        while let Some(err) = next {
            let text = err.to_string();
            if !text.is_empty() && !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = err.source();
        }
        out
    }

    /// Shorthand for a cancellation error.
    pub fn cancelled(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Cancelled, format!("{what}: cancelled"))
    }

    /// Shorthand for a deadline error.
    pub fn timeout(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Timeout, format!("{what}: timed out"))
    }

    /// Shorthand for a local I/O error.
    pub fn io(what: impl fmt::Display, source: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, format!("{what}: {source}")).with_source(source)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("hint", &self.hint)
            .field("temporary", &self.temporary)
            .field("outcome_unknown", &self.outcome_unknown)
            .field("backend", &self.backend)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Result with the driver's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a stage failed: the job's script, or anything else.
#[derive(Debug)]
pub enum Failure {
    /// The job's own script failed. GitLab shows it as a script failure with this exit code
    /// (and `allow_failure: exit_codes` applies to it).
    Script {
        /// The exit code to report (1-255).
        exit_code: i32,
        /// What happened, e.g. "the script exited with status 3".
        message: String,
    },
    /// Everything else: configuration, AWS, the network, the task, the driver itself.
    System(Error),
}

impl Failure {
    /// A script failure with `exit_code`.
    pub fn script(exit_code: i32, message: impl Into<String>) -> Self {
        Failure::Script {
            exit_code,
            message: message.into(),
        }
    }

    /// The exit code and `BUILD_EXIT_CODE_FILE` content for this failure.
    ///
    /// | Failure | exit | `BUILD_EXIT_CODE_FILE` |
    /// |---|---|---|
    /// | `Script { exit_code: N }` | `codes.build_failure` | `N` |
    /// | `System(_)` | `codes.system_failure` | not written |
    pub fn exit(&self, codes: &ExitCodes) -> ExitDecision {
        match self {
            Failure::Script { exit_code, .. } => ExitDecision {
                exit_code: codes.build_failure,
                build_exit_code: Some(*exit_code),
            },
            Failure::System(_) => ExitDecision {
                exit_code: codes.system_failure,
                build_exit_code: None,
            },
        }
    }

    /// The system error, if this is a system failure.
    pub fn as_system(&self) -> Option<&Error> {
        match self {
            Failure::System(err) => Some(err),
            Failure::Script { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Script { message, .. } => f.write_str(message),
            Failure::System(err) => write!(f, "{err}"),
        }
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Failure::System(err) => Some(err),
            Failure::Script { .. } => None,
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::System(err)
    }
}

/// The exit codes the runner asked for (`BUILD_FAILURE_EXIT_CODE`, `SYSTEM_FAILURE_EXIT_CODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCodes {
    /// Exit code for a failure of the job's script. Default 1.
    pub build_failure: i32,
    /// Exit code for any other failure. Default 2.
    pub system_failure: i32,
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            build_failure: 1,
            system_failure: 2,
        }
    }
}

/// What the process should do on exit: its exit code, and what to write into
/// `BUILD_EXIT_CODE_FILE` (when the runner set it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitDecision {
    /// The process exit code.
    pub exit_code: i32,
    /// The script's own exit code, to be written to `BUILD_EXIT_CODE_FILE`.
    pub build_exit_code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_failure_maps_to_build_code_and_records_its_own_code() {
        let codes = ExitCodes {
            build_failure: 11,
            system_failure: 22,
        };
        let d = Failure::script(3, "exit 3").exit(&codes);
        assert_eq!(
            d,
            ExitDecision {
                exit_code: 11,
                build_exit_code: Some(3)
            }
        );
    }

    #[test]
    fn every_system_failure_maps_to_system_code() {
        let codes = ExitCodes::default();
        for kind in [
            ErrorKind::InvalidConfig,
            ErrorKind::Throttled,
            ErrorKind::Cancelled,
            ErrorKind::TaskStopped,
            ErrorKind::HostKeyMismatch,
        ] {
            let d = Failure::System(Error::new(kind, "x")).exit(&codes);
            assert_eq!(d.exit_code, 2, "{kind}");
            assert_eq!(d.build_exit_code, None);
        }
    }

    #[test]
    fn chain_joins_sources_and_display_adds_hint() {
        let io = std::io::Error::other("disk full");
        let err = Error::new(ErrorKind::Io, "writing record")
            .with_source(io)
            .with_hint("free some space")
            .context("prepare");
        assert_eq!(err.chain(), "prepare: writing record: disk full");
        assert_eq!(
            err.to_string(),
            "prepare: writing record (hint: free some space)"
        );
        assert!(!err.is_temporary());
        assert!(Error::new(ErrorKind::Throttled, "slow down").is_temporary());
    }
}
