//! [`ConfigProblem`]: one problem of a configuration. Its own module so that every part of
//! the options that checks itself (such as [`crate::retry`]) can name it without depending on
//! [`crate::options`], which depends on them; `options` re-exports it.

use std::fmt;

/// One problem of a configuration: which setting, what is wrong, where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigProblem {
    /// The setting, as its source names it (a field such as `task.task_definition`, or a
    /// file key such as `cluster` of a section); empty for a problem of the whole source
    /// (unreadable syntax).
    pub key: String,
    /// What is wrong, to be read after the key (`is required (...)`).
    pub message: String,
    /// 1-based line in the source file, when the problem comes from one.
    pub line: Option<usize>,
    /// What the reader can do about it.
    pub hint: Option<String>,
}

impl ConfigProblem {
    /// A problem of `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
            line: None,
            hint: None,
        }
    }

    /// Places the problem on `line` of the source.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// Attaches a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigProblem {
    /// `<key> <message>`, or the message alone for a problem without a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.key, self.message)
        }
    }
}
