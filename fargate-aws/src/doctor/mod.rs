//! [`doctor`]: checks a configuration against the account before the first job,
//! with the calls a launcher may make anyway (no task is started).

use std::fmt;

use aws_sdk_ecs::config::ProvideCredentials;
use aws_sdk_ecs::types::{ClusterField, NetworkMode, TaskDefinition};

use crate::config::{Capacity, EcsConfig};
use crate::errors;
use crate::launcher::EcsLauncher;

/// How a [`Check`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckStatus {
    /// It passed.
    Pass,
    /// It failed; [`Check::fix`] says what to do.
    Fail,
    /// It could not be checked (e.g. nothing to check it against); not a failure.
    NotChecked,
}

/// One item of the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// What was checked (`cluster ci`).
    pub name: String,
    /// How it ended.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check with its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check that could not be made.
    pub fn not_checked(name: impl Into<String>, why: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::NotChecked,
            detail: why.into(),
            fix: None,
        }
    }
}

impl fmt::Display for Check {
    /// `ok    name: detail`, with a `fix:` line under a failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            CheckStatus::Pass => "ok  ",
            CheckStatus::Fail => "FAIL",
            CheckStatus::NotChecked => "--  ",
        };
        write!(f, "{mark}  {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// What the task definition must provide.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskExpectations {
    /// Family, `family:revision` or ARN.
    pub task_definition: String,
    /// The container that gets the job's key (`[Fargate] ContainerName`).
    pub container: String,
    /// The SSH port (`[SSH] Port`).
    pub port: u16,
    /// Whether some tasks are started with ECS Exec (a project rule keeps failed jobs'
    /// tasks for debugging): what it needs is checked too.
    pub ecs_exec: bool,
    /// The platform version tasks run on (`[Fargate] PlatformVersion`), when configured.
    pub platform_version: Option<String>,
    /// Whether the driver reads the task's host keys from the container's log stream
    /// (`[SSH] HostKeySource = "task-log"`): then its log configuration is checked.
    pub host_keys_from_log: bool,
    /// The secrets of private registries' credentials (`[[Fargate.Images.Registry]]`
    /// `CredentialsArn`), and whether job images may come from ECR: both need the base
    /// definition's execution role.
    pub registry_credentials: Vec<String>,
    /// Whether an allowed job image or service pattern names an ECR registry.
    pub ecr_images: bool,
    /// Whether tasks read secrets of their own job (`[Fargate.Images]
    /// JobRegistryCredentials`, `ServiceSecrets = "secrets-manager"`; see
    /// [`crate::job_secrets`]): the execution role must read the secrets named
    /// `fargate/*`.
    pub job_secrets: bool,
}

impl TaskExpectations {
    /// Task definition `task_definition`, container `container`, SSH on `port`.
    pub fn new(
        task_definition: impl Into<String>,
        container: impl Into<String>,
        port: u16,
    ) -> Self {
        TaskExpectations {
            task_definition: task_definition.into(),
            container: container.into(),
            port,
            ecs_exec: false,
            platform_version: None,
            host_keys_from_log: false,
            registry_credentials: Vec::new(),
            ecr_images: false,
            job_secrets: false,
        }
    }

    /// The same, for tasks that read secrets of their own job when `on`.
    pub fn with_job_secrets(mut self, on: bool) -> Self {
        self.job_secrets = on;
        self
    }

    /// The same, for job images pulled with the private registries' `credentials` (their
    /// secrets' ARNs) and from ECR when `ecr_images`.
    pub fn with_image_pulls(mut self, credentials: Vec<String>, ecr_images: bool) -> Self {
        self.registry_credentials = credentials;
        self.ecr_images = ecr_images;
        self
    }

    /// The same expectations, for tasks started with ECS Exec (`ecs_exec`) on
    /// `platform_version` (`None`: ECS's default).
    pub fn with_ecs_exec(mut self, ecs_exec: bool, platform_version: Option<String>) -> Self {
        self.ecs_exec = ecs_exec;
        self.platform_version = platform_version;
        self
    }

    /// The same, with the task's host keys read from its log stream when `on`.
    pub fn with_host_keys_from_log(mut self, on: bool) -> Self {
        self.host_keys_from_log = on;
        self
    }
}

