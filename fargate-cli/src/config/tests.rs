#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fargate_aws::{Capacity, CapacityProviderItem};
use fargate_core::options::SshLogin;
use fargate_core::{KeyType, RetryPolicy};

use super::*;

const MINIMAL: &str = r#"
[Fargate]
  Cluster = "ci"
  Subnet = "subnet-1"
  SecurityGroup = "sg-1"
  TaskDefinition = "ci-coordinator:1"
"#;

fn parse(text: &str) -> std::result::Result<LoadedConfig, ConfigError> {
    super::parse(text, "fargate.toml")
}

fn errors_of(text: &str) -> String {
    let err = Error::from(parse(text).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    err.message().to_owned()
}

#[test]
fn go_driver_reference_example_loads() {
    let loaded = parse(
        r#"
LogLevel = "info"
LogFormat = "text"
[Fargate]
  Cluster = "fargate"
  Region = "us-east-1"
  Subnet = "subnet-xxxxxxxx"
  SecurityGroup = "sg-xxxxxxxx"
  TaskDefinition = "fargateExecutor:1"
  EnablePublicIP = false
[TaskMetadata]
  Directory = "/etc/gitlab-runner/metadata"
[SSH]
  Username = "root"
"#,
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.log.level.as_deref(), Some("info"));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.ecs.cluster, "fargate");
    assert_eq!(c.ecs.region.as_deref(), Some("us-east-1"));
    assert_eq!(c.ecs.subnets, vec!["subnet-xxxxxxxx"]);
    assert_eq!(c.ecs.security_groups, vec!["sg-xxxxxxxx"]);
    assert_eq!(c.options.task.task_definition, "fargateExecutor:1");
    assert!(!c.ecs.assign_public_ip && !c.ecs.use_public_ip);
    assert_eq!(c.metadata_dir, PathBuf::from("/etc/gitlab-runner/metadata"));
    assert_eq!(c.options.ssh.username, "root");
    assert_eq!(c.options.ssh.port, 22);
}

#[test]
fn keys_match_case_insensitively_like_the_go_driver() {
    // Spelling used by aws-samples/cdk-fargate-gitlab-runner.
    let c = parse(
        r#"
loglevel = "debug"
[fargate]
  cluster = "c"
  region = "eu-west-1"
  subnet = "s"
  securityGroup = "sg"
  taskDefinition = "td"
  enablePublicIp = true
[taskmetadata]
  directory = "/m"
[ssh]
  username = "u"
  port = 2222
"#,
    )
    .unwrap()
    .config;
    assert_eq!(c.log.level.as_deref(), Some("debug"));
    assert_eq!(c.ecs.cluster, "c");
    assert_eq!(c.ecs.security_groups, vec!["sg"]);
    assert!(c.ecs.assign_public_ip);
    assert!(c.ecs.use_public_ip, "UsePublicIP follows EnablePublicIP");
    assert_eq!(
        c.options.ssh.host_key_source,
        fargate_core::options::HostKeySource::Announced,
        "through a public IP the host key comes from the task's log"
    );
    assert_eq!(c.metadata_dir, PathBuf::from("/m"));
    assert_eq!(
        (c.options.ssh.username.as_str(), c.options.ssh.port),
        ("u", 2222)
    );
}

