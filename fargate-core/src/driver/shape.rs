//! The job's task shape: its requests (job variables) resolved against the
//! administrator's [`ShapePolicy`], before any backend call.
//!
//! [`resolve_shape`] is a pure function: the requests, the policy, the project as
//! `JOB_RESPONSE_FILE` names it, and whether Spot reclaimed the job's previous attempt, in;
//! the shape, its capacity fallbacks and the job-log notes (or a refusal) out.

use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;

use super::Driver;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobContext, JobIdentity};
use crate::launcher::{Launched, StopDetails, TaskSpec};
use crate::metadata::{InterruptionNote, JobRecord, interruption_key};
use crate::options::{OverMax, ShapePolicy, SizeLimit};
use crate::setting::Setting;
use crate::shape::{CapacityChoice, TaskShape};

/// Job variable asking for task CPU: CPU units (`1024`) or vCPUs (`2 vCPU`, `0.5vcpu`).
pub const CPU_VARIABLE: &str = "FARGATE_CPU";
/// Job variable asking for task memory: MiB (`4096`) or with a unit (`4 GB`, `4Gi`,
/// `512Mi`).
pub const MEMORY_VARIABLE: &str = "FARGATE_MEMORY";
/// Job variable asking for ephemeral storage: GiB (`100`, `100Gi`, `100 GB`).
pub const EPHEMERAL_STORAGE_VARIABLE: &str = "FARGATE_EPHEMERAL_STORAGE";
/// Job variable asking for a capacity profile by name (`spot`).
pub const CAPACITY_VARIABLE: &str = "FARGATE_CAPACITY";
/// Job variable asking for a task role: an ARN or a role name its project may use.
pub const TASK_ROLE_VARIABLE: &str = "FARGATE_TASK_ROLE";
/// Job variable asking for a CPU architecture the administrator allows (`ARM64`).
pub const CPU_ARCHITECTURE_VARIABLE: &str = "FARGATE_CPU_ARCHITECTURE";

/// What a job asks for, as its variables say (untrusted: requests only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShapeRequest {
    /// `FARGATE_CPU`.
    pub cpu: Option<String>,
    /// `FARGATE_MEMORY`.
    pub memory: Option<String>,
    /// `FARGATE_EPHEMERAL_STORAGE`.
    pub ephemeral_storage: Option<String>,
    /// `FARGATE_CAPACITY`.
    pub capacity: Option<String>,
    /// `FARGATE_TASK_ROLE`.
    pub task_role: Option<String>,
    /// `FARGATE_CPU_ARCHITECTURE`.
    pub cpu_architecture: Option<String>,
}

impl ShapeRequest {
    /// The requests of `job`'s variables.
    pub fn from_job(job: &JobContext) -> Self {
        let var = |name| job.variable(name).map(|v| v.trim().to_owned());
        ShapeRequest {
            cpu: var(CPU_VARIABLE),
            memory: var(MEMORY_VARIABLE),
            ephemeral_storage: var(EPHEMERAL_STORAGE_VARIABLE),
            capacity: var(CAPACITY_VARIABLE),
            task_role: var(TASK_ROLE_VARIABLE),
            cpu_architecture: var(CPU_ARCHITECTURE_VARIABLE).filter(|v| !v.is_empty()),
        }
    }
}

/// The project a job belongs to, as GitLab names it in `JOB_RESPONSE_FILE` (never from job
/// variables): what project rules match on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedProject {
    /// `group/project`, from `git_info.repo_url`.
    pub path: Option<String>,
    /// `job_info.project_id`.
    pub id: Option<u64>,
}

impl TrustedProject {
    /// The project of `identity` (empty for an identity from job variables).
    pub fn of(identity: &JobIdentity) -> Self {
        TrustedProject {
            path: identity.project_path.clone(),
            id: identity.project_id,
        }
    }

    fn describe(&self) -> String {
        match (&self.path, self.id) {
            (Some(p), Some(id)) => format!("{p} (id {id})"),
            (Some(p), None) => p.clone(),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => "unknown (no JOB_RESPONSE_FILE)".to_owned(),
        }
    }
}

