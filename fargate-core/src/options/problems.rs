//! [`ConfigError`]: every problem found in a configuration, each with its key, line and hint.

use std::fmt;

use crate::error::{Error, ErrorKind};
pub use crate::problem::ConfigProblem;

/// Every problem found in a configuration (never just the first).
///
/// Its `Display` is `invalid configuration:` followed by one indented line per problem,
/// `<origin>:<line>: <key> <message>`, and the problem's hint on the next line. It converts
/// into an [`Error`] of kind [`ErrorKind::InvalidConfig`] that keeps it as its source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// Where the configuration came from (a file name), when it came from one.
    pub origin: Option<String>,
    /// The problems, in the order found; never empty in an error returned by this crate.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// An error listing `problems`.
    pub fn new(problems: Vec<ConfigProblem>) -> Self {
        ConfigError {
            origin: None,
            problems,
        }
    }

    /// Names the source of the configuration (a file name) in messages.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// `Ok(())` when there is no problem, else the error.
    pub fn check(problems: Vec<ConfigProblem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(problems))
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for p in &self.problems {
            f.write_str("\n  ")?;
            match (&self.origin, p.line) {
                (Some(origin), Some(line)) => write!(f, "{origin}:{line}: ")?,
                (Some(origin), None) => write!(f, "{origin}: ")?,
                (None, Some(line)) => write!(f, "line {line}: ")?,
                (None, None) => {}
            }
            write!(f, "{p}")?;
            if let Some(hint) = &p.hint {
                write!(f, "\n    hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::new(ErrorKind::InvalidConfig, err.to_string()).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem_with_line_and_hint_and_keeps_itself_as_source() {
        let err = ConfigError::new(vec![
            ConfigProblem::new("[Fargate] Cluster", "is required").at_line(2),
            ConfigProblem::new("", "not valid TOML: x")
                .at_line(7)
                .with_hint("fix it"),
        ])
        .with_origin("fargate.toml");
        assert_eq!(
            err.to_string(),
            "invalid configuration:\n  fargate.toml:2: [Fargate] Cluster is required\n  \
             fargate.toml:7: not valid TOML: x\n    hint: fix it"
        );
        let e = Error::from(err.clone());
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(e.chain(), err.to_string(), "the source is not repeated");
        let source = std::error::Error::source(&e).expect("source");
        let typed = source.downcast_ref::<ConfigError>().expect("typed");
        assert_eq!(typed.problems.len(), 2);
        assert_eq!(ConfigError::check(vec![]), Ok(()));
    }
}
