//! Who a job is: [`Namespace`] (the administrator's), [`JobIdentity`] (GitLab's job id in
//! that namespace) and [`JobKey`] (the name of its record, lock and tasks).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

use super::response::JobResponse;

/// Longest namespace.
pub const MAX_NAMESPACE_LEN: usize = 40;

/// The runner's namespace: separates the jobs, records and tasks of one runner (one
/// metadata directory) from those of other runners sharing a cluster or an account.
///
/// 1 to 40 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`. Set by the
/// administrator (the options' `namespace`); by default derived from the host name and
/// the metadata directory ([`Namespace::default_for`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// Checks `s`.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NAMESPACE_LEN
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Namespace(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{s:?} is not a namespace: use 1-{MAX_NAMESPACE_LEN} characters of a-z, 0-9 and '-', not at either end"
                ),
            ))
        }
    }

    /// The default namespace of a runner whose records live in `metadata_dir`:
    /// `<host name>-<6 hex digits of a hash of the directory>`, e.g. `runner-01-3fa2c1`.
    ///
    /// Two runners on one host with different metadata directories get different
    /// namespaces, so neither ever stops the other's tasks. Set the namespace explicitly
    /// when the host name is not stable (a runner in a container).
    pub fn default_for(metadata_dir: &Path) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "runner".to_owned());
        Self::derived(&host, metadata_dir)
    }

    /// The default namespace of the runner entry configured by `config_file` whose records
    /// live in `metadata_dir`: `<host name>-<6 hex digits of a hash of both paths>`.
    ///
    /// Runner entries that share a metadata directory (the default one, say) but have
    /// their own configuration files get their own namespaces, and so never judge each
    /// other's records, slots or tasks.
    pub fn default_for_runner(metadata_dir: &Path, config_file: &Path) -> Self {
        let mut both = metadata_dir.as_os_str().to_owned();
        both.push("\0");
        both.push(config_file.as_os_str());
        Self::default_for(Path::new(&both))
    }

    /// `<sanitized host>-<6 hex digits of the directory's hash>`.
    pub fn derived(host: &str, metadata_dir: &Path) -> Self {
        let mut name: String = host
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(MAX_NAMESPACE_LEN - 7)
            .collect();
        name = name.trim_matches('-').to_owned();
        if name.is_empty() {
            name = "runner".to_owned();
        }
        let digest = Sha256::digest(metadata_dir.as_os_str().as_encoded_bytes());
        Namespace(format!("{name}-{}", &hex::encode(digest)[..6]))
    }

    /// The namespace as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Namespace::parse(&s)
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> String {
        n.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the job id of a [`JobIdentity`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentitySource {
    /// `JOB_RESPONSE_FILE`, which GitLab writes: trusted.
    JobResponse,
    /// The `CI_JOB_ID` job variable, which the pipeline can set: only for runners older
    /// than 14.1, with a warning.
    Variables,
    /// Not a job: a task of the runner's warm pool ([`crate::driver::pool`]), waiting for a
    /// job to claim it. `job_id` is the pool slot's random number.
    Pool,
}

/// The job as the driver identifies it: its GitLab job id in the runner's namespace, and
/// what GitLab says about its project (for tags and reports).
///
/// Everything here comes from the administrator's configuration and from
/// `JOB_RESPONSE_FILE`; nothing from job variables, except [`IdentitySource::Variables`]
/// on runners too old to write the payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobIdentity {
    /// The runner's namespace.
    pub namespace: Namespace,
    /// GitLab's job id.
    pub job_id: u64,
    /// Where `job_id` came from.
    pub source: IdentitySource,
    /// The project's id, when GitLab said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,
    /// The project's path (`group/project`), when GitLab said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_path: Option<String>,
    /// The job's name, when GitLab said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
}

impl JobIdentity {
    /// The identity of the job GitLab describes in `response`.
    pub fn from_response(namespace: Namespace, response: &JobResponse) -> Self {
        JobIdentity {
            namespace,
            job_id: response.id,
            source: IdentitySource::JobResponse,
            project_id: response.project_id,
            project_path: response.project_path.clone(),
            job_name: response.job_name.clone(),
        }
    }

    /// An identity from a job id the pipeline could have set (runners older than 14.1).
    pub fn from_untrusted_job_id(namespace: Namespace, job_id: u64) -> Self {
        JobIdentity {
            namespace,
            job_id,
            source: IdentitySource::Variables,
            project_id: None,
            project_path: None,
            job_name: None,
        }
    }

    /// The identity of warm pool slot `slot` ([`IdentitySource::Pool`]): no job, no project.
    pub fn pool_slot(namespace: Namespace, slot: u64) -> Self {
        JobIdentity {
            namespace,
            job_id: slot,
            source: IdentitySource::Pool,
            project_id: None,
            project_path: None,
            job_name: None,
        }
    }

    /// Whether this is a warm pool slot rather than a job.
    pub fn is_pool_slot(&self) -> bool {
        self.source == IdentitySource::Pool
    }

    /// The job's key: `<namespace>-<job id>`; for a warm pool slot
    /// `<namespace>_pool_<16 hex digits>`, which no job's key can be (a namespace has no
    /// `_`).
    pub fn key(&self) -> JobKey {
        match self.source {
            IdentitySource::Pool => JobKey(format!(
                "{}{POOL_KEY_INFIX}{:016x}",
                self.namespace, self.job_id
            )),
            _ => JobKey(format!("{}-{}", self.namespace, self.job_id)),
        }
    }

    /// Whether `other` is the same job (same namespace and job id).
    pub fn same_job(&self, other: &JobIdentity) -> bool {
        self.namespace == other.namespace
            && self.job_id == other.job_id
            && self.is_pool_slot() == other.is_pool_slot()
    }
}

impl fmt::Display for JobIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            IdentitySource::Pool => write!(
                f,
                "warm pool slot {:016x} of namespace {}",
                self.job_id, self.namespace
            ),
            _ => write!(f, "job {} of namespace {}", self.job_id, self.namespace),
        }
    }
}