/// What a job gets: the shape to launch, the capacities to fall back to (in order) when its
/// capacity has none, and why it differs from what the job asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShapeDecision {
    /// The shape of the first launch.
    pub shape: TaskShape,
    /// Capacities to try, in order, when the shape's has no capacity.
    pub fallbacks: Vec<CapacityChoice>,
    /// One line each: a clamp, a rounding to a size the backend offers, a fallback, a project
    /// rule.
    pub notes: Vec<String>,
}

/// Resolves `request` against `policy` for a job of `project`. `reclaimed` is the reason
/// Spot reclaimed the previous attempt of this job, when the driver remembers one: the job
/// then starts on its capacity's fallback.
///
/// Every refusal is an [`ErrorKind::NotAllowed`] error (a build failure: the job asked for
/// it) naming the variable, the value and what is allowed.
pub fn resolve_shape(
    policy: &ShapePolicy,
    request: &ShapeRequest,
    project: &TrustedProject,
    reclaimed: Option<&str>,
) -> Result<ShapeDecision> {
    let mut notes = Vec::new();
    let keys: [SizeKey<'_>; 3] = [
        (
            CPU_VARIABLE,
            "CPU units",
            Setting::MaxCpu,
            &policy.cpu,
            &request.cpu,
            parse_cpu,
        ),
        (
            MEMORY_VARIABLE,
            "MiB",
            Setting::MaxMemory,
            &policy.memory,
            &request.memory,
            parse_memory,
        ),
        (
            EPHEMERAL_STORAGE_VARIABLE,
            "GiB",
            Setting::MaxEphemeralStorage,
            &policy.ephemeral_storage,
            &request.ephemeral_storage,
            parse_storage,
        ),
    ];
    let [cpu, memory, storage] = keys.map(|key| size(key, &mut notes));
    let (cpu, memory) = (cpu?, memory?);
    let mut shape = TaskShape::default();
    if policy.sizes.is_none() {
        // No catalog: each size as asked (within the maxima); the backend judges them.
        shape.cpu = cpu;
        shape.memory = memory;
    } else if let Some((c, m)) = fit(policy, cpu, memory)? {
        if cpu.is_some_and(|x| x != c) || memory.is_some_and(|x| x != m) {
            notes.push(format!(
                "{} has no task size of {} and {}: the task gets the nearest larger one, {c} CPU units and {m} MiB",
                backend(policy),
                cpu.map_or("any CPU".to_owned(), |c| format!("{c} CPU units")),
                memory.map_or("any memory".to_owned(), |m| format!("{m} MiB")),
            ));
        }
        shape.cpu = Some(c);
        shape.memory = Some(m);
    }
    let catalog = policy.sizes.as_ref();
    shape.ephemeral_storage = storage?.and_then(|g| match catalog.and_then(|c| c.storage) {
        Some((min, _)) if g < min => {
            notes.push(format!(
                "{g} GiB of ephemeral storage is within {}'s default{}: the task keeps the default",
                backend(policy),
                catalog
                    .and_then(|c| c.default_storage)
                    .map_or(String::new(), |d| format!(" of {d} GiB")),
            ));
            None
        }
        _ => Some(g),
    });

    let mut fallbacks = Vec::new();
    let profile = match request.capacity.as_deref() {
        Some(asked) => match policy.profile(asked) {
            Some(p) => Some(p.name.as_str()),
            None => {
                return Err(refusal(
                    format!(
                        "the job asks for capacity {asked:?} ({CAPACITY_VARIABLE}), which this runner does not offer"
                    ),
                    if policy.capacity_profiles.is_empty() {
                        "remove the variable, or ask the runner's administrator to define capacity profiles".to_owned()
                    } else {
                        format!("allowed: {}", policy.profile_names().join(", "))
                    },
                )
                .with_setting(Setting::CapacityProfiles));
            }
        },
        None => policy.default_capacity.as_deref(),
    };
    if let Some(name) = profile {
        let mut chain: Vec<CapacityChoice> = policy
            .fallback_chain(name)
            .into_iter()
            .map(|p| p.choice())
            .collect();
        if let Some(reason) = reclaimed
            && chain.len() > 1
        {
            let skipped = chain.remove(0);
            notes.push(format!(
                "the previous attempt of this job lost its task on {skipped} ({reason}): this attempt runs on {}",
                chain[0]
            ));
        }
        let mut chain = chain.into_iter();
        shape.capacity = chain.next();
        fallbacks = chain.collect();
    }

    if let Some(asked) = request.cpu_architecture.as_deref() {
        match policy
            .cpu_architectures
            .iter()
            .find(|a| a.eq_ignore_ascii_case(asked))
        {
            Some(arch) => shape.cpu_architecture = Some(arch.to_ascii_uppercase()),
            None => {
                return Err(refusal(
                    format!(
                        "the job asks for CPU architecture {asked:?} ({CPU_ARCHITECTURE_VARIABLE}), which this runner does not allow"
                    ),
                    if policy.cpu_architectures.is_empty() {
                        "remove the variable, or ask the runner's administrator to allow the architecture".to_owned()
                    } else {
                        format!("allowed: {}", policy.cpu_architectures.join(", "))
                    },
                )
                .with_setting(Setting::CpuArchitectures));
            }
        }
    }

    let rules: Vec<_> = policy
        .project_rules
        .iter()
        .filter(|r| r.matches(project.path.as_deref(), project.id))
        .collect();
    if let Some(asked) = request.task_role.as_deref() {
        let allowed: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.task_roles.iter().map(String::as_str))
            .collect();
        match allowed
            .iter()
            .find(|r| **r == asked || role_name(r) == Some(asked))
        {
            Some(role) => shape.task_role = Some((*role).to_owned()),
            None => {
                return Err(refusal(
                    format!(
                        "the job asks for task role {asked:?} ({TASK_ROLE_VARIABLE}), which no project rule of this runner grants to project {}",
                        project.describe()
                    ),
                    if allowed.is_empty() {
                        "remove the variable, or ask the runner's administrator for a project rule with task roles for this project".to_owned()
                    } else {
                        format!("this project may use: {}", allowed.join(", "))
                    },
                )
                .with_setting(Setting::ProjectTaskRoles));
            }
        }
    }
    for rule in &rules {
        for s in &rule.subnets {
            if !shape.subnets.contains(s) {
                shape.subnets.push(s.clone());
            }
        }
        for g in &rule.security_groups {
            if !shape.security_groups.contains(g) {
                shape.security_groups.push(g.clone());
            }
        }
        if !rule.subnets.is_empty() || !rule.security_groups.is_empty() {
            notes.push(format!(
                "project rule {:?} applies to project {}: its subnets and security groups",
                rule.name,
                project.describe()
            ));
        }
    }
    if let Some((keep, rule)) = policy.keep_failed_for(project.path.as_deref(), project.id) {
        shape.debug_access = true;
        notes.push(format!(
            "project rule {rule:?} applies to project {}: if the job fails, its task is kept for {} to debug it, with shell access",
            project.describe(),
            crate::world::human_duration(keep)
        ));
    }
    Ok(ShapeDecision {
        shape,
        fallbacks,
        notes,
    })
}

