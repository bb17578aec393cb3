//! [`JobResponse`]: the trusted part of the job payload in `JOB_RESPONSE_FILE`.
//!
//! gitlab-runner (14.1 and later) writes the job as GitLab sent it to
//! `$JOB_RESPONSE_FILE` (mode 0600, in the runner's per-job temporary directory) before every
//! stage. A pipeline author cannot change the fields read here: the job's `id`, `job_info`,
//! `git_info`, `runner_info`, `image` and `services` come from GitLab itself. The payload's
//! `variables` are as untrusted as `CUSTOM_ENV_*`: those GitLab marks as secret are kept
//! apart ([`SensitiveVariable`]), so that their values never go where others can read them,
//! and all of them expand `image:` and `services:` names ([`JobVariables`]), whose result
//! the allowlist checks. The `credentials` of type `registry` ([`RegistryLogin`]) come from
//! GitLab too; their passwords (the job token) are secrets, read for
//! `[Fargate.Images] JobRegistryCredentials` only.
//! The job `token` field itself is not read.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::image::{JobImage, RawImage, RawVariable};
use super::registry_login::{RawCredentials, RegistryLogin};
use super::sensitive::SensitiveVariable;
use super::variables::JobVariables;
use crate::error::{Error, ErrorKind, Result};

/// What the driver reads from the job payload. Every field comes from GitLab, not from the
/// pipeline's variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobResponse {
    /// The job's id (unique within the GitLab instance).
    pub id: u64,
    /// The job's name (`job_info.name`).
    pub job_name: Option<String>,
    /// The job's stage (`job_info.stage`).
    pub stage: Option<String>,
    /// The project's id (`job_info.project_id`).
    pub project_id: Option<u64>,
    /// The project's name (`job_info.project_name`).
    pub project_name: Option<String>,
    /// The project's path on its server, e.g. `group/project` (from `git_info.repo_url`,
    /// without credentials and `.git`).
    pub project_path: Option<String>,
    /// The GitLab server's host (from `git_info.repo_url`), e.g. `gitlab.example.com`.
    pub server: Option<String>,
    /// The job's timeout (`runner_info.timeout`).
    pub timeout: Option<Duration>,
    /// The commit the job runs on (`git_info.sha`). With the project and the job's name it
    /// stands for "this job of this pipeline" (the payload names no pipeline outside its
    /// untrusted `variables`): a retried job has the same.
    pub commit_sha: Option<String>,
    /// The job's `image:` (`image`), `None` when it has none.
    pub image: Option<JobImage>,
    /// The job's `services:` (`services`), in order.
    pub services: Vec<JobImage>,
    /// The job's variables that GitLab marks as secret (`masked`, `file` or not
    /// `public`), with their values (`Debug` hides them).
    pub sensitive: Vec<SensitiveVariable>,
    /// All the payload's variables, for expanding `image:` and `services:` names as
    /// gitlab-runner does (untrusted values: the allowlist checks the expanded names).
    pub variables: JobVariables,
    /// The job's registry logins (`credentials` of type `registry`), in the payload's
    /// order (`Debug` hides the passwords).
    pub registry_logins: Vec<RegistryLogin>,
}

#[derive(Deserialize)]
struct Raw {
    id: Option<serde_json::Value>,
    #[serde(default)]
    job_info: RawJobInfo,
    #[serde(default)]
    git_info: RawGitInfo,
    #[serde(default)]
    runner_info: RawRunnerInfo,
    #[serde(default)]
    image: Option<RawImage>,
    #[serde(default)]
    services: Option<Vec<RawImage>>,
    #[serde(default)]
    variables: Option<Vec<RawVariable>>,
    #[serde(default)]
    credentials: Option<Vec<RawCredentials>>,
}