/// What separates the namespace from the slot number in a warm pool slot's key.
pub(crate) const POOL_KEY_INFIX: &str = "_pool_";
/// What follows the namespace in the key of the warm pool's fill lock.
const POOL_FILL_SUFFIX: &str = "_pool_fill";

/// Longest job key.
pub const MAX_KEY_LEN: usize = 97;

/// A job's key: 1 to 97 characters of `[A-Za-z0-9_-]`. Names the job's record and lock, and
/// (hashed) its tasks' `startedBy`. Safe as a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobKey(pub(crate) String);

impl JobKey {
    /// Checks that `s` is a valid key.
    pub fn parse(s: &str) -> Result<Self> {
        let valid = !s.is_empty()
            && s.len() <= MAX_KEY_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(JobKey(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{s:?} is not a job key (1-{MAX_KEY_LEN} characters of [A-Za-z0-9_-])"),
            ))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this names a warm pool slot of `namespace` (see [`JobIdentity::pool_slot`]).
    pub fn is_pool_slot_of(&self, namespace: &Namespace) -> bool {
        self.0
            .strip_prefix(namespace.as_str())
            .and_then(|rest| rest.strip_prefix(POOL_KEY_INFIX))
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Whether this key is one of `namespace`'s: a job's (`<namespace>-<job id>`), a warm
    /// pool slot's, or the pool's fill lock (`<namespace>_pool_fill`). Keys of a namespace
    /// that merely starts with `namespace` (`ci-1-5` is job 5 of `ci-1`, not of `ci`) are
    /// not; nor are the Go driver's record names, which carry no namespace.
    pub fn belongs_to(&self, namespace: &Namespace) -> bool {
        let Some(rest) = self.0.strip_prefix(namespace.as_str()) else {
            return false;
        };
        match rest.strip_prefix('-') {
            Some(id) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
            None => self.is_pool_slot_of(namespace) || rest == POOL_FILL_SUFFIX,
        }
    }

    /// The key of `namespace`'s warm pool fill lock (no record has it).
    pub fn pool_fill(namespace: &Namespace) -> JobKey {
        JobKey(format!("{namespace}{POOL_FILL_SUFFIX}"))
    }

    /// Whether this names a warm pool slot of any namespace.
    pub fn is_pool_slot(&self) -> bool {
        self.0.contains(POOL_KEY_INFIX)
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

    #[test]
    fn namespaces_are_checked() {
        for good in ["a", "ci-prod", "runner-01-3fa2c1", &"a".repeat(40)] {
            assert!(Namespace::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "..", &"a".repeat(41)] {
            let err = Namespace::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
        assert!(serde_json::from_str::<Namespace>("\"../x\"").is_err());
    }

    #[test]
    fn default_namespaces_differ_by_directory_and_are_valid() {
        let a = Namespace::derived("Runner_01.example.com", Path::new("/var/lib/fargate"));
        let b = Namespace::derived("Runner_01.example.com", Path::new("/srv/other"));
        assert!(a.as_str().starts_with("runner-01-example-com-"), "{a}");
        assert_ne!(a, b);
        for host in ["", "---", "ü", &"x".repeat(300)] {
            let n = Namespace::derived(host, Path::new("/d"));
            assert!(Namespace::parse(n.as_str()).is_ok(), "{host:?} -> {n}");
        }
        assert!(Namespace::parse(Namespace::default_for(Path::new("/x")).as_str()).is_ok());
        let dir = Path::new("/var/lib/fargate-driver");
        let (a, b) = (
            Namespace::default_for_runner(dir, Path::new("/etc/gitlab-runner/a.toml")),
            Namespace::default_for_runner(dir, Path::new("/etc/gitlab-runner/b.toml")),
        );
        assert_ne!(a, b, "two runner entries sharing a directory");
        assert_eq!(
            a,
            Namespace::default_for_runner(dir, Path::new("/etc/gitlab-runner/a.toml"))
        );
    }

    #[test]
    fn keys_name_namespace_and_job() {
        let ns = Namespace::parse("ci").unwrap();
        let id = JobIdentity::from_response(ns.clone(), &JobResponse::new(42));
        assert_eq!(id.key().as_str(), "ci-42");
        assert!(JobKey::parse(id.key().as_str()).is_ok());
        let forged = JobIdentity::from_untrusted_job_id(ns, 42);
        assert!(id.same_job(&forged));
        let other =
            JobIdentity::from_response(Namespace::parse("cd").unwrap(), &JobResponse::new(42));
        assert!(!id.same_job(&other));
        assert_ne!(id.key(), other.key());
    }

    #[test]
    fn keys_belong_to_their_namespace_only() {
        let ci = Namespace::parse("ci").unwrap();
        let ci1 = Namespace::parse("ci-1").unwrap();
        let job = |ns: &Namespace, id| {
            JobIdentity::from_response(ns.clone(), &JobResponse::new(id)).key()
        };
        assert!(job(&ci, 15).belongs_to(&ci));
        assert!(!job(&ci, 15).belongs_to(&ci1));
        // `ci-1-5` is job 5 of `ci-1`, never a key of `ci`.
        assert!(job(&ci1, 5).belongs_to(&ci1));
        assert!(!job(&ci1, 5).belongs_to(&ci));
        assert!(JobKey::pool_fill(&ci).belongs_to(&ci));
        assert!(!JobKey::pool_fill(&ci1).belongs_to(&ci));
        assert!(!JobIdentity::pool_slot(ci1.clone(), 1).key().belongs_to(&ci));
        for other in ["ci", "ci-", "ci-x", "cix-1", "runner_abc"] {
            assert!(!JobKey::parse(other).unwrap().belongs_to(&ci), "{other}");
        }
    }

    #[test]
    fn pool_slot_keys_are_no_job_keys() {
        let ns = Namespace::parse("ci").unwrap();
        let slot = JobIdentity::pool_slot(ns.clone(), 0xab);
        assert_eq!(slot.key().as_str(), "ci_pool_00000000000000ab");
        assert!(JobKey::parse(slot.key().as_str()).is_ok());
        assert!(slot.key().is_pool_slot_of(&ns));
        assert!(slot.key().belongs_to(&ns));
        assert!(slot.key().is_pool_slot());
        assert!(!slot.key().is_pool_slot_of(&Namespace::parse("c").unwrap()));
        let job = JobIdentity::from_response(ns.clone(), &JobResponse::new(0xab));
        assert!(!job.key().is_pool_slot_of(&ns) && !job.key().is_pool_slot());
        assert!(!slot.same_job(&job));
        // The longest namespace still gives a valid key.
        let long = Namespace::parse(&"n".repeat(MAX_NAMESPACE_LEN)).unwrap();
        assert!(JobKey::parse(JobIdentity::pool_slot(long, u64::MAX).key().as_str()).is_ok());
    }

    #[test]
    fn job_key_rejects_paths() {
        for bad in ["", "a/b", "..", "a.b", "a b", &"k".repeat(98)] {
            assert!(JobKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<JobKey>("\"../x\"").is_err());
    }
}
