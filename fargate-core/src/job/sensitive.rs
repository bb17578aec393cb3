//! [`SensitiveVariable`]: the job's variables that GitLab marks as secret in
//! `JOB_RESPONSE_FILE`, and [`SecretValue`], a value that is never shown nor stored.
//!
//! The payload's `variables` list carries flags that GitLab sets, not the pipeline:
//! `masked` (hidden in job logs), `file` (a file-type variable: its value is a file's
//! content) and `public` (`false` for the variables of the project's, group's and
//! instance's CI/CD settings, protected ones included, and for tokens such as
//! `CI_JOB_TOKEN`; `true` for predefined and `.gitlab-ci.yml` variables). A variable with
//! any of these marks is sensitive: the driver never puts its value where others can read
//! it (`RunTask` overrides, tags, task definitions, the job record). The values of the list
//! are as untrusted as `CUSTOM_ENV_*` (a pipeline sets them); only the flags decide.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Why GitLab's payload marks a variable as secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Sensitivity {
    /// `masked: true`.
    Masked,
    /// `file: true`: a file-type variable.
    File,
    /// `public: false`: a variable of the CI/CD settings (protected or not), or a token.
    NotPublic,
}

impl Sensitivity {
    /// The flags of one payload variable as GitLab sent them (`None`: absent); `None` when
    /// the variable is not sensitive. An absent `public` counts as public: GitLab always
    /// sends `public: false` for the variables it keeps secret.
    pub fn of(masked: Option<bool>, file: Option<bool>, public: Option<bool>) -> Option<Self> {
        if masked == Some(true) {
            Some(Sensitivity::Masked)
        } else if file == Some(true) {
            Some(Sensitivity::File)
        } else if public == Some(false) {
            Some(Sensitivity::NotPublic)
        } else {
            None
        }
    }

    /// How a message names it: `masked`, `file-type`, `CI/CD settings (not public)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Masked => "masked",
            Sensitivity::File => "file-type",
            Sensitivity::NotPublic => "non-public (CI/CD settings or protected)",
        }
    }
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that must stay secret: zeroized on drop, `Debug` shows `<secret>`, and it
/// serializes as `null` and deserializes as [`SecretValue::missing`], so that no record,
/// log or message ever holds it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(Option<Zeroizing<String>>);

impl SecretValue {
    /// `value`, kept secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(Some(Zeroizing::new(value.into())))
    }

    /// A value that is not known here (read back from a record, where values never go).
    pub fn missing() -> Self {
        SecretValue(None)
    }

    /// The value, when this process knows it.
    pub fn expose(&self) -> Option<&str> {
        self.0.as_deref().map(String::as_str)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "<secret>"
        } else {
            "<not kept>"
        })
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_none()
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(SecretValue::missing())
    }
}

/// One variable of the payload that GitLab marks as secret ([`Sensitivity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SensitiveVariable {
    /// Its name.
    pub name: String,
    /// Its value (`Debug` hides it).
    pub value: SecretValue,
    /// Why it is secret.
    pub sensitivity: Sensitivity,
}

impl SensitiveVariable {
    /// Variable `name` with `value`, secret for `sensitivity`.
    pub fn new(
        name: impl Into<String>,
        value: impl Into<String>,
        sensitivity: Sensitivity,
    ) -> Self {
        SensitiveVariable {
            name: name.into(),
            value: SecretValue::new(value),
            sensitivity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decide_and_an_absent_public_flag_is_public() {
        assert_eq!(
            Sensitivity::of(Some(true), None, Some(true)),
            Some(Sensitivity::Masked)
        );
        assert_eq!(
            Sensitivity::of(None, Some(true), None),
            Some(Sensitivity::File)
        );
        assert_eq!(
            Sensitivity::of(Some(false), Some(false), Some(false)),
            Some(Sensitivity::NotPublic)
        );
        assert_eq!(Sensitivity::of(None, None, None), None);
        assert_eq!(Sensitivity::of(Some(false), None, Some(true)), None);
    }

    #[test]
    fn a_secret_value_is_never_shown_nor_serialized() {
        let v = SensitiveVariable::new("DB_PASSWORD", "hunter2-hunter2", Sensitivity::Masked);
        assert!(!format!("{v:?}").contains("hunter2"));
        let json = serde_json::to_string(&v.value).unwrap();
        assert_eq!(json, "null");
        let back: SecretValue = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back.expose(), None);
        assert_eq!(v.value.expose(), Some("hunter2-hunter2"));
    }
}
