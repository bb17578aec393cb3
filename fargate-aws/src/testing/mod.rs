//! Test fixtures: [`Moto`], a moto server on loopback that plays ECS and EC2, and
//! [`FaultProxy`], which injects the errors moto cannot produce.
//!
//! moto (5.2.5) is found through `FARGATE_MOTO_PYTHON` (a Python interpreter that can
//! `import moto`), else `python3`; without it the fixture panics with the install command
//! (`pip install 'moto[server]==5.2.5'`).
//!
//! The server runs from a small launcher shipped in this crate that gives task ENIs loopback
//! addresses from [`Moto::task_cidr`] (a /24 inside `127.64.0.0/10`, distinct per fixture),
//! keeps tasks `RUNNING`, honours `RunTask`'s `clientToken` and records every `RunTask`
//! request ([`Moto::run_task_requests`]). No traffic leaves the loopback interface: the SDK
//! configuration has an explicit endpoint, region and dummy credentials.
//!
//! ```no_run
//! # async fn demo() {
//! use fargate_aws::testing::Moto;
//! let moto = Moto::start();
//! let ecs = moto.setup().await; // cluster, task definition, default-VPC subnets and group
//! let launcher = fargate_aws::EcsLauncher::new(ecs.config(), &moto.sdk_config()).unwrap();
//! # let _ = launcher; }
//! ```
//!
//! Note that moto advances a task's state machine on every `DescribeTasks`, the fixture's own
//! ([`Moto::describe_task`]) included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http;
mod proxy;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ecs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, Compatibility, ContainerDefinition, NetworkMode, PortMapping,
    TaskField,
};
use fargate_core::{JobIdentity, TaskSpec};

pub use proxy::{Fault, FaultProxy, ProxiedRequest};

use crate::EcsConfig;

/// The moto version the fixture and its patches are written for.
pub const MOTO_VERSION: &str = "5.2.5";
/// The command that installs it.
pub const MOTO_INSTALL: &str = "pip install 'moto[server]==5.2.5'";
/// Container name of the fixture's task definition.
pub const CONTAINER: &str = "ci-coordinator";

const LAUNCHER: &str = include_str!("moto_launcher.py");

/// An SDK configuration for a loopback endpoint: region `us-east-1`, dummy credentials,
/// nothing read from the environment (so IMDS is never asked).
pub fn sdk_config_for(endpoint_url: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .endpoint_url(endpoint_url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "fargate-testing",
        )))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// The Python interpreter that has moto: `FARGATE_MOTO_PYTHON`, else `python3`.
///
/// # Panics
/// When neither can `import moto`, with the install command.
pub fn moto_python() -> PathBuf {
    let can_import = |python: &Path| {
        Command::new(python)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(p) = std::env::var_os("FARGATE_MOTO_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            can_import(&p),
            "FARGATE_MOTO_PYTHON={} cannot `import moto.server`; install it with: {MOTO_INSTALL}",
            p.display()
        );
        return p;
    }
    let p = PathBuf::from("python3");
    assert!(
        can_import(&p),
        "moto is not installed: install it with `{MOTO_INSTALL}` (or point FARGATE_MOTO_PYTHON \
         at a Python interpreter that has it)"
    );
    p
}

/// Options of a [`Moto`] server.
#[derive(Clone, Debug, Default)]
pub struct MotoBuilder {
    task_cidr: Option<String>,
    provisioning_describes: u32,
}

impl MotoBuilder {
    /// Task ENI addresses from this CIDR (default: a /24 of `127.64.0.0/10` picked from the
    /// port). Use a loopback range, never `127.0.0.0/24`.
    pub fn task_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.task_cidr = Some(cidr.into());
        self
    }

    /// New tasks report `PROVISIONING`, then `PENDING`, for their first `k` `DescribeTasks`
    /// before `RUNNING` (default 0: born `RUNNING`).
    pub fn provisioning_describes(mut self, k: u32) -> Self {
        self.provisioning_describes = k;
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    /// When moto is missing (with the install command) or does not start.
    pub fn start(self) -> Moto {
        let python = moto_python();
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let cidr = self
                .task_cidr
                .clone()
                .unwrap_or_else(|| cidr_for_port(port));
            let dir = tempfile::Builder::new()
                .prefix("fargate-moto-")
                .tempdir()
                .expect("temporary directory for moto");
            let moto = Moto::spawn(&python, port, cidr, dir);
            moto.set_provisioning_describes(self.provisioning_describes);
            match moto.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return moto,
                Err(log) => last_log = log,
            }
        }
        panic!("moto did not start (3 attempts); its output:\n{last_log}");
    }
}

