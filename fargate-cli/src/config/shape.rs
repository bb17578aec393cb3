//! The task-shape keys of `fargate.toml`: `[Fargate.TaskShape]`, `[[Fargate.CapacityProfile]]`,
//! `[[Fargate.ProjectRule]]` (with `MaxConcurrentJobs`) and `[Fargate] MaxKeepFailedFor`, read into [`ShapePolicy`].
//!
//! The policy's own rules ([`ShapePolicy::problems`]) are reported here, on the line of the
//! key or table they concern, so that every problem has its line.

use std::collections::HashMap;
use std::ops::Range;

use fargate_core::CapacityProvider;
use fargate_core::options::{CapacityProfile, OverMax, ProjectRule, ShapePolicy, SizeLimit};
use toml::Spanned;
use toml::de::DeValue;

use super::reader::{Reader, Table};

/// Where each policy field was written: its file label and span, by the field path
/// [`ShapePolicy::problems`] names it with.
type Places = HashMap<String, (String, Range<usize>)>;

/// Reads the shape keys of the `[Fargate]` table `t` into `policy`.
pub(crate) fn read_shape(r: &mut Reader<'_>, t: &mut Table<'_, '_>, policy: &mut ShapePolicy) {
    let mut places = Places::new();
    if let Some(table) = r.subtable(t, "TaskShape") {
        let mut s = Table::new("Fargate.TaskShape", table);
        for (field, limit, what, low, high) in [
            ("cpu", &mut policy.cpu, "CPU", 256, 16384),
            ("memory", &mut policy.memory, "Memory", 512, 122_880),
            (
                "ephemeral_storage",
                &mut policy.ephemeral_storage,
                "EphemeralStorage",
                21,
                200,
            ),
        ] {
            *limit = read_limit(r, &mut s, &mut places, field, what, low..=high);
        }
        if let Some(v) = r.take(&mut s, "DefaultCapacity") {
            match v.get_ref().as_str().map(str::trim) {
                Some(name) if !name.is_empty() => {
                    policy.default_capacity = Some(name.to_owned());
                    places.insert(
                        "shape.default_capacity".into(),
                        (s.label("DefaultCapacity"), v.span()),
                    );
                }
                _ => r.type_error(&s, "DefaultCapacity", v, "the name of a capacity profile"),
            }
        }
        if let Some(d) = r.duration(&mut s, "InterruptionMemory", true) {
            policy.interruption_memory = d;
        }
        if let Some(v) = r.take(&mut s, "AllowedCPUArchitectures") {
            let list: Option<Vec<String>> = v.get_ref().as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| {
                        let a = i.get_ref().as_str()?.trim().to_ascii_uppercase();
                        matches!(a.as_str(), "X86_64" | "ARM64").then_some(a)
                    })
                    .collect()
            });
            match list {
                Some(list) => policy.cpu_architectures = list,
                None => r.type_error(
                    &s,
                    "AllowedCPUArchitectures",
                    v,
                    "a list of \"X86_64\" and \"ARM64\"",
                ),
            }
        }
        r.finish(&s);
    }
    if let Some(v) = r.take(t, "CapacityProfile") {
        for (table, span) in tables(r, t, "CapacityProfile", v) {
            let mut p = Table::new("Fargate.CapacityProfile", table);
            let name = r.nonempty(&mut p, "Name");
            let providers = r.string_list(&mut p, "Providers").unwrap_or_default();
            let fallback = r.nonempty(&mut p, "Fallback");
            r.finish(&p);
            let Some(name) = name else {
                r.error(
                    span,
                    "[[Fargate.CapacityProfile]]".into(),
                    "needs Name (e.g. \"spot\")".into(),
                );
                continue;
            };
            let label = format!("[[Fargate.CapacityProfile]] {name:?}");
            let key = format!("shape.capacity_profiles.{name}");
            places.insert(format!("{key}.fallback"), (label.clone(), span.clone()));
            places.insert(key, (label, span));
            let mut profile = CapacityProfile::new(
                name,
                providers.into_iter().map(CapacityProvider::new).collect(),
            );
            profile.fallback = fallback;
            policy.capacity_profiles.push(profile);
        }
    }
    if let Some(v) = r.take(t, "ProjectRule") {
        for (table, span) in tables(r, t, "ProjectRule", v) {
            let mut p = Table::new("Fargate.ProjectRule", table);
            let mut rule = ProjectRule::new(r.nonempty(&mut p, "Name").unwrap_or_default());
            rule.projects = r.string_list(&mut p, "Projects").unwrap_or_default();
            if let Some(ids) = r.take(&mut p, "ProjectIds") {
                match ids.get_ref().as_array().and_then(|a| {
                    a.iter()
                        .map(|i| i.get_ref().as_integer()?.as_str().parse::<u64>().ok())
                        .collect::<Option<Vec<u64>>>()
                }) {
                    Some(list) => rule.project_ids = list,
                    None => r.type_error(&p, "ProjectIds", ids, "a list of project ids"),
                }
            }
            rule.task_roles = r.string_list(&mut p, "TaskRoles").unwrap_or_default();
            rule.subnets = r.string_list(&mut p, "Subnets").unwrap_or_default();
            rule.security_groups = r.string_list(&mut p, "SecurityGroups").unwrap_or_default();
            rule.keep_failed_for = r.duration(&mut p, "KeepFailedFor", false);
            rule.max_concurrent_jobs = r
                .integer(&mut p, "MaxConcurrentJobs", 1..=100_000)
                .map(|n| n as u32);
            rule.slot_wait = r.duration(&mut p, "SlotWait", false);
            r.finish(&p);
            if rule.name.is_empty() {
                r.error(
                    span,
                    "[[Fargate.ProjectRule]]".into(),
                    "needs Name (shown in the job log when it refuses)".into(),
                );
                continue;
            }
            let label = format!("[[Fargate.ProjectRule]] {:?}", rule.name);
            let key = format!("shape.project_rules.{}", rule.name);
            places.insert(format!("{key}.task_roles"), (label.clone(), span.clone()));
            places.insert(
                format!("{key}.keep_failed_for"),
                (label.clone(), span.clone()),
            );
            places.insert(key, (label, span));
            policy.project_rules.push(rule);
        }
    }
    if let Some(v) = r.take(t, "MaxKeepFailedFor") {
        places.insert(
            "shape.max_keep_failed_for".into(),
            (t.label("MaxKeepFailedFor"), v.span()),
        );
    }
    if let Some(d) = r.duration(t, "MaxKeepFailedFor", false) {
        policy.max_keep_failed_for = d;
    }
    for problem in policy.problems() {
        let (label, span) = places
            .get(&problem.key)
            .cloned()
            .unwrap_or_else(|| (t.label(&problem.key), 0..0));
        let mut message = problem.message.clone();
        if let Some(hint) = &problem.hint {
            message.push_str(&format!(" ({hint})"));
        }
        r.error(span, label, message);
    }
}

