//! Tags and `startedBy`: how a task names the runner and job it belongs to.
//!
//! Every task gets the tags below plus the administrator's ([`crate::EcsConfig::tags`]).
//! ECS limits tags to 50 per resource, keys to 128 and values to 256 characters of letters,
//! digits, spaces and `_ . : / = + - @`, and reserves the `aws:` prefix. Values coming
//! from the job (a job name, a project path) are sanitized and truncated, never rejected;
//! the administrator's tags are checked when the launcher is built.
//!
//! Every value comes from the job's trusted identity ([`fargate_core::JobIdentity`]: the
//! administrator's namespace and what `JOB_RESPONSE_FILE` says), never from job variables,
//! so cleanup and a reaper can rely on them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::primitives::{DateTime, DateTimeFormat};
use fargate_core::{ConfigProblem, JobIdentity, JobKey};
use sha2::{Digest, Sha256};

/// Tag holding the job key ([`fargate_core::JobKey`]); `find` checks it
/// ([`fargate_core::TaskLauncher::find`]).
pub const JOB_KEY: &str = "fargate:job-key";
/// Tag holding the runner's namespace ([`fargate_core::Namespace`]).
pub const NAMESPACE: &str = "fargate:namespace";
/// Tag holding GitLab's job id (from `JOB_RESPONSE_FILE`).
pub const JOB_ID: &str = "gitlab:job-id";
/// Tag holding the project's id, when GitLab gave it.
pub const PROJECT_ID: &str = "gitlab:project-id";
/// Tag holding the project's path (`group/project`), when GitLab gave it.
pub const PROJECT: &str = "gitlab:project";
/// Tag holding the job's name, when GitLab gave it.
pub const JOB_NAME: &str = "gitlab:job-name";

/// Tag holding the task's deadline ([`fargate_core::TaskSpec::deadline`]), RFC 3339 in
/// UTC to whole seconds (`2026-12-01T05:00:00Z`; see [`format_deadline`] and
/// [`parse_deadline`]): a task still running after it belongs to no live job.
pub const DEADLINE: &str = "fargate:deadline";

/// Tag holding the last time the driver marked the task's job alive
/// ([`fargate_core::TaskLauncher::mark_alive`]), in the [`DEADLINE`] tag's format
/// ([`format_deadline`], [`parse_deadline`]). A run stage sets it when its host cannot
/// reach the shared store, so that `fargate gc` on other hosts keeps the live job's task;
/// it is not set at launch. A timestamp is no secret.
pub const ALIVE: &str = "fargate:alive";

/// The tags the launcher sets itself ([`ALIVE`] later, the others at launch).
pub const OWN_TAGS: [&str; 8] = [
    JOB_KEY, NAMESPACE, JOB_ID, PROJECT_ID, PROJECT, JOB_NAME, DEADLINE, ALIVE,
];

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
    format!("fgt-{}", &hex::encode(digest)[..32])
}

/// `deadline` as the value of the [`DEADLINE`] tag: RFC 3339, UTC, whole seconds
/// (`2026-12-01T05:00:00Z`); a time before 1970 is written as the epoch.
pub fn format_deadline(deadline: SystemTime) -> String {
    let secs = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    DateTime::from_secs(secs)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| "9999-12-31T23:59:59Z".to_owned())
}

/// The time a [`DEADLINE`] tag's value names, or `None` when it is not RFC 3339 (any
/// offset and fraction are accepted, as another tool may write them).
pub fn parse_deadline(value: &str) -> Option<SystemTime> {
    let t = DateTime::from_str(value.trim(), DateTimeFormat::DateTime).ok()?;
    let secs = u64::try_from(t.secs()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.subsec_nanos()))
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
    deadline: Option<SystemTime>,
) -> Vec<(String, String)> {
    let own = [
        (JOB_KEY, Some(job.key().as_str().to_owned())),
        (NAMESPACE, Some(job.namespace.as_str().to_owned())),
        // A warm pool slot is no job: its key names it, and no job id is made up.
        (
            JOB_ID,
            (!job.is_pool_slot()).then(|| job.job_id.to_string()),
        ),
        (PROJECT_ID, job.project_id.map(|id| id.to_string())),
        (PROJECT, job.project_path.clone()),
        (JOB_NAME, job.job_name.clone()),
        (DEADLINE, deadline.map(format_deadline)),
    ];
    let mut tags: Vec<(String, String)> = admin
        .iter()
        .filter(|(k, _)| !OWN_TAGS.contains(&k.as_str()))
        .take(MAX_ADMIN_TAGS)
        .map(|(k, v)| (k.clone(), sanitize(v, MAX_VALUE_CHARS)))
        .collect();
    tags.extend(own.into_iter().filter_map(|(k, v)| {
        let v = v.filter(|v| !v.is_empty())?;
        Some((k.to_owned(), sanitize(&v, MAX_VALUE_CHARS)))
    }));
    tags
}

