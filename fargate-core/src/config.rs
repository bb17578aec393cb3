//! The driver's configuration file, `fargate.toml`.
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
//! | `[Fargate] ReadyTimeout` | duration | `10m` | from RunTask to SSH answering |
//! | `[Fargate] PollInitialInterval` | duration | `2s` | first DescribeTasks delay; grows by half each poll |
//! | `[Fargate] PollMaxInterval` | duration | `10s` | |
//! | `[Fargate] StopTimeout` | duration | `60s` | deadline of stopping the task (cleanup, rollback) |
//! | `[Fargate] WatchInterval` | duration | `30s` | while a script runs, how often to check the task still runs (`0` disables) |
//! | `[Fargate] ConsistencyWindow` | duration | `60s` | how long after a launch ECS may still answer "unknown task" (eventual consistency) |
//! | `[TaskMetadata] Directory` | path | `/var/lib/fargate-driver` (root) or `~/.local/state/fargate-driver` | job records; created 0700; a relative path is relative to the configuration file's directory |
//! | `[SSH] Username` | string | `root` | |
//! | `[SSH] Port` | integer | `22` | 1-65535 |
//! | `[SSH] KeyType` | string | `ed25519` | or `rsa-3072`, `rsa-4096` |
//! | `[SSH] ConnectTimeout` | duration | `10s` | TCP connect + handshake |
//! | `[SSH] KeepaliveInterval` | duration | `30s` | `0` disables |
//! | `[SSH] ProbeInterval` | duration | `250ms` | SSH readiness probing once the IP is known |
//! | `[Retry] MaxAttempts` | integer | `5` | for throttling and capacity errors |
//! | `[Retry] InitialBackoff` | duration | `1s` | |
//! | `[Retry] MaxBackoff` | duration | `20s` | |
//! | `[Retry] MaxElapsed` | duration | `2m` | |
//!
//! Durations are an integer number of seconds or a string such as `"500ms"`, `"90s"`, `"2m"`,
//! `"1h"`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Error, ErrorKind, Result};
use crate::job::Namespace;
use crate::shell::KeyType;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (the Go driver's `text` and `text-simple`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How `RunTask` gets capacity: never neither, so a cluster without a default capacity
/// provider strategy works.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Capacity {
    /// Launch type `FARGATE` (the default).
    #[default]
    Fargate,
    /// A capacity provider strategy, in order (e.g. `FARGATE_SPOT`, then `FARGATE`).
    Strategy(Vec<CapacityProviderItem>),
}

/// One item of a capacity provider strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapacityProviderItem {
    /// Provider name, e.g. `FARGATE_SPOT`.
    pub provider: String,
    /// Relative weight (0-1000).
    pub weight: i32,
    /// Tasks placed on this provider first (0-100000).
    pub base: i32,
}

impl CapacityProviderItem {
    /// An item for `provider` with `weight` and `base`.
    pub fn new(provider: impl Into<String>, weight: i32, base: i32) -> Self {
        CapacityProviderItem {
            provider: provider.into(),
            weight,
            base,
        }
    }
}

