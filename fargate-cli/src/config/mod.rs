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
//! Every key, with its type, default and meaning, is in the key table of the configuration
//! reference (`docs/configuration.md` in the repository); `examples/fargate.toml` is the
//! commented sample. A test checks that the reader, that table and the sample name the same
//! keys.

#[cfg(test)]
mod documented_keys;
pub(crate) mod duration;
mod images;
mod observability;
mod pool;
mod reader;
mod sections;
mod setting_keys;
mod shape;
#[cfg(test)]
mod tests;

pub(crate) use setting_keys::hint_with_keys;

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
    /// `[TaskMetadata] DynamoDBTable`: the fleet's table, which holds the records instead
    /// of the directory (which keeps only the keepers' sockets).
    pub(crate) dynamodb_table: Option<String>,
    /// `[TaskMetadata] HostName`: this host's name in the fleet's table (lock holders,
    /// heartbeats); `None`: the system's host name.
    pub(crate) host_name: Option<String>,
    /// `[Cost]`: the prices of the job summary's estimate.
    pub(crate) prices: fargate_core::PriceTable,
    /// `[Metrics] File`: the Prometheus text file, if any.
    pub(crate) metrics_file: Option<PathBuf>,
    /// `[SSH] ConnectionKeeper`, `KeeperIdleTimeout`.
    pub(crate) keeper: KeeperSettings,
    /// `[RateLimit]`: this runner's share of the ECS API's rate limits.
    pub(crate) call_rates: fargate_core::budget::CallRates,
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
            dynamodb_table: None,
            host_name: None,
            prices: fargate_aws::fargate_prices(),
            metrics_file: None,
            keeper: KeeperSettings::default(),
            call_rates: fargate_aws::default_call_rates(),
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
        "ssh.host_key_source" => "[SSH] HostKeySource",
        "retry.max_attempts" => "[Retry] MaxAttempts",
        other => images::file_key(other)
            .or_else(|| pool::file_key(other))
            .unwrap_or(other),
    }
}
