//! Derived task definitions: a job's own image and services ([`fargate_core::images`]) as
//! a task definition derived from the base, registered once per content and reused.
//!
//! For a [`TaskSpec`] with [`images`](TaskSpec::images), the launcher
//!
//! 1. describes the base definition (`DescribeTaskDefinition`), whose exact revision
//!    (ARN) and the plan make the content hash ([`TaskPlan::content_hash`]);
//! 2. describes the family [`derived_family`]`(base family, hash)` with its tags: its
//!    latest active revision, tagged [`DERIVED_HASH`] = the hash and **not** marked by gc
//!    ([`GC_MARK`], see [`crate::derived_gc`]), is reused (its [`LAST_USED`] tag is
//!    refreshed at most every [`TOUCH_INTERVAL`], and the base's tags are copied onto it
//!    when they changed since, in the same `TagResource`);
//! 3. otherwise registers it (`RegisterTaskDefinition`): the base's task-level settings
//!    (roles, network mode, CPU, memory, storage, runtime platform, volumes) and
//!    containers, the helper with the builds volume mounted, plus the plan's containers,
//!    tagged as [`derived_tags`] says (the base's tags, so that `propagateTags =
//!    TASK_DEFINITION` gives image jobs the base's cost tags, and the driver's markers).
//!    A marked revision is never reused: a new revision of the family is registered
//!    instead. Two prepares registering the same new content at once both succeed: ECS
//!    refuses concurrent revisions of one family ("Too many concurrent attempts..."), and
//!    the loser describes again and reuses the winner's, or registers once more after a
//!    short pause.
//!
//! A launch sends its `RunTask` within [`RECHECK_AFTER`] of the check of step 2 (it checks
//! again before a later subnet attempt), plus one call's
//! [`SdkTransport::operation_timeout`](crate::SdkTransport::operation_timeout): far less
//! than gc's [`DEREGISTER_GRACE`](crate::derived_gc::DEREGISTER_GRACE), which is what
//! makes gc safe (see [`crate::derived_gc`]).
//!
//! # Tags of a derived definition
//!
//! The base definition's tags (read with `DescribeTaskDefinition` include `TAGS`) but
//! those with the reserved `aws:` prefix (ECS sets them, e.g. CloudFormation's) and the
//! driver's marker keys ([`MARKER_TAGS`]); then the administrator's tags
//! ([`EcsConfig::tags`](crate::EcsConfig::tags)) the base does not have; then the
//! markers [`DERIVED_HASH`], [`DERIVED_FROM`] and [`LAST_USED`]. ECS allows
//! [`MAX_TAGS`](crate::tags::MAX_TAGS) per resource and gc may add [`GC_MARK`], so the
//! base may carry at most [`MAX_BASE_TAGS`] tags: a base with more is refused with a
//! configuration error (its cost tags would otherwise be lost silently); the
//! administrator's tags are dropped first when there is no room (tasks get them from
//! `RunTask` anyway). A tag removed from the base stays on derived definitions registered
//! before; a changed or added one is copied at the next reuse.
//!
//! The plan holds no secret; the plain variables of the image and services go in
//! `RunTask`'s container overrides, within ECS's 8192 characters, and secret ones never
//! go there (see [`crate::job_secrets`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, CpuArchitecture, KeyValuePair,
    MountPoint, OsFamily, PortMapping, RepositoryCredentials, RuntimePlatform, Tag, TaskDefinition,
    TaskDefinitionField, TaskDefinitionStatus, TransportProtocol, Volume,
};
use fargate_core::images::{Condition, ContainerPlan, ImageRequest, TaskPlan};
use fargate_core::{Error, ErrorKind, Result, TaskSpec};
use tracing::{debug, info, warn};

use crate::errors;
use crate::launcher::EcsLauncher;

