//! Which variables of a job's image and services are secret, and what becomes of them.
//!
//! A container's variables go to the task as plain environment, which the backend shows to
//! anyone who may describe the task (for ECS: `RunTask`'s container overrides, readable with
//! `ecs:DescribeTasks`, in the console and in CloudTrail). A variable must not go there
//! when it is secret ([`SecretUse`]):
//!
//! * the payload marks the image's variable itself (`masked`, `file`, not `public`);
//! * its value refers to a job variable that GitLab marks secret (`$DB_PASSWORD`,
//!   `${DB_PASSWORD}`): the job means that variable's value;
//! * its value contains the value of such a variable (of 8 characters or more, GitLab's
//!   least for a masked variable: shorter values would match by chance).
//!
//! Such a variable is refused with an error naming it ([`SecretPolicy::Refuse`], the
//! default), or handed to the launcher as a secret ([`SecretPolicy::Store`]), its
//! references to secret job variables replaced by their values ([`expand_secrets`]).

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{SecretValue, SensitiveVariable, Sensitivity};
use crate::options::SecretPolicy;

/// Shortest value of a secret job variable that [`secret_use`] looks for inside another
/// variable's value (GitLab masks values of 8 characters or more).
pub const MIN_SECRET_LEN: usize = 8;

/// Why one variable of a container is secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretUse {
    /// The payload marks the variable itself.
    Marked(Sensitivity),
    /// Its value refers to job variable `name`, marked so.
    Refers {
        /// The job variable.
        name: String,
        /// Why it is secret.
        sensitivity: Sensitivity,
    },
    /// Its value contains the value of job variable `name`, marked so.
    Contains {
        /// The job variable.
        name: String,
        /// Why it is secret.
        sensitivity: Sensitivity,
    },
}

impl SecretUse {
    fn describe(&self, variable: &str) -> String {
        match self {
            SecretUse::Marked(s) => format!("{variable} is a {s} variable"),
            SecretUse::Refers { name, sensitivity } => {
                format!("{variable} refers to the {sensitivity} variable {name}")
            }
            SecretUse::Contains { name, sensitivity } => {
                format!("{variable} contains the value of the {sensitivity} variable {name}")
            }
        }
    }
}

/// Why `value` of variable `name` (marked by the payload as `marked`, if at all) is secret,
/// given the job's secret variables `sensitive`; `None` when it is not.
pub fn secret_use(
    value: &str,
    marked: Option<Sensitivity>,
    sensitive: &[SensitiveVariable],
) -> Option<SecretUse> {
    if let Some(s) = marked {
        return Some(SecretUse::Marked(s));
    }
    let refs = references(value);
    if let Some(v) = sensitive.iter().find(|v| refs.contains(&v.name.as_str())) {
        return Some(SecretUse::Refers {
            name: v.name.clone(),
            sensitivity: v.sensitivity,
        });
    }
    sensitive
        .iter()
        .find(|v| {
            v.value
                .expose()
                .is_some_and(|s| s.len() >= MIN_SECRET_LEN && value.contains(s))
        })
        .map(|v| SecretUse::Contains {
            name: v.name.clone(),
            sensitivity: v.sensitivity,
        })
}

/// The variable names `value` refers to: `$NAME` and `${NAME}` (`$$` is a literal `$`).
fn references(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", braced),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if !name.is_empty() {
            out.push(name);
        }
        rest = tail;
    }
    out
}

