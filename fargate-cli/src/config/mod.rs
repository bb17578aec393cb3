//! The driver's configuration file, `fargate.toml`, read into what each part needs:
//! [`DriverOptions`] for the stage state machine, [`EcsConfig`] for the ECS backend,
//! [`Ssh2Config`] for the SSH backend, [`LogSettings`], and the metadata directory.
//!
//! [`reader`] walks the TOML document as the Go driver did, [`sections`] knows the keys, and
//! [`duration`] their durations. The rules that span keys belong to the crates that own the
//! settings ([`DriverOptions::problems`], [`EcsConfig::problems`]); their problems are
//! reported here under the file's key names and lines.
//!
//! Every key of GitLab's Go driver is accepted with its meaning and default, matched
//! case-insensitively as the Go driver did (real configurations use `cluster`,
//! `securityGroup`, ...). New keys are additive and have safe defaults. Loading validates
//! everything: each problem names the key, the value and the line. An unknown key is a
//! warning that names the closest known key, never silently dropped.
//!
//! | Key | Type | Default | Notes |
//! |---|---|---|---|
//! | `LogLevel` | string | `info` | `error`, `warn`, `info`, `debug`, `trace` (also `panic`, `fatal`, `warning`) |
//! | `LogFormat` | string | `text` | `text`, `json` (`text-simple` = `text`) |
//! | `LogFile` | path | stderr | appended, created 0600 |
//! | `AwsSdkLogLevel` | string | `warn` | level of the AWS SDK's own logs (requests, signing, connections); never raised by `LogLevel` or `--debug` |
//! | `Namespace` | string | `<host name>-<hash of the metadata directory>` | separates this runner's jobs, records and tasks from other runners' (1-40 of `a-z0-9-`) |
//! | `BuildsDir` | string | runner's `builds_dir` | returned by the config stage as `builds_dir` (path inside the task) |
//! | `CacheDir` | string | runner's `cache_dir` | returned by the config stage as `cache_dir` (path inside the task) |
//! | `[Fargate] Cluster` | string | required | name or ARN |
//! | `[Fargate] Region` | string | SDK default chain | |
//! | `[Fargate] Subnet` / `Subnets` | string / list | required (one of them) | several subnets spread tasks and survive IP exhaustion |
//! | `[Fargate] SecurityGroup` / `SecurityGroups` | string / list | required (one of them) | must let this host reach the task's SSH port |
//! | `[Fargate] TaskDefinition` | string | required | `family`, `family:revision` or ARN |
//! | `[Fargate] EnablePublicIP` | bool | `false` | assign a public IP to the task |
//! | `[Fargate] UsePublicIP` | bool | `EnablePublicIP` | connect through the public IP |
//! | `[Fargate] PlatformVersion` | string | ECS default | |
//! | `[Fargate] LaunchType` | string | `FARGATE` | only `FARGATE`; excludes a strategy |
//! | `[[Fargate.CapacityProviderStrategy]]` | `Provider`, `Weight`, `Base` | none | e.g. `FARGATE_SPOT` then `FARGATE`; excludes `LaunchType` |
//! | `[Fargate] ContainerName` | string | `ci-coordinator` | container that gets `SSH_PUBLIC_KEY` |
//! | `[Fargate] Tags` | table | none | added to every task |
//! | `[Fargate] AllowedTaskDefinitions` | list of patterns | none | which `FARGATE_TASK_DEFINITION` job values are allowed (`*` wildcard) |
//! | `[Fargate] AllowPlatformVersionOverride` | bool | `true` | honour `FARGATE_PLATFORM_VERSION` from jobs |
//! | `[Fargate] EnableExecuteCommand` | bool | `false` | ECS Exec into job tasks, for debugging |
//! | `[Fargate] PropagateTags` | string | `NONE` | `TASK_DEFINITION` copies the task definition's tags to every task (`SERVICE` is refused: no service runs these tasks) |
//! | `[Fargate] EnableECSManagedTags` | bool | `false` | ECS adds `aws:ecs:clusterName` to every task |
//! | `[Fargate.TaskShape] DefaultCPU` / `MaxCPU` | integer (CPU units, 256-16384) | none | what jobs get without `FARGATE_CPU`, and the most they may ask for (no maximum: jobs may not ask) |
//! | `[Fargate.TaskShape] DefaultMemory` / `MaxMemory` | integer (MiB, 512-122880) | none | the same for `FARGATE_MEMORY` |
//! | `[Fargate.TaskShape] DefaultEphemeralStorage` / `MaxEphemeralStorage` | integer (GiB, 21-200) | none | the same for `FARGATE_EPHEMERAL_STORAGE` |
//! | `[Fargate.TaskShape] CPUOverMax` / `MemoryOverMax` / `EphemeralStorageOverMax` | string | `clamp` | above the maximum: `clamp` (with a warning in the job log) or `refuse` (a build failure) |
//! | `[Fargate.TaskShape] DefaultCapacity` | string | none (the runner's capacity) | capacity profile of jobs without `FARGATE_CAPACITY` |
//! | `[Fargate.TaskShape] InterruptionMemory` | duration | `6h` | how long a Spot interruption sends the job's retries to the fallback |
//! | `[[Fargate.CapacityProfile]]` | `Name`, `Providers`, `Fallback` | none | profiles jobs may ask for with `FARGATE_CAPACITY`, e.g. `spot` (`FARGATE_SPOT`, fallback `on-demand`) |
//! | `[[Fargate.ProjectRule]]` | `Name`, `Projects`, `ProjectIds`, `TaskRoles`, `Subnets`, `SecurityGroups` | none | per project (from `JOB_RESPONSE_FILE`): task roles its jobs may ask for (`FARGATE_TASK_ROLE`), subnets instead of the runner's, security groups added |
//! | `[Fargate] ReadyTimeout` | duration | `10m` | from RunTask to SSH answering |
//! | `[Fargate] PollInitialInterval` | duration | `2s` | delay after the first DescribeTasks (sent at once); grows by half each poll |
//! | `[Fargate] PollMaxInterval` | duration | `10s` | |
//! | `[Fargate] StopTimeout` | duration | `60s` | deadline of stopping the task (cleanup, rollback) |
//! | `[Fargate] MaxTaskLifetime` | duration | `24h` | cap of a task's deadline (job timeout + `ReadyTimeout` + `StopTimeout` + 10 min), and the deadline of a job without a timeout |
//! | `[Fargate] WatchInterval` | duration | `30s` | while a script runs, how often to check the task still runs (`0` disables) |
//! | `[Fargate] ConsistencyWindow` | duration | `60s` | how long after a launch ECS may still answer "unknown task" (eventual consistency) |
//! | `[Fargate.Images] AllowedImages` | list of patterns | none (images disabled) | job `image:` values that run (`*` wildcard); without it every job runs in the task image and its `image:` is ignored with a job-log line |
//! | `[Fargate.Images] AllowedServices` | list of patterns | none | job `services:` images that run; a job with any other fails |
//! | `[Fargate.Images] MaxServices` | integer | `4` | 0-7 services per job (ECS: 10 containers per task definition) |
//! | `[Fargate.Images] JobSSHPort` | integer | `2222` | the bundle's SSH server in the job container; must differ from `[SSH] Port` |
//! | `[Fargate.Images] BundlePath` | path | `/opt/fargate-bundle` | where the task image holds the tool bundle |
//! | `[Fargate.Images] DefaultBuildsDir` | path | `/builds` | the builds directory shared by helper and job containers when `BuildsDir` is not set |
//! | `[Fargate.Images] UnusedAfter` | duration | `168h` (7 days) | `fargate gc` removes derived task definitions unused this long |
//! | `[Fargate.WarmPool] Size` | integer | `0` (no pool) | idle tasks kept ready for jobs (at most 50); each is billed while it waits |
//! | `[Fargate.WarmPool] MaxIdleTime` | duration | `30m` | an idle task older than this is stopped (and replaced) |
//! | `[Fargate.WarmPool] CPU` / `Memory` | integer | the default job size | size of the pool's tasks; only jobs that get exactly this size use them |
//! | `[Fargate.WarmPool] ClaimTimeout` | duration | `10s` | how long prepare waits for a claimed ready task to answer before it launches a task of the job's own |
//! | `[Fargate.Images] MaxDerivedFamilies` | integer | `200` | `fargate gc` keeps at most this many derived families per base (least recently used go first) |
//! | `[TaskMetadata] Directory` | path | `/var/lib/fargate-driver` (root) or `~/.local/state/fargate-driver` | job records; created 0700; a relative path is relative to the configuration file's directory |
//! | `[SSH] Username` | string | `root` | |
//! | `[SSH] Port` | integer | `22` | 1-65535 |
//! | `[SSH] KeyType` | string | `ed25519` | or `rsa-3072`, `rsa-4096` |
//! | `[SSH] ConnectTimeout` | duration | `10s` | TCP connect + handshake |
//! | `[SSH] KeepaliveInterval` | duration | `30s` | `0` disables |
//! | `[SSH] ProbeInterval` | duration | `250ms` | SSH readiness probing once the IP is known (refused probes are retried after 25 ms, doubling up to it) |
//! | `[SSH] ConnectionKeeper` | bool | `true` | one SSH connection per job, held by a keeper process, for all `run` stages |
//! | `[SSH] KeeperIdleTimeout` | duration | `10m` | the keeper ends after this long without a stage |
//! | `[Retry] MaxAttempts` | integer | `5` | for throttling and capacity errors |
//! | `[Retry] InitialBackoff` | duration | `1s` | |
//! | `[Retry] MaxBackoff` | duration | `20s` | |
//! | `[Retry] MaxElapsed` | duration | `2m` | |
//!
//! Durations are an integer number of seconds or a string such as `"500ms"`, `"90s"`, `"2m"`,
//! `"1h"`.
//!
//! The driver retries (`[Retry]`); the ECS backend's SDK keeps its default of one quick
//! transport retry per call ([`fargate_aws::SdkTransport`]), so the two do not multiply
//! beyond `MaxAttempts` × 2.

