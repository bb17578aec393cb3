//! Setting up ECS and EC2 resources in moto and inspecting them: clusters, task
//! definitions, the default VPC, Elastic IPs, tasks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, Compatibility, ContainerDefinition, NetworkMode, PortMapping,
    TaskField,
};
use fargate_aws::EcsConfig;
use fargate_core::{JobIdentity, JobResponse, Namespace, TaskSpec};

use super::{CONTAINER, LOG_GROUP, LOG_STREAM_PREFIX, Moto};
use crate::http;

/// What [`Moto::setup`] created: a FARGATE cluster, a task definition with container
/// [`CONTAINER`] (port 22), and the default VPC's subnets and security group.
#[derive(Clone, Debug)]
pub struct MotoEcs {
    /// Cluster name.
    pub cluster: String,
    /// Task definition ARN.
    pub task_definition: String,
    /// Default-VPC subnets (one per availability zone).
    pub subnets: Vec<String>,
    /// The default VPC's `default` security group.
    pub security_groups: Vec<String>,
}

impl MotoEcs {
    /// An [`EcsConfig`] for this cluster, the first two subnets and the security group.
    pub fn config(&self) -> EcsConfig {
        EcsConfig::new(
            self.cluster.clone(),
            self.subnets.iter().take(2).cloned(),
            self.security_groups.clone(),
        )
    }

    /// A [`TaskSpec`] for job `job_id` of project `group/project` (id 17) in namespace
    /// `fixture`, with this task definition, container [`CONTAINER`] and an
    /// `SSH_PUBLIC_KEY`.
    pub fn spec(&self, job_id: u64) -> TaskSpec {
        let mut response = JobResponse::new(job_id);
        response.project_id = Some(17);
        response.project_path = Some("group/project".into());
        response.job_name = Some("build".into());
        let namespace = Namespace::parse("fixture").expect("a valid namespace");
        let mut spec = TaskSpec::new(
            JobIdentity::from_response(namespace, &response),
            self.task_definition.clone(),
        )
        .with_client_token(format!("fgt-test-{job_id}"));
        spec.container_name = CONTAINER.into();
        spec.environment = BTreeMap::from([(
            "SSH_PUBLIC_KEY".to_owned(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture fixture".to_owned(),
        )]);
        spec
    }
}

impl Moto {
    fn ec2(&self, params: &[(&str, &str)]) -> String {
        let mut body = String::from("Version=2016-11-15");
        for (k, v) in params {
            body.push_str(&format!("&{k}={}", http::form_encode(v)));
        }
        let auth = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/ec2/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let r = self
            .http(
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", auth),
                ],
                body.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("moto EC2 {params:?}: {e}"));
        assert!(
            r.status < 300,
            "moto EC2 {params:?}: HTTP {}: {}",
            r.status,
            r.body
        );
        r.body
    }

    /// The default VPC's subnets (one per availability zone).
    pub fn default_subnets(&self) -> Vec<String> {
        let xml = self.ec2(&[
            ("Action", "DescribeSubnets"),
            ("Filter.1.Name", "default-for-az"),
            ("Filter.1.Value.1", "true"),
        ]);
        let subnets = http::xml_values(&xml, "subnetId");
        assert!(!subnets.is_empty(), "moto has no default subnets: {xml}");
        subnets
    }