/// `value` with its references to the secret job variables `sensitive` replaced by their
/// values; other references, and `$$`, are left as they are (the driver does not expand a
/// job's plain variables).
pub fn expand_secrets(value: &str, sensitive: &[SensitiveVariable]) -> String {
    let lookup = |name: &str| {
        sensitive
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.expose())
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = tail;
            continue;
        }
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match lookup(name).filter(|_| !name.is_empty()) {
            Some(secret) => {
                out.push_str(secret);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variables of one container, split: `(plain, secret)`. Secret ones are refused
/// under [`SecretPolicy::Refuse`] with an error naming the first (for `what`, e.g.
/// `service "postgres:16"`), else returned with their references expanded.
pub(crate) fn split(
    what: &str,
    variables: &BTreeMap<String, String>,
    marked: &BTreeMap<String, Sensitivity>,
    sensitive: &[SensitiveVariable],
    policy: SecretPolicy,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, SecretValue>)> {
    let mut plain = BTreeMap::new();
    let mut secret = BTreeMap::new();
    for (name, value) in variables {
        match secret_use(value, marked.get(name).copied(), sensitive) {
            None => {
                plain.insert(name.clone(), value.clone());
            }
            Some(why) if policy == SecretPolicy::Refuse => {
                return Err(Error::new(
                    ErrorKind::NotAllowed,
                    format!(
                        "the job's {what} has a secret variable: {}; this runner does not pass secrets to a job's containers (the task's environment overrides are readable by anyone who may describe the task)",
                        why.describe(name)
                    ),
                )
                .with_hint(format!(
                    "use {name} in the job's script instead, give the service a value that is not secret (a test database's password), or ask the runner's administrator to enable the secret store ([Fargate.Images] ServiceSecrets)"
                )));
            }
            Some(_) => {
                secret.insert(
                    name.clone(),
                    SecretValue::new(expand_secrets(value, sensitive)),
                );
            }
        }
    }
    Ok((plain, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_secrets() -> Vec<SensitiveVariable> {
        vec![
            SensitiveVariable::new("DB_PASSWORD", "hunter2-hunter2", Sensitivity::NotPublic),
            SensitiveVariable::new("SHORT", "abc", Sensitivity::Masked),
        ]
    }

    #[test]
    fn references_contents_and_marks_make_a_variable_secret() {
        let s = job_secrets();
        for (value, want) in [
            ("$DB_PASSWORD", Some("DB_PASSWORD")),
            ("x${DB_PASSWORD}y", Some("DB_PASSWORD")),
            ("postgres://u:hunter2-hunter2@db/x", Some("DB_PASSWORD")),
            ("$SHORT", Some("SHORT")),
        ] {
            let got = secret_use(value, None, &s);
            let name = match &got {
                Some(SecretUse::Refers { name, .. } | SecretUse::Contains { name, .. }) => {
                    Some(name.as_str())
                }
                _ => None,
            };
            assert_eq!(name, want, "{value}");
        }
        for value in ["test", "$$DB_PASSWORD", "$DB_PASSWORD_X", "abc", "$OTHER"] {
            assert_eq!(secret_use(value, None, &s), None, "{value}");
        }
        assert_eq!(
            secret_use("plain", Some(Sensitivity::Masked), &s),
            Some(SecretUse::Marked(Sensitivity::Masked))
        );
    }

    #[test]
    fn only_secret_references_are_expanded() {
        let s = job_secrets();
        assert_eq!(
            expand_secrets("u:$DB_PASSWORD@${DB_PASSWORD}/$OTHER/$$DB_PASSWORD/${X", &s),
            "u:hunter2-hunter2@hunter2-hunter2/$OTHER/$$DB_PASSWORD/${X"
        );
        assert_eq!(expand_secrets("$", &s), "$");
    }

    #[test]
    fn a_secret_is_refused_by_default_and_named() {
        let vars = BTreeMap::from([
            ("POSTGRES_PASSWORD".to_owned(), "$DB_PASSWORD".to_owned()),
            ("POSTGRES_DB".to_owned(), "test".to_owned()),
        ]);
        let err = split(
            "service \"postgres:16\"",
            &vars,
            &BTreeMap::new(),
            &job_secrets(),
            SecretPolicy::Refuse,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        let text = err.to_string();
        assert!(
            text.contains("POSTGRES_PASSWORD refers to the non-public")
                && text.contains("variable DB_PASSWORD")
                && !text.contains("hunter2"),
            "{text}"
        );
        let (plain, secret) = split(
            "service",
            &vars,
            &BTreeMap::new(),
            &job_secrets(),
            SecretPolicy::Store,
        )
        .unwrap();
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["POSTGRES_DB"]);
        assert_eq!(
            secret["POSTGRES_PASSWORD"].expose(),
            Some("hunter2-hunter2")
        );
    }
}
