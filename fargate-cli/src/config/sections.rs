//! The sections of `fargate.toml`, read into the driver's options, the ECS and SSH
//! backends' configurations, the log settings and the metadata directory.

use std::path::PathBuf;

use fargate_aws::{Capacity, CapacityProviderItem};
use fargate_core::options::HostKeySource;
use fargate_core::{KeyType, Namespace};
use fargate_ssh::Ssh2Config;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::FileConfig;
use super::reader::{Reader, Table, shown};
use crate::logging::LogFormat;

/// Reads the whole document; problems and warnings are left in `r`.
pub(crate) fn read_document(r: &mut Reader<'_>, doc: &DeTable<'_>) -> FileConfig {
    let mut c = FileConfig::default();
    let mut top = Table::new("", doc);
    if let Some(level) = r.take(&mut top, "LogLevel") {
        match level.get_ref().as_str().map(str::to_ascii_lowercase) {
            Some(l)
                if [
                    "panic", "fatal", "error", "warn", "warning", "info", "debug", "trace", "",
                ]
                .contains(&l.as_str()) =>
            {
                c.log.level = (!l.is_empty()).then_some(l);
            }
            _ => r.type_error(
                &top,
                "LogLevel",
                level,
                "one of error, warn, info, debug, trace",
            ),
        }
    }
    if let Some(format) = r.take(&mut top, "LogFormat") {
        match format
            .get_ref()
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("" | "text" | "text-simple") => c.log.format = LogFormat::Text,
            Some("json") => c.log.format = LogFormat::Json,
            _ => r.type_error(&top, "LogFormat", format, "\"text\" or \"json\""),
        }
    }
    if let Some(level) = r.take(&mut top, "AwsSdkLogLevel") {
        match level.get_ref().as_str().map(str::to_ascii_lowercase) {
            Some(l)
                if ["error", "warn", "warning", "info", "debug", "trace"].contains(&l.as_str()) =>
            {
                c.log.aws_sdk_level = Some(l);
            }
            _ => r.type_error(
                &top,
                "AwsSdkLogLevel",
                level,
                "one of error, warn, info, debug, trace",
            ),
        }
    }
    c.log.file = r
        .string(&mut top, "LogFile")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(ns) = r.take(&mut top, "Namespace") {
        match ns.get_ref().as_str().map(Namespace::parse) {
            Some(Ok(n)) => c.options.namespace = Some(n),
            _ => r.type_error(
                &top,
                "Namespace",
                ns,
                "1-40 characters of a-z, 0-9 and '-', not at either end",
            ),
        }
    }
    c.options.builds_dir = r.nonempty(&mut top, "BuildsDir");
    c.options.cache_dir = r.nonempty(&mut top, "CacheDir");
    if let Some(t) = r.subtable(&mut top, "Fargate") {
        read_fargate(r, t, &mut c);
    }
    if let Some(t) = r.subtable(&mut top, "TaskMetadata") {
        let mut t = Table::new("TaskMetadata", t);
        if let Some(dir) = r.string(&mut t, "Directory") {
            c.metadata_dir = PathBuf::from(dir);
        }
        if let Some(v) = r.take(&mut t, "DynamoDBTable") {
            match v.get_ref().as_str() {
                Some(name) if fargate_aws::dynamo_store::valid_table_name(name) => {
                    c.dynamodb_table = Some(name.to_owned());
                }
                _ => r.type_error(
                    &t,
                    "DynamoDBTable",
                    v,
                    "a DynamoDB table name (3-255 characters of a-z, A-Z, 0-9, '_', '-' and '.')",
                ),
            }
        }
        if let Some(v) = r.take(&mut t, "HostName") {
            match v.get_ref().as_str() {
                Some(name) if valid_host_name(name) => c.host_name = Some(name.to_owned()),
                _ => r.type_error(
                    &t,
                    "HostName",
                    v,
                    "1-63 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
                ),
            }
        }
        r.finish(&t);
    }
    if let Some(t) = r.subtable(&mut top, "SSH") {
        read_ssh(r, t, &mut c);
    }
    if let Some(t) = r.subtable(&mut top, "Retry") {
        let mut t = Table::new("Retry", t);
        let policy = &mut c.options.retry;
        if let Some(n) = r.integer(&mut t, "MaxAttempts", 1..=100) {
            policy.max_attempts = n as u32;
        }
        for (key, field) in [
            ("InitialBackoff", &mut policy.initial_backoff),
            ("MaxBackoff", &mut policy.max_backoff),
            ("MaxElapsed", &mut policy.max_elapsed),
        ] {
            if let Some(d) = r.duration(&mut t, key, true) {
                *field = d;
            }
        }
        r.finish(&t);
    }
    if let Some(t) = r.subtable(&mut top, "RateLimit") {
        let mut t = Table::new("RateLimit", t);
        let rates = &mut c.call_rates;
        for (key, field) in [
            ("LaunchesPerSecond", &mut rates.launch.per_second),
            ("LaunchBurst", &mut rates.launch.burst),
            ("ChangesPerSecond", &mut rates.change.per_second),
            ("ChangeBurst", &mut rates.change.burst),
            ("TasksPerSecond", &mut rates.task.per_second),
            ("TaskBurst", &mut rates.task.burst),
        ] {
            if let Some(n) = r.integer(&mut t, key, 1..=1000) {
                *field = n as f64;
            }
        }
        r.finish(&t);
    }
    if let Some(t) = r.subtable(&mut top, "Cost") {
        super::observability::read_cost(r, t, &mut c);
    }
    if let Some(t) = r.subtable(&mut top, "Metrics") {
        super::observability::read_metrics(r, t, &mut c);
    }
    r.finish(&top);
    c
}