/// `[Fargate]`: where and how tasks run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FargateConfig {
    /// ECS cluster name or ARN.
    pub cluster: String,
    /// AWS region; `None` uses the SDK's default chain.
    pub region: Option<String>,
    /// Subnets for the task's ENI.
    pub subnets: Vec<String>,
    /// Security groups for the task's ENI.
    pub security_groups: Vec<String>,
    /// Default task definition.
    pub task_definition: String,
    /// Assign a public IP (`EnablePublicIP`).
    pub assign_public_ip: bool,
    /// Connect through the public IP (`UsePublicIP`, defaults to `EnablePublicIP`).
    pub use_public_ip: bool,
    /// Platform version; `None` for ECS's default.
    pub platform_version: Option<String>,
    /// Launch type or capacity provider strategy.
    pub capacity: Capacity,
    /// Container that gets `SSH_PUBLIC_KEY`.
    pub container_name: String,
    /// Tags added to every task.
    pub tags: BTreeMap<String, String>,
    /// Patterns of task definitions a job may ask for with `FARGATE_TASK_DEFINITION`.
    pub allowed_task_definitions: Vec<String>,
    /// Whether jobs may set `FARGATE_PLATFORM_VERSION`.
    pub allow_platform_version_override: bool,
    /// Enable ECS Exec on job tasks.
    pub enable_execute_command: bool,
    /// From launch to SSH answering.
    pub ready_timeout: Duration,
    /// First delay between DescribeTasks calls while waiting.
    pub poll_initial_interval: Duration,
    /// Largest delay between DescribeTasks calls while waiting.
    pub poll_max_interval: Duration,
    /// Deadline for stopping a task.
    pub stop_timeout: Duration,
    /// While a stage script runs, how often to check that the task is still running (zero
    /// disables). A stopped task then fails the stage at once, with ECS's reason, instead of
    /// when the connection times out.
    pub watch_interval: Duration,
    /// How long after a launch the backend may still not know the task (ECS is eventually
    /// consistent): within it, "unknown task" means "not visible yet", never "stopped".
    pub consistency_window: Duration,
}

impl Default for FargateConfig {
    fn default() -> Self {
        FargateConfig {
            cluster: String::new(),
            region: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            task_definition: String::new(),
            assign_public_ip: false,
            use_public_ip: false,
            platform_version: None,
            capacity: Capacity::default(),
            container_name: "ci-coordinator".into(),
            tags: BTreeMap::new(),
            allowed_task_definitions: Vec::new(),
            allow_platform_version_override: true,
            enable_execute_command: false,
            ready_timeout: Duration::from_secs(600),
            poll_initial_interval: Duration::from_secs(2),
            poll_max_interval: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(60),
            watch_interval: Duration::from_secs(30),
            consistency_window: Duration::from_secs(60),
        }
    }
}

/// `[SSH]`: how the driver logs in to the task.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshConfig {
    /// Login user.
    pub username: String,
    /// SSH port of the task.
    pub port: u16,
    /// Type of the per-job key.
    pub key_type: KeyType,
    /// TCP connect plus handshake timeout.
    pub connect_timeout: Duration,
    /// Keepalive interval (zero disables).
    pub keepalive_interval: Duration,
    /// Interval of SSH readiness probes.
    pub probe_interval: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            username: "root".into(),
            port: 22,
            key_type: KeyType::Ed25519,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            probe_interval: Duration::from_millis(250),
        }
    }
}

/// `[Retry]`: retries of throttled and capacity-limited calls.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the first retry (then doubled, with jitter).
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// The whole driver configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// `Namespace`: separates this runner's jobs and tasks from other runners'; `None` for
    /// the default ([`Namespace::default_for`] the metadata directory).
    pub namespace: Option<Namespace>,
    /// `LogLevel`.
    pub log_level: Option<String>,
    /// `LogFormat`.
    pub log_format: LogFormat,
    /// `LogFile`.
    pub log_file: Option<PathBuf>,
    /// `AwsSdkLogLevel`: the level of the AWS SDK's own (wire-level) logs; `None` is
    /// `warn`, whatever `LogLevel` says.
    pub aws_sdk_log_level: Option<String>,
    /// `[Fargate]`.
    pub fargate: FargateConfig,
    /// `[TaskMetadata] Directory`.
    pub metadata_dir: PathBuf,
    /// `[SSH]`.
    pub ssh: SshConfig,
    /// `[Retry]`.
    pub retry: RetryPolicy,
    /// `BuildsDir`: `builds_dir` for the runner (config stage output), when set.
    pub builds_dir: Option<String>,
    /// `CacheDir`: `cache_dir` for the runner (config stage output), when set.
    pub cache_dir: Option<String>,
}

/// A loaded configuration and the warnings found while loading it.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: DriverConfig,
    /// Unknown keys and other non-fatal findings, one line each.
    pub warnings: Vec<String>,
}