pub(crate) mod duration;
mod images;
mod observability;
mod pool;
mod reader;
mod sections;
mod shape;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use fargate_aws::EcsConfig;
use fargate_core::{ConfigError, ConfigProblem, DriverOptions, Error, ErrorKind, Result};
use fargate_ssh::Ssh2Config;
use toml::de::DeTable;

use crate::logging::LogFormat;
use reader::{Reader, find_key_span, line_of};

/// The logging keys of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogSettings {
    /// `LogLevel`.
    pub(crate) level: Option<String>,
    /// `LogFormat`.
    pub(crate) format: LogFormat,
    /// `LogFile`.
    pub(crate) file: Option<PathBuf>,
    /// `AwsSdkLogLevel`: the level of the AWS SDK's own (wire-level) logs; `None` is
    /// `warn`, whatever `LogLevel` says.
    pub(crate) aws_sdk_level: Option<String>,
}

/// Everything `fargate.toml` says, split by owner.
#[derive(Clone, Debug)]
pub(crate) struct FileConfig {
    /// What the driver itself needs (`Namespace`, `BuildsDir`, `CacheDir`, the task
    /// policy and timeouts of `[Fargate]`, `[SSH]` login, `[Retry]`).
    pub(crate) options: DriverOptions,
    /// The ECS backend (`[Fargate]`: cluster, region, network, capacity, tags).
    pub(crate) ecs: EcsConfig,
    /// The SSH backend (`[SSH] ConnectTimeout`, `KeepaliveInterval`).
    pub(crate) ssh: Ssh2Config,
    /// Logging.
    pub(crate) log: LogSettings,
    /// `[TaskMetadata] Directory`, as written (empty when unset).
    pub(crate) metadata_dir: PathBuf,
    /// `[Cost]`: the prices of the job summary's estimate.
    pub(crate) prices: fargate_core::PriceTable,
    /// `[Metrics] File`: the Prometheus text file, if any.
    pub(crate) metrics_file: Option<PathBuf>,
    /// `[SSH] ConnectionKeeper`, `KeeperIdleTimeout`.
    pub(crate) keeper: KeeperSettings,
}