fn read_fargate(r: &mut Reader<'_>, table: &DeTable<'_>, c: &mut FileConfig) {
    let mut t = Table::new("Fargate", table);
    if let Some(v) = r.string(&mut t, "Cluster") {
        c.ecs.cluster = v.trim().to_owned();
    }
    c.ecs.region = optional(r, &mut t, "Region");
    c.ecs.subnets = one_and_many(r, &mut t, "Subnet", "Subnets");
    c.ecs.security_groups = one_and_many(r, &mut t, "SecurityGroup", "SecurityGroups");
    if let Some(v) = r.string(&mut t, "TaskDefinition") {
        c.options.task.task_definition = v.trim().to_owned();
    }
    c.ecs.assign_public_ip = r.boolean(&mut t, "EnablePublicIP").unwrap_or(false);
    c.ecs.use_public_ip = r
        .boolean(&mut t, "UsePublicIP")
        .unwrap_or(c.ecs.assign_public_ip);
    // Through a public IP anyone on the path may answer first: the host key comes from the
    // task's log unless [SSH] HostKeySource (read after this table) says otherwise.
    c.options.ssh.host_key_source = if c.ecs.use_public_ip {
        HostKeySource::Announced
    } else {
        HostKeySource::FirstUse
    };
    c.options.task.platform_version = optional(r, &mut t, "PlatformVersion");
    let launch_type = r.take(&mut t, "LaunchType");
    let strategy = r.take(&mut t, "CapacityProviderStrategy");
    match (launch_type, strategy) {
        (Some(lt), Some(_)) => {
            r.error(
                lt.span(),
                t.label("LaunchType"),
                "and [[Fargate.CapacityProviderStrategy]] exclude each other: ECS takes one or the other".into(),
            );
        }
        (Some(lt), None) => match lt
            .get_ref()
            .as_str()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("FARGATE") => c.ecs.capacity = Capacity::Fargate,
            _ => r.type_error(
                &t,
                "LaunchType",
                lt,
                "\"FARGATE\" (for Fargate Spot, use [[Fargate.CapacityProviderStrategy]])",
            ),
        },
        (None, Some(s)) => {
            if let Some(items) = read_strategy(r, &t, s) {
                c.ecs.capacity = Capacity::Strategy(items);
            }
        }
        (None, None) => {}
    }
    if let Some(v) = r.nonempty(&mut t, "ContainerName") {
        c.options.task.container_name = v;
    }
    if let Some(tags) = r.subtable(&mut t, "Tags") {
        for (k, v) in tags.iter() {
            match v.get_ref().as_str() {
                Some(s) if !k.get_ref().is_empty() => {
                    c.ecs.tags.insert(k.get_ref().to_string(), s.to_owned());
                }
                _ => {
                    r.error(
                        v.span(),
                        format!("[Fargate.Tags] {:?}", k.get_ref()),
                        format!(
                            "= {} must be a string with a non-empty key",
                            shown(v.get_ref())
                        ),
                    );
                }
            }
        }
    }
    if let Some(images) = r.subtable(&mut t, "Images") {
        super::images::read_images(r, images, &mut c.options.images);
    }
    if let Some(pool) = r.subtable(&mut t, "WarmPool") {
        super::pool::read_pool(r, pool, &mut c.options.pool);
    }
    if let Some(list) = r.string_list(&mut t, "AllowedTaskDefinitions") {
        c.options.task.allowed_task_definitions = list;
    }
    if let Some(b) = r.boolean(&mut t, "AllowPlatformVersionOverride") {
        c.options.task.allow_platform_version_override = b;
    }
    if let Some(b) = r.boolean(&mut t, "EnableExecuteCommand") {
        c.ecs.enable_execute_command = b;
    }
    if let Some(v) = r.take(&mut t, "PropagateTags") {
        match v.get_ref().as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("TASK_DEFINITION") => c.ecs.propagate_task_definition_tags = true,
            Some("NONE") => c.ecs.propagate_task_definition_tags = false,
            Some("SERVICE") => r.error(
                v.span(),
                t.label("PropagateTags"),
                "= \"SERVICE\" does not apply: the driver's tasks belong to no ECS service; \
                 use \"TASK_DEFINITION\" to copy the task definition's tags to every task"
                    .into(),
            ),
            _ => r.type_error(&t, "PropagateTags", v, "\"TASK_DEFINITION\" or \"NONE\""),
        }
    }
    if let Some(b) = r.boolean(&mut t, "EnableECSManagedTags") {
        c.ecs.enable_ecs_managed_tags = b;
    }
    super::shape::read_shape(r, &mut t, &mut c.options.shape);
    let tm = &mut c.options.timeouts;
    for (key, field, allow_zero) in [
        ("ReadyTimeout", &mut tm.ready, false),
        ("PollInitialInterval", &mut tm.poll_initial, false),
        ("PollMaxInterval", &mut tm.poll_max, false),
        ("StopTimeout", &mut tm.stop, false),
        ("MaxTaskLifetime", &mut tm.max_task_lifetime, false),
        ("ConsistencyWindow", &mut tm.consistency_window, true),
        ("WatchInterval", &mut tm.watch, true),
    ] {
        if let Some(d) = r.duration(&mut t, key, allow_zero) {
            *field = d;
        }
    }
    r.finish(&t);
}