#[derive(Default, Deserialize)]
struct RawJobInfo {
    name: Option<String>,
    stage: Option<String>,
    project_id: Option<serde_json::Value>,
    project_name: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawGitInfo {
    repo_url: Option<String>,
    sha: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawRunnerInfo {
    timeout: Option<serde_json::Value>,
}

/// A positive integer given as a JSON number or a decimal string.
fn positive(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

impl JobResponse {
    /// A payload for job `id` with nothing else known (for embedders and tests).
    pub fn new(id: u64) -> Self {
        JobResponse {
            id,
            ..JobResponse::default()
        }
    }

    /// Reads `$JOB_RESPONSE_FILE`.
    ///
    /// A file that cannot be read or has no positive job `id` is an error: the driver never
    /// falls back to job variables when the runner gave it the payload.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::io(format!("cannot read the job payload {}", path.display()), e)
                .with_hint("gitlab-runner writes JOB_RESPONSE_FILE before each stage; run the driver from the custom executor")
        })?;
        Self::parse(&bytes).map_err(|e| e.with_context("file", path.display()))
    }

    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, format!("not a job payload: {e}")).with_source(e)
        })?;
        let id = raw.id.as_ref().and_then(positive).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "the job payload has no positive job id",
            )
        })?;
        let (server, project_path) = raw
            .git_info
            .repo_url
            .as_deref()
            .map(split_repo_url)
            .unwrap_or_default();
        let variables: Vec<RawVariable> = raw
            .variables
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.key.is_empty())
            .collect();
        Ok(JobResponse {
            id,
            job_name: raw.job_info.name.filter(|s| !s.is_empty()),
            stage: raw.job_info.stage.filter(|s| !s.is_empty()),
            project_id: raw.job_info.project_id.as_ref().and_then(positive),
            project_name: raw.job_info.project_name.filter(|s| !s.is_empty()),
            project_path,
            server,
            timeout: raw
                .runner_info
                .timeout
                .as_ref()
                .and_then(positive)
                .map(Duration::from_secs),
            commit_sha: raw.git_info.sha.filter(|s| !s.is_empty()),
            image: raw.image.and_then(RawImage::into_image),
            services: raw
                .services
                .unwrap_or_default()
                .into_iter()
                .filter_map(RawImage::into_image)
                .collect(),
            sensitive: variables
                .iter()
                .filter_map(|v| {
                    let sensitivity = v.sensitivity()?;
                    Some(SensitiveVariable::new(&v.key, &v.value, sensitivity))
                })
                .collect(),
            variables: JobVariables::from_payload(variables.into_iter().map(|v| {
                let sensitivity = v.sensitivity();
                (v.key, v.value, v.raw == Some(true), sensitivity)
            })),
            registry_logins: raw
                .credentials
                .unwrap_or_default()
                .into_iter()
                .filter_map(RawCredentials::into_login)
                .collect(),
        })
    }
}

