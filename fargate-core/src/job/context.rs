//! [`JobContext`]: what the runner tells a stage process, in its environment and files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, ExitCodes, Result};

use super::go_id::GoJobId;
use super::identity::{JobIdentity, Namespace};
use super::response::JobResponse;

/// Prefix the runner puts before every job variable.
pub const CUSTOM_ENV_PREFIX: &str = "CUSTOM_ENV_";

/// Everything the driver reads from the runner for one stage.
///
/// Build it with [`JobContext::from_env`] in a driver process, or with
/// [`JobContext::new`] and the `with_*` methods when embedding.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct JobContext {
    /// Exit codes for build and system failures (defaults 1 and 2 when unset).
    pub exit_codes: ExitCodes,
    /// Where to write the script's exit code on a build failure (runner 17.9+).
    pub build_exit_code_file: Option<PathBuf>,
    /// Where the runner wrote the job payload (runner 14.1+).
    pub job_response_file: Option<PathBuf>,
    /// The trusted job payload, once read ([`JobContext::from_env`] reads it).
    pub response: Option<JobResponse>,
    /// Job variables, without the `CUSTOM_ENV_` prefix. Set by the pipeline: untrusted.
    variables: BTreeMap<String, String>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variable values may be secrets: only their names are shown.
        f.debug_struct("JobContext")
            .field("exit_codes", &self.exit_codes)
            .field("build_exit_code_file", &self.build_exit_code_file)
            .field("job_response_file", &self.job_response_file)
            .field("response", &self.response)
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JobContext {
    /// A context for the job GitLab describes in `response`, with default exit codes and no
    /// variables.
    pub fn new(response: JobResponse) -> Self {
        JobContext {
            response: Some(response),
            ..JobContext::default()
        }
    }

    /// Adds (or replaces) job variable `name` (without the `CUSTOM_ENV_` prefix).
    pub fn with_variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets the exit codes.
    pub fn with_exit_codes(mut self, codes: ExitCodes) -> Self {
        self.exit_codes = codes;
        self
    }

    /// Reads the context from the process environment, and the job payload from
    /// `JOB_RESPONSE_FILE` when it is set.
    pub fn from_env() -> Result<Self> {
        let mut ctx = Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )?;
        if let Some(path) = &ctx.job_response_file {
            ctx.response = Some(JobResponse::read(path)?);
        }
        Ok(ctx)
    }

    /// Reads the context from `(name, value)` pairs (the environment; in tests a list).
    /// The job payload is not read: see [`JobContext::from_env`].
    ///
    /// Missing exit-code variables default to 1 and 2, as gitlab-runner has always set them
    /// (the Go driver exited 0 or 255 instead). A value that is not an integer in 1..=255 is
    /// an error naming the variable.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut ctx = JobContext::default();
        let defaults = ExitCodes::default();
        let mut build_failure = None;
        let mut system_failure = None;
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            match k.as_str() {
                "BUILD_FAILURE_EXIT_CODE" => build_failure = Some(parse_exit_code(&k, &v)?),
                "SYSTEM_FAILURE_EXIT_CODE" => system_failure = Some(parse_exit_code(&k, &v)?),
                "BUILD_EXIT_CODE_FILE" if !v.is_empty() => {
                    ctx.build_exit_code_file = Some(PathBuf::from(v))
                }
                "JOB_RESPONSE_FILE" if !v.is_empty() => {
                    ctx.job_response_file = Some(PathBuf::from(v))
                }
                _ => {
                    if let Some(name) = k.strip_prefix(CUSTOM_ENV_PREFIX) {
                        ctx.variables.insert(name.to_owned(), v);
                    }
                }
            }
        }
        ctx.exit_codes = ExitCodes {
            build_failure: build_failure.unwrap_or(defaults.build_failure),
            system_failure: system_failure.unwrap_or(defaults.system_failure),
        };
        Ok(ctx)
    }

    /// A job variable (without the `CUSTOM_ENV_` prefix); `None` when unset or empty.
    /// Untrusted: the pipeline sets it.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The job's identity in `namespace`: the job id from the job payload.
    ///
    /// Without a payload (gitlab-runner older than 14.1) the id comes from the `CI_JOB_ID`
    /// variable, which the pipeline can set; the identity then says so
    /// ([`IdentitySource::Variables`](super::IdentitySource::Variables)) and the caller
    /// should warn. Fails when neither gives a positive job id.
    pub fn identity(&self, namespace: &Namespace) -> Result<JobIdentity> {
        if let Some(response) = &self.response {
            return Ok(JobIdentity::from_response(namespace.clone(), response));
        }
        match self.variable("CI_JOB_ID").map(|v| v.trim().parse::<u64>()) {
            Some(Ok(id)) if id > 0 => Ok(JobIdentity::from_untrusted_job_id(namespace.clone(), id)),
            Some(_) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{CUSTOM_ENV_PREFIX}CI_JOB_ID={:?} is not a job id",
                    self.variable("CI_JOB_ID").unwrap_or_default()
                ),
            )),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                "the job has no id: neither JOB_RESPONSE_FILE nor CI_JOB_ID is set",
            )
            .with_hint("run the driver from gitlab-runner's custom executor (14.1 or newer)")),
        }
    }

    /// Whether a `CI_JOB_ID` variable contradicts the job payload (a pipeline that set it).
    pub fn forged_job_id(&self) -> Option<&str> {
        let response = self.response.as_ref()?;
        let var = self.variable("CI_JOB_ID")?;
        (var.trim() != response.id.to_string()).then_some(var)
    }

    /// The inputs of the Go driver's job id, with the trusted job id when there is one.
    pub fn go_job_id(&self) -> GoJobId {
        let text = |name: &str| self.variable(name).unwrap_or("unknown").to_owned();
        let number = |name: &str| {
            self.variable(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        GoJobId {
            runner_short_token: text("CI_RUNNER_SHORT_TOKEN"),
            project_url: text("CI_PROJECT_URL"),
            pipeline_id: number("CI_PIPELINE_ID"),
            job_id: match &self.response {
                Some(r) => i64::try_from(r.id).unwrap_or(0),
                None => number("CI_JOB_ID"),
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::IdentitySource;

    fn ns() -> Namespace {
        Namespace::parse("ci").unwrap()
    }

    #[test]
    fn missing_variables_give_the_go_adapter_defaults() {
        let ctx = JobContext::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(
            ctx.go_job_id().go_id(),
            "unknown-55ec9b8e759bcc015e5069daf15a51a0e208d0e18bce4d7d02f341c2760ffb17"
        );
        assert_eq!(ctx.exit_codes, ExitCodes::default());
        assert_eq!(ctx.build_exit_code_file, None);
        assert_eq!(
            ctx.identity(&ns()).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn reads_runner_variables() {
        let ctx = JobContext::from_vars([
            ("BUILD_FAILURE_EXIT_CODE", "7"),
            ("SYSTEM_FAILURE_EXIT_CODE", "9"),
            ("BUILD_EXIT_CODE_FILE", "/tmp/x/build_exit_code"),
            ("JOB_RESPONSE_FILE", "/tmp/x/response.json"),
            ("CUSTOM_ENV_CI_JOB_ID", "42"),
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
        assert_eq!(
            ctx.job_response_file.as_deref(),
            Some(std::path::Path::new("/tmp/x/response.json"))
        );
        assert_eq!(ctx.variable("FARGATE_TASK_DEFINITION"), Some("td:2"));
        assert_eq!(ctx.variable("PATH"), None);
    }

    #[test]
    fn the_payload_beats_a_forged_job_id() {
        let ctx = JobContext::new(JobResponse::new(42))
            .with_variable("CI_JOB_ID", "41")
            .with_variable("CI_PIPELINE_ID", "7")
            .with_variable("CI_PROJECT_URL", "https://g/p")
            .with_variable("CI_RUNNER_SHORT_TOKEN", "tok");
        let id = ctx.identity(&ns()).unwrap();
        assert_eq!((id.job_id, id.source), (42, IdentitySource::JobResponse));
        assert_eq!(ctx.forged_job_id(), Some("41"));
        // The Go id a forged variable would give names job 41; the trusted one names 42.
        assert_eq!(ctx.go_job_id().job_id, 42);
        let honest = ctx.clone().with_variable("CI_JOB_ID", "42");
        assert_eq!(honest.forged_job_id(), None);
    }

    #[test]
    fn without_a_payload_the_variable_is_used_and_flagged() {
        let ctx = JobContext::from_vars([("CUSTOM_ENV_CI_JOB_ID", "42")]).unwrap();
        let id = ctx.identity(&ns()).unwrap();
        assert_eq!((id.job_id, id.source), (42, IdentitySource::Variables));
        let bad = JobContext::from_vars([("CUSTOM_ENV_CI_JOB_ID", "12a")]).unwrap();
        let err = bad.identity(&ns()).unwrap_err();
        assert!(
            err.message().contains("CUSTOM_ENV_CI_JOB_ID=\"12a\""),
            "{err}"
        );
    }

    #[test]
    fn bad_exit_codes_name_the_variable() {
        let err = JobContext::from_vars([("BUILD_FAILURE_EXIT_CODE", "x")]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message().contains("BUILD_FAILURE_EXIT_CODE=\"x\""),
            "{err}"
        );
        let err = JobContext::from_vars([("SYSTEM_FAILURE_EXIT_CODE", "0")]).unwrap_err();
        assert!(err.message().contains("SYSTEM_FAILURE_EXIT_CODE"), "{err}");
    }

    #[test]
    fn debug_shows_no_variable_values() {
        let ctx = JobContext::new(JobResponse::new(1)).with_variable("DEPLOY_TOKEN", "s3cr3t");
        let s = format!("{ctx:?}");
        assert!(s.contains("DEPLOY_TOKEN") && !s.contains("s3cr3t"), "{s}");
    }
}
