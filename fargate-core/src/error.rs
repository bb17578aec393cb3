//! Errors, and the one place where a failure becomes a build or a system failure.
//!
//! Every fallible operation of the driver and of its backends returns [`Error`]: a
//! [`ErrorKind`] that callers branch on, a message written for the person reading the job
//! log, the operation that failed and key/value context (`task`, `job`, `cluster`, ...)
//! kept apart from the message, an optional hint saying what to do, whether retrying may
//! help, and the source chain.
//!
//! The stage operations of [`crate::driver::Driver`] return a [`Failure`], which is either a
//! failure of the job's own script ([`FailureClass::Script`], a *build failure* for GitLab)
//! or a failure of anything else ([`FailureClass::System`]). Which class an error belongs
//! to is decided in one place, [`ErrorKind::failure_class`]. [`Failure::exit`] turns a
//! failure into the exit code the runner expects ([`ExitDecision`]); the CLI only carries
//! that decision out.
//!
//! [`Failure`] is a `std::error::Error + Send + Sync + 'static` with its source chain, so
//! an embedder can use `?` into `Box<dyn Error>` or `anyhow::Error` and keep every cause:
//!
//! ```
//! # use fargate_core::{Error, ErrorKind, Failure, FailureClass};
//! fn stage() -> Result<(), Failure> {
//!     let io = std::io::Error::other("disk full");
//!     Err(Error::new(ErrorKind::Io, "cannot write the job record")
//!         .with_operation("prepare")
//!         .with_context("job", "42")
//!         .with_source(io))?
//! }
//! fn embedder() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     stage()?;
//!     Ok(())
//! }
//! let err = embedder().unwrap_err();
//! assert_eq!(err.to_string(), "prepare: cannot write the job record (job: 42)");
//! assert_eq!(err.source().unwrap().to_string(), "disk full");
//! let failure = err.downcast_ref::<Failure>().unwrap();
//! assert_eq!(failure.class(), FailureClass::System);
//! assert_eq!(failure.error().unwrap().context_value("job"), Some("42"));
//! ```

use std::error::Error as StdError;
use std::fmt;

use crate::setting::Setting;