#[test]
fn defaults_of_every_key() {
    let c = parse(MINIMAL).unwrap().config;
    assert_eq!(c.log.level, None);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.file, None);
    assert_eq!(c.metadata_dir, PathBuf::new());
    assert_eq!(c.options.ssh, SshLogin::default());
    assert_eq!(c.ssh, Ssh2Config::default());
    assert_eq!(c.options.namespace, None);
    assert!(c.ecs.subnet_failover);
    assert_eq!(
        c.ecs.transport.max_attempts, 2,
        "the SDK keeps one quick retry"
    );
    assert_eq!(c.options.ssh.username, "root");
    assert_eq!(c.options.ssh.key_type, KeyType::Ed25519);
    assert_eq!(c.options.retry, RetryPolicy::default());
    assert_eq!(c.ecs.capacity, Capacity::Fargate);
    assert_eq!(c.options.task.container_name, "ci-coordinator");
    assert_eq!(c.options.task.platform_version, None);
    assert!(c.ecs.tags.is_empty() && c.options.task.allowed_task_definitions.is_empty());
    assert!(c.options.task.allow_platform_version_override);
    assert!(!c.ecs.enable_execute_command);
    assert!(!c.ecs.propagate_task_definition_tags && !c.ecs.enable_ecs_managed_tags);
    assert_eq!(
        c.options.timeouts.max_task_lifetime,
        Duration::from_secs(86_400)
    );
    assert_eq!(c.options.timeouts.ready, Duration::from_secs(600));
    assert_eq!(c.options.timeouts.stop, Duration::from_secs(60));
    assert_eq!(c.options.timeouts.watch, Duration::from_secs(30));
}

#[test]
fn every_new_key() {
    let c = parse(
        r#"
LogFormat = "JSON"
LogFile = "/var/log/fargate.log"
BuildsDir = "/builds"
CacheDir = "/cache"
[Fargate]
  Cluster = "c"
  Subnet = "s1"
  Subnets = ["s2", "s1", "s3"]
  SecurityGroups = ["sg1", "sg2"]
  TaskDefinition = "td"
  EnablePublicIP = true
  UsePublicIP = false
  PlatformVersion = "1.4.0"
  ContainerName = "build"
  AllowedTaskDefinitions = ["ci-*", "arn:aws:ecs:*:task-definition/ci-*"]
  AllowPlatformVersionOverride = false
  EnableExecuteCommand = true
  PropagateTags = "task_definition"
  EnableECSManagedTags = true
  MaxTaskLifetime = "6h"
  ReadyTimeout = "15m"
  PollInitialInterval = "500ms"
  PollMaxInterval = 5
  StopTimeout = "2m"
  WatchInterval = "45s"
  [Fargate.Tags]
    team = "platform"
    "cost-center" = "42"
  [[Fargate.CapacityProviderStrategy]]
    Provider = "FARGATE_SPOT"
    Weight = 3
  [[Fargate.CapacityProviderStrategy]]
    Provider = "FARGATE"
    Weight = 1
    Base = 1
[SSH]
  KeyType = "rsa-4096"
  ConnectTimeout = "5s"
  KeepaliveInterval = 0
  ProbeInterval = "100ms"
[Retry]
  MaxAttempts = 3
  InitialBackoff = "200ms"
  MaxBackoff = "4s"
  MaxElapsed = "30s"
"#,
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = c.config;
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.file, Some(PathBuf::from("/var/log/fargate.log")));
    assert_eq!(c.options.builds_dir.as_deref(), Some("/builds"));
    assert_eq!(c.options.cache_dir.as_deref(), Some("/cache"));
    assert_eq!(c.ecs.subnets, vec!["s1", "s2", "s3"]);
    assert_eq!(c.ecs.security_groups, vec!["sg1", "sg2"]);
    assert!(c.ecs.assign_public_ip && !c.ecs.use_public_ip);
    assert_eq!(
        c.options.ssh.host_key_source,
        fargate_core::options::HostKeySource::FirstUse
    );
    assert_eq!(c.options.task.platform_version.as_deref(), Some("1.4.0"));
    assert_eq!(c.options.task.container_name, "build");
    assert_eq!(c.options.task.allowed_task_definitions.len(), 2);
    assert!(!c.options.task.allow_platform_version_override);
    assert!(c.ecs.enable_execute_command);
    assert!(c.ecs.propagate_task_definition_tags && c.ecs.enable_ecs_managed_tags);
    assert_eq!(
        c.options.timeouts.max_task_lifetime,
        Duration::from_secs(6 * 3600)
    );
    assert_eq!(c.options.timeouts.ready, Duration::from_secs(900));
    assert_eq!(c.options.timeouts.poll_initial, Duration::from_millis(500));
    assert_eq!(c.options.timeouts.poll_max, Duration::from_secs(5));
    assert_eq!(c.options.timeouts.stop, Duration::from_secs(120));
    assert_eq!(c.options.timeouts.watch, Duration::from_secs(45));
    assert_eq!(c.ecs.tags.get("team").map(String::as_str), Some("platform"));
    assert_eq!(
        c.ecs.tags.get("cost-center").map(String::as_str),
        Some("42")
    );
    assert_eq!(
        c.ecs.capacity,
        Capacity::Strategy(vec![
            CapacityProviderItem::new("FARGATE_SPOT", 3, 0),
            CapacityProviderItem::new("FARGATE", 1, 1),
        ])
    );
    assert_eq!(c.options.ssh.key_type, KeyType::Rsa { bits: 4096 });
    assert_eq!(c.ssh.connect_timeout(), Duration::from_secs(5));
    assert_eq!(c.ssh.keepalive_interval(), Duration::ZERO);
    assert_eq!(c.options.ssh.probe_interval, Duration::from_millis(100));
    assert_eq!(c.options.retry.max_attempts, 3);
    assert_eq!(c.options.retry.initial_backoff, Duration::from_millis(200));
    assert_eq!(c.options.retry.max_backoff, Duration::from_secs(4));
    assert_eq!(c.options.retry.max_elapsed, Duration::from_secs(30));
}