impl Driver {
    /// The shape of `job`'s task: its requests under the policy, starting on the fallback
    /// capacity when a reclaim of its previous attempt is remembered. Refusals are
    /// [`ErrorKind::NotAllowed`], before any backend call.
    pub(super) async fn decide_shape(
        &self,
        job: &JobContext,
        identity: &JobIdentity,
    ) -> Result<ShapeDecision> {
        let mut reclaimed = None;
        if let (Some(memory), Some(key)) = (
            &self.interruptions,
            interruption_key(identity, job.response.as_ref()),
        ) {
            match memory.recall(&key).await {
                Ok(note) => reclaimed = note.map(|n| n.reason),
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the job's interruption note; starting on its usual capacity")
                }
            }
        }
        resolve_shape(
            &self.options.shape,
            &ShapeRequest::from_job(job),
            &TrustedProject::of(identity),
            reclaimed.as_deref(),
        )
    }

    /// Launches `spec`, moving to the next of `fallbacks` (updating `spec` and the record)
    /// each time its capacity has none. With a fallback left, a capacity error is not
    /// retried on the same capacity.
    pub(super) async fn launch_with_fallback(
        &self,
        lock: &crate::metadata::JobLock,
        record: &mut JobRecord,
        spec: &mut TaskSpec,
        fallbacks: &[CapacityChoice],
        notes: &mut Vec<String>,
        cancel: &CancellationToken,
    ) -> Result<Launched> {
        let mut rest = fallbacks.iter();
        loop {
            let can_fall_back = rest.len() > 0;
            match self.launch(lock, record, spec, can_fall_back, cancel).await {
                Err(err) if err.kind() == ErrorKind::CapacityUnavailable && can_fall_back => {
                    let Some(next) = rest.next() else {
                        return Err(err);
                    };
                    let from = spec
                        .shape
                        .capacity
                        .as_ref()
                        .map_or("the configured capacity".to_owned(), ToString::to_string);
                    let note = format!(
                        "{from} has no capacity ({}): the task runs on {next}",
                        err.message()
                    );
                    // Said once, with the other notes, at the end of prepare.
                    tracing::debug!("{note}");
                    notes.push(note);
                    spec.shape.capacity = Some(next.clone());
                    record.spec = Some(spec.clone());
                }
                result => return result,
            }
        }
    }

    /// Remembers that the job's task was reclaimed (`details`), so that its retry starts on
    /// its capacity's fallback; says so in the job log.
    pub(super) async fn note_reclaim(
        &self,
        job: &JobContext,
        identity: &JobIdentity,
        details: &StopDetails,
    ) {
        if !details.reclaimed {
            return;
        }
        let ttl = self.options.shape.interruption_memory;
        let (Some(memory), Some(key)) = (
            &self.interruptions,
            interruption_key(identity, job.response.as_ref()),
        ) else {
            return;
        };
        let note = InterruptionNote::new(details.to_string(), ttl);
        match memory.remember(&key, &note).await {
            Ok(()) => tracing::warn!(
                "the task's capacity was reclaimed ({details}); a retry of this job within {} min runs on its capacity's fallback",
                ttl.as_secs() / 60
            ),
            Err(err) => {
                tracing::warn!(error = %err, "could not remember that the task was reclaimed")
            }
        }
    }
}