/// What kind of failure an [`Error`] is. Callers branch on this, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The driver configuration (a configuration file, flags, options) is invalid.
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
    /// There was no capacity to start the task (the backend's capacity, network interfaces,
    /// IP addresses).
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
    /// Stored state belongs to something else than what asked for it (a job record that
    /// names another job).
    Conflict,
    /// A write under a lock was refused because the lock is no longer the writer's: its
    /// lease expired and another holder took the lock over (a store with leases fences
    /// writes, see [`MetadataStore::put_locked`](crate::MetadataStore::put_locked)). Nothing
    /// was written; the new holder decides.
    LockLost,
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
            ErrorKind::Conflict => "conflict",
            ErrorKind::LockLost => "lock lost",
            ErrorKind::Io => "i/o error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unexpected => "unexpected error",
        }
    }

    /// Whose fault an error of this kind is, as the runner reports it: the one function
    /// that decides between a build failure and a system failure.
    ///
    /// Only [`ErrorKind::NotAllowed`] is the job's own fault ([`FailureClass::Script`]): a
    /// job variable asked for something the administrator did not allow, and fixing the
    /// job fixes it. Every other kind is a [`FailureClass::System`] failure. A script that
    /// exits with a non-zero status is a script failure too, but it is no [`Error`] (see
    /// [`Failure::script`]).
    pub fn failure_class(self) -> FailureClass {
        match self {
            ErrorKind::NotAllowed => FailureClass::Script,
            _ => FailureClass::System,
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
/// Its `Display` is `operation: message (key: value, ...) (hint: ...)`, each part only when
/// present; the source chain is available through [`std::error::Error::source`] and
/// [`Error::chain`]. The parts are also available one by one ([`Error::operation`],
/// [`Error::context_value`], [`Error::hint`]) for callers that log them as fields.
pub struct Error(Box<Inner>);

/// The parts of an [`Error`], boxed so that a `Result<T, Error>` stays small.
struct Inner {
    kind: ErrorKind,
    message: String,
    operation: Option<String>,
    context: Vec<(&'static str, String)>,
    hint: Option<String>,
    settings: Vec<Setting>,
    temporary: bool,
    outcome_unknown: bool,
    backend: Option<&'static str>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message for the person reading the job log.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            operation: None,
            context: Vec::new(),
            hint: None,
            settings: Vec::new(),
            temporary: kind.is_temporary_by_default(),
            outcome_unknown: matches!(
                kind,
                ErrorKind::Timeout | ErrorKind::Unreachable | ErrorKind::Cancelled
            ),
            backend: None,
            source: None,
        }))
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Attaches a hint: what the reader can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// Names a setting the hint refers to (in the core's neutral words), so that an
    /// embedder can show it in its own configuration's words ([`Error::settings`]). Calling
    /// it again adds another.
    pub fn with_setting(mut self, setting: Setting) -> Self {
        if !self.0.settings.contains(&setting) {
            self.0.settings.push(setting);
        }
        self
    }

    /// The settings the hint refers to ([`Error::with_setting`]), in order.
    pub fn settings(&self) -> &[Setting] {
        &self.0.settings
    }

    /// Marks the error as worth (or not worth) retrying.
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.0.temporary = temporary;
        self
    }

    /// Says whether the remote side may have carried out the call despite this error (no
    /// answer, a lost connection, a server error), or definitely did not (it refused the
    /// call). Defaults to `true` for [`ErrorKind::Timeout`], [`ErrorKind::Unreachable`] and
    /// [`ErrorKind::Cancelled`], `false` otherwise.
    pub fn set_outcome_unknown(mut self, unknown: bool) -> Self {
        self.0.outcome_unknown = unknown;
        self
    }

    /// Names the backend the error comes from (`"ecs"`, `"ssh"`, `"file store"`).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.0.backend = Some(backend);
        self
    }

    /// Names the operation that failed (`"starting the task"`, `"RunTask"`). An error
    /// passed up through several operations keeps the outermost one: calling this again
    /// replaces it.
    pub fn with_operation(mut self, operation: impl Into<String>) -> Self {
        self.0.operation = Some(operation.into());
        self
    }

    /// Adds a key/value pair of context (`"task"`, `"job"`, `"cluster"`, `"attempts"`). A
    /// key given again replaces the earlier value.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        let value = value.to_string();
        match self.0.context.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.context.push((key, value)),
        }
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The message, without operation, context, hint or source.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The operation that failed, if named.
    pub fn operation(&self) -> Option<&str> {
        self.0.operation.as_deref()
    }

    /// The value of the context `key`, if given.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.0
            .context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All key/value context, in the order it was added.
    pub fn context(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.context.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// `operation: message (key: value, ...)`: the error without hint or source.
    fn write_head(&self, f: &mut impl fmt::Write) -> fmt::Result {
        if let Some(operation) = &self.0.operation {
            write!(f, "{operation}: ")?;
        }
        f.write_str(&self.0.message)?;
        for (i, (key, value)) in self.0.context.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{key}: {value}")?;
        }
        if !self.0.context.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }

    /// What the reader can do about it, if we know.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// Whether retrying the same call may succeed.
    pub fn is_temporary(&self) -> bool {
        self.0.temporary
    }

    /// Whether the call may have taken effect although it failed (see
    /// [`Error::set_outcome_unknown`]). A launch that failed this way is retried with the
    /// same client token; one that definitely failed gets a new token.
    pub fn outcome_unknown(&self) -> bool {
        self.0.outcome_unknown
    }

    /// The backend the error comes from, if named.
    pub fn backend(&self) -> Option<&'static str> {
        self.0.backend
    }

    /// The error (operation, message, context) followed by each cause, joined with `": "`;
    /// no hint. A cause already told by the text so far is left out (for an [`Error`]
    /// cause: its message).
    pub fn chain(&self) -> String {
        let mut out = String::new();
        let _ = self.write_head(&mut out);
        let mut next = self.0.source.as_deref().map(|s| s as &dyn StdError);
        while let Some(err) = next {
            let text = match err.downcast_ref::<Error>() {
                Some(e) if out.contains(e.message()) => String::new(),
                Some(e) => {
                    let mut head = String::new();
                    let _ = e.write_head(&mut head);
                    head
                }
                None => err.to_string(),
            };
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
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("operation", &self.0.operation)
            .field("context", &self.0.context)
            .field("hint", &self.0.hint)
            .field("settings", &self.0.settings)
            .field("temporary", &self.0.temporary)
            .field("outcome_unknown", &self.0.outcome_unknown)
            .field("backend", &self.0.backend)
            .field("source", &self.0.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_head(f)?;
        if let Some(hint) = &self.0.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Result with the driver's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose fault a [`Failure`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureClass {
    /// The job's own fault: its script failed, or it asked for something not allowed.
    /// GitLab shows it as a script failure (and `allow_failure: exit_codes` applies).
    Script,
    /// Everything else: configuration, AWS, the network, the task, the driver itself.
    System,
}

/// How a stage failed: the job's script, or anything else ([`Failure::class`]).
///
/// Build one with [`Failure::script`] (a script's exit status) or from an [`Error`]
/// (`?` or `From`), whose kind decides the class ([`ErrorKind::failure_class`]).
#[derive(Debug)]
pub struct Failure {
    repr: Repr,
}

#[derive(Debug)]
enum Repr {
    /// The script ran and failed.
    Exit { exit_code: i32, message: String },
    /// An error; its kind's class says whose fault it is.
    Error(Error),
}

impl Failure {
    /// A script failure with `exit_code` (1-255), e.g. "the script exited with status 3".
    pub fn script(exit_code: i32, message: impl Into<String>) -> Self {
        Failure {
            repr: Repr::Exit {
                exit_code,
                message: message.into(),
            },
        }
    }

    /// Whose fault the failure is.
    pub fn class(&self) -> FailureClass {
        match &self.repr {
            Repr::Exit { .. } => FailureClass::Script,
            Repr::Error(err) => err.kind().failure_class(),
        }
    }

    /// The exit code to report as the script's, for a script failure: the script's own
    /// status, or 1 when the job failed before its script ran (a disallowed variable).
    pub fn script_exit_code(&self) -> Option<i32> {
        match &self.repr {
            Repr::Exit { exit_code, .. } => Some(*exit_code),
            Repr::Error(_) if self.class() == FailureClass::Script => Some(1),
            Repr::Error(_) => None,
        }
    }

    /// The error behind the failure; `None` when a script exited with a failure status.
    pub fn error(&self) -> Option<&Error> {
        match &self.repr {
            Repr::Error(err) => Some(err),
            Repr::Exit { .. } => None,
        }
    }

    /// The error behind a system failure.
    pub fn as_system(&self) -> Option<&Error> {
        self.error()
            .filter(|_| self.class() == FailureClass::System)
    }

    /// The error behind the failure, by value.
    pub fn into_error(self) -> Option<Error> {
        match self.repr {
            Repr::Error(err) => Some(err),
            Repr::Exit { .. } => None,
        }
    }

    /// The exit code and `BUILD_EXIT_CODE_FILE` content for this failure.
    ///
    /// | Failure | exit | `BUILD_EXIT_CODE_FILE` |
    /// |---|---|---|
    /// | script, exit code `N` ([`Failure::script_exit_code`]) | `codes.build_failure` | `N` |
    /// | system | `codes.system_failure` | not written |
    pub fn exit(&self, codes: &ExitCodes) -> ExitDecision {
        match self.script_exit_code() {
            Some(code) => ExitDecision {
                exit_code: codes.build_failure,
                build_exit_code: Some(code),
            },
            None => ExitDecision {
                exit_code: codes.system_failure,
                build_exit_code: None,
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Exit { message, .. } => f.write_str(message),
            Repr::Error(err) => write!(f, "{err}"),
        }
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        // The error's own causes, not the error itself: `Display` already shows it.
        self.error().and_then(StdError::source)
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure {
            repr: Repr::Error(err),
        }
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
mod tests;