    /// The default VPC's `default` security group.
    pub fn default_security_group(&self) -> String {
        let xml = self.ec2(&[
            ("Action", "DescribeSecurityGroups"),
            ("Filter.1.Name", "group-name"),
            ("Filter.1.Value.1", "default"),
        ]);
        http::xml_values(&xml, "groupId")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("moto has no default security group: {xml}"))
    }

    /// Creates security group `name` in the default VPC, without inbound rules; returns its
    /// id.
    pub fn create_security_group(&self, name: &str) -> String {
        let xml = self.ec2(&[
            ("Action", "CreateSecurityGroup"),
            ("GroupName", name),
            ("GroupDescription", name),
        ]);
        http::xml_values(&xml, "groupId")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("moto CreateSecurityGroup: {xml}"))
    }

    /// Lets TCP `port` into security group `group` from anywhere.
    pub fn allow_tcp_in(&self, group: &str, port: u16) {
        let port = port.to_string();
        self.ec2(&[
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", group),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", &port),
            ("IpPermissions.1.ToPort", &port),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ]);
    }

    /// Allocates Elastic IP `ip` (moto's are loopback: use a `127.x.y.z` outside
    /// [`Moto::task_cidr`]) and associates it with ENI `eni`, as Fargate does with
    /// `assignPublicIp`.
    pub fn associate_public_ip(&self, eni: &str, ip: Ipv4Addr) {
        let ip = ip.to_string();
        let xml = self.ec2(&[
            ("Action", "AllocateAddress"),
            ("Domain", "vpc"),
            ("Address", &ip),
        ]);
        let allocation = http::xml_values(&xml, "allocationId")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("moto AllocateAddress: {xml}"));
        self.ec2(&[
            ("Action", "AssociateAddress"),
            ("AllocationId", &allocation),
            ("NetworkInterfaceId", eni),
        ]);
    }

    /// Creates cluster `name` with the `FARGATE` and `FARGATE_SPOT` capacity providers and
    /// no default strategy.
    pub async fn create_fargate_cluster(&self, name: &str) {
        self.ecs_client()
            .create_cluster()
            .cluster_name(name)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT")
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto CreateCluster: {e:?}"));
    }

    /// Sets cluster `name`'s default capacity provider strategy to `providers` (weight 1).
    pub async fn set_default_strategy(&self, name: &str, providers: &[&str]) {
        let mut req = self
            .ecs_client()
            .put_cluster_capacity_providers()
            .cluster(name)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT");
        for p in providers {
            req = req.default_capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(*p)
                    .weight(1)
                    .build()
                    .expect("strategy item"),
            );
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("moto PutClusterCapacityProviders: {e:?}"));
    }

    /// Registers a Fargate task definition `family` (awsvpc, 256 CPU, 512 MiB) with one
    /// container [`CONTAINER`] that has `memory` (moto needs it), port 22 and the `awslogs`
    /// log driver (group [`LOG_GROUP`], stream prefix [`LOG_STREAM_PREFIX`], where the local
    /// Fargate announces each task's host keys); returns its ARN.
    pub async fn register_task_definition(&self, family: &str) -> String {
        self.register_task_definition_with(family, None).await
    }

    /// [`register_task_definition`](Self::register_task_definition) with the task
    /// execution role `execution_role` (which ECS reads secrets and registry credentials
    /// with), if any.
    pub async fn register_task_definition_with(
        &self,
        family: &str,
        execution_role: Option<&str>,
    ) -> String {
        let out = self
            .ecs_client()
            .register_task_definition()
            .family(family)
            .set_execution_role_arn(execution_role.map(str::to_owned))
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name(CONTAINER)
                    .image("registry.example/ci-coordinator:latest")
                    .memory(512)
                    .essential(true)
                    .port_mappings(PortMapping::builder().container_port(22).build())
                    .log_configuration(
                        aws_sdk_ecs::types::LogConfiguration::builder()
                            .log_driver(aws_sdk_ecs::types::LogDriver::Awslogs)
                            .options("awslogs-group", LOG_GROUP)
                            .options("awslogs-region", "us-east-1")
                            .options("awslogs-stream-prefix", LOG_STREAM_PREFIX)
                            .build()
                            .unwrap_or_else(|e| panic!("log configuration: {e}")),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto RegisterTaskDefinition: {e:?}"));
        out.task_definition()
            .and_then(|t| t.task_definition_arn())
            .expect("task definition ARN")
            .to_owned()
    }

    /// Creates cluster `ci` and task definition `ci-coordinator`, and finds the default
    /// subnets and security group.
    pub async fn setup(&self) -> MotoEcs {
        self.create_fargate_cluster("ci").await;
        MotoEcs {
            cluster: "ci".into(),
            task_definition: self.register_task_definition("ci-coordinator").await,
            subnets: self.default_subnets(),
            security_groups: vec![self.default_security_group()],
        }
    }

    /// The task as moto has it, tags included, through the oracle view (so never lagged; this
    /// advances moto's state machine too).
    pub async fn describe_task(&self, cluster: &str, task_arn: &str) -> aws_sdk_ecs::types::Task {
        let out = self
            .ecs_client()
            .describe_tasks()
            .cluster(cluster)
            .tasks(task_arn)
            .include(TaskField::Tags)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto DescribeTasks: {e:?}"));
        out.tasks()
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("moto does not know task {task_arn}"))
    }

    /// The id of the task's ENI (`eni-...`).
    pub async fn task_eni(&self, cluster: &str, task_arn: &str) -> String {
        let task = self.describe_task(cluster, task_arn).await;
        task.attachments()
            .iter()
            .flat_map(|a| a.details())
            .find(|d| d.name() == Some("networkInterfaceId"))
            .and_then(|d| d.value())
            .expect("task ENI id")
            .to_owned()
    }
}