#[test]
fn a_dynamodb_table_switches_to_fleet_mode() {
    let c = parse("[Fargate]\nCluster = \"c\"\nSubnet = \"s\"\nSecurityGroup = \"g\"\nTaskDefinition = \"td\"\n[TaskMetadata]\nDynamoDBTable = \"fargate-fleet\"\n")
        .unwrap()
        .config;
    assert_eq!(c.dynamodb_table.as_deref(), Some("fargate-fleet"));
    let c = parse("[Fargate]\nCluster = \"c\"\nSubnet = \"s\"\nSecurityGroup = \"g\"\nTaskDefinition = \"td\"\n")
        .unwrap()
        .config;
    assert_eq!(c.dynamodb_table, None, "the file store stays the default");
    assert_eq!(c.host_name, None, "the system's host name is the default");
}

#[test]
fn a_host_name_names_this_host_in_the_fleet() {
    let c = parse("[Fargate]\nCluster = \"c\"\nSubnet = \"s\"\nSecurityGroup = \"g\"\nTaskDefinition = \"td\"\n[TaskMetadata]\nDynamoDBTable = \"fargate-fleet\"\nHostName = \"runner-02.eu\"\n")
        .unwrap()
        .config;
    assert_eq!(c.host_name.as_deref(), Some("runner-02.eu"));
}

#[test]
fn missing_required_keys_are_named() {
    let msg = errors_of("[SSH]\nUsername = \"root\"\n");
    assert!(msg.contains("[Fargate] Cluster is required"), "{msg}");
    assert!(
        msg.contains("[Fargate] TaskDefinition is required"),
        "{msg}"
    );
    assert!(msg.contains("[Fargate] Subnet is required"), "{msg}");
    assert!(msg.contains("[Fargate] SecurityGroup is required"), "{msg}");
    let msg = errors_of("[Fargate]\nCluster = \"  \"\nSubnet = \"s\"\nTaskDefinition = \"t\"\n");
    assert!(
        msg.contains("fargate.toml:2: [Fargate] Cluster is required"),
        "{msg}"
    );
}