/// The name of role ARN `arn` (`arn:aws:iam::1:role/path/name` -> `name`).
fn role_name(arn: &str) -> Option<&str> {
    arn.split_once(":role/")
        .map(|(_, path)| path.rsplit('/').next().unwrap_or(path))
}

fn refusal(message: String, hint: String) -> Error {
    Error::new(ErrorKind::NotAllowed, message).with_hint(hint)
}

/// One size key: its variable, unit, maximum's setting, limit, the job's request and
/// the request's parser.
type SizeKey<'a> = (
    &'static str,
    &'static str,
    Setting,
    &'a SizeLimit,
    &'a Option<String>,
    fn(&str) -> Option<u32>,
);

/// One size: the job's request checked against `limit`, or the default.
fn size(
    (variable, unit, max_setting, limit, asked, parse): SizeKey<'_>,
    notes: &mut Vec<String>,
) -> Result<Option<u32>> {
    let Some(text) = asked.as_deref() else {
        return Ok(limit.default);
    };
    let Some(value) = parse(text) else {
        return Err(refusal(
            format!("{variable}={text:?} is not a size"),
            format!("give {unit}, e.g. {}", example(variable)),
        ));
    };
    let Some(max) = limit.max else {
        return Err(refusal(
            format!(
                "the job asks for {variable}={text:?}, but this runner does not let jobs choose it"
            ),
            format!("remove the variable, or ask the runner's administrator to set {max_setting}"),
        )
        .with_setting(max_setting));
    };
    if value <= max {
        return Ok(Some(value));
    }
    match limit.over_max {
        OverMax::Clamp => {
            notes.push(format!(
                "{variable}={text} is above this runner's maximum of {max} {unit}: the task gets {max} {unit}"
            ));
            Ok(Some(max))
        }
        _ => Err(refusal(
            format!("{variable}={text} is above this runner's maximum of {max} {unit}"),
            format!("ask for at most {max} {unit} ({max_setting})"),
        )
        .with_setting(max_setting)),
    }
}

