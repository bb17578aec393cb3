//! [`GoJobId`]: the job id of GitLab's Go driver, for the config stage's `hostname` and for
//! reading the records of jobs the Go driver (or an earlier version of this driver)
//! prepared.

use sha2::{Digest, Sha256};

use super::identity::JobKey;

/// The inputs of the Go driver's job id.
///
/// The token, project URL and pipeline come from job variables, which a pipeline can set;
/// [`JobContext::go_job_id`](super::JobContext::go_job_id) puts the trusted job id in, so
/// the id can never name another job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoJobId {
    /// `CI_RUNNER_SHORT_TOKEN`, or `unknown`.
    pub runner_short_token: String,
    /// `CI_PROJECT_URL`, or `unknown`.
    pub project_url: String,
    /// `CI_PIPELINE_ID`, or 0.
    pub pipeline_id: i64,
    /// The job id, or 0.
    pub job_id: i64,
}

impl GoJobId {
    /// The Go driver's id, byte for byte: `<token>-<sha256hex("<url>-<pipeline>-<job>")>`.
    ///
    /// It is the `hostname` of the config stage. It is **not** safe as a file name; use
    /// [`GoJobId::record_key`] for that.
    pub fn go_id(&self) -> String {
        format!("{}-{}", self.runner_short_token, self.digest())
    }

    /// The name the Go driver (and this driver before it used namespaces) gave the job's
    /// record: the Go id with the token reduced to `[A-Za-z0-9_-]`, at most 32 characters
    /// of it.
    pub fn record_key(&self) -> JobKey {
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
        // At most 32 + 1 + 64 characters of [A-Za-z0-9_-]: always a valid key.
        JobKey(format!("{token}-{}", self.digest()))
    }

    fn digest(&self) -> String {
        let input = format!("{}-{}-{}", self.project_url, self.pipeline_id, self.job_id);
        hex::encode(Sha256::digest(input.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(token: &str, url: &str, pipeline: i64, job: i64) -> GoJobId {
        GoJobId {
            runner_short_token: token.into(),
            project_url: url.into(),
            pipeline_id: pipeline,
            job_id: job,
        }
    }

    #[test]
    fn go_driver_vectors() {
        assert_eq!(
            id("test", "http://gitlab.example.com/my/project", 1, 1).go_id(),
            "test-293ac3a36135714f5953037b893ee39de22e40d9c8622a626308e13b91fa0c3f"
        );
        assert_eq!(
            id("", "", 0, 0).go_id(),
            "-76ce04054fc6b568295815cdadc2daf5f2b5e6847592d04a7cdd6cb6c13f06fe"
        );
        assert_eq!(
            id("token", "project-URL", 1, 1).go_id(),
            "token-96688db3e5e6c32b47fe3d59f4384354c5509e27b0d48742809a8c35cca0e88d"
        );
    }

    #[test]
    fn hostile_tokens_never_reach_the_record_key() {
        for token in [
            "../../etc/passwd",
            "a/b",
            "..",
            "x\0y",
            "tok en",
            "ü",
            &"a".repeat(500),
        ] {
            let key = id(token, "u", 1, 1).record_key();
            assert!(JobKey::parse(key.as_str()).is_ok(), "{token:?} -> {key}");
            assert!(!key.as_str().contains('/') && !key.as_str().contains(".."));
        }
        let good = id("abc_DEF-1", "u", 1, 1);
        assert_eq!(good.record_key().as_str(), good.go_id());
    }
}