/// Checks `config` against the account `sdk` reaches: the credentials and region, the
/// cluster, its capacity providers, the task definition (and its execution role when job
/// images come from private registries or ECR), the subnets and the security
/// groups' rule for the SSH port (EC2's `DescribeSubnets`, `DescribeSecurityGroups`). Each
/// failure carries its fix. No task is started.
pub async fn doctor(
    config: EcsConfig,
    sdk: &aws_config::SdkConfig,
    task: &TaskExpectations,
) -> Vec<Check> {
    let credentials = check_credentials(&config, sdk).await;
    if credentials.status == CheckStatus::Fail {
        return vec![credentials];
    }
    let launcher = match EcsLauncher::new(config, sdk) {
        Ok(l) => l,
        Err(e) => {
            return vec![
                credentials,
                Check::fail("configuration", e.message().to_owned(), "fix fargate.toml"),
            ];
        }
    };
    let mut checks = vec![credentials];
    checks.extend(launcher.check_cluster().await);
    checks.push(launcher.check_task_definition(task).await);
    if task.ecs_exec || launcher.config().enable_execute_command {
        checks.push(launcher.check_ecs_exec(task).await);
    }
    if task.host_keys_from_log {
        checks.push(launcher.check_host_key_log(task).await);
    }
    if !task.registry_credentials.is_empty() || task.ecr_images || task.job_secrets {
        checks.push(launcher.check_image_pulls(task).await);
    }
    checks.extend(launcher.check_network(task.port).await);
    checks
}

async fn check_credentials(config: &EcsConfig, sdk: &aws_config::SdkConfig) -> Check {
    let name = "credentials and region";
    let Some(region) = config
        .region
        .clone()
        .or_else(|| sdk.region().map(|r| r.to_string()))
    else {
        return Check::fail(
            name,
            "no region",
            "set [Fargate] Region, or AWS_REGION for the runner's user",
        );
    };
    let Some(provider) = sdk.credentials_provider() else {
        return Check::fail(
            name,
            "no credentials provider",
            "give the runner host an instance role, or AWS_PROFILE / AWS_ACCESS_KEY_ID",
        );
    };
    match provider.provide_credentials().await {
        Ok(_) => Check::pass(name, format!("region {region}, credentials found")),
        Err(e) => Check::fail(
            name,
            format!("no credentials: {e}"),
            "give the runner host an instance role, or AWS_PROFILE / AWS_ACCESS_KEY_ID",
        ),
    }
}