#[test]
fn each_bad_value_names_key_value_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[SSH]\nPort = 0",
            "fargate.toml:8: [SSH] Port = 0 must be an integer from 1 to 65535",
        ),
        (
            "[SSH]\nPort = 70000",
            "[SSH] Port = 70000 must be an integer from 1 to 65535",
        ),
        (
            "[SSH]\nPort = \"22\"",
            "[SSH] Port = \"22\" must be an integer",
        ),
        (
            "[SSH]\nUsername = \"\"",
            "[SSH] Username = \"\" must be a non-empty string",
        ),
        (
            "[SSH]\nKeyType = \"dsa\"",
            "[SSH] KeyType = \"dsa\" must be \"ed25519\", \"rsa-3072\" or \"rsa-4096\"",
        ),
        (
            "[SSH]\nConnectTimeout = 0",
            "[SSH] ConnectTimeout = 0 must be a positive duration",
        ),
        (
            "[SSH]\nConnectTimeout = \"soon\"",
            "[SSH] ConnectTimeout = \"soon\" must be a positive duration",
        ),
        (
            "LogLevel = \"loud\"",
            "LogLevel = \"loud\" must be one of error, warn, info, debug, trace",
        ),
        (
            "LogFormat = \"xml\"",
            "LogFormat = \"xml\" must be \"text\" or \"json\"",
        ),
        (
            "[Retry]\nMaxAttempts = 0",
            "[Retry] MaxAttempts = 0 must be an integer from 1 to 100",
        ),
        (
            "[TaskMetadata]\nDirectory = 5",
            "[TaskMetadata] Directory = 5 must be a string",
        ),
        (
            "[TaskMetadata]\nDynamoDBTable = \"no spaces\"",
            "[TaskMetadata] DynamoDBTable = \"no spaces\" must be a DynamoDB table name",
        ),
        (
            "[TaskMetadata]\nHostName = \"a/b\"",
            "[TaskMetadata] HostName = \"a/b\" must be 1-63 characters",
        ),
        (
            "[TaskMetadata]\nHostName = \"\"",
            "[TaskMetadata] HostName = \"\" must be 1-63 characters",
        ),
        (
            "[Other]\nx = 1\n[Fargate.Tags]\nteam = 1",
            "[Fargate.Tags] \"team\" = 1 must be a string",
        ),
    ];
    for (extra, expected) in cases {
        let text = if extra.starts_with('[') {
            format!("{MINIMAL}{extra}\n")
        } else {
            format!("{extra}\n{MINIMAL}")
        };
        let msg = errors_of(&text);
        assert!(msg.contains(expected), "{extra}\n=> {msg}");
    }
}

#[test]
fn fargate_rules_spanning_keys() {
    let text = format!(
        "{MINIMAL}  LaunchType = \"FARGATE\"\n[[Fargate.CapacityProviderStrategy]]\nProvider = \"FARGATE\"\n"
    );
    let msg = errors_of(&text);
    assert!(msg.contains("fargate.toml:7: [Fargate] LaunchType and [[Fargate.CapacityProviderStrategy]] exclude each other"), "{msg}");

    let text = format!("{MINIMAL}  EnablePublicIP = false\n  UsePublicIP = true\n");
    let msg = errors_of(&text);
    assert!(
        msg.contains("fargate.toml:8: [Fargate] UsePublicIP = true needs EnablePublicIP = true"),
        "{msg}"
    );

    let text = format!("{MINIMAL}  PropagateTags = \"SERVICE\"\n");
    let msg = errors_of(&text);
    assert!(
        msg.contains("[Fargate] PropagateTags = \"SERVICE\" does not apply")
            && msg.contains("use \"TASK_DEFINITION\""),
        "{msg}"
    );
    let text = format!("{MINIMAL}  PropagateTags = \"TAGS\"\n");
    assert!(errors_of(&text).contains("must be \"TASK_DEFINITION\" or \"NONE\""));
    let text = format!("{MINIMAL}  MaxTaskLifetime = 0\n");
    assert!(errors_of(&text).contains("[Fargate] MaxTaskLifetime"));

    let text = format!("{MINIMAL}  LaunchType = \"SPOT\"\n");
    assert!(errors_of(&text).contains("[Fargate] LaunchType = \"SPOT\" must be \"FARGATE\""));

    let text = format!("{MINIMAL}[[Fargate.CapacityProviderStrategy]]\nWeight = 1\n");
    assert!(errors_of(&text).contains("needs Provider"));

    let text = format!(
        "{MINIMAL}[[Fargate.CapacityProviderStrategy]]\nProvider = \"FARGATE\"\nWeight = 0\n"
    );
    assert!(errors_of(&text).contains("at least one Weight above 0"));

    let text = format!("{MINIMAL}  Subnets = [\"ok\", \"\"]\n");
    assert!(
        errors_of(&text).contains("[Fargate] Subnets = [...] must be a list of non-empty strings")
    );

    let text = format!("{MINIMAL}  ContainerName = \"\"\n");
    assert!(errors_of(&text).contains("[Fargate] ContainerName = \"\" must be a non-empty string"));
}

