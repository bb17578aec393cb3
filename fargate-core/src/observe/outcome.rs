//! [`StageOutcome`]: the one definition of a stage's (and a job's) outcome labels.

use crate::error::{ErrorKind, Failure};

/// How a stage (or a command, or a whole job) ended, as metrics and logs label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StageOutcome {
    /// It succeeded.
    Success,
    /// The job's own failure ([`FailureClass::Script`](crate::FailureClass::Script)).
    ScriptFailure,
    /// Anything else's failure ([`FailureClass::System`](crate::FailureClass::System)), but
    /// a cancel.
    SystemFailure,
    /// It was cancelled ([`ErrorKind::Cancelled`]).
    Cancelled,
}

impl StageOutcome {
    /// The outcome of a stage's result.
    pub fn of(result: &Result<(), Failure>) -> Self {
        match result {
            Ok(()) => StageOutcome::Success,
            Err(f) => match f.as_system() {
                None => StageOutcome::ScriptFailure,
                Some(e) if e.kind() == ErrorKind::Cancelled => StageOutcome::Cancelled,
                Some(_) => StageOutcome::SystemFailure,
            },
        }
    }

    /// `success`, `script_failure`, `system_failure` or `cancelled`, for labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Success => "success",
            StageOutcome::ScriptFailure => "script_failure",
            StageOutcome::SystemFailure => "system_failure",
            StageOutcome::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn results_map_to_their_labels() {
        let of = |r: Result<(), Failure>| StageOutcome::of(&r).as_str();
        assert_eq!(of(Ok(())), "success");
        assert_eq!(of(Err(Failure::script(3, "exit 3"))), "script_failure");
        assert_eq!(
            of(Err(Error::new(ErrorKind::Throttled, "x").into())),
            "system_failure"
        );
        assert_eq!(of(Err(Error::cancelled("x").into())), "cancelled");
        assert_eq!(
            of(Err(Error::new(ErrorKind::NotAllowed, "x").into())),
            "script_failure"
        );
    }
}
