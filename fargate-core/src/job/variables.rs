//! [`JobVariables`]: the payload's `variables`, for expanding `image:` and `services:`
//! names as gitlab-runner does.
//!
//! gitlab-runner expands an image's or service's name (`$CI_REGISTRY_IMAGE/builder:$TAG`,
//! `${VAR}`) from the job's variables before it pulls: it first expands each variable's
//! value once against the others (not those marked `raw`), then the name, with Go's
//! `os.Expand` rules and its own mapping (`$$` is a `$`, an unknown name is empty, the
//! last definition of a name wins). [`JobVariables::expand`] does the same. The values are
//! as untrusted as `CUSTOM_ENV_*`: the allowlist checks the expanded name, never the
//! written one, and a name that takes the value of a masked or file-type variable is
//! refused ([`Expanded::secret`]) since a name goes into a task definition anyone with
//! `DescribeTaskDefinition` can read.

use std::fmt;

use super::sensitive::Sensitivity;

/// One variable of the payload.
#[derive(Clone, PartialEq, Eq)]
struct Variable {
    name: String,
    value: String,
    sensitivity: Option<Sensitivity>,
}

/// The payload's `variables`, in order, each value already expanded once against the
/// others (as gitlab-runner's `GetAllVariables`). `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JobVariables(Vec<Variable>);

impl fmt::Debug for JobVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|v| v.name.as_str()))
            .finish()
    }
}

/// A name after expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expanded {
    /// The expanded name.
    pub value: String,
    /// The first masked or file-type variable the name refers to (its name and why), if
    /// any: its value must not go into a task definition.
    pub secret: Option<(String, Sensitivity)>,
}

impl JobVariables {
    /// No variables (names expand to themselves, `$X` to nothing).
    pub fn new() -> Self {
        JobVariables::default()
    }

    /// The variables of a payload, `(name, value, raw, sensitivity)` in the payload's order:
    /// values not `raw` are expanded once against the unexpanded list, as gitlab-runner does.
    pub(crate) fn from_payload(
        list: impl IntoIterator<Item = (String, String, bool, Option<Sensitivity>)>,
    ) -> Self {
        let list: Vec<(Variable, bool)> = list
            .into_iter()
            .map(|(name, value, raw, sensitivity)| {
                (
                    Variable {
                        name,
                        value,
                        sensitivity,
                    },
                    raw,
                )
            })
            .collect();
        let plain = JobVariables(list.iter().map(|(v, _)| v.clone()).collect());
        JobVariables(
            list.into_iter()
                .map(|(mut v, raw)| {
                    if !raw {
                        v.value = plain.expand(&v.value).value;
                    }
                    v
                })
                .collect(),
        )
    }

    /// The same list with variable `name` = `value` added (public, for embedders and tests).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.push(Variable {
            name: name.into(),
            value: value.into(),
            sensitivity: None,
        });
        self
    }

    /// The same list with a variable marked `sensitivity` added (for tests).
    pub fn with_sensitive(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        sensitivity: Sensitivity,
    ) -> Self {
        self.0.push(Variable {
            name: name.into(),
            value: value.into(),
            sensitivity: Some(sensitivity),
        });
        self
    }

    fn get(&self, name: &str) -> Option<&Variable> {
        self.0.iter().rev().find(|v| v.name == name)
    }

    /// `s` expanded as Go's `os.Expand` with gitlab-runner's mapping: `$NAME`, `${NAME}`,
    /// `$$` → `$`, shell special names (`$1`, `$*`, ...) and unknown names → empty,
    /// `${}` eaten, a `$` before anything else kept.
    pub fn expand(&self, s: &str) -> Expanded {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut secret = None;
        let mut i = 0;
        let mut j = 0;
        while j < b.len() {
            if b[j] == b'$' && j + 1 < b.len() {
                out.push_str(&s[i..j]);
                let (name, width) = shell_name(&s[j + 1..]);
                match name {
                    None if width > 0 => {}
                    None => out.push('$'),
                    Some("$") => out.push('$'),
                    Some(name) => {
                        if let Some(v) = self.get(name) {
                            out.push_str(&v.value);
                            if secret.is_none()
                                && let Some(why @ (Sensitivity::Masked | Sensitivity::File)) =
                                    v.sensitivity
                            {
                                secret = Some((v.name.clone(), why));
                            }
                        }
                    }
                }
                j += width;
                i = j + 1;
            }
            j += 1;
        }
        out.push_str(&s[i.min(s.len())..]);
        Expanded { value: out, secret }
    }
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

/// Go's `getShellName`: the name after a `$` (`None`: none) and how many bytes it takes.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (None, 2),
            Some(n) => (Some(&s[1..n + 1]), n + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> JobVariables {
        JobVariables::new()
            .with("CI_REGISTRY_IMAGE", "registry.gitlab.example.com/group/app")
            .with("TAG", "1.2")
            .with("TAG", "1.3")
    }

    #[test]
    fn expands_as_go_os_expand_with_the_runners_mapping() {
        let v = vars();
        for (written, expanded) in [
            (
                "$CI_REGISTRY_IMAGE/builder:$TAG",
                "registry.gitlab.example.com/group/app/builder:1.3",
            ),
            (
                "${CI_REGISTRY_IMAGE}:${TAG}-x",
                "registry.gitlab.example.com/group/app:1.3-x",
            ),
            ("alpine:$UNKNOWN", "alpine:"),
            ("a$$b", "a$b"),
            ("a$1b", "ab"),
            ("a${}b", "ab"),
            ("a${TAG", "aTAG"),
            ("a$/b", "a$/b"),
            ("alpine$", "alpine$"),
            ("plain:3", "plain:3"),
            ("é$TAG", "é1.3"),
        ] {
            assert_eq!(v.expand(written).value, expanded, "{written}");
        }
    }

    #[test]
    fn values_are_expanded_once_unless_raw() {
        let v = JobVariables::from_payload([
            ("HOST".into(), "registry.example.com".into(), false, None),
            ("IMAGE".into(), "$HOST/app".into(), false, None),
            ("RAW".into(), "$HOST/raw".into(), true, None),
            ("TWICE".into(), "$IMAGE:1".into(), false, None),
        ]);
        assert_eq!(v.expand("$IMAGE").value, "registry.example.com/app");
        assert_eq!(v.expand("$RAW").value, "$HOST/raw");
        // One pass against the unexpanded values, as the runner: not recursive.
        assert_eq!(v.expand("$TWICE").value, "$HOST/app:1");
    }

    #[test]
    fn names_the_masked_or_file_variable_a_name_takes() {
        let v = vars()
            .with_sensitive("SECRET", "s3cr3t-value", Sensitivity::Masked)
            .with_sensitive("NOT_PUBLIC", "registry.example.com", Sensitivity::NotPublic);
        assert_eq!(v.expand("$NOT_PUBLIC/app").secret, None);
        assert_eq!(
            v.expand("x/$SECRET").secret,
            Some(("SECRET".to_owned(), Sensitivity::Masked))
        );
        assert!(!format!("{v:?}").contains("s3cr3t"));
    }
}