#[test]
fn a_key_given_twice_in_two_spellings_is_an_error() {
    let text = format!("{MINIMAL}  cluster = \"other\"\n");
    let msg = errors_of(&text);
    assert!(
        msg.contains("[Fargate] cluster is given twice (also as \"Cluster\""),
        "{msg}"
    );
}

#[test]
fn unknown_keys_warn_with_the_closest_known_key() {
    let text =
        format!("{MINIMAL}  Clustr = \"x\"\n  Zebra = 1\n[SSH]\n  Usrname = \"x\"\n[Nonsense]\n");
    let loaded = parse(&text).unwrap();
    let w = loaded.warnings.join("\n");
    assert!(w.contains("fargate.toml:7: unknown key [Fargate] Clustr is ignored (did you mean [Fargate] Cluster?)"), "{w}");
    assert!(
        w.contains("unknown key [Fargate] Zebra is ignored\n")
            || w.contains("unknown key [Fargate] Zebra is ignored"),
        "{w}"
    );
    assert!(!w.contains("Zebra is ignored (did you mean"), "{w}");
    assert!(
        w.contains("[SSH] Usrname is ignored (did you mean [SSH] Username?)"),
        "{w}"
    );
    assert!(w.contains("unknown key Nonsense is ignored"), "{w}");
}

#[test]
fn invalid_toml_names_the_line() {
    let text = "[Fargate]\nCluster = \"unterminated\n";
    let msg = errors_of(text);
    assert!(
        msg.starts_with("invalid configuration:\n  fargate.toml:2: not valid TOML"),
        "{msg}"
    );
    let err = parse(text).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(2));
}

#[test]
fn load_reports_a_missing_file_with_a_hint() {
    let err = load(Path::new("/nonexistent/fargate.toml")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("/nonexistent/fargate.toml"));
    assert!(err.hint().unwrap().contains("--config"));
}

#[test]
fn rules_of_the_owners_are_reported_under_file_keys() {
    let keys: Vec<String> = rules(&FileConfig::default())
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(
        keys,
        [
            "[Fargate] Cluster",
            "[Fargate] Subnet",
            "[Fargate] SecurityGroup",
            "[Fargate] TaskDefinition"
        ]
    );
    assert!(rules(&parse(MINIMAL).unwrap().config).is_empty());
}

#[test]
fn every_problem_is_typed_with_key_line_and_hint() {
    let err = parse("[Fargate]\nCluster = \"ci\"\nTaskDefinition = \"t\"\n").unwrap_err();
    assert_eq!(err.origin.as_deref(), Some("fargate.toml"));
    let found: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|p| (p.key.as_str(), p.line))
        .collect();
    assert_eq!(
        found,
        [
            ("[Fargate] Subnet", Some(1)),
            ("[Fargate] SecurityGroup", Some(1))
        ]
    );
    assert!(err.problems.iter().all(|p| p.hint.is_some()));
    let text = err.to_string();
    assert!(
        text.contains("fargate.toml:1: [Fargate] SecurityGroup is required"),
        "{text}"
    );
    assert!(text.contains("\n    hint: "), "{text}");
    // Reading problems are all listed too, not just the first.
    let err = parse(&format!("{MINIMAL}[SSH]\nPort = 0\nKeyType = \"dsa\"\n")).unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert_eq!(err.problems[1].line, Some(9));
}