/// Tag of a derived definition: its content hash (64 hex digits).
pub const DERIVED_HASH: &str = "fargate:derived-hash";
/// Tag of a derived definition: the ARN of the base revision it was derived from.
pub const DERIVED_FROM: &str = "fargate:derived-from";
/// Tag of a derived definition: when a launch last used it (Unix seconds); `gc` removes
/// definitions unused for longer than `[Fargate.Images] UnusedAfter`.
pub const LAST_USED: &str = "fargate:last-used";
/// Tag of a derived revision that gc chose to remove: when (Unix seconds). A launch never
/// reuses a marked revision; gc deregisters it once the mark is
/// [`DEREGISTER_GRACE`](crate::derived_gc::DEREGISTER_GRACE) old.
pub const GC_MARK: &str = "fargate:gc-marked";
/// The driver's own tags on a derived definition.
pub const MARKER_TAGS: [&str; 4] = [DERIVED_HASH, DERIVED_FROM, LAST_USED, GC_MARK];
/// Most tags of the base a derived definition can carry: ECS's
/// [`MAX_TAGS`](crate::tags::MAX_TAGS) less the driver's [`MARKER_TAGS`].
pub const MAX_BASE_TAGS: usize = crate::tags::MAX_TAGS - MARKER_TAGS.len();
/// How often a reused definition's [`LAST_USED`] tag is refreshed at most.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(3600);
/// How old a launch's check that its derived definition is usable (active, not marked by
/// gc) may be when it sends a `RunTask`; older, it checks again first.
pub const RECHECK_AFTER: Duration = Duration::from_secs(5 * 60);
/// Most containers ECS accepts in one task definition.
pub const MAX_CONTAINERS: usize = 10;
/// Longest task-definition family ECS accepts.
pub const MAX_FAMILY_LEN: usize = 255;
/// Hex digits of the content hash in a derived family's name.
pub const FAMILY_HASH_LEN: usize = 16;

/// The family of a derived definition: `<base family>-<first 16 hex digits of hash>`,
/// the base family cut so that the whole fits ECS's 255 characters.
pub fn derived_family(base_family: &str, hash: &str) -> String {
    let prefix = &hash[..hash.len().min(FAMILY_HASH_LEN)];
    let keep = MAX_FAMILY_LEN - 1 - prefix.len();
    let base: String = base_family.chars().take(keep).collect();
    format!("{base}-{prefix}")
}

/// How often a registration that lost a race for a family is tried again.
const REGISTER_ATTEMPTS: u32 = 5;