impl Default for FileConfig {
    /// What an empty file says: the driver's defaults with Fargate's task sizes
    /// ([`fargate_aws::fargate_sizes`]) and list prices ([`fargate_aws::fargate_prices`]).
    fn default() -> Self {
        let mut options = DriverOptions::default();
        options.shape.sizes = Some(fargate_aws::fargate_sizes());
        FileConfig {
            options,
            ecs: EcsConfig::default(),
            ssh: Ssh2Config::default(),
            log: LogSettings::default(),
            metadata_dir: PathBuf::new(),
            prices: fargate_aws::fargate_prices(),
            metrics_file: None,
            keeper: KeeperSettings::default(),
        }
    }
}

/// The per-job SSH connection keeper ([`fargate_ssh::keeper`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeeperSettings {
    /// `[SSH] ConnectionKeeper` (default `true`).
    pub(crate) enabled: bool,
    /// `[SSH] KeeperIdleTimeout` (default 10 min).
    pub(crate) idle_timeout: std::time::Duration,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        KeeperSettings {
            enabled: true,
            idle_timeout: std::time::Duration::from_secs(600),
        }
    }
}

/// A loaded configuration and the warnings found while loading it.
#[derive(Clone, Debug)]
pub(crate) struct LoadedConfig {
    /// The configuration.
    pub(crate) config: FileConfig,
    /// Unknown keys, one line each.
    pub(crate) warnings: Vec<String>,
}