#[test]
fn the_annotated_sample_loads_without_problems_or_warnings() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fargate.toml");
    let loaded = load(&sample).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn ecs_rules_are_checked_at_load_under_file_keys() {
    let text = format!("{MINIMAL}[Fargate.Tags]\n  \"aws:team\" = \"ci\"\n  team = \"bad#\"\n");
    let err = parse(&text).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.problems.len(), 2, "{shown}");
    assert!(
        shown.contains(
            "fargate.toml:7: [Fargate] Tags are invalid: tag key \"aws:team\" uses the reserved `aws:` prefix"
        ),
        "{shown}"
    );
    assert!(shown.contains("hint: ECS tags:"), "{shown}");
}

#[test]
fn images_keys_are_read_and_checked_under_their_names() {
    let c = parse(MINIMAL).unwrap().config;
    assert!(
        !c.options.images.enabled(),
        "images are disabled by default"
    );
    let text = format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"registry.example.com/ci/*\"]\n  AllowedServices = [\"postgres:*\"]\n  MaxServices = 2\n  JobSSHPort = 2022\n  BundlePath = \"/opt/b\"\n  DefaultBuildsDir = \"/work\"\n  UnusedAfter = \"48h\"\n  MaxDerivedFamilies = 50\n  ServiceSecrets = \"secrets-manager\"\n"
    );
    let images = parse(&text).unwrap().config.options.images;
    assert_eq!(images.allowed_images, ["registry.example.com/ci/*"]);
    assert_eq!(images.allowed_services, ["postgres:*"]);
    assert_eq!(images.max_services, 2);
    assert_eq!(images.job_ssh_port, 2022);
    assert_eq!(images.bundle_source, "/opt/b");
    assert_eq!(images.default_builds_dir, "/work");
    assert_eq!(images.unused_after, Duration::from_secs(48 * 3600));
    assert_eq!(images.max_derived_families, 50);
    assert_eq!(images.secrets, fargate_core::options::SecretPolicy::Store);
    assert_eq!(
        parse(&format!(
            "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n"
        ))
        .unwrap()
        .config
        .options
        .images
        .secrets,
        fargate_core::options::SecretPolicy::Refuse,
        "secrets are refused by default"
    );
    let shown = errors_of(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n  ServiceSecrets = \"plain\"\n"
    ));
    assert!(
        shown.contains("ServiceSecrets = \"plain\" must be \"refuse\" or \"secrets-manager\""),
        "{shown}"
    );

    let shown = errors_of(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n  MaxServices = 9\n"
    ));
    assert!(
        shown.contains(
            "fargate.toml:9: [Fargate.Images] MaxServices = 9 must be an integer from 0 to 7"
        ),
        "{shown}"
    );
    let shown = errors_of(&format!(
        "{MINIMAL}[SSH]\n  Port = 2222\n[Fargate.Images]\n  AllowedImages = [\"*\"]\n"
    ));
    assert!(
        shown.contains(
            "[Fargate.Images] JobSSHPort must be from 1 to 65535 and differ from ssh.port"
        ),
        "{shown}"
    );
}

#[test]
fn private_registries_are_read_and_checked() {
    let images = parse(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n[[Fargate.Images.Registry]]\n  Host = \"Registry.GitLab.example.com\"\n  CredentialsArn = \"arn:aws:secretsmanager:eu-west-1:1:secret:r\"\n[[Fargate.Images.Registry]]\n  Host = \"docker.io\"\n  CredentialsArn = \"arn:aws:secretsmanager:eu-west-1:1:secret:hub\"\n"
    ))
    .unwrap()
    .config
    .options
    .images;
    assert_eq!(images.registries.len(), 2);
    assert_eq!(
        images
            .credentials_for("registry.gitlab.example.com/g/app:1")
            .map(|r| r.credentials.as_str()),
        Some("arn:aws:secretsmanager:eu-west-1:1:secret:r")
    );
    assert_eq!(
        images
            .credentials_for("rust:1.85")
            .map(|r| r.credentials.as_str()),
        Some("arn:aws:secretsmanager:eu-west-1:1:secret:hub")
    );
    assert!(images.credentials_for("gcr.io/x/y").is_none());
    let shown = errors_of(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n[[Fargate.Images.Registry]]\n  Host = \"registry.example.com\"\n"
    ));
    assert!(shown.contains("needs Host and CredentialsArn"), "{shown}");
    let shown = errors_of(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n[[Fargate.Images.Registry]]\n  Host = \"registry.example.com/group\"\n  CredentialsArn = \"arn\"\n"
    ));
    assert!(
        shown.contains("[[Fargate.Images.Registry]] Host")
            && shown.contains("is not a registry host"),
        "{shown}"
    );
}

