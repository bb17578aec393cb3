#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fargate_core::options::OverMax;
use fargate_core::{ConfigError, Error, ErrorKind};

use crate::config::LoadedConfig;

const BASE: &str = r#"[Fargate]
  Cluster = "ci"
  Subnet = "subnet-1"
  SecurityGroup = "sg-1"
  TaskDefinition = "ci-coordinator:1"
"#;

fn parse(extra: &str) -> std::result::Result<LoadedConfig, ConfigError> {
    crate::config::parse(&format!("{BASE}{extra}"), "fargate.toml")
}

/// The error message of `extra` after [`BASE`] (`extra` starts on line 6).
fn errors_of(extra: &str) -> String {
    let err = Error::from(parse(extra).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    err.message().to_owned()
}

const FULL: &str = r#"  MaxKeepFailedFor = "1h"
[Fargate.TaskShape]
  DefaultCPU = 512
  MaxCPU = 4096
  CPUOverMax = "refuse"
  DefaultMemory = 1024
  MaxMemory = 16384
  MaxEphemeralStorage = 100
  EphemeralStorageOverMax = "Clamp"
  DefaultCapacity = "spot"
  InterruptionMemory = "2h"
  AllowedCPUArchitectures = ["arm64", "X86_64"]
[[Fargate.CapacityProfile]]
  Name = "spot"
  Providers = ["FARGATE_SPOT"]
  Fallback = "on-demand"
[[Fargate.CapacityProfile]]
  Name = "on-demand"
  Providers = ["FARGATE"]
[[Fargate.ProjectRule]]
  Name = "deploy"
  Projects = ["infra/*"]
  ProjectIds = [42]
  TaskRoles = ["arn:aws:iam::123456789012:role/ci-deploy"]
  Subnets = ["subnet-private"]
  SecurityGroups = ["sg-deploy"]
  KeepFailedFor = "45m"
  MaxConcurrentJobs = 3
  SlotWait = "20m"
"#;

#[test]
fn every_shape_key_is_read() {
    let loaded = parse(FULL).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = &loaded.config.options.shape;
    assert_eq!(p.cpu_architectures, ["ARM64", "X86_64"]);
    assert_eq!((p.cpu.default, p.cpu.max), (Some(512), Some(4096)));
    assert_eq!(p.cpu.over_max, OverMax::Refuse);
    assert_eq!((p.memory.default, p.memory.max), (Some(1024), Some(16384)));
    assert_eq!(p.memory.over_max, OverMax::Clamp);
    assert_eq!(p.ephemeral_storage.max, Some(100));
    assert_eq!(p.default_capacity.as_deref(), Some("spot"));
    assert_eq!(p.interruption_memory, Duration::from_secs(7200));
    assert_eq!(p.capacity_profiles.len(), 2);
    assert_eq!(
        p.capacity_profiles[0].fallback.as_deref(),
        Some("on-demand")
    );
    assert_eq!(p.capacity_profiles[1].providers[0].name, "FARGATE");
    let rule = &p.project_rules[0];
    assert_eq!(rule.name, "deploy");
    assert_eq!(rule.projects, ["infra/*"]);
    assert_eq!(rule.project_ids, [42]);
    assert_eq!(
        rule.task_roles,
        ["arn:aws:iam::123456789012:role/ci-deploy"]
    );
    assert_eq!(rule.subnets, ["subnet-private"]);
    assert_eq!(rule.security_groups, ["sg-deploy"]);
    assert_eq!(rule.keep_failed_for, Some(Duration::from_secs(2700)));
    assert_eq!(rule.max_concurrent_jobs, Some(3));
    assert_eq!(rule.slot_wait, Some(Duration::from_secs(1200)));
    // A rule may only limit its projects' concurrent jobs.
    let only_limit = parse(
        "[[Fargate.ProjectRule]]\n  Name = \"heavy\"\n  Projects = [\"data/*\"]\n  MaxConcurrentJobs = 2\n",
    )
    .unwrap();
    assert!(only_limit.warnings.is_empty(), "{:?}", only_limit.warnings);
    let limit = only_limit
        .config
        .options
        .shape
        .concurrency_limit(Some("data/etl"), None)
        .unwrap();
    assert_eq!((limit.limit, limit.rule.as_str()), (2, "heavy"));
    assert_eq!(limit.wait, fargate_core::options::DEFAULT_SLOT_WAIT);
    let zero = parse(
        "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  Projects = [\"g/p\"]\n  MaxConcurrentJobs = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(zero.contains("MaxConcurrentJobs"), "{zero}");
    assert_eq!(p.max_keep_failed_for, Duration::from_secs(3600));
    // A rule may grant nothing but keeping failed jobs' tasks.
    let only_keep = parse(
        "[[Fargate.ProjectRule]]\n  Name = \"debug\"\n  ProjectIds = [7]\n  KeepFailedFor = 1800\n",
    )
    .unwrap();
    let p = &only_keep.config.options.shape;
    assert_eq!(
        p.keep_failed_for(None, Some(7)),
        Some((Duration::from_secs(1800), "debug"))
    );
    assert_eq!(p.max_keep_failed_for, Duration::from_secs(7200), "default");
}

#[test]
fn without_shape_keys_jobs_may_change_nothing() {
    let p = parse("").unwrap().config.options.shape;
    let mut expected = fargate_core::options::ShapePolicy::default();
    expected.sizes = Some(fargate_aws::fargate_sizes());
    assert_eq!(p, expected, "Fargate's sizes, no grant");
}

#[test]
fn each_bad_value_names_key_and_line() {
    for (extra, want) in [
        (
            "[Fargate.TaskShape]\n  MaxCPU = 100\n",
            "fargate.toml:7: [Fargate.TaskShape] MaxCPU = 100 must be an integer from 256 to 16384",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultCPU = \"1 vCPU\"\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultCPU = \"1 vCPU\" must be an integer",
        ),
        (
            "[Fargate.TaskShape]\n  MaxMemory = 200000\n",
            "fargate.toml:7: [Fargate.TaskShape] MaxMemory = 200000 must be an integer from 512 to 122880",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultMemory = 100\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultMemory = 100 must be an integer from 512 to 122880",
        ),
        (
            "[Fargate.TaskShape]\n  MaxEphemeralStorage = 20\n",
            "fargate.toml:7: [Fargate.TaskShape] MaxEphemeralStorage = 20 must be an integer from 21 to 200",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultEphemeralStorage = 500\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultEphemeralStorage = 500 must be an integer from 21 to 200",
        ),
        (
            "[Fargate.TaskShape]\n  MemoryOverMax = \"warn\"\n",
            "fargate.toml:7: [Fargate.TaskShape] MemoryOverMax = \"warn\" must be \"clamp\" or \"refuse\"",
        ),
        (
            "[Fargate.TaskShape]\n  CPUOverMax = 1\n",
            "fargate.toml:7: [Fargate.TaskShape] CPUOverMax = 1 must be \"clamp\" or \"refuse\"",
        ),
        (
            "[Fargate.TaskShape]\n  EphemeralStorageOverMax = \"\"\n",
            "fargate.toml:7: [Fargate.TaskShape] EphemeralStorageOverMax = \"\" must be \"clamp\" or \"refuse\"",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultCapacity = \"\"\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultCapacity = \"\" must be the name of a capacity profile",
        ),
        (
            "[Fargate.TaskShape]\n  InterruptionMemory = \"soon\"\n",
            "fargate.toml:7: [Fargate.TaskShape] InterruptionMemory = \"soon\" must be a duration",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultCPU = 4096\n  MaxCPU = 1024\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultCPU = 4096 is above the maximum 1024",
        ),
        (
            "[Fargate.TaskShape]\n  DefaultCapacity = \"spot\"\n",
            "fargate.toml:7: [Fargate.TaskShape] DefaultCapacity names \"spot\", which is not a capacity profile",
        ),
        (
            "[[Fargate.CapacityProfile]]\n  Providers = [\"FARGATE\"]\n",
            "fargate.toml:6: [[Fargate.CapacityProfile]] needs Name",
        ),
        (
            "[[Fargate.CapacityProfile]]\n  Name = \"spot\"\n",
            "fargate.toml:6: [[Fargate.CapacityProfile]] \"spot\" needs at least one provider with a weight above 0",
        ),
        (
            "[[Fargate.CapacityProfile]]\n  Name = \"spot\"\n  Providers = [\"\"]\n",
            "fargate.toml:8: [Fargate.CapacityProfile] Providers = [...] must be a list of non-empty strings",
        ),
        (
            "[[Fargate.CapacityProfile]]\n  Name = \"spot\"\n  Providers = [\"FARGATE_SPOT\"]\n  Fallback = \"od\"\n",
            "fargate.toml:6: [[Fargate.CapacityProfile]] \"spot\" names \"od\", which is not a capacity profile",
        ),
        (
            "[[Fargate.CapacityProfile]]\n  Name = \"a\"\n  Providers = [\"FARGATE\"]\n  Fallback = \"a\"\n",
            "fargate.toml:6: [[Fargate.CapacityProfile]] \"a\" makes a loop of fallbacks",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Projects = [\"g/p\"]\n  TaskRoles = [\"arn:aws:iam::1:role/r\"]\n",
            "fargate.toml:6: [[Fargate.ProjectRule]] needs Name",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  TaskRoles = [\"arn:aws:iam::1:role/r\"]\n",
            "fargate.toml:6: [[Fargate.ProjectRule]] \"r\" applies to no project",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  Projects = [\"g/p\"]\n",
            "fargate.toml:6: [[Fargate.ProjectRule]] \"r\" grants nothing",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  Projects = [\"g/p\"]\n  TaskRoles = [\"deploy\"]\n",
            "fargate.toml:6: [[Fargate.ProjectRule]] \"r\" \"deploy\" is not an IAM role ARN",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  ProjectIds = [\"x\"]\n  Subnets = [\"s\"]\n",
            "fargate.toml:8: [Fargate.ProjectRule] ProjectIds = [...] must be a list of project ids",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  Projects = [\"g/p\"]\n  SecurityGroups = \"sg-1\"\n",
            "fargate.toml:9: [Fargate.ProjectRule] SecurityGroups = \"sg-1\" must be a list of non-empty strings",
        ),
        (
            "[[Fargate.ProjectRule]]\n  Name = \"r\"\n  Projects = [\"g/p\"]\n  KeepFailedFor = \"0s\"\n",
            "fargate.toml:9: [Fargate.ProjectRule] KeepFailedFor = \"0s\" must be a positive duration",
        ),
        (
            "  MaxKeepFailedFor = \"soon\"\n",
            "fargate.toml:6: [Fargate] MaxKeepFailedFor = \"soon\" must be a positive duration",
        ),
    ] {
        let msg = errors_of(extra);
        assert!(msg.contains(want), "{extra}\n--- got:\n{msg}");
    }
}

#[test]
fn unknown_shape_keys_are_warnings_with_the_closest_key() {
    let loaded = parse("[Fargate.TaskShape]\n  MaxCPUs = 1024\n").unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "fargate.toml:7: unknown key [Fargate.TaskShape] MaxCPUs is ignored (did you mean [Fargate.TaskShape] MaxCPU?)"
        ]
    );
}

#[test]
fn only_known_cpu_architectures() {
    let shown = errors_of("[Fargate.TaskShape]\n  AllowedCPUArchitectures = [\"mips\"]\n");
    assert!(
        shown.contains("AllowedCPUArchitectures") && shown.contains("\"X86_64\" and \"ARM64\""),
        "{shown}"
    );
}
