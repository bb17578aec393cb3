//! [`ShapePolicy`]: what the administrator lets jobs ask for in their task's shape (size,
//! capacity), and what each project's jobs get (role, network).
//!
//! Deny by default: a job may change a size only up to a configured maximum, pick only a
//! configured capacity profile, and take only a task role its project's rules list.
//! Resolving one job's request against the policy is
//! [`resolve_shape`](crate::driver::resolve_shape).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;
use super::glob::glob_match;
use crate::shape::{CapacityChoice, CapacityProvider, SizeCatalog};

/// What happens when a job asks for more than a maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverMax {
    /// The job gets the maximum, and a warning in its log says so.
    #[default]
    Clamp,
    /// The job fails (a build failure naming the key and the allowed range) before any
    /// task is started.
    Refuse,
}

/// The default and maximum of one size (CPU units, memory MiB or ephemeral storage GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SizeLimit {
    /// What a job that asks for nothing gets; `None`: the task definition's.
    pub default: Option<u32>,
    /// The most a job may ask for; `None`: jobs may not ask at all.
    pub max: Option<u32>,
    /// What happens above `max`.
    pub over_max: OverMax,
}

impl SizeLimit {
    /// A limit with `default`, `max` and `over_max`.
    pub fn new(default: Option<u32>, max: Option<u32>, over_max: OverMax) -> Self {
        SizeLimit {
            default,
            max,
            over_max,
        }
    }
}

/// A named capacity: a capacity provider strategy, and the profile to fall back to when it
/// has no capacity or reclaimed the job's previous task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CapacityProfile {
    /// The name jobs ask for (`spot`).
    pub name: String,
    /// The providers, in order (`FARGATE_SPOT`).
    pub providers: Vec<CapacityProvider>,
    /// The profile to use instead when this one has no capacity (`on-demand`).
    pub fallback: Option<String>,
}

impl CapacityProfile {
    /// Profile `name` on `providers`, without fallback.
    pub fn new(name: impl Into<String>, providers: Vec<CapacityProvider>) -> Self {
        CapacityProfile {
            name: name.into(),
            providers,
            fallback: None,
        }
    }

    /// The same profile falling back to profile `fallback`.
    pub fn with_fallback(mut self, fallback: impl Into<String>) -> Self {
        self.fallback = Some(fallback.into());
        self
    }

    /// The choice this profile stands for.
    pub fn choice(&self) -> CapacityChoice {
        CapacityChoice::new(self.name.clone(), self.providers.clone())
    }
}

/// What the jobs of some projects get: task roles they may pick, subnets and security
/// groups, and whether a failed job's task is kept for debugging. Matched on the project
/// as `JOB_RESPONSE_FILE` names it, never on job variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProjectRule {
    /// The rule's name, for messages (`deploy`).
    pub name: String,
    /// Project paths (`group/project`, `*` wildcard) the rule applies to.
    pub projects: Vec<String>,
    /// Project ids the rule applies to.
    pub project_ids: Vec<u64>,
    /// Task roles (IAM role ARNs) the project's jobs may ask for with `FARGATE_TASK_ROLE`.
    pub task_roles: Vec<String>,
    /// Subnets the project's tasks run in, instead of the runner's.
    pub subnets: Vec<String>,
    /// Security groups added to the project's tasks.
    pub security_groups: Vec<String>,
    /// How long the task of a failed job is kept running after the job, for someone to
    /// enter it and look around (capped at [`ShapePolicy::max_keep_failed_for`]); the
    /// project's tasks are started with shell access for debugging
    /// ([`TaskShape::debug_access`](crate::TaskShape::debug_access)). `None`: stopped at
    /// cleanup, as every task.
    pub keep_failed_for: Option<Duration>,
    /// At most this many jobs of each matching project run at once (counted per project,
    /// across every process and host that shares the metadata store); a job over it waits
    /// for one to end, at most [`ProjectRule::slot_wait`]. `None`: no limit.
    pub max_concurrent_jobs: Option<u32>,
    /// How long a job over [`ProjectRule::max_concurrent_jobs`] waits for a slot before it
    /// fails; `None`: [`DEFAULT_SLOT_WAIT`].
    pub slot_wait: Option<Duration>,
}