impl EcsLauncher {
    /// The task definition `spec` runs from: its own, or the derived one of its images
    /// (registered now, or reused).
    pub(crate) async fn task_definition_for(&self, spec: &TaskSpec) -> Result<String> {
        let Some(request) = spec.images.as_deref() else {
            return Ok(spec.task_definition.clone());
        };
        let (base, base_tags) = self
            .describe_definition(&spec.task_definition)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "the base task definition {:?} does not exist",
                        spec.task_definition
                    ),
                )
                .with_backend("ecs")
            })?;
        let base_arn = base.task_definition_arn.clone().unwrap_or_default();
        // The job's architecture replaces the base's, and is part of the content.
        let (base, hash) = match spec.shape.cpu_architecture.as_deref() {
            Some(arch) => (
                with_architecture(base, arch),
                request
                    .plan
                    .content_hash(&format!("{base_arn}\ncpu-architecture={arch}")),
            ),
            None => (base, request.plan.content_hash(&base_arn)),
        };
        let family = derived_family(base.family.as_deref().unwrap_or_default(), &hash);
        // Refused before any registration: a base with too many tags.
        let tags = derived_tags(
            &base_tags,
            &self.config().tags,
            &hash,
            &base_arn,
            unix_now(),
        )?;
        for attempt in 1..=REGISTER_ATTEMPTS {
            if let Some(arn) = self.reusable(&family, &hash, &tags).await? {
                debug!(task_definition = %arn, "reusing the derived task definition");
                return Ok(arn);
            }
            match self.register(&family, &base, request, &tags).await {
                Ok(arn) => {
                    info!(task_definition = %arn, "registered a derived task definition for the job's image");
                    return Ok(arn);
                }
                Err(err) if is_concurrent_revision(&err) && attempt < REGISTER_ATTEMPTS => {
                    debug!(%family, attempt, "another prepare registers this family; describing again");
                    tokio::time::sleep(Duration::from_millis(150 * u64::from(attempt))).await;
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::new(
            ErrorKind::Throttled,
            format!("could not register the derived task definition {family}"),
        )
        .with_backend("ecs")
        .set_temporary(true))
    }

    /// `DescribeTaskDefinition` with tags; `None` when ECS knows no (active) such
    /// definition.
    pub(crate) async fn describe_definition(
        &self,
        name: &str,
    ) -> Result<Option<(TaskDefinition, Vec<Tag>)>> {
        match self
            .ecs_client()
            .describe_task_definition()
            .task_definition(name)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .task_definition
                .map(|td| (td, out.tags.unwrap_or_default()))),
            Err(e) => {
                let err = errors::sdk(e, "DescribeTaskDefinition").error;
                if err
                    .message()
                    .to_ascii_lowercase()
                    .contains("unable to describe task definition")
                {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The ARN of `family`'s latest active revision when it carries `hash` and no gc mark;
    /// refreshes its [`LAST_USED`] tag when it is older than [`TOUCH_INTERVAL`] and copies
    /// the `wanted` tags it lacks (the base's, changed since), in one `TagResource`.
    async fn reusable(
        &self,
        family: &str,
        hash: &str,
        wanted: &[(String, String)],
    ) -> Result<Option<String>> {
        let Some((td, tags)) = self.describe_definition(family).await? else {
            return Ok(None);
        };
        if td.status != Some(TaskDefinitionStatus::Active) || tag(&tags, DERIVED_HASH) != Some(hash)
        {
            return Ok(None);
        }
        let Some(arn) = td.task_definition_arn else {
            return Ok(None);
        };
        if tag(&tags, GC_MARK).is_some() {
            debug!(task_definition = %arn, "gc marked the derived task definition for removal; registering a new revision");
            return Ok(None);
        }
        let now = unix_now();
        let last = tag(&tags, LAST_USED)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut update: Vec<Tag> = wanted
            .iter()
            .filter(|(k, v)| !MARKER_TAGS.contains(&k.as_str()) && tag(&tags, k) != Some(v))
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        if now.saturating_sub(last) >= TOUCH_INTERVAL.as_secs() {
            update.push(Tag::builder().key(LAST_USED).value(now.to_string()).build());
        }
        if !update.is_empty()
            && let Err(e) = self
                .ecs_client()
                .tag_resource()
                .resource_arn(&arn)
                .set_tags(Some(update))
                .send()
                .await
        {
            warn!(task_definition = %arn, error = %errors::sdk(e, "TagResource").error, "could not update the derived task definition's tags (last use, the base's tags)");
        }
        Ok(Some(arn))
    }

    async fn register(
        &self,
        family: &str,
        base: &TaskDefinition,
        request: &ImageRequest,
        tags: &[(String, String)],
    ) -> Result<String> {
        let (containers, volumes) = derived_containers(base, &request.plan)?;
        self.register_like(family, base, containers, volumes, tags)
            .await
    }

    /// Registers a revision of `family` with `containers` and `volumes`, and the task-level
    /// settings of `settings` (roles, network mode, compatibilities, size, runtime
    /// platform, storage, PID mode, proxy), tagged `tags`; its ARN.
    pub(crate) async fn register_like(
        &self,
        family: &str,
        settings: &TaskDefinition,
        containers: Vec<ContainerDefinition>,
        volumes: Vec<Volume>,
        tags: &[(String, String)],
    ) -> Result<String> {
        let base = settings;
        let out = self
            .ecs_client()
            .register_task_definition()
            .family(family)
            .set_container_definitions(Some(containers))
            .set_volumes(Some(volumes))
            .set_task_role_arn(base.task_role_arn.clone())
            .set_execution_role_arn(base.execution_role_arn.clone())
            .set_network_mode(base.network_mode.clone())
            .set_requires_compatibilities(base.requires_compatibilities.clone())
            .set_cpu(base.cpu.clone())
            .set_memory(base.memory.clone())
            .set_runtime_platform(base.runtime_platform.clone())
            .set_ephemeral_storage(base.ephemeral_storage.clone())
            .set_pid_mode(base.pid_mode.clone())
            .set_proxy_configuration(base.proxy_configuration.clone())
            .set_tags(Some(crate::task::ecs_tags(tags)))
            .send()
            .await
            .map_err(|e| Error::from(errors::sdk(e, "RegisterTaskDefinition")))?;
        out.task_definition
            .and_then(|td| td.task_definition_arn)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unexpected,
                    "RegisterTaskDefinition answered without a task definition",
                )
                .with_backend("ecs")
            })
    }
}