impl EcsLauncher {
    async fn check_cluster(&self) -> Vec<Check> {
        let cluster = &self.config().cluster;
        let name = format!("cluster {cluster}");
        let out = match self
            .ecs_client()
            .describe_clusters()
            .clusters(cluster)
            .include(ClusterField::Settings)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = errors::sdk(e, "DescribeClusters").error;
                return vec![Check::fail(
                    name,
                    err.message().to_owned(),
                    "allow ecs:DescribeClusters (see examples/iam-policy.json) and check the region",
                )];
            }
        };
        let Some(c) = out.clusters().first() else {
            return vec![Check::fail(
                name,
                "not found in this region",
                format!(
                    "create it (aws ecs create-cluster --cluster-name {cluster}) or fix [Fargate] Cluster / Region"
                ),
            )];
        };
        let status = c.status().unwrap_or_default();
        let mut checks = vec![if status == "ACTIVE" {
            Check::pass(name, "ACTIVE")
        } else {
            Check::fail(
                name,
                format!("status {status}"),
                "use an ACTIVE cluster: an INACTIVE one was deleted",
            )
        }];
        let name = "capacity providers";
        let have: Vec<&str> = c.capacity_providers().iter().map(String::as_str).collect();
        checks.push(match &self.config().capacity {
            Capacity::Fargate => Check::pass(name, "launch type FARGATE (no provider needed)"),
            Capacity::Strategy(items) => {
                let missing: Vec<&str> = items
                    .iter()
                    .map(|i| i.provider.as_str())
                    .filter(|p| !have.contains(p))
                    .collect();
                if missing.is_empty() {
                    Check::pass(name, format!("{} associated", have.join(", ")))
                } else {
                    Check::fail(
                        name,
                        format!("{} not associated with the cluster", missing.join(", ")),
                        format!(
                            "aws ecs put-cluster-capacity-providers --cluster {cluster} --capacity-providers FARGATE FARGATE_SPOT --default-capacity-provider-strategy capacityProvider=FARGATE,weight=1"
                        ),
                    )
                }
            }
        });
        checks
    }

    /// The expected task definition, or the failed check `name` saying why it is missing.
    async fn definition_for_check(
        &self,
        name: &str,
        want: &TaskExpectations,
    ) -> std::result::Result<TaskDefinition, Check> {
        match self.describe_definition(&want.task_definition).await {
            Ok(Some((td, _))) => Ok(td),
            Ok(None) => Err(Check::fail(
                name,
                "the task definition is not found",
                "see the task definition check",
            )),
            Err(e) => Err(Check::fail(
                name,
                e.message().to_owned(),
                "allow ecs:DescribeTaskDefinition",
            )),
        }
    }

    /// With host keys from the task's log: the container logs with `awslogs`, a group and a
    /// stream prefix (the stream's name is known), in the launcher's region.
    async fn check_host_key_log(&self, want: &TaskExpectations) -> Check {
        let name = format!("host keys from the log of container {}", want.container);
        let td = match self.definition_for_check(&name, want).await {
            Ok(td) => td,
            Err(failed) => return failed,
        };
        match crate::host_keys::log_stream(&td, &want.container, "<task id>") {
            Ok(stream) => {
                let region = self.api.region().map(str::to_owned);
                if let (Some(theirs), Some(ours)) = (stream.region.as_deref(), region.as_deref())
                    && theirs != ours
                {
                    return Check::fail(
                        name,
                        format!("the container logs to {theirs}, the cluster is in {ours}"),
                        "set awslogs-region to the cluster's region",
                    );
                }
                Check::pass(
                    name,
                    format!(
                        "{} {}; the runner needs logs:GetLogEvents on it",
                        stream.group, stream.stream
                    ),
                )
            }
            Err(e) => Check::fail(
                name,
                e.message().to_owned(),
                e.hint().unwrap_or_default().to_owned(),
            ),
        }
    }

    /// Private registries and ECR images are pulled with the base definition's execution
    /// role: it must have one (what it may do is IAM's to say, and not readable here).
    async fn check_image_pulls(&self, want: &TaskExpectations) -> Check {
        let name = "execution role for job image pulls";
        let td = match self.definition_for_check(name, want).await {
            Ok(td) => td,
            Err(failed) => return failed,
        };
        let mut needs = Vec::new();
        if !want.registry_credentials.is_empty() {
            needs.push(format!(
                "secretsmanager:GetSecretValue on {}",
                want.registry_credentials.join(", ")
            ));
        }
        if want.job_secrets {
            needs.push(format!(
                "secretsmanager:GetSecretValue on the jobs' own secrets, secret:{}*",
                crate::job_secrets::SECRET_PREFIX
            ));
        }
        if want.ecr_images {
            needs.push(
                "ecr:GetAuthorizationToken, ecr:BatchCheckLayerAvailability, ecr:GetDownloadUrlForLayer, ecr:BatchGetImage"
                    .to_owned(),
            );
        }
        match td.execution_role_arn() {
            Some(role) => Check::pass(
                name,
                format!("{role}; it must be allowed {}", needs.join("; and ")),
            ),
            None => Check::fail(
                name,
                format!(
                    "{} has no execution role: ECS cannot pull job images from private registries or ECR, nor read the jobs' own secrets",
                    want.task_definition
                ),
                format!(
                    "give the task definition an execution role allowed {} (docs/images.md, private registries)",
                    needs.join("; and ")
                ),
            ),
        }
    }

    async fn check_task_definition(&self, want: &TaskExpectations) -> Check {
        let name = format!("task definition {}", want.task_definition);
        let td = match self.describe_definition(&want.task_definition).await {
            Ok(Some((td, _))) => td,
            Ok(None) => {
                return Check::fail(
                    name,
                    "not found",
                    "register it, or fix [Fargate] TaskDefinition (family, family:revision or ARN)",
                );
            }
            Err(e) => {
                return Check::fail(
                    name,
                    e.message().to_owned(),
                    "allow ecs:DescribeTaskDefinition, or fix [Fargate] TaskDefinition",
                );
            }
        };
        if td.network_mode() != Some(&NetworkMode::Awsvpc) {
            return Check::fail(
                name,
                format!(
                    "network mode {}, not awsvpc",
                    td.network_mode().map_or("none", |m| m.as_str())
                ),
                "register a revision with \"networkMode\": \"awsvpc\" (Fargate needs it)",
            );
        }
        let Some(container) = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(want.container.as_str()))
        else {
            let names: Vec<&str> = td
                .container_definitions()
                .iter()
                .filter_map(|c| c.name())
                .collect();
            return Check::fail(
                name,
                format!(
                    "no container {:?} (it has {})",
                    want.container,
                    names.join(", ")
                ),
                "set [Fargate] ContainerName to the container that runs sshd, or rename it in the task definition",
            );
        };
        let ports: Vec<i32> = container
            .port_mappings()
            .iter()
            .filter_map(|p| p.container_port())
            .collect();
        if !ports.is_empty() && !ports.contains(&i32::from(want.port)) {
            return Check::fail(
                name,
                format!(
                    "container {} maps ports {ports:?}, not the SSH port {}",
                    want.container, want.port
                ),
                format!(
                    "add a port mapping for {} to the container, or set [SSH] Port",
                    want.port
                ),
            );
        }
        let cpu = td.cpu().and_then(|c| c.parse::<u32>().ok());
        let memory = td.memory().and_then(|m| m.parse::<u32>().ok());
        match (cpu, memory) {
            (Some(cpu), Some(memory)) if crate::fargate_sizes().offers(cpu, memory) => Check::pass(
                name,
                format!(
                    "awsvpc, container {} (port {}), {cpu} CPU units, {memory} MiB",
                    want.container, want.port
                ),
            ),
            (cpu, memory) => Check::fail(
                name,
                format!(
                    "task size {} CPU units, {} MiB is not a Fargate size",
                    cpu.map_or("no".into(), |c| c.to_string()),
                    memory.map_or("no".into(), |m| m.to_string())
                ),
                "set task-level cpu and memory to a Fargate combination (e.g. 1024 CPU units with 2048-8192 MiB)",
            ),
        }
    }

    /// What ECS Exec needs of the task: a task role (with the `ssmmessages` permissions,
    /// which only IAM could confirm: named in the result) and platform version 1.4.0 or
    /// later.
    async fn check_ecs_exec(&self, want: &TaskExpectations) -> Check {
        let name = "ECS Exec (shell into kept tasks)";
        let actions = crate::exec::TASK_ROLE_ACTIONS.join(", ");
        if let Some(v) = want.platform_version.as_deref()
            && v != "LATEST"
            && version_below(v, (1, 4, 0))
        {
            return Check::fail(
                name,
                format!("platform version {v} has no ECS Exec"),
                "set [Fargate] PlatformVersion to 1.4.0 or LATEST",
            );
        }
        let td = match self.definition_for_check(name, want).await {
            Ok(td) => td,
            Err(failed) => return failed,
        };
        match td.task_role_arn() {
            Some(role) => Check::pass(
                name,
                format!(
                    "task role {role}: it must allow {actions} (not checked here; see examples/iam-policy-ecs-exec-task-role.json); whoever enters needs ecs:ExecuteCommand and the AWS CLI's Session Manager plugin"
                ),
            ),
            None => Check::fail(
                name,
                format!("task definition {} has no task role", want.task_definition),
                format!(
                    "give the task definition a task role (taskRoleArn) that allows {actions}; see examples/cloudformation/fargate-runner.yaml"
                ),
            ),
        }
    }
}