/// Reads and checks the file at `path`.
pub(crate) fn load(path: &Path) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("cannot read configuration file {}: {e}", path.display()),
        )
        .with_source(e)
        .with_hint("pass the file with --config (runner config: *_args = [\"--config\", \"/etc/gitlab-runner/fargate.toml\", ...])")
    })?;
    Ok(parse(&text, &path.display().to_string())?)
}

/// Parses and checks TOML `text`; `origin` names it in messages (a file name).
pub(crate) fn parse(text: &str, origin: &str) -> std::result::Result<LoadedConfig, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        ConfigError::new(vec![
            ConfigProblem::new("", format!("not valid TOML: {}", e.message())).at_line(line),
        ])
        .with_origin(origin)
    })?;
    let mut reader = Reader::new(text, origin);
    let config = sections::read_document(&mut reader, doc.get_ref());
    let mut problems = reader.problems;
    // Rules spanning several keys, once every value could be read; reported on the line of
    // the key, or of its table (or line 1).
    if problems.is_empty() {
        problems = rules(&config)
            .into_iter()
            .map(|p| {
                let span = find_key_span(doc.get_ref(), &p.key).unwrap_or(0..0);
                p.at_line(line_of(text, span.start))
            })
            .collect();
    }
    ConfigError::check(problems).map_err(|e| e.with_origin(origin))?;
    Ok(LoadedConfig {
        config,
        warnings: reader.warnings,
    })
}

/// The rules of the file itself, then those of the ECS backend and the driver, under the
/// file's key names; a key the file's rules already named is not reported twice.
fn rules(c: &FileConfig) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if c.ecs.use_public_ip && !c.ecs.assign_public_ip {
        problems.push(ConfigProblem::new(
            "[Fargate] UsePublicIP",
            "= true needs EnablePublicIP = true (a task only gets a public IP when one is assigned)",
        ));
    }
    let named: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
    let owned = c.ecs.problems().into_iter().chain(c.options.problems());
    for mut p in owned {
        p.key = file_key(&p.key).to_owned();
        if !named.contains(&p.key) {
            problems.push(p);
        }
    }
    problems
}

/// The file key of a field of [`EcsConfig`] or [`DriverOptions`].
fn file_key(field: &str) -> &str {
    match field {
        "cluster" => "[Fargate] Cluster",
        "subnets" => "[Fargate] Subnet",
        "security_groups" => "[Fargate] SecurityGroup",
        "use_public_ip" => "[Fargate] UsePublicIP",
        "capacity" => "[Fargate] CapacityProviderStrategy",
        "tags" => "[Fargate] Tags",
        "task.task_definition" => "[Fargate] TaskDefinition",
        "task.container_name" => "[Fargate] ContainerName",
        "timeouts.ready" => "[Fargate] ReadyTimeout",
        "timeouts.poll_initial" => "[Fargate] PollInitialInterval",
        "timeouts.poll_max" => "[Fargate] PollMaxInterval",
        "timeouts.stop" => "[Fargate] StopTimeout",
        "timeouts.max_task_lifetime" => "[Fargate] MaxTaskLifetime",
        "ssh.username" => "[SSH] Username",
        "ssh.port" => "[SSH] Port",
        "ssh.probe_interval" => "[SSH] ProbeInterval",
        "retry.max_attempts" => "[Retry] MaxAttempts",
        other => images::file_key(other)
            .or_else(|| pool::file_key(other))
            .unwrap_or(other),
    }
}
