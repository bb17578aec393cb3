//! The job as the runner describes it: exit-code variables, files, `CUSTOM_ENV_*` variables,
//! and the job's identity.
//!
//! The runner starts every stage with the same environment (`PROTOCOL.md` §1.2). The values
//! of `CUSTOM_ENV_*` come from the job's CI/CD variables, so a pipeline author can set any of
//! them: nothing read here is trusted to pick a path or a privilege without checking.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, ExitCodes, Result};

/// Prefix the runner puts before every job variable.
pub const CUSTOM_ENV_PREFIX: &str = "CUSTOM_ENV_";

/// Everything the driver reads from the runner's environment.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// Exit codes for build and system failures (defaults 1 and 2 when unset).
    pub exit_codes: ExitCodes,
    /// Where to write the script's exit code on a build failure (runner 17.9+).
    pub build_exit_code_file: Option<PathBuf>,
    /// The trusted job payload (runner 14.1+).
    pub job_response_file: Option<PathBuf>,
    /// The job's identity (for the hostname, file name, tags).
    pub identity: JobIdentity,
    /// Job variables, without the `CUSTOM_ENV_` prefix. Set by the pipeline: untrusted.
    pub variables: BTreeMap<String, String>,
}

impl JobContext {
    /// Reads the context from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Reads the context from `(name, value)` pairs (the environment, in tests a list).
    ///
    /// Missing exit-code variables default to 1 and 2, as gitlab-runner has always set them
    /// (the Go driver exited 0 or 255 instead). A value that is not an integer in 1..=255 is an
    /// error naming the variable. Missing job ids count as 0 and missing token and project URL
    /// as `unknown`, like the Go driver, so the identity matches its files.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut build_failure = None;
        let mut system_failure = None;
        let mut build_exit_code_file = None;
        let mut job_response_file = None;
        let mut variables = BTreeMap::new();
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            match k.as_str() {
                "BUILD_FAILURE_EXIT_CODE" => build_failure = Some(parse_exit_code(&k, &v)?),
                "SYSTEM_FAILURE_EXIT_CODE" => system_failure = Some(parse_exit_code(&k, &v)?),
                "BUILD_EXIT_CODE_FILE" if !v.is_empty() => {
                    build_exit_code_file = Some(PathBuf::from(v))
                }
                "JOB_RESPONSE_FILE" if !v.is_empty() => job_response_file = Some(PathBuf::from(v)),
                _ => {
                    if let Some(name) = k.strip_prefix(CUSTOM_ENV_PREFIX) {
                        variables.insert(name.to_owned(), v);
                    }
                }
            }
        }
        let defaults = ExitCodes::default();
        let exit_codes = ExitCodes {
            build_failure: build_failure.unwrap_or(defaults.build_failure),
            system_failure: system_failure.unwrap_or(defaults.system_failure),
        };
        let identity = JobIdentity::from_variables(&variables)?;
        Ok(JobContext {
            exit_codes,
            build_exit_code_file,
            job_response_file,
            identity,
            variables,
        })
    }

    /// A job variable (without the `CUSTOM_ENV_` prefix); `None` when unset or empty.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn parse_exit_code(name: &str, value: &str) -> Result<i32> {
    match value.trim().parse::<i32>() {
        Ok(code) if (1..=255).contains(&code) => Ok(code),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name}={value:?} is not an exit code (an integer from 1 to 255)"),
        )
        .with_hint("gitlab-runner sets this variable; run the driver from the custom executor")),
    }
}

/// Who a job is: the inputs of the Go driver's job id, and the id itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdentity {
    /// `CI_RUNNER_SHORT_TOKEN`, or `unknown`.
    pub runner_short_token: String,
    /// `CI_PROJECT_URL`, or `unknown`.
    pub project_url: String,
    /// `CI_PIPELINE_ID`, or 0.
    pub pipeline_id: i64,
    /// `CI_JOB_ID`, or 0.
    pub job_id: i64,
}