fn read_strategy(
    r: &mut Reader<'_>,
    parent: &Table<'_, '_>,
    v: &Spanned<DeValue<'_>>,
) -> Option<Vec<CapacityProviderItem>> {
    let Some(array) = v.get_ref().as_array() else {
        r.type_error(
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
            r.type_error(
                parent,
                "CapacityProviderStrategy",
                item,
                "a table with Provider, Weight, Base",
            );
            continue;
        };
        let mut t = Table::new("Fargate.CapacityProviderStrategy", table);
        let provider = r.nonempty(&mut t, "Provider");
        let weight = r.integer(&mut t, "Weight", 0..=1000).unwrap_or(1);
        let base = r.integer(&mut t, "Base", 0..=100_000).unwrap_or(0);
        r.finish(&t);
        match provider {
            Some(provider) => items.push(CapacityProviderItem::new(
                provider,
                weight as i32,
                base as i32,
            )),
            None => r.error(
                item.span(),
                "[[Fargate.CapacityProviderStrategy]]".into(),
                "needs Provider (e.g. \"FARGATE_SPOT\")".into(),
            ),
        }
    }
    if items.is_empty() {
        r.error(
            v.span(),
            "[[Fargate.CapacityProviderStrategy]]".into(),
            "is empty".into(),
        );
        return None;
    }
    if items.iter().all(|i| i.weight == 0) {
        r.error(
            v.span(),
            "[[Fargate.CapacityProviderStrategy]]".into(),
            "needs at least one Weight above 0".into(),
        );
    }
    Some(items)
}