/// Whether platform version `v` (`1.3.0`) is below `min`; a version that does not parse is
/// not (ECS judges it).
fn version_below(v: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => (a, b, c) < min,
        _ => false,
    }
}

/// Whether image name or pattern `image` names an ECR registry
/// (`<account>.dkr.ecr.<region>.amazonaws.com/...`): ECS pulls it with the task's execution
/// role, no `repositoryCredentials`.
pub fn is_ecr_image(image: &str) -> bool {
    let host = image.split('/').next().unwrap_or_default();
    host.contains(".dkr.ecr.")
        && (host.ends_with(".amazonaws.com")
            || host.ends_with(".amazonaws.com.cn")
            || host.ends_with('*'))
}

mod network;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised() {
        assert!(is_ecr_image(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ci/rust:1"
        ));
        assert!(is_ecr_image(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/*"
        ));
        assert!(!is_ecr_image(
            "registry.gitlab.example.com/dkr.ecr.x/amazonaws.com"
        ));
        assert!(!is_ecr_image("rust:1.85"));
    }

    #[test]
    fn platform_versions_before_1_4_0_have_no_ecs_exec() {
        assert!(version_below("1.3.0", (1, 4, 0)));
        assert!(!version_below("1.4.0", (1, 4, 0)));
        assert!(!version_below("LATEST", (1, 4, 0)));
        assert!(!version_below("1.10.2", (1, 4, 0)));
    }
}