impl JobIdentity {
    /// Reads the identity from job variables (names without the `CUSTOM_ENV_` prefix).
    pub fn from_variables(vars: &BTreeMap<String, String>) -> Result<Self> {
        let text = |name: &str| {
            vars.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let number = |name: &str| -> Result<i64> {
            match vars.get(name).filter(|v| !v.is_empty()) {
                None => Ok(0),
                Some(v) => v.parse::<i64>().map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("{CUSTOM_ENV_PREFIX}{name}={v:?} is not an integer"),
                    )
                }),
            }
        };
        Ok(JobIdentity {
            runner_short_token: text("CI_RUNNER_SHORT_TOKEN"),
            project_url: text("CI_PROJECT_URL"),
            pipeline_id: number("CI_PIPELINE_ID")?,
            job_id: number("CI_JOB_ID")?,
        })
    }

    /// The Go driver's job id, byte for byte: `<token>-<sha256hex("<url>-<pipeline>-<job>")>`.
    ///
    /// It is the `hostname` of the config stage. It is **not** safe as a file name; use
    /// [`JobIdentity::key`] for that.
    pub fn go_id(&self) -> String {
        format!("{}-{}", self.runner_short_token, self.digest())
    }

    /// The job's key: the Go id with the token reduced to `[A-Za-z0-9_-]`, at most 32
    /// characters of it. Safe as a file name and as an ECS `startedBy` value.
    pub fn key(&self) -> JobKey {
        let token: String = self
            .runner_short_token
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        JobKey(format!("{token}-{}", self.digest()))
    }

    fn digest(&self) -> String {
        let input = format!("{}-{}-{}", self.project_url, self.pipeline_id, self.job_id);
        hex(&Sha256::digest(input.as_bytes()))
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A job's key: `[A-Za-z0-9_-]+`, at most 97 bytes. Names the job's record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobKey(String);

impl JobKey {
    /// Checks that `s` is a valid key (what [`JobIdentity::key`] makes).
    pub fn parse(s: &str) -> Result<Self> {
        let valid = !s.is_empty()
            && s.len() <= 97
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(JobKey(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{s:?} is not a job key (1-97 characters of [A-Za-z0-9_-])"),
            ))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        JobKey::parse(&s)
    }
}

impl From<JobKey> for String {
    fn from(k: JobKey) -> String {
        k.0
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(token: &str, url: &str, pipeline: i64, job: i64) -> JobIdentity {
        JobIdentity {
            runner_short_token: token.into(),
            project_url: url.into(),
            pipeline_id: pipeline,
            job_id: job,
        }
    }

    #[test]
    fn go_driver_vectors() {
        assert_eq!(
            identity("test", "http://gitlab.example.com/my/project", 1, 1).go_id(),
            "test-293ac3a36135714f5953037b893ee39de22e40d9c8622a626308e13b91fa0c3f"
        );
        assert_eq!(
            identity("", "", 0, 0).go_id(),
            "-76ce04054fc6b568295815cdadc2daf5f2b5e6847592d04a7cdd6cb6c13f06fe"
        );
        assert_eq!(
            identity("token", "project-URL", 1, 1).go_id(),
            "token-96688db3e5e6c32b47fe3d59f4384354c5509e27b0d48742809a8c35cca0e88d"
        );
    }

    #[test]
    fn missing_variables_give_the_go_adapter_defaults() {
        let ctx = JobContext::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(
            ctx.identity.go_id(),
            "unknown-55ec9b8e759bcc015e5069daf15a51a0e208d0e18bce4d7d02f341c2760ffb17"
        );
        assert_eq!(ctx.exit_codes, ExitCodes::default());
        assert_eq!(ctx.build_exit_code_file, None);
    }

    #[test]
    fn reads_runner_variables() {
        let ctx = JobContext::from_vars([
            ("BUILD_FAILURE_EXIT_CODE", "7"),
            ("SYSTEM_FAILURE_EXIT_CODE", "9"),
            ("BUILD_EXIT_CODE_FILE", "/tmp/x/build_exit_code"),
            ("JOB_RESPONSE_FILE", "/tmp/x/response.json"),
            ("CUSTOM_ENV_CI_JOB_ID", "42"),
            ("CUSTOM_ENV_CI_PIPELINE_ID", "7"),
            ("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "abc"),
            ("CUSTOM_ENV_CI_PROJECT_URL", "https://g/p"),
            ("CUSTOM_ENV_FARGATE_TASK_DEFINITION", "td:2"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        assert_eq!(ctx.exit_codes.build_failure, 7);
        assert_eq!(ctx.exit_codes.system_failure, 9);
        assert_eq!(
            ctx.build_exit_code_file.as_deref(),
            Some(std::path::Path::new("/tmp/x/build_exit_code"))
        );
        assert_eq!(ctx.identity.job_id, 42);
        assert_eq!(ctx.identity.pipeline_id, 7);
        assert_eq!(ctx.variable("FARGATE_TASK_DEFINITION"), Some("td:2"));
        assert_eq!(ctx.variable("PATH"), None);
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = JobContext::from_vars([("BUILD_FAILURE_EXIT_CODE", "x")]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message().contains("BUILD_FAILURE_EXIT_CODE=\"x\""),
            "{err}"
        );
        let err = JobContext::from_vars([("SYSTEM_FAILURE_EXIT_CODE", "0")]).unwrap_err();
        assert!(err.message().contains("SYSTEM_FAILURE_EXIT_CODE"), "{err}");
        let err = JobContext::from_vars([("CUSTOM_ENV_CI_JOB_ID", "12a")]).unwrap_err();
        assert!(
            err.message().contains("CUSTOM_ENV_CI_JOB_ID=\"12a\""),
            "{err}"
        );
    }

    #[test]
    fn hostile_tokens_never_reach_the_key() {
        for token in [
            "../../etc/passwd",
            "a/b",
            "..",
            "x\0y",
            "tok en",
            "ü",
            &"a".repeat(500),
        ] {
            let id = identity(token, "u", 1, 1);
            let key = id.key();
            assert!(JobKey::parse(key.as_str()).is_ok(), "{token:?} -> {key}");
            assert!(!key.as_str().contains('/') && !key.as_str().contains(".."));
            assert!(key.as_str().len() <= 97);
        }
        let good = identity("abc_DEF-1", "u", 1, 1);
        assert_eq!(good.key().as_str(), good.go_id());
    }

    #[test]
    fn job_key_rejects_paths() {
        for bad in ["", "a/b", "..", "a.b", "a b"] {
            assert!(JobKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<JobKey>("\"../x\"").is_err());
    }
}