#[test]
fn job_registry_credentials_are_read_and_checked() {
    let images = parse(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n  JobRegistryCredentials = [\"Registry.GitLab.example.com\"]\n"
    ))
    .unwrap()
    .config
    .options
    .images;
    assert_eq!(
        images.job_registry_credentials,
        ["registry.gitlab.example.com"]
    );
    assert!(images.uses_job_login("registry.gitlab.example.com/g/app:1"));
    assert!(!images.uses_job_login("rust:1.85"));
    let shown = errors_of(&format!(
        "{MINIMAL}[Fargate.Images]\n  AllowedImages = [\"*\"]\n  JobRegistryCredentials = [\"registry.example.com/group\"]\n"
    ));
    assert!(
        shown.contains("[Fargate.Images] JobRegistryCredentials")
            && shown.contains("is not a registry host"),
        "{shown}"
    );
}

#[test]
fn the_warm_pool_is_read_and_checked_under_its_file_keys() {
    let loaded = parse(&format!(
        "{MINIMAL}[Fargate.WarmPool]\n  Size = 3\n  MaxIdleTime = \"5m\"\n  CPU = 1024\n  Memory = 2048\n  ClaimTimeout = 4\n"
    ))
    .unwrap();
    let pool = &loaded.config.options.pool;
    assert_eq!(
        (pool.size, pool.cpu, pool.memory),
        (3, Some(1024), Some(2048))
    );
    assert_eq!(pool.max_idle, Duration::from_secs(300));
    assert_eq!(pool.claim_timeout, Duration::from_secs(4));
    assert!(!parse(MINIMAL).unwrap().config.options.pool.enabled());
    // A size Fargate does not offer, named by its key and line; a pool too large.
    let err = parse(&format!(
        "{MINIMAL}[Fargate.WarmPool]\n  Size = 1\n  CPU = 1024\n  Memory = 512\n"
    ))
    .unwrap_err();
    assert_eq!(err.problems[0].key, "[Fargate.WarmPool] CPU", "{err}");
    assert_eq!(err.problems[0].line, Some(9), "{err}");
    let text = errors_of(&format!("{MINIMAL}[Fargate.WarmPool]\n  Size = 51\n"));
    assert!(text.contains("Size"), "{text}");
}

#[test]
fn the_host_key_source_is_read_and_checked() {
    use fargate_core::options::HostKeySource;
    let read = |extra: &str| {
        parse(&format!("{MINIMAL}{extra}"))
            .unwrap()
            .config
            .options
            .ssh
            .host_key_source
    };
    assert_eq!(read(""), HostKeySource::FirstUse);
    assert_eq!(
        read("[SSH]\n  HostKeySource = \"task-log\"\n"),
        HostKeySource::Announced
    );
    assert_eq!(
        read("  EnablePublicIP = true\n[SSH]\n  HostKeySource = \"first-use\"\n"),
        HostKeySource::FirstUse
    );
    let shown = errors_of(&format!("{MINIMAL}[SSH]\n  HostKeySource = \"tofu\"\n"));
    assert!(
        shown.contains("HostKeySource = \"tofu\" must be \"task-log\" or \"first-use\""),
        "{shown}"
    );
}