/// How long a job over its project's `MaxConcurrentJobs` waits by default: an hour.
pub const DEFAULT_SLOT_WAIT: Duration = Duration::from_secs(3600);

/// The limit of concurrent jobs of a project ([`ShapePolicy::concurrency_limit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyLimit {
    /// How many jobs of the project may run at once.
    pub limit: u32,
    /// How long a job over it waits for a slot.
    pub wait: Duration,
    /// The rule that says so.
    pub rule: String,
}

impl ProjectRule {
    /// An empty rule named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ProjectRule {
            name: name.into(),
            ..ProjectRule::default()
        }
    }

    /// Whether the rule applies to the project with `path` and `id` (both from
    /// `JOB_RESPONSE_FILE`).
    pub fn matches(&self, path: Option<&str>, id: Option<u64>) -> bool {
        path.is_some_and(|p| self.projects.iter().any(|pat| glob_match(pat, p)))
            || id.is_some_and(|id| self.project_ids.contains(&id))
    }
}

/// The administrator's policy for task shapes. The default lets jobs change nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ShapePolicy {
    /// Task CPU in CPU units (`FARGATE_CPU`).
    pub cpu: SizeLimit,
    /// Task memory in MiB (`FARGATE_MEMORY`).
    pub memory: SizeLimit,
    /// Ephemeral storage in GiB (`FARGATE_EPHEMERAL_STORAGE`).
    pub ephemeral_storage: SizeLimit,
    /// Capacity profiles jobs may ask for (`FARGATE_CAPACITY`).
    pub capacity_profiles: Vec<CapacityProfile>,
    /// The profile of jobs that ask for none; `None`: the backend's configured capacity.
    pub default_capacity: Option<String>,
    /// How long the driver remembers that Spot reclaimed a job's task (the job's retry
    /// runs on the fallback meanwhile). Default 6 hours.
    pub interruption_memory: Duration,
    /// Rules per project, all of those matching a job apply.
    pub project_rules: Vec<ProjectRule>,
    /// The longest any project rule keeps a failed job's task
    /// ([`ProjectRule::keep_failed_for`] above it is cut to it). Default 2 hours.
    pub max_keep_failed_for: Duration,
    /// The sizes the backend offers, from its crate (for ECS `fargate_aws::fargate_sizes`):
    /// a job's request is rounded up to the nearest offered size, and the limits above are
    /// checked against it. `None`: sizes are passed on as asked (the backend may refuse
    /// them at launch) and only checked against the limits.
    pub sizes: Option<SizeCatalog>,
    /// CPU architectures jobs may ask for (`FARGATE_CPU_ARCHITECTURE`), in the backend's
    /// words (ECS: `X86_64`, `ARM64`), compared without case. Empty (the default): the
    /// variable is refused and every task runs on its task definition's architecture.
    pub cpu_architectures: Vec<String>,
}

impl Default for ShapePolicy {
    fn default() -> Self {
        ShapePolicy {
            cpu: SizeLimit::default(),
            memory: SizeLimit::default(),
            ephemeral_storage: SizeLimit::default(),
            capacity_profiles: Vec::new(),
            default_capacity: None,
            interruption_memory: Duration::from_secs(6 * 3600),
            project_rules: Vec::new(),
            max_keep_failed_for: Duration::from_secs(2 * 3600),
            sizes: None,
            cpu_architectures: Vec::new(),
        }
    }
}

impl ShapePolicy {
    /// The profile named `name`.
    pub fn profile(&self, name: &str) -> Option<&CapacityProfile> {
        self.capacity_profiles.iter().find(|p| p.name == name)
    }

    /// The names of the profiles, for messages.
    pub fn profile_names(&self) -> Vec<&str> {
        self.capacity_profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }

    /// How long a failed job of the project with `path` and `id` (both from
    /// `JOB_RESPONSE_FILE`) keeps its task: the longest [`ProjectRule::keep_failed_for`] of
    /// the rules that match it, at most [`ShapePolicy::max_keep_failed_for`], with the
    /// name of the rule that says so. `None`: no matching rule keeps tasks.
    pub fn keep_failed_for(&self, path: Option<&str>, id: Option<u64>) -> Option<(Duration, &str)> {
        self.project_rules
            .iter()
            .filter(|r| r.matches(path, id))
            .filter_map(|r| Some((r.keep_failed_for?, r.name.as_str())))
            .filter(|(d, _)| !d.is_zero())
            .max_by_key(|(d, _)| *d)
            .map(|(d, name)| (d.min(self.max_keep_failed_for), name))
    }

    /// The limit of concurrent jobs of the project with `path` and `id` (both from
    /// `JOB_RESPONSE_FILE`): the smallest [`ProjectRule::max_concurrent_jobs`] of the rules
    /// that match it, with its rule's wait. `None`: no matching rule limits it.
    pub fn concurrency_limit(
        &self,
        path: Option<&str>,
        id: Option<u64>,
    ) -> Option<ConcurrencyLimit> {
        self.project_rules
            .iter()
            .filter(|r| r.matches(path, id))
            .filter_map(|r| Some((r.max_concurrent_jobs?, r)))
            .min_by_key(|(n, _)| *n)
            .map(|(limit, r)| ConcurrencyLimit {
                limit,
                wait: r.slot_wait.unwrap_or(DEFAULT_SLOT_WAIT),
                rule: r.name.clone(),
            })
    }