impl DriverConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<LoadedConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("cannot read configuration file {}: {e}", path.display()),
            )
            .with_source(e)
            .with_hint("pass the file with --config (runner config: *_args = [\"--config\", \"/etc/gitlab-runner/fargate.toml\", ...])")
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML `text`; `origin` names it in messages (a file name).
    pub fn parse(text: &str, origin: &str) -> Result<LoadedConfig> {
        let doc = DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            Error::new(
                ErrorKind::InvalidConfig,
                format!("{origin}:{line}: not valid TOML: {}", e.message()),
            )
        })?;
        let mut r = Reader {
            text,
            origin,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let config = r.read(doc.get_ref());
        if r.errors.is_empty() {
            Ok(LoadedConfig {
                config,
                warnings: r.warnings,
            })
        } else {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("invalid configuration:\n  {}", r.errors.join("\n  ")),
            ))
        }
    }

    /// Checks a configuration built in code (what loading checks after parsing).
    pub fn validate(&self) -> Result<()> {
        let problems = semantic_problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            let lines: Vec<String> = problems
                .into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect();
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("invalid configuration:\n  {}", lines.join("\n  ")),
            ))
        }
    }
}

fn semantic_problems(c: &DriverConfig) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    let f = &c.fargate;
    if f.cluster.trim().is_empty() {
        p.push((
            "[Fargate] Cluster",
            "is required (the ECS cluster name or ARN)".into(),
        ));
    }
    if f.task_definition.trim().is_empty() {
        p.push((
            "[Fargate] TaskDefinition",
            "is required (family, family:revision or ARN)".into(),
        ));
    }
    if f.subnets.is_empty() {
        p.push((
            "[Fargate] Subnet",
            "is required: set Subnet or Subnets (awsvpc tasks need a subnet)".into(),
        ));
    }
    if f.security_groups.is_empty() {
        p.push((
            "[Fargate] SecurityGroup",
            "is required: set SecurityGroup or SecurityGroups (one that lets this host reach the task's SSH port)".into(),
        ));
    }
    if f.use_public_ip && !f.assign_public_ip {
        p.push(("[Fargate] UsePublicIP", "= true needs EnablePublicIP = true (a task only gets a public IP when one is assigned)".into()));
    }
    if f.container_name.trim().is_empty() {
        p.push(("[Fargate] ContainerName", "must not be empty".into()));
    }
    if c.ssh.username.trim().is_empty() {
        p.push(("[SSH] Username", "must not be empty".into()));
    }
    p
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Entry<'a, 'i> = (&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>);

/// The keys of one TOML table, matched case-insensitively, with unused ones reported.
struct Table<'a, 'i> {
    name: &'static str,
    entries: Vec<(Entry<'a, 'i>, bool)>,
    known: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    fn new(name: &'static str, table: &'a DeTable<'i>) -> Self {
        Table {
            name,
            entries: table.iter().map(|e| (e, false)).collect(),
            known: Vec::new(),
        }
    }

    fn label(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("[{}] {key}", self.name)
        }
    }
}