fn read_ssh(r: &mut Reader<'_>, table: &DeTable<'_>, c: &mut FileConfig) {
    let mut t = Table::new("SSH", table);
    if let Some(u) = r.nonempty(&mut t, "Username") {
        c.options.ssh.username = u;
    }
    if let Some(p) = r.integer(&mut t, "Port", 1..=65535) {
        c.options.ssh.port = p as u16;
    }
    if let Some(v) = r.take(&mut t, "KeyType") {
        match v.get_ref().as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("ed25519") => c.options.ssh.key_type = KeyType::Ed25519,
            Some("rsa" | "rsa-3072") => c.options.ssh.key_type = KeyType::Rsa { bits: 3072 },
            Some("rsa-4096") => c.options.ssh.key_type = KeyType::Rsa { bits: 4096 },
            _ => r.type_error(
                &t,
                "KeyType",
                v,
                "\"ed25519\", \"rsa-3072\" or \"rsa-4096\"",
            ),
        }
    }
    let defaults = Ssh2Config::default();
    let connect = r
        .duration(&mut t, "ConnectTimeout", false)
        .unwrap_or(defaults.connect_timeout());
    let keepalive = r
        .duration(&mut t, "KeepaliveInterval", true)
        .unwrap_or(defaults.keepalive_interval());
    c.ssh = Ssh2Config::builder()
        .connect_timeout(connect)
        .handshake_timeout(connect)
        .keepalive_interval(keepalive)
        .build();
    if let Some(d) = r.duration(&mut t, "ProbeInterval", false) {
        c.options.ssh.probe_interval = d;
    }
    if let Some(v) = r.take(&mut t, "HostKeySource") {
        match v.get_ref().as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("task-log") => c.options.ssh.host_key_source = HostKeySource::Announced,
            Some("first-use") => c.options.ssh.host_key_source = HostKeySource::FirstUse,
            _ => r.type_error(&t, "HostKeySource", v, "\"task-log\" or \"first-use\""),
        }
    }
    if let Some(on) = r.boolean(&mut t, "ConnectionKeeper") {
        c.keeper.enabled = on;
    }
    if let Some(d) = r.duration(&mut t, "KeeperIdleTimeout", false) {
        c.keeper.idle_timeout = d;
    }
    r.finish(&t);
}

/// A string key whose blank value means unset; trimmed.
fn optional(r: &mut Reader<'_>, t: &mut Table<'_, '_>, key: &'static str) -> Option<String> {
    r.string(t, key)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A key given as one string (`Subnet`), as a list (`Subnets`) or both: merged in that
/// order, each value once.
fn one_and_many(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    one: &'static str,
    many: &'static str,
) -> Vec<String> {
    let first = optional(r, t, one);
    let rest = r.string_list(t, many).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    first
        .into_iter()
        .chain(rest)
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// Whether `name` may be `[TaskMetadata] HostName`: 1-63 characters of `a-z A-Z 0-9 . _ -`
/// (it is the first part of the fleet's lock holders, `<host>/<pid>/<random>`).
fn valid_host_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}