    /// Every problem of the policy; keys are field paths (`shape.cpu.max`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let catalog = self.sizes.as_ref();
        let backend = catalog.map_or("the backend", |c| c.backend.as_str());
        for (key, limit, range) in [
            (
                "shape.cpu",
                &self.cpu,
                catalog.and_then(SizeCatalog::cpu_range),
            ),
            (
                "shape.memory",
                &self.memory,
                catalog.and_then(SizeCatalog::memory_range),
            ),
            (
                "shape.ephemeral_storage",
                &self.ephemeral_storage,
                catalog.and_then(|c| c.storage),
            ),
        ] {
            for (which, value) in [("default", limit.default), ("max", limit.max)] {
                if let (Some(v), Some((low, high))) = (value, range)
                    && !(low..=high).contains(&v)
                {
                    p.push(ConfigProblem::new(
                        format!("{key}.{which}"),
                        format!("= {v} is outside {backend}'s range {low}-{high}"),
                    ));
                }
            }
            if let (Some(d), Some(m)) = (limit.default, limit.max)
                && d > m
            {
                p.push(ConfigProblem::new(
                    format!("{key}.default"),
                    format!("= {d} is above the maximum {m}"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for profile in &self.capacity_profiles {
            let key = format!("shape.capacity_profiles.{}", profile.name);
            if profile.name.trim().is_empty() {
                p.push(ConfigProblem::new(
                    "shape.capacity_profiles",
                    "has a profile without a name",
                ));
            } else if !seen.insert(profile.name.as_str()) {
                p.push(ConfigProblem::new(key.clone(), "is defined twice"));
            }
            if profile.providers.is_empty() || profile.providers.iter().all(|c| c.weight == 0) {
                p.push(
                    ConfigProblem::new(
                        key.clone(),
                        "needs at least one provider with a weight above 0",
                    )
                    .with_hint("e.g. FARGATE_SPOT for Spot, FARGATE for on-demand"),
                );
            }
            for c in &profile.providers {
                if c.name.trim().is_empty() || c.weight > 1000 || c.base > 100_000 {
                    p.push(ConfigProblem::new(
                        key.clone(),
                        format!(
                            "provider {:?}: needs a name, weight 0-1000 and base 0-100000",
                            c.name
                        ),
                    ));
                }
            }
            if let Some(f) = &profile.fallback {
                if self.profile(f).is_none() {
                    p.push(ConfigProblem::new(
                        format!("{key}.fallback"),
                        format!("names {f:?}, which is not a capacity profile"),
                    ));
                } else if self.fallback_chain(&profile.name).len() > self.capacity_profiles.len() {
                    p.push(ConfigProblem::new(
                        format!("{key}.fallback"),
                        "makes a loop of fallbacks",
                    ));
                }
            }
        }
        if self.max_keep_failed_for.is_zero() {
            p.push(ConfigProblem::new(
                "shape.max_keep_failed_for",
                "is 0 (leave KeepFailedFor out of the project rules instead)",
            ));
        }
        if let Some(d) = &self.default_capacity
            && self.profile(d).is_none()
        {
            p.push(ConfigProblem::new(
                "shape.default_capacity",
                format!("names {d:?}, which is not a capacity profile"),
            ));
        }
        for rule in &self.project_rules {
            let key = format!("shape.project_rules.{}", rule.name);
            if rule.projects.is_empty() && rule.project_ids.is_empty() {
                p.push(ConfigProblem::new(
                    key.clone(),
                    "applies to no project (give Projects or ProjectIds)",
                ));
            }
            if rule.task_roles.is_empty()
                && rule.subnets.is_empty()
                && rule.security_groups.is_empty()
                && rule.keep_failed_for.is_none()
                && rule.max_concurrent_jobs.is_none()
            {
                p.push(ConfigProblem::new(
                    key.clone(),
                    "grants nothing (give TaskRoles, Subnets, SecurityGroups, KeepFailedFor or MaxConcurrentJobs)",
                ));
            }
            if rule.max_concurrent_jobs == Some(0) {
                p.push(ConfigProblem::new(
                    format!("{key}.max_concurrent_jobs"),
                    "is 0 (no job of the project could ever run; leave it out for no limit)",
                ));
            }
            if rule.keep_failed_for.is_some_and(|d| d.is_zero()) {
                p.push(ConfigProblem::new(
                    format!("{key}.keep_failed_for"),
                    "is 0 (leave it out to stop failed jobs' tasks at cleanup)",
                ));
            }
            for role in &rule.task_roles {
                if !role.starts_with("arn:") || !role.contains(":role/") {
                    p.push(ConfigProblem::new(
                        format!("{key}.task_roles"),
                        format!(
                            "{role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                        ),
                    ));
                }
            }
        }
        p
    }

    /// `name` followed by its fallbacks, in order; stops after one more entry than there
    /// are profiles (a loop).
    pub(crate) fn fallback_chain(&self, name: &str) -> Vec<&CapacityProfile> {
        let mut chain = Vec::new();
        let mut next = self.profile(name);
        while let Some(profile) = next {
            chain.push(profile);
            if chain.len() > self.capacity_profiles.len() {
                break;
            }
            next = profile.fallback.as_deref().and_then(|f| self.profile(f));
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &ShapePolicy) -> Vec<String> {
        p.problems().into_iter().map(|p| p.key).collect()
    }

    pub(crate) fn spot_policy() -> ShapePolicy {
        ShapePolicy {
            capacity_profiles: vec![
                CapacityProfile::new("spot", vec![CapacityProvider::new("FARGATE_SPOT")])
                    .with_fallback("on-demand"),
                CapacityProfile::new("on-demand", vec![CapacityProvider::new("FARGATE")]),
            ],
            ..ShapePolicy::default()
        }
    }

    #[test]
    fn the_default_policy_is_valid_and_grants_nothing() {
        let p = ShapePolicy::default();
        assert!(p.problems().is_empty());
        assert_eq!(p.cpu.max, None);
        assert!(p.capacity_profiles.is_empty() && p.project_rules.is_empty());
    }

    #[test]
    fn sizes_must_be_within_the_backends_and_defaults_within_maxima() {
        let mut p = ShapePolicy {
            cpu: SizeLimit::new(Some(4096), Some(2048), OverMax::Clamp),
            sizes: Some(
                SizeCatalog::new("Fargate", [(256, vec![512]), (16384, vec![122_880])])
                    .with_storage(21, 200, 20),
            ),
            ..ShapePolicy::default()
        };
        p.memory.max = Some(200_000);
        p.ephemeral_storage.default = Some(20);
        assert_eq!(
            keys(&p),
            [
                "shape.cpu.default",
                "shape.memory.max",
                "shape.ephemeral_storage.default"
            ]
        );
        let msgs: Vec<String> = p.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs[0],
            "shape.cpu.default = 4096 is above the maximum 2048"
        );
        assert_eq!(
            msgs[2],
            "shape.ephemeral_storage.default = 20 is outside Fargate's range 21-200"
        );
        // Without the backend's catalog, only the limits among themselves are checked.
        p.sizes = None;
        assert_eq!(keys(&p), ["shape.cpu.default"]);
    }

    #[test]
    fn profiles_need_providers_and_known_fallbacks_without_loops() {
        let ok = spot_policy();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        assert_eq!(
            ok.fallback_chain("spot")
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["spot", "on-demand"]
        );
        let mut p = ok.clone();
        p.capacity_profiles[1].fallback = Some("spot".into());
        assert_eq!(
            keys(&p),
            [
                "shape.capacity_profiles.spot.fallback",
                "shape.capacity_profiles.on-demand.fallback"
            ]
        );
        let mut p = ok.clone();
        p.capacity_profiles[0].fallback = Some("nope".into());
        p.capacity_profiles[1].providers.clear();
        p.default_capacity = Some("cheap".into());
        p.capacity_profiles.push(CapacityProfile::new(
            "spot",
            vec![CapacityProvider::new("X").with_weight(2000, 0)],
        ));
        assert_eq!(
            keys(&p),
            [
                "shape.capacity_profiles.spot.fallback",
                "shape.capacity_profiles.on-demand",
                "shape.capacity_profiles.spot",
                "shape.capacity_profiles.spot",
                "shape.default_capacity"
            ]
        );
    }

    #[test]
    fn project_rules_match_trusted_paths_and_ids_and_must_grant_something() {
        let mut rule = ProjectRule::new("deploy");
        rule.projects = vec!["infra/*".into()];
        rule.project_ids = vec![17];
        rule.task_roles = vec!["arn:aws:iam::123456789012:role/deploy".into()];
        assert!(rule.matches(Some("infra/site"), None));
        assert!(rule.matches(None, Some(17)));
        assert!(!rule.matches(Some("app/site"), Some(18)));
        assert!(!rule.matches(None, None));
        let p = ShapePolicy {
            project_rules: vec![rule.clone(), ProjectRule::new("empty")],
            ..ShapePolicy::default()
        };
        assert_eq!(
            keys(&p),
            ["shape.project_rules.empty", "shape.project_rules.empty"]
        );
        rule.task_roles = vec!["deploy".into()];
        let p = ShapePolicy {
            project_rules: vec![rule],
            ..ShapePolicy::default()
        };
        assert_eq!(keys(&p), ["shape.project_rules.deploy.task_roles"]);
    }

    #[test]
    fn the_longest_keep_of_the_matching_rules_applies_up_to_the_maximum() {
        let rule = |name: &str, projects: &[&str], keep: Option<u64>| {
            let mut r = ProjectRule::new(name);
            r.projects = projects.iter().map(|p| (*p).to_owned()).collect();
            r.keep_failed_for = keep.map(Duration::from_secs);
            r
        };
        let mut p = ShapePolicy {
            project_rules: vec![
                rule("short", &["app/*"], Some(600)),
                rule("long", &["app/site"], Some(1800)),
                rule("network", &["app/*"], None),
            ],
            ..ShapePolicy::default()
        };
        p.project_rules[2].subnets = vec!["s".into()];
        assert!(p.problems().is_empty(), "{:?}", p.problems());
        assert_eq!(
            p.keep_failed_for(Some("app/site"), None),
            Some((Duration::from_secs(1800), "long"))
        );
        assert_eq!(
            p.keep_failed_for(Some("app/other"), Some(3)),
            Some((Duration::from_secs(600), "short"))
        );
        assert_eq!(p.keep_failed_for(Some("infra/x"), None), None);
        assert_eq!(
            p.keep_failed_for(None, None),
            None,
            "no trusted project: no keep"
        );
        p.max_keep_failed_for = Duration::from_secs(900);
        assert_eq!(
            p.keep_failed_for(Some("app/site"), None),
            Some((Duration::from_secs(900), "long"))
        );
        // A rule that only keeps grants something; a zero keep or maximum is a mistake.
        p.project_rules[0].keep_failed_for = Some(Duration::ZERO);
        p.max_keep_failed_for = Duration::ZERO;
        assert_eq!(
            keys(&p),
            [
                "shape.max_keep_failed_for",
                "shape.project_rules.short.keep_failed_for"
            ]
        );
    }
}