/// The /24 of `127.64.0.0/10` that a fixture on `port` uses for task addresses.
pub fn cidr_for_port(port: u16) -> String {
    let index = u32::from(port) % (64 * 256);
    format!("127.{}.{}.0/24", 64 + index / 256, index % 256)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A moto server on `127.0.0.1`, killed when dropped.
pub struct Moto {
    child: Mutex<Child>,
    port: u16,
    task_cidr: String,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("port", &self.port)
            .field("task_cidr", &self.task_cidr)
            .finish_non_exhaustive()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

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

    /// A [`TaskSpec`] for job `job_id` of a fixed project and pipeline, with this task
    /// definition, container [`CONTAINER`] and an `SSH_PUBLIC_KEY`.
    pub fn spec(&self, job_id: i64) -> TaskSpec {
        let job = JobIdentity {
            runner_short_token: "runner1".into(),
            project_url: "https://gitlab.example/group/project".into(),
            pipeline_id: 7,
            job_id,
        };
        TaskSpec {
            key: job.key(),
            client_token: format!("fgt-test-{job_id}"),
            job,
            task_definition: self.task_definition.clone(),
            platform_version: None,
            container_name: CONTAINER.into(),
            environment: BTreeMap::from([(
                "SSH_PUBLIC_KEY".to_owned(),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture fixture".to_owned(),
            )]),
        }
    }
}

impl Moto {
    /// Starts a server with the default options.
    pub fn start() -> Moto {
        MotoBuilder::default().start()
    }

    /// Options for a server.
    pub fn builder() -> MotoBuilder {
        MotoBuilder::default()
    }

    fn spawn(python: &Path, port: u16, cidr: String, dir: tempfile::TempDir) -> Moto {
        let script = dir.path().join("moto_launcher.py");
        std::fs::write(&script, LAUNCHER).expect("writing the moto launcher");
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log file");
        let child = Command::new(python)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ECS_TASK_CIDR", &cidr)
            .env("FGT_MOTO_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("moto log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        Moto {
            child: Mutex::new(child),
            port,
            task_cidr: cidr,
            dir,
        }
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http("GET", "/moto-api/data.json", &[], b"")
                && r.status == 200
            {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .map(|mut c| c.try_wait().ok().flatten().is_some())
                .unwrap_or(true);
            if exited || Instant::now() > deadline {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<http::Response> {
        http::request(self.addr(), method, path, headers, body)
    }

    fn post_ok(&self, path: &str, body: &str) {
        let r = self
            .http("POST", path, &[], body.as_bytes())
            .unwrap_or_else(|e| panic!("moto {path}: {e}"));
        assert!(r.status < 300, "moto {path}: HTTP {}: {}", r.status, r.body);
    }

    /// The server's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The CIDR task ENI addresses come from, in order (`.1`, `.2`, ...). Every `RunTask`
    /// attempt that reaches moto uses one.
    pub fn task_cidr(&self) -> &str {
        &self.task_cidr
    }

    /// An SDK configuration for this server ([`sdk_config_for`]).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint_url())
    }

    /// An ECS client for this server.
    pub fn ecs_client(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk_config())
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Wipes all state (`/moto-api/reset`); the task transition setting stays.
    pub fn reset(&self) {
        self.post_ok("/moto-api/reset", "");
    }

    /// Each task status now lasts `describes` `DescribeTasks` calls: `RUNNING` for
    /// `describes`, then `DEACTIVATING`, `STOPPING`, `DEPROVISIONING` and `STOPPED`
    /// (desired status stays `RUNNING`): a task dying on its own.
    pub fn set_task_transition(&self, describes: u64) {
        let body = serde_json::json!({
            "model_name": "ecs::task",
            "transition": { "progression": "manual", "times": describes },
        });
        self.post_ok("/moto-api/state-manager/set-transition", &body.to_string());
    }

    /// Tasks stay `RUNNING` (the default of this fixture).
    pub fn keep_tasks_running(&self) {
        self.set_task_transition(1_000_000_000);
    }

    /// Tasks started from now on report `PROVISIONING`, then `PENDING`, for their first `k`
    /// `DescribeTasks` before `RUNNING`.
    pub fn set_provisioning_describes(&self, k: u32) {
        std::fs::write(
            self.dir.path().join("provisioning_describes"),
            k.to_string(),
        )
        .expect("writing the moto control file");
    }

    /// Every `RunTask` request the server received, in order, as
    /// `{"request": <body>, "taskArns": [...], "replay": <same client token as before>}`.
    pub fn run_task_requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("run_task.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The `RunTask` request body that started `task_arn`.
    pub fn run_task_request(&self, task_arn: &str) -> Option<serde_json::Value> {
        self.run_task_requests().into_iter().find_map(|r| {
            let started = r["taskArns"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == task_arn));
            (started && r["replay"] != true).then(|| r["request"].clone())
        })
    }

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
    /// container [`CONTAINER`] that has `memory` (moto needs it) and port 22; returns its ARN.
    pub async fn register_task_definition(&self, family: &str) -> String {
        let out = self
            .ecs_client()
            .register_task_definition()
            .family(family)
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

    /// The task as moto has it, tags included (this advances moto's state machine too).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_loopback_and_never_127_0_0() {
        for port in [0u16, 1, 255, 256, 16383, 16384, 40000, 65535] {
            let cidr = cidr_for_port(port);
            let net = cidr.trim_end_matches("/24");
            let ip: Ipv4Addr = net.parse().unwrap();
            assert!(ip.is_loopback(), "{cidr}");
            assert!(ip.octets()[1] >= 64 && ip.octets()[1] < 128, "{cidr}");
        }
        assert_ne!(cidr_for_port(40000), cidr_for_port(40001));
    }
}