struct Reader<'t> {
    text: &'t str,
    origin: &'t str,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl<'t> Reader<'t> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn error(&mut self, span: std::ops::Range<usize>, msg: String) {
        let line = self.line(span);
        self.errors.push(format!("{}:{line}: {msg}", self.origin));
    }

    /// Finds `key` (case-insensitively) and marks it used. Two spellings of one key are an error.
    fn take<'a, 'i>(
        &mut self,
        t: &mut Table<'a, 'i>,
        key: &'static str,
    ) -> Option<&'a Spanned<DeValue<'i>>> {
        t.known.push(key);
        let mut found: Option<&'a Spanned<DeValue<'i>>> = None;
        let mut first_name = String::new();
        let mut dup = None;
        for ((k, v), used) in t.entries.iter_mut() {
            if k.get_ref().eq_ignore_ascii_case(key) {
                *used = true;
                if found.is_some() {
                    dup = Some((k.span(), k.get_ref().to_string()));
                } else {
                    first_name = k.get_ref().to_string();
                    found = Some(*v);
                }
            }
        }
        if let Some((span, name)) = dup {
            let label = t.label(&name);
            self.error(
                span,
                format!(
                    "{label} is given twice (also as {first_name:?}; keys are case-insensitive)"
                ),
            );
        }
        found
    }

    fn type_error(&mut self, t: &Table<'_, '_>, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        let label = t.label(key);
        self.error(
            v.span(),
            format!("{label} = {} must be {want}", shown(v.get_ref())),
        );
    }

    fn string(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<String> {
        let v = self.take(t, key)?;
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.type_error(t, key, v, "a string");
                None
            }
        }
    }

    /// A string that, when given, must not be empty or blank.
    fn nonempty(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<String> {
        let v = self.take(t, key)?;
        match v.get_ref().as_str() {
            Some(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(_) => {
                self.type_error(t, key, v, "a non-empty string");
                None
            }
            None => {
                self.type_error(t, key, v, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<bool> {
        let v = self.take(t, key)?;
        match v.get_ref().as_bool() {
            Some(b) => Some(b),
            None => {
                self.type_error(t, key, v, "true or false");
                None
            }
        }
    }

    fn integer(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.take(t, key)?;
        match int_value(v.get_ref()) {
            Some(n) if range.contains(&n) => Some(n),
            Some(_) => {
                let want = format!("an integer from {} to {}", range.start(), range.end());
                self.type_error(t, key, v, &want);
                None
            }
            None => {
                self.type_error(t, key, v, "an integer");
                None
            }
        }
    }

    fn duration(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let v = self.take(t, key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_duration(s),
            other => int_value(other)
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
        };
        match parsed {
            Some(d) if allow_zero || !d.is_zero() => Some(d),
            _ => {
                let want = if allow_zero {
                    "a duration (seconds, or a string like \"500ms\", \"90s\", \"2m\")"
                } else {
                    "a positive duration (seconds, or a string like \"500ms\", \"90s\", \"2m\")"
                };
                self.type_error(t, key, v, want);
                None
            }
        }
    }

    fn string_list(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<Vec<String>> {
        let v = self.take(t, key)?;
        let items: Option<Vec<String>> = v.get_ref().as_array().and_then(|a| {
            a.iter()
                .map(|i| {
                    i.get_ref()
                        .as_str()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_owned())
                })
                .collect()
        });
        if items.is_none() {
            self.type_error(t, key, v, "a list of non-empty strings");
        }
        items
    }

    fn subtable<'a, 'i>(
        &mut self,
        t: &mut Table<'a, 'i>,
        key: &'static str,
    ) -> Option<&'a DeTable<'i>> {
        let v = self.take(t, key)?;
        match v.get_ref().as_table() {
            Some(table) => Some(table),
            None => {
                self.type_error(t, key, v, "a table");
                None
            }
        }
    }

    /// Warns about every key of `t` that no `take` asked for.
    fn finish(&mut self, t: &Table<'_, '_>) {
        for ((k, _), used) in &t.entries {
            if *used {
                continue;
            }
            let name = k.get_ref();
            let closest = t
                .known
                .iter()
                .map(|known| {
                    (
                        strsim::jaro_winkler(&name.to_lowercase(), &known.to_lowercase()),
                        known,
                    )
                })
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let label = t.label(name);
            let line = self.line(k.span());
            let mut msg = format!("{}:{line}: unknown key {label} is ignored", self.origin);
            if let Some((_, known)) = closest {
                msg.push_str(&format!(" (did you mean {}?)", t.label(known)));
            }
            self.warnings.push(msg);
        }
    }

    fn read(&mut self, doc: &DeTable<'_>) -> DriverConfig {
        let mut c = DriverConfig::default();
        let mut top = Table::new("", doc);
        if let Some(level) = self.take(&mut top, "LogLevel") {
            match level.get_ref().as_str().map(str::to_ascii_lowercase) {
                Some(l)
                    if [
                        "panic", "fatal", "error", "warn", "warning", "info", "debug", "trace", "",
                    ]
                    .contains(&l.as_str()) =>
                {
                    c.log_level = (!l.is_empty()).then_some(l);
                }
                _ => self.type_error(
                    &top,
                    "LogLevel",
                    level,
                    "one of error, warn, info, debug, trace",
                ),
            }
        }
        if let Some(format) = self.take(&mut top, "LogFormat") {
            match format
                .get_ref()
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("" | "text" | "text-simple") => c.log_format = LogFormat::Text,
                Some("json") => c.log_format = LogFormat::Json,
                _ => self.type_error(&top, "LogFormat", format, "\"text\" or \"json\""),
            }
        }
        if let Some(level) = self.take(&mut top, "AwsSdkLogLevel") {
            match level.get_ref().as_str().map(str::to_ascii_lowercase) {
                Some(l)
                    if ["error", "warn", "warning", "info", "debug", "trace"]
                        .contains(&l.as_str()) =>
                {
                    c.aws_sdk_log_level = Some(l);
                }
                _ => self.type_error(
                    &top,
                    "AwsSdkLogLevel",
                    level,
                    "one of error, warn, info, debug, trace",
                ),
            }
        }
        c.log_file = self
            .string(&mut top, "LogFile")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if let Some(ns) = self.take(&mut top, "Namespace") {
            match ns.get_ref().as_str().map(Namespace::parse) {
                Some(Ok(n)) => c.namespace = Some(n),
                _ => self.type_error(
                    &top,
                    "Namespace",
                    ns,
                    "1-40 characters of a-z, 0-9 and '-', not at either end",
                ),
            }
        }
        c.builds_dir = self.nonempty(&mut top, "BuildsDir");
        c.cache_dir = self.nonempty(&mut top, "CacheDir");
        if let Some(t) = self.subtable(&mut top, "Fargate") {
            self.read_fargate(t, &mut c.fargate);
        }
        if let Some(t) = self.subtable(&mut top, "TaskMetadata") {
            let mut t = Table::new("TaskMetadata", t);
            if let Some(dir) = self.string(&mut t, "Directory") {
                c.metadata_dir = PathBuf::from(dir);
            }
            self.finish(&t);
        }
        if let Some(t) = self.subtable(&mut top, "SSH") {
            self.read_ssh(t, &mut c.ssh);
        }
        if let Some(t) = self.subtable(&mut top, "Retry") {
            let mut t = Table::new("Retry", t);
            let r = &mut c.retry;
            if let Some(n) = self.integer(&mut t, "MaxAttempts", 1..=100) {
                r.max_attempts = n as u32;
            }
            if let Some(d) = self.duration(&mut t, "InitialBackoff", true) {
                r.initial_backoff = d;
            }
            if let Some(d) = self.duration(&mut t, "MaxBackoff", true) {
                r.max_backoff = d;
            }
            if let Some(d) = self.duration(&mut t, "MaxElapsed", true) {
                r.max_elapsed = d;
            }
            self.finish(&t);
        }
        self.finish(&top);
        // Rules spanning several keys; reported on the line of the table (or line 1).
        if self.errors.is_empty() {
            for (key, msg) in semantic_problems(&c) {
                let span = find_key_span(doc, key).unwrap_or(0..0);
                let line = self.line(span);
                self.errors
                    .push(format!("{}:{line}: {key} {msg}", self.origin));
            }
        }
        c
    }

    fn read_fargate(&mut self, table: &DeTable<'_>, f: &mut FargateConfig) {
        let mut t = Table::new("Fargate", table);
        if let Some(v) = self.string(&mut t, "Cluster") {
            f.cluster = v.trim().to_owned();
        }
        f.region = self
            .string(&mut t, "Region")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let subnet = self
            .string(&mut t, "Subnet")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let subnets = self.string_list(&mut t, "Subnets").unwrap_or_default();
        f.subnets = subnet.into_iter().chain(subnets).collect();
        dedup(&mut f.subnets);
        let sg = self
            .string(&mut t, "SecurityGroup")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let sgs = self
            .string_list(&mut t, "SecurityGroups")
            .unwrap_or_default();
        f.security_groups = sg.into_iter().chain(sgs).collect();
        dedup(&mut f.security_groups);
        if let Some(v) = self.string(&mut t, "TaskDefinition") {
            f.task_definition = v.trim().to_owned();
        }
        f.assign_public_ip = self.boolean(&mut t, "EnablePublicIP").unwrap_or(false);
        f.use_public_ip = self
            .boolean(&mut t, "UsePublicIP")
            .unwrap_or(f.assign_public_ip);
        f.platform_version = self
            .string(&mut t, "PlatformVersion")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let launch_type = self.take(&mut t, "LaunchType");
        let strategy = self.take(&mut t, "CapacityProviderStrategy");
        match (launch_type, strategy) {
            (Some(lt), Some(_)) => {
                let label = t.label("LaunchType");
                self.error(lt.span(), format!("{label} and [[Fargate.CapacityProviderStrategy]] exclude each other: ECS takes one or the other"));
            }
            (Some(lt), None) => match lt
                .get_ref()
                .as_str()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("FARGATE") => f.capacity = Capacity::Fargate,
                _ => self.type_error(
                    &t,
                    "LaunchType",
                    lt,
                    "\"FARGATE\" (for Fargate Spot, use [[Fargate.CapacityProviderStrategy]])",
                ),
            },
            (None, Some(s)) => {
                if let Some(items) = self.read_strategy(&t, s) {
                    f.capacity = Capacity::Strategy(items);
                }
            }
            (None, None) => {}
        }
        if let Some(v) = self.nonempty(&mut t, "ContainerName") {
            f.container_name = v;
        }
        if let Some(tags) = self.subtable(&mut t, "Tags") {
            for (k, v) in tags.iter() {
                match v.get_ref().as_str() {
                    Some(s) if !k.get_ref().is_empty() => {
                        f.tags.insert(k.get_ref().to_string(), s.to_owned());
                    }
                    _ => {
                        let label = format!("[Fargate.Tags] {:?}", k.get_ref());
                        self.error(
                            v.span(),
                            format!(
                                "{label} = {} must be a string with a non-empty key",
                                shown(v.get_ref())
                            ),
                        );
                    }
                }
            }
        }
        if let Some(list) = self.string_list(&mut t, "AllowedTaskDefinitions") {
            f.allowed_task_definitions = list;
        }
        if let Some(b) = self.boolean(&mut t, "AllowPlatformVersionOverride") {
            f.allow_platform_version_override = b;
        }
        if let Some(b) = self.boolean(&mut t, "EnableExecuteCommand") {
            f.enable_execute_command = b;
        }
        if let Some(d) = self.duration(&mut t, "ReadyTimeout", false) {
            f.ready_timeout = d;
        }
        if let Some(d) = self.duration(&mut t, "PollInitialInterval", false) {
            f.poll_initial_interval = d;
        }
        if let Some(d) = self.duration(&mut t, "PollMaxInterval", false) {
            f.poll_max_interval = d;
        }
        if let Some(d) = self.duration(&mut t, "StopTimeout", false) {
            f.stop_timeout = d;
        }
        if let Some(d) = self.duration(&mut t, "ConsistencyWindow", true) {
            f.consistency_window = d;
        }
        if let Some(d) = self.duration(&mut t, "WatchInterval", true) {
            f.watch_interval = d;
        }
        self.finish(&t);
    }

    fn read_strategy(
        &mut self,
        parent: &Table<'_, '_>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Vec<CapacityProviderItem>> {
        let Some(array) = v.get_ref().as_array() else {
            self.type_error(
                parent,
                "CapacityProviderStrategy",
                v,
                "a list of tables ([[Fargate.CapacityProviderStrategy]])",
            );
            return None;
        };
        let mut items = Vec::new();
        for item in array.iter() {
            let Some(table) = item.get_ref().as_table() else {
                self.type_error(
                    parent,
                    "CapacityProviderStrategy",
                    item,
                    "a table with Provider, Weight, Base",
                );
                continue;
            };
            let mut t = Table::new("Fargate.CapacityProviderStrategy", table);
            let provider = self.nonempty(&mut t, "Provider");
            let weight = self.integer(&mut t, "Weight", 0..=1000).unwrap_or(1);
            let base = self.integer(&mut t, "Base", 0..=100_000).unwrap_or(0);
            self.finish(&t);
            match provider {
                Some(provider) => items.push(CapacityProviderItem::new(
                    provider,
                    weight as i32,
                    base as i32,
                )),
                None => self.error(
                    item.span(),
                    "[[Fargate.CapacityProviderStrategy]] needs Provider (e.g. \"FARGATE_SPOT\")"
                        .into(),
                ),
            }
        }
        if items.is_empty() {
            self.error(
                v.span(),
                "[[Fargate.CapacityProviderStrategy]] is empty".into(),
            );
            return None;
        }
        if items.iter().all(|i| i.weight == 0) {
            self.error(
                v.span(),
                "[[Fargate.CapacityProviderStrategy]] needs at least one Weight above 0".into(),
            );
        }
        Some(items)
    }

    fn read_ssh(&mut self, table: &DeTable<'_>, s: &mut SshConfig) {
        let mut t = Table::new("SSH", table);
        if let Some(u) = self.nonempty(&mut t, "Username") {
            s.username = u;
        }
        if let Some(p) = self.integer(&mut t, "Port", 1..=65535) {
            s.port = p as u16;
        }
        if let Some(v) = self.take(&mut t, "KeyType") {
            match v.get_ref().as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("ed25519") => s.key_type = KeyType::Ed25519,
                Some("rsa" | "rsa-3072") => s.key_type = KeyType::Rsa { bits: 3072 },
                Some("rsa-4096") => s.key_type = KeyType::Rsa { bits: 4096 },
                _ => self.type_error(
                    &t,
                    "KeyType",
                    v,
                    "\"ed25519\", \"rsa-3072\" or \"rsa-4096\"",
                ),
            }
        }
        if let Some(d) = self.duration(&mut t, "ConnectTimeout", false) {
            s.connect_timeout = d;
        }
        if let Some(d) = self.duration(&mut t, "KeepaliveInterval", true) {
            s.keepalive_interval = d;
        }
        if let Some(d) = self.duration(&mut t, "ProbeInterval", false) {
            s.probe_interval = d;
        }
        self.finish(&t);
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// The span of `"[Table] Key"` (or of the table) in the document, for error lines.
fn find_key_span(doc: &DeTable<'_>, label: &str) -> Option<std::ops::Range<usize>> {
    fn find<'a, 'i>(
        t: &'a DeTable<'i>,
        name: &str,
    ) -> Option<(&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>)> {
        t.iter()
            .find(|(k, _)| k.get_ref().eq_ignore_ascii_case(name))
    }
    match label
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        None => find(doc, label).map(|(k, _)| k.span()),
        Some((table, key)) => {
            let (tk, tv) = find(doc, table)?;
            tv.get_ref()
                .as_table()
                .and_then(|inner| find(inner, key))
                .map(|(k, _)| k.span())
                .or(Some(tk.span()))
        }
    }
}

fn int_value(v: &DeValue<'_>) -> Option<i64> {
    let i = v.as_integer()?;
    let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
    let digits = digits.trim_start_matches('+');
    let (neg, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits),
    };
    let digits = if i.radix() == 10 {
        digits
    } else {
        digits.get(2..)?
    };
    let n = i64::from_str_radix(digits, i.radix()).ok()?;
    Some(if neg { -n } else { n })
}

/// `"500ms"`, `"90s"`, `"2m"`, `"1h"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn shown(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) => "[...]".into(),
        DeValue::Table(_) => "{...}".into(),
    }
}

/// Whether task definition `name` matches one of `patterns` (`*` matches any run of characters).
pub fn task_definition_allowed(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| glob_match(p, name))
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
