//! `fargate doctor` against moto: a correct setup passes; each broken item fails alone, with
//! its own fix line, and the exit code says so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder;
use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode, PortMapping};
use fargate_testkit::moto::{CONTAINER, Moto, MotoEcs};

struct Setup {
    cluster: String,
    task_definition: String,
    container: String,
    security_group: String,
}

fn toml(ecs: &MotoEcs, s: &Setup, metadata: &Path) -> String {
    format!(
        "Namespace = \"doctor\"\n\
         [Fargate]\n  Cluster = {:?}\n  Region = \"us-east-1\"\n  Subnets = {:?}\n  \
         SecurityGroup = {:?}\n  TaskDefinition = {:?}\n  ContainerName = {:?}\n\
         [TaskMetadata]\n  Directory = {:?}\n\
         [SSH]\n  Port = 22\n",
        s.cluster,
        ecs.subnets,
        s.security_group,
        s.task_definition,
        s.container,
        metadata.display().to_string(),
    )
}

/// A moto server with the fixture's cluster, a metadata directory (0700) and a security
/// group that lets SSH (tcp/22) in: what a correct setup needs.
struct Fixture {
    moto: Moto,
    ecs: MotoEcs,
    dir: tempfile::TempDir,
    metadata: PathBuf,
    ssh_group: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let moto = Moto::start();
        let ecs = moto.setup().await;
        let dir = tempfile::tempdir().unwrap();
        let metadata = dir.path().join("metadata");
        std::fs::create_dir(&metadata).unwrap();
        std::fs::set_permissions(&metadata, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ssh_group = moto.create_security_group("ci-ssh");
        moto.allow_tcp_in(&ssh_group, 22);
        Fixture {
            moto,
            ecs,
            dir,
            metadata,
            ssh_group,
        }
    }

    /// The correct setup with `task_definition`.
    fn setup(&self, task_definition: &str) -> Setup {
        Setup {
            cluster: self.ecs.cluster.clone(),
            task_definition: task_definition.to_owned(),
            container: CONTAINER.into(),
            security_group: self.ssh_group.clone(),
        }
    }

    /// The correct setup, with the fixture's task definition.
    fn good(&self) -> Setup {
        self.setup(&self.ecs.task_definition)
    }

    /// The configuration of `setup`.
    fn toml(&self, setup: &Setup) -> String {
        toml(&self.ecs, setup, &self.metadata)
    }

    /// Runs `fargate doctor`: its exit code and stdout.
    fn doctor(&self, config: &str) -> (i32, String) {
        self.fargate(config, &["doctor"])
    }

    /// Runs `fargate <args>` with `config`: its exit code and stdout.
    fn fargate(&self, config: &str, args: &[&str]) -> (i32, String) {
        fargate(&self.moto, self.dir.path(), config, args)
    }
}

/// A container named [`CONTAINER`] running the CI image, mapping `port` when given.
fn ci_container(port: Option<i32>) -> ContainerDefinition {
    let container = ContainerDefinition::builder()
        .name(CONTAINER)
        .image("registry.example/ci:latest")
        .memory(512);
    match port {
        Some(port) => container.port_mappings(PortMapping::builder().container_port(port).build()),
        None => container,
    }
    .build()
}

/// A request for a Fargate task definition `family` (awsvpc, 256 CPU units, 512 MiB) of one
/// [`ci_container`] mapping `port`.
fn fargate_definition(
    moto: &Moto,
    family: &str,
    port: Option<i32>,
) -> RegisterTaskDefinitionFluentBuilder {
    moto.ecs_client()
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(ci_container(port))
}

/// Sends `request`: the registered definition's ARN.
async fn register(request: RegisterTaskDefinitionFluentBuilder) -> String {
    request
        .send()
        .await
        .unwrap()
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_owned()
}