/// Every way the administrator's tags break ECS's rules, each a problem of key `tags`.
pub fn admin_tag_problems(tags: &BTreeMap<String, String>) -> Vec<ConfigProblem> {
    let mut reasons = Vec::new();
    if tags.len() > MAX_ADMIN_TAGS {
        reasons.push(format!(
            "{} tags are configured; ECS allows {MAX_ADMIN_TAGS} besides the driver's own",
            tags.len()
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS || !k.chars().all(allowed) {
            reasons.push(format!("tag key {k:?} is not valid for ECS"));
        } else if k.to_ascii_lowercase().starts_with("aws:") {
            reasons.push(format!("tag key {k:?} uses the reserved `aws:` prefix"));
        } else if OWN_TAGS.contains(&k.as_str()) {
            reasons.push(format!("tag key {k:?} is set by the driver itself"));
        }
        if v.chars().count() > MAX_VALUE_CHARS || !v.chars().all(allowed) {
            reasons.push(format!("the value of tag {k:?} is not valid for ECS"));
        }
    }
    reasons
        .into_iter()
        .map(|reason| {
            ConfigProblem::new("tags", format!("are invalid: {reason}")).with_hint(format!(
                "ECS tags: at most {MAX_ADMIN_TAGS} here, keys 1-128 and values 0-256 \
                 characters of letters, digits, spaces and _.:/=+-@, no `aws:` prefix"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fargate_core::{JobResponse, Namespace};

    fn job(project_path: &str) -> JobIdentity {
        let mut r = JobResponse::new(42);
        r.project_id = Some(17);
        r.project_path = Some(project_path.into());
        r.job_name = Some("build: linux?".into());
        JobIdentity::from_response(Namespace::parse("ci-prod").unwrap(), &r)
    }

    #[test]
    fn started_by_fits_ecs() {
        let key = JobKey::parse(&"k".repeat(97)).unwrap();
        let s = started_by(&key);
        assert_eq!(s.len(), MAX_STARTED_BY);
        assert!(s.starts_with("fgt-"));
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_ne!(s, started_by(&JobKey::parse("other").unwrap()));
    }

    #[test]
    fn tags_come_from_the_trusted_identity_and_are_sanitized() {
        let path = format!("a b/ü?x=1&y=%20#frag~{}", "z".repeat(400));
        let tags = task_tags(&BTreeMap::new(), &job(&path), None);
        let map: BTreeMap<_, _> = tags.iter().cloned().collect();
        let v = &map[PROJECT];
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS);
        assert!(v.starts_with("a b/ü_x=1_y=_20_frag_"), "{v}");
        assert_eq!(map[JOB_KEY], "ci-prod-42");
        assert_eq!(map[NAMESPACE], "ci-prod");
        assert_eq!(map[JOB_ID], "42");
        assert_eq!(map[PROJECT_ID], "17");
        assert_eq!(map[JOB_NAME], "build: linux_");
        // What GitLab did not say is left out, not sent empty.
        let bare =
            JobIdentity::from_response(Namespace::parse("ci").unwrap(), &JobResponse::new(1));
        let keys: Vec<String> = task_tags(&BTreeMap::new(), &bare, None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [JOB_KEY, NAMESPACE, JOB_ID]);
        let slot = JobIdentity::pool_slot(Namespace::parse("ci").unwrap(), 7);
        let tags: BTreeMap<_, _> = task_tags(&BTreeMap::new(), &slot, None)
            .into_iter()
            .collect();
        assert_eq!(tags.keys().collect::<Vec<_>>(), [JOB_KEY, NAMESPACE]);
        assert_eq!(tags[JOB_KEY], "ci_pool_0000000000000007");
    }

    #[test]
    fn deadlines_are_rfc3339_utc_whole_seconds_and_parse_back() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_101_200);
        assert_eq!(format_deadline(t), "2026-12-01T05:00:00Z");
        assert_eq!(
            format_deadline(t + Duration::from_millis(999)),
            "2026-12-01T05:00:00Z"
        );
        assert_eq!(parse_deadline("2026-12-01T05:00:00Z"), Some(t));
        assert_eq!(parse_deadline(&format_deadline(t)), Some(t));
        assert_eq!(
            parse_deadline("2026-12-01T05:00:00.5Z"),
            Some(t + Duration::from_millis(500))
        );
        for bad in [
            "",
            "tomorrow",
            "1796101200",
            "2026-13-01T05:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_deadline(bad), None, "{bad}");
        }
        assert!(format_deadline(t).chars().all(allowed));
    }

    #[test]
    fn admin_tags_are_checked_and_own_tags_win() {
        let mut admin = BTreeMap::from([("team".to_owned(), "ci".to_owned())]);
        assert!(admin_tag_problems(&admin).is_empty());
        let tags = task_tags(&admin, &job("g/p"), None);
        assert_eq!(tags.len(), 7);
        admin.insert(ALIVE.into(), "y".into());
        assert_eq!(admin_tag_problems(&admin).len(), 1);
        admin.remove(ALIVE);
        assert_eq!(tags[0], ("team".to_owned(), "ci".to_owned()));
        admin.insert("aws:x".into(), "y".into());
        assert_eq!(admin_tag_problems(&admin).len(), 1);
        admin.remove("aws:x");
        admin.insert(JOB_ID.into(), "y".into());
        assert_eq!(admin_tag_problems(&admin).len(), 1);
        admin.remove(JOB_ID);
        admin.insert("bad#key".into(), "y".into());
        assert_eq!(admin_tag_problems(&admin).len(), 1);
        let many: BTreeMap<String, String> = (0..MAX_ADMIN_TAGS + 1)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(admin_tag_problems(&many).len(), 1);
        // Every problem, not just the first.
        let bad = BTreeMap::from([
            ("aws:a".to_owned(), "ok".to_owned()),
            ("team".to_owned(), "bad#value".to_owned()),
        ]);
        let problems = admin_tag_problems(&bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.key == "tags" && p.hint.is_some()));
        let deadline = Some(UNIX_EPOCH + Duration::from_secs(1));
        let tags = task_tags(&many, &job("g/p"), deadline);
        // One place is left for the liveness mark, set after the launch.
        assert_eq!(tags.len(), MAX_TAGS - 1);
        assert_eq!(
            tags.last().unwrap(),
            &(DEADLINE.to_owned(), "1970-01-01T00:00:01Z".to_owned())
        );
    }
}