/// The tags of a definition derived from a base tagged `base` with content `hash`, at
/// Unix time `now` (see the module docs): the base's tags but `aws:` and marker keys,
/// the administrator's `admin` tags the base lacks (while there is room), then the
/// markers [`DERIVED_HASH`], [`DERIVED_FROM`] (`base_arn`) and [`LAST_USED`] (`now`).
///
/// Fails with [`ErrorKind::InvalidConfig`] when the base has more than
/// [`MAX_BASE_TAGS`] tags of its own.
pub fn derived_tags(
    base: &[Tag],
    admin: &std::collections::BTreeMap<String, String>,
    hash: &str,
    base_arn: &str,
    now: u64,
) -> Result<Vec<(String, String)>> {
    let mut tags: Vec<(String, String)> = base
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .filter(|(k, _)| {
            !k.to_ascii_lowercase().starts_with("aws:") && !MARKER_TAGS.contains(&k.as_str())
        })
        .collect();
    if tags.len() > MAX_BASE_TAGS {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "the base task definition {base_arn} has {} tags; a definition derived from it for a job's image can carry at most {MAX_BASE_TAGS} of them",
                tags.len()
            ),
        )
        .with_backend("ecs")
        .with_hint(format!(
            "ECS allows {} tags per task definition and the driver needs {} for its own marks: remove at least {} tags from the base (tags with the aws: prefix do not count)",
            crate::tags::MAX_TAGS,
            MARKER_TAGS.len(),
            tags.len() - MAX_BASE_TAGS
        )));
    }
    let room = MAX_BASE_TAGS - tags.len();
    let extra: Vec<(String, String)> = admin
        .iter()
        .filter(|(k, _)| !tags.iter().any(|(key, _)| key == *k))
        .filter(|(k, _)| !MARKER_TAGS.contains(&k.as_str()))
        .take(room)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.extend(extra);
    tags.extend([
        (DERIVED_HASH.to_owned(), hash.to_owned()),
        (DERIVED_FROM.to_owned(), base_arn.to_owned()),
        (LAST_USED.to_owned(), now.to_string()),
    ]);
    Ok(tags)
}

/// `base` with its runtime platform's CPU architecture set to `arch` (`X86_64`, `ARM64`),
/// its operating system family kept (Linux when it has none).
pub fn with_architecture(mut base: TaskDefinition, arch: &str) -> TaskDefinition {
    let os = base
        .runtime_platform
        .as_ref()
        .and_then(|p| p.operating_system_family.clone())
        .unwrap_or(OsFamily::Linux);
    base.runtime_platform = Some(
        RuntimePlatform::builder()
            .cpu_architecture(CpuArchitecture::from(arch))
            .operating_system_family(os)
            .build(),
    );
    base
}

/// Whether ECS refused a registration because another one of the same family was under
/// way.
fn is_concurrent_revision(err: &Error) -> bool {
    err.message()
        .to_ascii_lowercase()
        .contains("too many concurrent attempts")
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The containers and volumes of the definition derived from `base` by `plan`: the base's
/// containers (the helper with the plan's mounts added) and the plan's, and the base's
/// volumes and the plan's (task storage, no host path).
pub fn derived_containers(
    base: &TaskDefinition,
    plan: &TaskPlan,
) -> Result<(Vec<ContainerDefinition>, Vec<Volume>)> {
    let invalid = |msg: String| Error::new(ErrorKind::InvalidConfig, msg).with_backend("ecs");
    let mut containers: Vec<ContainerDefinition> =
        base.container_definitions.clone().unwrap_or_default();
    let helper = containers
        .iter_mut()
        .find(|c| c.name.as_deref() == Some(plan.helper.as_str()))
        .ok_or_else(|| {
            invalid(format!(
                "the base task definition {} has no container {:?} (the helper that runs the runner's own stages)",
                base.task_definition_arn.as_deref().unwrap_or_default(),
                plan.helper
            ))
        })?;
    if base.execution_role_arn.is_none()
        && let Some(c) = plan.containers.iter().find(|c| c.credentials.is_some())
    {
        return Err(invalid(format!(
            "the base task definition {} has no execution role, which ECS needs to read the credentials of the registry of {:?}",
            base.task_definition_arn.as_deref().unwrap_or_default(),
            c.image.as_deref().unwrap_or_default()
        ))
        .with_hint("give the base task definition an execution role allowed secretsmanager:GetSecretValue on the registry's secret (see docs/images.md, private registries)"));
    }
    let helper_image = helper.image.clone().unwrap_or_default();
    let log_configuration = helper.log_configuration.clone();
    helper
        .mount_points
        .get_or_insert_with(Vec::new)
        .extend(plan.helper_mounts.iter().map(mount_point));
    for c in &plan.containers {
        containers.push(container(c, &helper_image, log_configuration.clone())?);
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(invalid(format!(
            "the derived task definition would have {} containers; ECS allows {MAX_CONTAINERS}",
            containers.len()
        ))
        .with_hint("the base's containers, the bundle, the job and each service count: remove services, or lower [Fargate.Images] MaxServices"));
    }
    let mut volumes = base.volumes.clone().unwrap_or_default();
    for name in &plan.volumes {
        if volumes
            .iter()
            .any(|v| v.name.as_deref() == Some(name.as_str()))
        {
            return Err(invalid(format!(
                "the base task definition already has a volume named {name:?}"
            )));
        }
        volumes.push(Volume::builder().name(name).build());
    }
    Ok((containers, volumes))
}

/// A container's `repositoryCredentials`: the Secrets Manager secret (ARN or name) its
/// image's registry login is read from.
pub(crate) fn repository_credentials(secret: &str) -> Result<RepositoryCredentials> {
    RepositoryCredentials::builder()
        .credentials_parameter(secret)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("repository credentials: {e}"),
            )
            .with_backend("ecs")
        })
}