/// Doctor exited 1 with exactly one failed check.
#[track_caller]
fn assert_one_failure(code: i32, out: &str) {
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("FAIL").count(), 1, "{out}");
}

/// Runs `fargate <args>` with `config`: its exit code and stdout.
fn fargate(moto: &Moto, dir: &Path, config: &str, args: &[&str]) -> (i32, String) {
    let path = dir.join("fargate.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fargate"))
        .args(["--config".as_ref(), path.as_os_str()])
        .args(args)
        .env("AWS_ENDPOINT_URL", moto.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run fargate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n(stderr: {stderr})"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correct_setup_passes_and_each_broken_item_fails_with_its_fix() {
    fargate_testkit::require_fixture!(Moto);
    let fx = Fixture::start().await;
    let (dir, metadata) = (fx.dir.path(), &fx.metadata);

    let (code, out) = fx.doctor(&fx.toml(&fx.good()));
    assert_eq!(code, 0, "{out}");
    println!("{out}"); // shown with --nocapture: the README's sample
    assert!(out.contains("checks passed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for item in [
        "ok    credentials and region: region us-east-1",
        "ok    cluster ci: ACTIVE",
        "ok    capacity providers",
        "ok    task definition",
        "ok    subnets",
        "allows tcp/22 in from 0.0.0.0/0",
        "ok    metadata directory",
    ] {
        assert!(out.contains(item), "missing {item:?} in\n{out}");
    }

    // A task definition in bridge mode.
    let bridge = register(
        fx.moto
            .ecs_client()
            .register_task_definition()
            .family("bridged")
            .network_mode(NetworkMode::Bridge)
            .container_definitions(ci_container(None)),
    )
    .await;
    let closed_group = fx.moto.create_security_group("ci-closed");

    let broken: Vec<(&str, Setup, &str, &str)> = vec![
        (
            "missing cluster",
            Setup {
                cluster: "nope".into(),
                ..fx.good()
            },
            "FAIL  cluster nope: not found in this region",
            "fix: create it (aws ecs create-cluster --cluster-name nope)",
        ),
        (
            "wrong network mode",
            Setup {
                task_definition: bridge.clone(),
                ..fx.good()
            },
            "network mode bridge, not awsvpc",
            "fix: register a revision with \"networkMode\": \"awsvpc\"",
        ),
        (
            "missing container",
            Setup {
                container: "other".into(),
                ..fx.good()
            },
            "no container \"other\"",
            "fix: set [Fargate] ContainerName to the container that runs sshd",
        ),
        (
            "no rule for the SSH port",
            Setup {
                security_group: closed_group.clone(),
                ..fx.good()
            },
            "has no inbound rule for tcp/22",
            "fix: aws ec2 authorize-security-group-ingress --group-id",
        ),
    ];
    for (what, setup, problem, fix) in broken {
        let (code, out) = fx.doctor(&fx.toml(&setup));
        assert_eq!(code, 1, "{what}: {out}");
        assert_eq!(
            out.matches("FAIL").count(),
            1,
            "{what}: one failure only\n{out}"
        );
        assert!(out.contains(problem), "{what}: missing {problem:?}\n{out}");
        assert!(out.contains(fix), "{what}: missing {fix:?}\n{out}");
        assert!(out.contains("1 of "), "{what}: {out}");
        println!("{out}");
    }

    // A Spot strategy on a cluster that has only FARGATE.
    fx.moto
        .ecs_client()
        .create_cluster()
        .cluster_name("ondemand")
        .capacity_providers("FARGATE")
        .send()
        .await
        .unwrap();
    let spot = format!(
        "{}[[Fargate.CapacityProviderStrategy]]\n  Provider = \"FARGATE_SPOT\"\n",
        fx.toml(&Setup {
            cluster: "ondemand".into(),
            ..fx.good()
        })
    );
    let (code, out) = fx.doctor(&spot);
    assert_one_failure(code, &out);
    assert!(
        out.contains("FAIL  capacity providers: FARGATE_SPOT not associated with the cluster"),
        "{out}"
    );
    assert!(
        out.contains("fix: aws ecs put-cluster-capacity-providers --cluster ondemand"),
        "{out}"
    );

    // A metadata directory others may write to.
    std::fs::set_permissions(metadata, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out) = fx.doctor(&fx.toml(&fx.good()));
    assert_one_failure(code, &out);
    assert!(out.contains("FAIL  metadata directory"), "{out}");
    assert!(out.contains("&& chmod 700"), "{out}");
    std::fs::set_permissions(metadata, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A metrics file in a directory others may write to, then with a link planted there.
    let textfile = dir.join("textfile");
    std::fs::create_dir(&textfile).unwrap();
    let metrics = format!(
        "{}[Metrics]\n  File = {:?}\n",
        fx.toml(&fx.good()),
        textfile.join("fargate.prom").display().to_string()
    );
    let (code, out) = fx.doctor(&metrics);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok    metrics file"), "{out}");
    std::fs::set_permissions(&textfile, std::fs::Permissions::from_mode(0o775)).unwrap();
    let (code, out) = fx.doctor(&metrics);
    assert_one_failure(code, &out);
    assert!(out.contains("FAIL  metrics file"), "{out}");
    assert!(out.contains("writable by group or others"), "{out}");
    assert!(out.contains("fix: `chmod go-w"), "{out}");
    std::fs::set_permissions(&textfile, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", textfile.join("fargate.prom.state")).unwrap();
    let (code, out) = fx.doctor(&metrics);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  metrics file"), "{out}");
    assert!(out.contains("is a symbolic link"), "{out}");

    // Host keys from the task's log: the fixture's definition logs with awslogs; one that
    // does not fails with the fix.
    let task_log = |setup: &Setup| format!("{}  HostKeySource = \"task-log\"\n", fx.toml(setup));
    let (code, out) = fx.doctor(&task_log(&fx.good()));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    host keys from the log of container ci-coordinator: /ecs/ci job/ci-coordinator/<task id>"),
        "{out}"
    );
    let silent = register(fargate_definition(&fx.moto, "silent", None)).await;
    let (code, out) = fx.doctor(&task_log(&fx.setup(&silent)));
    assert_one_failure(code, &out);
    assert!(out.contains("does not log to CloudWatch Logs"), "{out}");
    assert!(
        out.contains("fix: give the container an awslogs log configuration"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_mode_runs_a_real_job_and_prints_its_summary() {
    use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
    fargate_testkit::require_fixture!(LocalFargate);
    // No visibility lag: the summary's figures come from a describe right after the task is
    // ready (the lag has its own e2e tests).
    let options = LocalFargateOptions {
        visibility_lag: std::time::Duration::ZERO,
        ..LocalFargateOptions::default()
    };
    let port = options.ssh_port;
    let fargate = LocalFargate::start(options).await;
    // The local Fargate's sshd listens on its own port: a task definition that maps it, and
    // a security group that lets it in.
    let td = register(fargate_definition(
        fargate.moto(),
        "doctor-job",
        Some(i32::from(port)),
    ))
    .await;
    let group = fargate.moto().create_security_group("ci-doctor");
    fargate.moto().allow_tcp_in(&group, port);
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata");
    let config = fargate
        .fargate_toml(&metadata)
        .lines()
        .map(|l| match l.trim_start() {
            t if t.starts_with("TaskDefinition") => format!("  TaskDefinition = {td:?}"),
            t if t.starts_with("SecurityGroups") => format!("  SecurityGroups = [{group:?}]"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("fargate.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fargate"))
        .args(["--config".as_ref(), path.as_os_str()])
        .args(["doctor", "--job"])
        .envs(fargate.driver_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok    smoke test (launch, SSH, `true`, stop): task ready in"),
        "{stdout}"
    );
    for line in [
        "is ready at",
        "summary: accepted",
        "estimated cost $",
        "stopped task",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in\n{stderr}");
    }
    assert!(fargate.running_tasks().await.is_empty(), "{stderr}");
}

/// Issue 27: a project rule that keeps failed jobs' tasks starts them with ECS Exec; doctor
/// checks what that needs (a task role, a platform version that has it) and names the
/// permissions it cannot check.
#[tokio::test(flavor = "multi_thread")]
async fn ecs_exec_for_kept_tasks_needs_a_task_role_and_platform_1_4() {
    fargate_testkit::require_fixture!(Moto);
    let fx = Fixture::start().await;
    let rule = "[[Fargate.ProjectRule]]\n  Name = \"debug\"\n  Projects = [\"app/*\"]\n  KeepFailedFor = \"30m\"\n";
    let name = "ECS Exec (shell into kept tasks)";

    // Without a rule that keeps tasks (nor EnableExecuteCommand), no such check.
    let (code, out) = fx.doctor(&fx.toml(&fx.good()));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(name), "{out}");

    // The fixture's task definition has no task role.
    let config = format!("{}{rule}", fx.toml(&fx.good()));
    let (code, out) = fx.doctor(&config);
    assert_one_failure(code, &out);
    assert!(
        out.contains(&format!("FAIL  {name}: task definition")),
        "{out}"
    );
    assert!(out.contains("has no task role"), "{out}");
    assert!(out.contains("ssmmessages:CreateControlChannel"), "{out}");

    // One with a task role passes, naming what the role must allow.
    let role = "arn:aws:iam::123456789012:role/fargate-ci-task";
    let with_role =
        register(fargate_definition(&fx.moto, "with-role", Some(22)).task_role_arn(role)).await;
    let config = format!("{}{rule}", fx.toml(&fx.setup(&with_role)));
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok    {name}: task role {role}: it must allow ssmmessages:"
        )),
        "{out}"
    );
    assert!(out.contains("ecs:ExecuteCommand"), "{out}");

    // A platform version without ECS Exec.
    let config = config.replace("[Fargate]\n", "[Fargate]\n  PlatformVersion = \"1.3.0\"\n");
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  {name}: platform version 1.3.0 has no ECS Exec"
        )),
        "{out}"
    );
    assert!(
        out.contains("fix: set [Fargate] PlatformVersion to 1.4.0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_init_creates_the_fleet_table_and_doctor_checks_it() {
    fargate_testkit::require_fixture!(Moto);
    let fx = Fixture::start().await;
    let config = fx.toml(&fx.good()).replace(
        "[TaskMetadata]\n",
        "[TaskMetadata]\n  DynamoDBTable = \"fleet-table\"\n",
    );
    // No table yet: check and doctor say so, with the way out.
    let (code, out) = fx.fargate(&config, &["store", "check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not exist") && out.contains("fargate store init"),
        "{out}"
    );
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DynamoDB table fleet-table") && out.contains("fargate store init"),
        "{out}"
    );
    // Created (on demand, TTL on); then usable, and doctor passes with it.
    let (code, out) = fx.fargate(&config, &["store", "init"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("created table fleet-table") && out.contains("turned TTL on"),
        "{out}"
    );
    let (code, out) = fx.fargate(&config, &["store", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("table fleet-table is usable"), "{out}");
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lock, read, list, unlock"), "{out}");
    // Without a table in the configuration, `store` says there is none to set up.
    let (code, out) = fx.fargate(&fx.toml(&fx.good()), &["store", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("names no DynamoDB table"), "{out}");
}

/// Job images from a private registry or ECR are pulled with the base definition's
/// execution role: doctor fails without one, naming what the role must allow, and passes
/// with one.
#[tokio::test(flavor = "multi_thread")]
async fn private_registries_and_ecr_need_an_execution_role() {
    fargate_testkit::require_fixture!(Moto);
    let fx = Fixture::start().await;
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci/registry-AbCdEf";
    let images = format!(
        "[Fargate.Images]\n  AllowedImages = [\"registry.gitlab.example.com/*\", \"123456789012.dkr.ecr.us-east-1.amazonaws.com/ci/*\"]\n  JobSSHPort = 2222\n\
         [[Fargate.Images.Registry]]\n  Host = \"registry.gitlab.example.com\"\n  CredentialsArn = {secret:?}\n"
    );
    let name = "execution role for job image pulls";

    // Without images, no such check.
    let (code, out) = fx.doctor(&fx.toml(&fx.good()));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(name), "{out}");

    // The fixture's task definition has no execution role.
    let config = format!("{}{images}", fx.toml(&fx.good()));
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAIL  {name}: ")), "{out}");
    assert!(out.contains("has no execution role"), "{out}");
    assert!(
        out.contains(&format!("secretsmanager:GetSecretValue on {secret}"))
            && out.contains("ecr:BatchGetImage"),
        "{out}"
    );

    let role = "arn:aws:iam::123456789012:role/fargate-ci-task-execution";
    let with_role = register(
        fargate_definition(&fx.moto, "with-execution-role", Some(22)).execution_role_arn(role),
    )
    .await;
    let config = format!("{}{images}", fx.toml(&fx.setup(&with_role)));
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok    {name}: {role}; it must be allowed secretsmanager:GetSecretValue"
        )),
        "{out}"
    );

    // Jobs' own registry logins alone: the execution role must read the jobs' secrets.
    let logins = "[Fargate.Images]\n  AllowedImages = [\"registry.gitlab.example.com/*\"]\n  JobSSHPort = 2222\n  JobRegistryCredentials = [\"registry.gitlab.example.com\"]\n";
    let config = format!("{}{logins}", fx.toml(&fx.good()));
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAIL  {name}: ")) && out.contains("nor read the jobs' own secrets"),
        "{out}"
    );
    let config = format!("{}{logins}", fx.toml(&fx.setup(&with_role)));
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok    {name}: {role}; it must be allowed secretsmanager:GetSecretValue on the jobs' own secrets, secret:fargate/*"
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_which_limited_project_is_at_its_limit() {
    use fargate_core::MetadataStore;

    fargate_testkit::require_fixture!(Moto);
    let fx = Fixture::start().await;
    let rule =
        "[[Fargate.ProjectRule]]\n  Name = \"one\"\n  ProjectIds = [42]\n  MaxConcurrentJobs = 1\n";
    let config = format!("{}{rule}", fx.toml(&fx.good()));

    // Without a limit, no such line.
    let (code, out) = fx.doctor(&fx.toml(&fx.good()));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("slots"), "{out}");
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "ok    project slots: no limited project is at its limit (0 project(s) hold slots)"
        ),
        "{out}"
    );

    // Job 7 of project 42 holds its one slot (a prepare that has not written its record).
    let store = fargate_core::FileMetadataStore::new(&fx.metadata);
    let holder = fargate_core::JobKey::parse("doctor-7").unwrap();
    let ttl = std::time::Duration::from_secs(600);
    store
        .acquire_slot("doctor.project-42", &holder, 1, ttl)
        .await
        .unwrap();
    let (code, out) = fx.doctor(&config);
    assert_eq!(code, 0, "at the limit is no failure: {out}");
    assert!(
        out.contains("ok    project id 42 slots: at its limit (1 of 1 held, rule \"one\"): its next job waits; `fargate slots` lists who holds them"),
        "{out}"
    );
    let (code, out) = fx.fargate(&config, &["slots"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("project id 42: 1 of 1 slots held, 0 free (rule \"one\"): its next job waits\n  job 7 (doctor-7): counts: its time has "),
        "{out}"
    );
    assert!(out.contains(" left (no record)\n"), "{out}");
}