/// `(host, path)` of a repository URL such as
/// `https://gitlab-ci-token:<secret>@gitlab.example.com/group/project.git`. The credentials
/// are dropped, never returned.
fn split_repo_url(url: &str) -> (Option<String>, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    (nonempty(host), nonempty(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_gitlab_sends_and_drops_credentials() {
        let payload = br#"{
            "id": 4242, "token": "glcbt-secret",
            "job_info": {"id": 4242, "name": "build", "stage": "test", "project_id": 17, "project_name": "project"},
            "git_info": {"repo_url": "https://gitlab-ci-token:glcbt-secret@gitlab.example.com/group/project.git", "ref": "main", "sha": "0123abc"},
            "runner_info": {"timeout": 3600},
            "variables": [{"key": "CI_JOB_ID", "value": "1", "public": true}],
            "unknown": {"future": "field"}
        }"#;
        let r = JobResponse::parse(payload).unwrap();
        assert_eq!(r.id, 4242);
        assert_eq!(r.job_name.as_deref(), Some("build"));
        assert_eq!(r.stage.as_deref(), Some("test"));
        assert_eq!(r.project_id, Some(17));
        assert_eq!(r.project_name.as_deref(), Some("project"));
        assert_eq!(r.project_path.as_deref(), Some("group/project"));
        assert_eq!(r.server.as_deref(), Some("gitlab.example.com"));
        assert_eq!(r.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(r.commit_sha.as_deref(), Some("0123abc"));
        assert!(!format!("{r:?}").contains("secret"));
    }

    #[test]
    fn reads_image_and_services() {
        let payload = br#"{
            "id": 7,
            "image": {"name": "rust:1.85", "entrypoint": [""], "alias": "", "pull_policy": ["always"]},
            "services": [
                {"name": "postgres:16", "alias": "db,pg", "command": ["postgres", "-c", "fsync=off"],
                 "variables": [{"key": "POSTGRES_PASSWORD", "value": "s3cret", "masked": true}]},
                {"name": "redis:7", "entrypoint": ["redis-server"], "ports": [{"number": 6379}]},
                {"name": ""}
            ]
        }"#;
        let r = JobResponse::parse(payload).unwrap();
        let image = r.image.unwrap();
        assert_eq!(image.name, "rust:1.85");
        assert!(image.aliases.is_empty());
        assert_eq!(image.entrypoint, Some(vec![String::new()]));
        assert_eq!(r.services.len(), 2);
        assert_eq!(r.services[0].aliases, ["db", "pg"]);
        assert_eq!(
            r.services[0].command.as_deref(),
            Some(&["postgres".to_owned(), "-c".into(), "fsync=off".into()][..])
        );
        assert_eq!(r.services[0].variables["POSTGRES_PASSWORD"], "s3cret");
        assert_eq!(
            r.services[1].entrypoint,
            Some(vec!["redis-server".to_owned()])
        );
        let none =
            JobResponse::parse(br#"{"id": 8, "image": {"name": ""}, "services": null}"#).unwrap();
        assert!(none.image.is_none() && none.services.is_empty());
    }

    #[test]
    fn keeps_the_variables_gitlab_marks_secret_and_no_other() {
        use crate::job::Sensitivity;
        let payload = br#"{
            "id": 9,
            "variables": [
                {"key": "CI_JOB_ID", "value": "9", "public": true},
                {"key": "CI_JOB_TOKEN", "value": "glcbt-64", "public": false, "masked": true},
                {"key": "DB_PASSWORD", "value": "hunter2-hunter2", "public": false, "masked": false},
                {"key": "KUBECONFIG", "value": "apiVersion: v1", "public": true, "file": true},
                {"key": "FROM_YAML", "value": "plain"}
            ]
        }"#;
        let r = JobResponse::parse(payload).unwrap();
        let kept: Vec<(&str, Sensitivity)> = r
            .sensitive
            .iter()
            .map(|v| (v.name.as_str(), v.sensitivity))
            .collect();
        assert_eq!(
            kept,
            [
                ("CI_JOB_TOKEN", Sensitivity::Masked),
                ("DB_PASSWORD", Sensitivity::NotPublic),
                ("KUBECONFIG", Sensitivity::File)
            ]
        );
        assert_eq!(r.sensitive[1].value.expose(), Some("hunter2-hunter2"));
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("glcbt"),
            "{shown}"
        );
    }

    #[test]
    fn reads_the_registry_logins_and_hides_their_passwords() {
        let r = JobResponse::parse(
            br#"{"id": 5, "credentials": [
                {"type": "registry", "url": "registry.gitlab.example.com", "username": "gitlab-ci-token", "password": "glcbt-job-token-1"},
                {"type": "registry", "url": "gitlab.example.com:443", "username": "gitlab-ci-token", "password": "glcbt-job-token-1"},
                {"type": "other", "url": "x.example", "username": "u", "password": "p-secret-p"},
                {"type": "registry", "url": "", "username": "u", "password": "p-secret-p"}
            ]}"#,
        )
        .unwrap();
        let urls: Vec<&str> = r.registry_logins.iter().map(|l| l.url.as_str()).collect();
        assert_eq!(
            urls,
            ["registry.gitlab.example.com", "gitlab.example.com:443"]
        );
        assert_eq!(r.registry_logins[0].username, "gitlab-ci-token");
        assert_eq!(
            r.registry_logins[0].password.expose(),
            Some("glcbt-job-token-1")
        );
        let shown = format!("{r:?}");
        assert!(!shown.contains("glcbt-job-token"), "{shown}");
        let stored = serde_json::to_string(&r.registry_logins).unwrap();
        assert!(!stored.contains("glcbt-job-token"), "{stored}");
        assert!(
            JobResponse::parse(br#"{"id": 6}"#)
                .unwrap()
                .registry_logins
                .is_empty()
        );
    }

    #[test]
    fn keeps_every_variable_for_expanding_image_names() {
        let r = JobResponse::parse(
            br#"{"id": 3, "image": {"name": "$CI_REGISTRY_IMAGE/b:$T"}, "variables": [
                {"key": "CI_REGISTRY_IMAGE", "value": "reg.example.com/g/p", "public": true},
                {"key": "T", "value": "$CI_COMMIT_SHA", "raw": true},
                {"key": "PASS", "value": "hunter2-hunter2", "masked": true}
            ]}"#,
        )
        .unwrap();
        assert_eq!(r.image.as_ref().unwrap().name, "$CI_REGISTRY_IMAGE/b:$T");
        let e = r.variables.expand("$CI_REGISTRY_IMAGE/b:$T");
        assert_eq!(e.value, "reg.example.com/g/p/b:$CI_COMMIT_SHA");
        assert!(r.variables.expand("$PASS").secret.is_some());
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn the_variables_of_the_payload_never_give_the_id() {
        let err = JobResponse::parse(br#"{"variables": [{"key": "CI_JOB_ID", "value": "7"}]}"#)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        for bad in [
            &br#"{"id": 0}"#[..],
            br#"{"id": -3}"#,
            br#"{"id": "x"}"#,
            b"[]",
            b"",
        ] {
            assert!(
                JobResponse::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(JobResponse::parse(br#"{"id": "12"}"#).unwrap().id, 12);
    }

    #[test]
    fn repo_urls_of_every_shape() {
        for (url, host, path) in [
            ("https://h.example/g/p.git", Some("h.example"), Some("g/p")),
            (
                "http://u:p@h.example:8080/g/s/p",
                Some("h.example:8080"),
                Some("g/s/p"),
            ),
            ("h.example/g/p", Some("h.example"), Some("g/p")),
            ("https://h.example", Some("h.example"), None),
            ("", None, None),
        ] {
            let (h, p) = split_repo_url(url);
            assert_eq!((h.as_deref(), p.as_deref()), (host, path), "{url}");
        }
    }
}