fn example(variable: &str) -> &'static str {
    match variable {
        CPU_VARIABLE => "1024 or \"1 vCPU\"",
        MEMORY_VARIABLE => "2048 or \"2 GB\"",
        _ => "50 or \"50 GB\"",
    }
}

/// The backend's name for messages: its catalog's, or "the backend".
fn backend(policy: &ShapePolicy) -> &str {
    policy
        .sizes
        .as_ref()
        .map_or("the backend", |c| c.backend.as_str())
}

/// The smallest size the backend offers ([`ShapePolicy::sizes`]) with at least `cpu` and
/// `memory` (each when given) within the policy's maxima (a maximum of one that the job
/// did not ask for is the other's limit: a job asking for 8 GB may get the CPU that size
/// needs, up to `MaxCPU`). `None` when both are unset, or without a catalog.
fn fit(policy: &ShapePolicy, cpu: Option<u32>, memory: Option<u32>) -> Result<Option<(u32, u32)>> {
    let Some(catalog) = policy.sizes.as_ref() else {
        return Ok(None);
    };
    if cpu.is_none() && memory.is_none() {
        return Ok(None);
    }
    let cap = |l: &SizeLimit| l.max.max(l.default).unwrap_or(u32::MAX);
    let (cpu_cap, memory_cap) = (
        cap(&policy.cpu).max(cpu.unwrap_or(0)),
        cap(&policy.memory).max(memory.unwrap_or(0)),
    );
    let found = catalog.sizes().find(|&(c, m)| {
        c >= cpu.unwrap_or(0) && m >= memory.unwrap_or(0) && c <= cpu_cap && m <= memory_cap
    });
    if let Some(found) = found {
        return Ok(Some(found));
    }
    let mut valid = String::new();
    for c in catalog.cpus().filter(|c| *c <= cpu_cap) {
        let ms: Vec<u32> = catalog
            .memory_sizes(c)
            .iter()
            .copied()
            .filter(|m| *m <= memory_cap)
            .collect();
        if let (Some(lo), Some(hi)) = (ms.first(), ms.last()) {
            let _ = write!(
                valid,
                "{}{c} CPU units: {lo}-{hi} MiB",
                if valid.is_empty() { "" } else { "; " }
            );
        }
    }
    Err(refusal(
        format!(
            "{} has no task size with {} and {} within this runner's maxima",
            catalog.backend,
            cpu.map_or("any CPU".to_owned(), |c| format!("{c} CPU units")),
            memory.map_or("any memory".to_owned(), |m| format!("{m} MiB")),
        ),
        format!("sizes this runner allows: {valid}"),
    ))
}

/// `1024` (units), `2 vCPU`, `0.5vcpu`.
fn parse_cpu(text: &str) -> Option<u32> {
    let t = text.trim().to_ascii_lowercase();
    match t.strip_suffix("vcpu") {
        Some(v) => scaled(v, 1024.0),
        None => whole(&t),
    }
}

/// A positive whole number.
fn whole(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|n| *n > 0)
}

/// `4096` (MiB), `4 GB`, `4GiB`, `4Gi`, `512Mi`, `512 MiB`.
fn parse_memory(text: &str) -> Option<u32> {
    let t = text.trim().to_ascii_lowercase();
    for (suffix, factor) in [
        ("gib", 1024.0),
        ("gb", 1024.0),
        ("gi", 1024.0),
        ("g", 1024.0),
        ("mib", 1.0),
        ("mb", 1.0),
        ("mi", 1.0),
        ("m", 1.0),
    ] {
        if let Some(v) = t.strip_suffix(suffix) {
            return scaled(v, factor);
        }
    }
    whole(&t)
}

/// `100` (GiB), `100 GB`, `100GiB`, `100Gi`.
fn parse_storage(text: &str) -> Option<u32> {
    let t = text.trim().to_ascii_lowercase();
    for suffix in ["gib", "gb", "gi", "g"] {
        if let Some(v) = t.strip_suffix(suffix) {
            return scaled(v, 1.0);
        }
    }
    whole(&t)
}

fn scaled(number: &str, factor: f64) -> Option<u32> {
    let n: f64 = number.trim().parse().ok()?;
    let v = (n * factor).round();
    (n.is_finite() && n > 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}

#[cfg(test)]
mod tests;