/// `Default<What>`, `Max<What>` and `<What>OverMax` of `[Fargate.TaskShape]`.
fn read_limit(
    r: &mut Reader<'_>,
    s: &mut Table<'_, '_>,
    places: &mut Places,
    field: &str,
    what: &'static str,
    range: std::ops::RangeInclusive<i64>,
) -> SizeLimit {
    let (default_key, max_key, over_key): (&'static str, &'static str, &'static str) = match what {
        "CPU" => ("DefaultCPU", "MaxCPU", "CPUOverMax"),
        "Memory" => ("DefaultMemory", "MaxMemory", "MemoryOverMax"),
        _ => (
            "DefaultEphemeralStorage",
            "MaxEphemeralStorage",
            "EphemeralStorageOverMax",
        ),
    };
    for (key, which) in [(default_key, "default"), (max_key, "max")] {
        if let Some(v) = r.take(s, key) {
            places.insert(format!("shape.{field}.{which}"), (s.label(key), v.span()));
        }
    }
    let default = r.integer(s, default_key, range.clone()).map(|n| n as u32);
    let max = r.integer(s, max_key, range).map(|n| n as u32);
    let over_max = match r.take(s, over_key) {
        None => OverMax::default(),
        Some(v) => match v.get_ref().as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("clamp") => OverMax::Clamp,
            Some("refuse") => OverMax::Refuse,
            _ => {
                r.type_error(s, over_key, v, "\"clamp\" or \"refuse\"");
                OverMax::default()
            }
        },
    };
    SizeLimit::new(default, max, over_max)
}

/// The tables of an array of tables `[[Fargate.<key>]]`, with their spans.
fn tables<'a, 'i>(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    key: &str,
    v: &'a Spanned<DeValue<'i>>,
) -> Vec<(&'a toml::de::DeTable<'i>, Range<usize>)> {
    let want = format!("a list of tables ([[Fargate.{key}]])");
    let Some(array) = v.get_ref().as_array() else {
        r.type_error(t, key, v, &want);
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in array.iter() {
        match item.get_ref().as_table() {
            Some(table) => out.push((table, item.span())),
            None => r.type_error(t, key, item, &want),
        }
    }
    out
}

#[cfg(test)]
mod tests;