fn mount_point(m: &fargate_core::images::Mount) -> MountPoint {
    MountPoint::builder()
        .source_volume(&m.volume)
        .container_path(&m.path)
        .read_only(false)
        .build()
}

fn container(
    c: &ContainerPlan,
    helper_image: &str,
    log_configuration: Option<aws_sdk_ecs::types::LogConfiguration>,
) -> Result<ContainerDefinition> {
    let depends_on = c
        .depends_on
        .iter()
        .map(|(name, condition)| {
            ContainerDependency::builder()
                .container_name(name)
                .condition(match condition {
                    Condition::Success => ContainerCondition::Success,
                    _ => ContainerCondition::Start,
                })
                .build()
                .map_err(|e| {
                    Error::new(ErrorKind::Unexpected, format!("container dependency: {e}"))
                        .with_backend("ecs")
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut b = ContainerDefinition::builder()
        .name(&c.name)
        .image(c.image.as_deref().unwrap_or(helper_image))
        .essential(c.essential)
        .set_entry_point(c.entry_point.clone())
        .set_command(c.command.clone())
        .set_log_configuration(log_configuration)
        .set_environment(Some(
            c.environment
                .iter()
                .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                .collect(),
        ))
        .set_mount_points(Some(c.mounts.iter().map(mount_point).collect()))
        .set_depends_on(Some(depends_on));
    if let Some(credentials) = &c.credentials {
        b = b.repository_credentials(repository_credentials(credentials)?);
    }
    if let Some(port) = c.port {
        b = b.port_mappings(
            PortMapping::builder()
                .container_port(i32::from(port))
                .host_port(i32::from(port))
                .protocol(TransportProtocol::Tcp)
                .build(),
        );
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
            .collect()
    }

    #[test]
    fn derived_tags_carry_the_bases_then_the_admins_then_the_markers() {
        let base = tags(&[
            ("cost-center", "ci-42"),
            ("aws:cloudformation:stack-name", "runner"),
            (LAST_USED, "1"),
            ("team", "platform"),
        ]);
        let admin = BTreeMap::from([
            ("team".to_owned(), "ci".to_owned()),
            ("owner".to_owned(), "ops".to_owned()),
        ]);
        let got = derived_tags(&base, &admin, "h", "arn:base:3", 77).unwrap();
        let want: Vec<(String, String)> = [
            ("cost-center", "ci-42"),
            ("team", "platform"),
            ("owner", "ops"),
            (DERIVED_HASH, "h"),
            (DERIVED_FROM, "arn:base:3"),
            (LAST_USED, "77"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(got, want, "aws: and marker keys of the base are left out");
    }

    #[test]
    fn derived_tags_stay_within_ecs_limit_with_room_for_the_gc_mark() {
        let full: Vec<Tag> = (0..MAX_BASE_TAGS)
            .map(|i| Tag::builder().key(format!("k{i}")).value("v").build())
            .collect();
        let admin: BTreeMap<String, String> = (0..10)
            .map(|i| (format!("admin{i}"), "v".to_owned()))
            .collect();
        let got = derived_tags(&full, &admin, "h", "b", 1).unwrap();
        assert_eq!(
            got.len(),
            crate::tags::MAX_TAGS - 1,
            "one left for {GC_MARK}"
        );
        assert!(got.iter().all(|(k, _)| !k.starts_with("admin")));
        let mut over = full.clone();
        over.push(Tag::builder().key("one-too-many").value("v").build());
        let err = derived_tags(&over, &admin, "h", "b", 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("remove at least 1 tags"), "{err}");
        // Reserved tags do not count.
        over.pop();
        over.push(Tag::builder().key("aws:x").value("v").build());
        assert!(derived_tags(&over, &admin, "h", "b", 1).is_ok());
    }

    #[test]
    fn derived_families_fit_ecs() {
        let hash = "0123456789abcdef0123";
        assert_eq!(derived_family("ci", hash), "ci-0123456789abcdef");
        let long = "f".repeat(300);
        let family = derived_family(&long, hash);
        assert_eq!(family.len(), MAX_FAMILY_LEN);
        assert!(family.ends_with("-0123456789abcdef"));
    }
}
