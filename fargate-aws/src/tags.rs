//! Tags and `startedBy`: how a task names the runner and job it belongs to.
//!
//! Every task gets the tags below plus the administrator's ([`crate::EcsConfig::tags`]).
//! ECS limits tags to 50 per resource, keys to 128 and values to 256 characters of letters,
//! digits, spaces and `_ . : / = + - @`, and reserves the `aws:` prefix. Values coming
//! from the job (the project URL above all) are sanitized and truncated, never rejected;
//! the administrator's tags are checked when the launcher is built.

use std::collections::BTreeMap;

use fargate_core::{Error, ErrorKind, JobIdentity, JobKey, Result};
use sha2::{Digest, Sha256};

/// Tag holding the job key ([`fargate_core::JobKey`]); `find` checks it
/// ([`fargate_core::TaskLauncher::find`]).
pub const JOB_KEY: &str = "fargate:job-key";
/// Tag holding the project URL (`CI_PROJECT_URL`).
pub const PROJECT_URL: &str = "gitlab:project-url";
/// Tag holding the pipeline id (`CI_PIPELINE_ID`).
pub const PIPELINE_ID: &str = "gitlab:pipeline-id";
/// Tag holding the job id (`CI_JOB_ID`).
pub const JOB_ID: &str = "gitlab:job-id";
/// Tag holding the runner's short token (`CI_RUNNER_SHORT_TOKEN`).
pub const RUNNER: &str = "gitlab:runner";

/// The tags the launcher sets itself.
pub const OWN_TAGS: [&str; 5] = [JOB_KEY, PROJECT_URL, PIPELINE_ID, JOB_ID, RUNNER];

/// Most tags ECS accepts on a task.
pub const MAX_TAGS: usize = 50;
/// Most administrator tags: [`MAX_TAGS`] less the launcher's own.
pub const MAX_ADMIN_TAGS: usize = MAX_TAGS - OWN_TAGS.len();
/// Longest tag key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Longest `startedBy` ECS accepts.
pub const MAX_STARTED_BY: usize = 36;

/// The `startedBy` of a job's tasks: `fgt-` and 32 hex digits of a hash of the key
/// (36 characters, ECS's limit; the key itself can be 97).
pub fn started_by(key: &JobKey) -> String {
    let digest = Sha256::digest(key.as_str().as_bytes());
    format!("fgt-{}", &crate::hex(&digest)[..32])
}

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// `value` with every character ECS refuses in tags replaced by `_`, cut to `max` characters.
pub fn sanitize(value: &str, max: usize) -> String {
    value
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(max)
        .collect()
}

/// The tags of a job's task: the administrator's, then the launcher's own (which win).
pub fn task_tags(
    admin: &BTreeMap<String, String>,
    job: &JobIdentity,
    key: &JobKey,
) -> Vec<(String, String)> {
    let own = [
        (JOB_KEY, key.as_str().to_owned()),
        (PROJECT_URL, job.project_url.clone()),
        (PIPELINE_ID, job.pipeline_id.to_string()),
        (JOB_ID, job.job_id.to_string()),
        (RUNNER, job.runner_short_token.clone()),
    ];
    let mut tags: Vec<(String, String)> = admin
        .iter()
        .filter(|(k, _)| !OWN_TAGS.contains(&k.as_str()))
        .take(MAX_ADMIN_TAGS)
        .map(|(k, v)| (k.clone(), sanitize(v, MAX_VALUE_CHARS)))
        .collect();
    tags.extend(
        own.into_iter()
            .map(|(k, v)| (k.to_owned(), sanitize(&v, MAX_VALUE_CHARS))),
    );
    tags
}

/// Checks the administrator's tags against ECS's rules.
pub fn validate_admin_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    let invalid = |msg: String| {
        Error::new(ErrorKind::InvalidConfig, msg)
            .with_backend("ecs")
            .with_hint(
                "ECS tags: at most 45 here, keys 1-128 and values 0-256 characters of letters, \
                 digits, spaces and _.:/=+-@, no `aws:` prefix",
            )
    };
    if tags.len() > MAX_ADMIN_TAGS {
        return Err(invalid(format!(
            "{} tags are configured; ECS allows {MAX_ADMIN_TAGS} besides the driver's own",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS || !k.chars().all(allowed) {
            return Err(invalid(format!("tag key {k:?} is not valid for ECS")));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "tag key {k:?} uses the reserved `aws:` prefix"
            )));
        }
        if OWN_TAGS.contains(&k.as_str()) {
            return Err(invalid(format!(
                "tag key {k:?} is set by the driver itself"
            )));
        }
        if v.chars().count() > MAX_VALUE_CHARS || !v.chars().all(allowed) {
            return Err(invalid(format!(
                "the value of tag {k:?} is not valid for ECS"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(url: &str) -> JobIdentity {
        JobIdentity {
            runner_short_token: "tok?en".into(),
            project_url: url.into(),
            pipeline_id: 7,
            job_id: 42,
        }
    }

    #[test]
    fn started_by_fits_ecs() {
        let key = JobKey::parse(&"k".repeat(97)).unwrap();
        let s = started_by(&key);
        assert_eq!(s.len(), MAX_STARTED_BY);
        assert!(s.starts_with("fgt-"));
        assert_ne!(s, started_by(&JobKey::parse("other").unwrap()));
    }

    #[test]
    fn odd_project_urls_are_sanitized_not_rejected() {
        let url = format!("https://g.example/a b/ü?x=1&y=%20#frag~{}", "z".repeat(400));
        let key = JobKey::parse("tok_en-abc").unwrap();
        let tags = task_tags(&BTreeMap::new(), &job(&url), &key);
        let map: BTreeMap<_, _> = tags.iter().cloned().collect();
        let v = &map[PROJECT_URL];
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS);
        assert!(
            v.starts_with("https://g.example/a b/ü_x=1_y=_20_frag_"),
            "{v}"
        );
        assert_eq!(map[RUNNER], "tok_en");
        assert_eq!(map[JOB_ID], "42");
        assert_eq!(map[PIPELINE_ID], "7");
        assert_eq!(map[JOB_KEY], "tok_en-abc");
    }

    #[test]
    fn admin_tags_are_checked_and_own_tags_win() {
        let mut admin = BTreeMap::from([("team".to_owned(), "ci".to_owned())]);
        assert!(validate_admin_tags(&admin).is_ok());
        let tags = task_tags(&admin, &job("u"), &JobKey::parse("k").unwrap());
        assert_eq!(tags.len(), 6);
        assert_eq!(tags[0], ("team".to_owned(), "ci".to_owned()));
        admin.insert("aws:x".into(), "y".into());
        assert!(validate_admin_tags(&admin).is_err());
        admin.remove("aws:x");
        admin.insert(JOB_ID.into(), "y".into());
        assert!(validate_admin_tags(&admin).is_err());
        admin.remove(JOB_ID);
        admin.insert("bad#key".into(), "y".into());
        assert!(validate_admin_tags(&admin).is_err());
        let many: BTreeMap<String, String> =
            (0..46).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_admin_tags(&many).is_err());
        let tags = task_tags(&many, &job("u"), &JobKey::parse("k").unwrap());
        assert_eq!(tags.len(), MAX_TAGS);
    }
}
