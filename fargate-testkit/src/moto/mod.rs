//! The moto fixture: [`Moto`], a moto server on loopback that plays ECS and EC2 and refuses
//! and delays what ECS refuses and delays. [`FaultProxy`](crate::fault_proxy::FaultProxy)
//! injects the errors and hangs moto cannot produce.
//!
//! moto (5.2.5) is found through `FARGATE_MOTO_PYTHON` (a Python interpreter that can
//! `import moto`), else `python3`; without it the fixture panics with the install command
//! (`pip install 'moto[server]==5.2.5'`).
//!
//! The server runs from a small launcher shipped in this crate that patches moto so that tests
//! fail for the reasons production would. Every rule, its source in the ECS API reference, what
//! moto does alone and how the fixture emulates it is in `docs/ecs-api-rules.md`. In short:
//!
//! * Task ENIs get loopback addresses from [`Moto::task_cidr`] (a /24 inside `127.64.0.0/10`,
//!   distinct per fixture), and tasks stay `RUNNING` (or boot through `PROVISIONING` and
//!   `PENDING`: [`MotoBuilder::provisioning_describes`]).
//! * **Eventual consistency**: with [`MotoBuilder::visibility_lag`] /
//!   [`Moto::set_visibility_lag`], a new task is unknown for that long after its `RunTask`:
//!   `DescribeTasks` answers it under `failures[]` with reason `MISSING` and `ListTasks` leaves
//!   it out (the `RunTask` answer itself carries it; a task `StopTask` stopped is visible at
//!   once). `DescribeTasks` of an unknown task answers `MISSING` too, as ECS does.
//! * **The oracle view**: requests signed with the access key id [`ORACLE_ACCESS_KEY`] are
//!   never lagged. [`Moto::ecs_client`], [`Moto::describe_task`] and the other inspection
//!   helpers of the fixture use it, and so can test code and harnesses
//!   ([`Moto::oracle_sdk_config`]). The code under test gets [`Moto::sdk_config`] (access key
//!   `test`), which **is** subject to the lag.
//! * `RunTask` honours `clientToken` (the same token and request return the first call's
//!   tasks; the same token with another request is a `ConflictException`) and records every
//!   request ([`Moto::run_task_requests`]).
//! * ECS's parameter rules, refused as ECS refuses them (HTTP 400 with an ECS exception):
//!   `ListTasks` with `startedBy` and another filter, `maxResults` outside 1-100 (and
//!   `ListTasks` paginates, 100 tasks a page by default, and lists only `RUNNING` tasks unless
//!   asked for `desiredStatus`); `RunTask` `startedBy` over 36 characters or with other
//!   characters than letters, digits, `-`, `/`, `_`, `clientToken` over 64 characters, more
//!   than 50 tags or bad tags, `overrides` over 8192 characters of JSON, `count` outside
//!   1-10; `DescribeTasks` of more than 100 tasks; `StopTask` of an unknown task ("The
//!   referenced task was not found.") or with a reason over 255 characters;
//!   `RegisterTaskDefinition` of a Fargate CPU/memory combination that Fargate does not offer.
//! * Tasks carry ECS's timestamps (`createdAt`, `startedAt`, `stoppedAt`...), `stopCode`,
//!   `cpu`, `memory` and `availabilityZone`.
//!
//! [`FaultProxy`](crate::fault_proxy::FaultProxy) adds what a rule cannot express: injected errors, `RunTask` `failures[]`
//! and calls that hang ([`Fault::delay`](crate::fault_proxy::Fault::delay)).
//!
//! No traffic leaves the loopback interface: the SDK configuration has an explicit endpoint,
//! region and dummy credentials.
//!
//! ```no_run
//! # async fn demo() {
//! use fargate_testkit::moto::Moto;
//! let moto = Moto::start();
//! let ecs = moto.setup().await; // cluster, task definition, default-VPC subnets and group
//! let launcher = fargate_aws::EcsLauncher::new(ecs.config(), &moto.sdk_config()).unwrap();
//! # let _ = launcher; }
//! ```
//!
//! Note that moto advances a task's state machine on every `DescribeTasks`, the fixture's own
//! ([`Moto::describe_task`]) included.

mod ecs;
mod python;
mod sdk;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http;

pub use ecs::MotoEcs;
pub use python::moto_python;
pub use sdk::{oracle_sdk_config_for, sdk_config_for};

/// The moto version the fixture and its patches are written for.
pub const MOTO_VERSION: &str = "5.2.5";
/// The command that installs it.
pub const MOTO_INSTALL: &str = "pip install 'moto[server]==5.2.5'";
/// Container name of the fixture's task definition.
pub const CONTAINER: &str = "ci-coordinator";
/// The CloudWatch Logs group of the fixture's task definition (`awslogs-group`).
pub const LOG_GROUP: &str = "/ecs/ci";
/// The stream prefix of the fixture's task definition (`awslogs-stream-prefix`).
pub const LOG_STREAM_PREFIX: &str = "job";

/// The access key id of the oracle view: requests signed with it see every task at once,
/// whatever the [visibility lag](Moto::set_visibility_lag).
pub const ORACLE_ACCESS_KEY: &str = "fgt-oracle";

const LAUNCHER: &str = include_str!("moto_launcher.py");

/// Options of a [`Moto`] server.
#[derive(Clone, Debug, Default)]
pub struct MotoBuilder {
    task_cidr: Option<String>,
    provisioning_describes: u32,
    visibility_lag: Duration,
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

    /// Eventual consistency: for `lag` after its `RunTask`, a task is unknown to
    /// `DescribeTasks` (`failures[]` with reason `MISSING`) and left out of `ListTasks`,
    /// except for the oracle view (default: zero, no lag). See [`Moto::set_visibility_lag`].
    pub fn visibility_lag(mut self, lag: Duration) -> Self {
        self.visibility_lag = lag;
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
            moto.set_visibility_lag(self.visibility_lag);
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

    /// An SDK configuration for this server ([`sdk_config_for`]): what the code under test
    /// uses, subject to the [visibility lag](Moto::set_visibility_lag).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint_url())
    }

    /// An SDK configuration for the oracle view of this server ([`oracle_sdk_config_for`]):
    /// every task is visible at once, whatever the visibility lag.
    pub fn oracle_sdk_config(&self) -> aws_config::SdkConfig {
        oracle_sdk_config_for(&self.endpoint_url())
    }

    /// An ECS client for the oracle view of this server (never lagged): for test code and
    /// harnesses, not for the code under test (give that [`Moto::sdk_config`]).
    pub fn ecs_client(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.oracle_sdk_config())
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

    /// Eventual consistency: tasks started from now on are unknown for `lag` after their
    /// `RunTask` to everyone but the oracle view: `DescribeTasks` answers them under
    /// `failures[]` with reason `MISSING`, `ListTasks` leaves them out. The `RunTask` answer
    /// carries them, and a task `StopTask` stopped is visible at once. Zero turns it off.
    pub fn set_visibility_lag(&self, lag: Duration) {
        std::fs::write(
            self.dir.path().join("visibility_lag"),
            format!("{:.3}", lag.as_secs_f64()),
        )
        .expect("writing the moto control file");
    }

    /// Throttles like ECS: token buckets by action name (`RunTask`, `StopTask`, ...), each
    /// `(refill per second, bucket size)`, and `FargateTasks` for the tasks `RunTask`
    /// starts. A call over its bucket fails with `ThrottlingException` "Rate exceeded"
    /// (HTTP 400) and changes nothing. Empty turns it off. [`Moto::ECS_THROTTLING`] holds
    /// ECS's published figures.
    pub fn set_throttling(&self, buckets: &[(&str, f64, f64)]) {
        let config: serde_json::Map<String, serde_json::Value> = buckets
            .iter()
            .map(|(name, rate, burst)| ((*name).to_owned(), serde_json::json!([rate, burst])))
            .collect();
        std::fs::write(
            self.dir.path().join("throttle"),
            serde_json::Value::Object(config).to_string(),
        )
        .expect("writing the moto control file");
    }

    /// ECS's throttling of the calls a launch makes, per account and region: `RunTask` 20
    /// calls per second with a bucket of 20 ("Request throttling for the Amazon ECS API"),
    /// Fargate task launches 20 per second with a bucket of 100 ("AWS Fargate throttling
    /// quotas"). For [`Moto::set_throttling`].
    pub const ECS_THROTTLING: [(&'static str, f64, f64); 2] =
        [("RunTask", 20.0, 20.0), ("FargateTasks", 20.0, 100.0)];

    /// The calls throttled so far (`{"action", "bucket", "at"}` each).
    pub fn throttled_calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("throttled.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Fault injection: `RunTask` calls that land on one of `providers` (the first provider
    /// of their strategy with a weight or base; `FARGATE` for launch type `FARGATE`) answer
    /// a `failures[]` entry with ECS's reason "Capacity is unavailable at this time. Please
    /// try again later or in a different availability zone" and start no task. Empty turns
    /// it off.
    pub fn set_no_capacity(&self, providers: &[&str]) {
        std::fs::write(self.dir.path().join("no_capacity"), providers.join("\n"))
            .expect("writing the moto control file");
    }

    /// Fault injection: `RunTask` starts at most `tasks` more tasks in all (`None`: no
    /// limit). A call whose `count` is over what is left starts what is left and answers one
    /// `failures[]` entry per task it did not start, with ECS's capacity reason, as ECS
    /// answers a call it could place only in part.
    pub fn set_capacity_tasks(&self, tasks: Option<u32>) {
        let path = self.dir.path().join("capacity_tasks");
        match tasks {
            Some(n) => std::fs::write(path, n.to_string()).expect("writing the moto control file"),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Private registries: `registries` are `(host, username, password)`, the host as image
    /// names start with it, each a login that registry accepts (a host may have several).
    /// A task with a container whose image comes from such a host pulls only when its
    /// `repositoryCredentials.credentialsParameter` names a Secrets Manager secret of
    /// moto (ARN or name) holding `{"username", "password"}` of such a login; otherwise it
    /// fails to start as ECS reports it: `STOPPED`, stop code `TaskFailedToStart`, reason
    /// `CannotPullContainerError: ... 401 Unauthorized` (task and container) without
    /// credentials or with a wrong login, `ResourceInitializationError: unable to pull
    /// secrets or registry auth: ...` (task) when the secret does not exist. Empty turns
    /// it off.
    pub fn set_private_registries(&self, registries: &[(&str, &str, &str)]) {
        let lines: Vec<String> = registries
            .iter()
            .map(|(host, user, password)| format!("{host} {user} {password}"))
            .collect();
        std::fs::write(self.dir.path().join("private_registries"), lines.join("\n"))
            .expect("writing the moto control file");
    }

    /// Fault injection: Fargate Spot takes `task_arn` back. The next `DescribeTasks` of it
    /// finds it `STOPPED` with stop code `SpotInterruption` and reason "Your Spot Task was
    /// interrupted.", as ECS reports it, if it runs on `FARGATE_SPOT` (other tasks are left
    /// alone, as on ECS).
    pub fn interrupt_spot_task(&self, task_arn: &str) {
        let path = self.dir.path().join("spot_interrupt");
        let mut arns = std::fs::read_to_string(&path).unwrap_or_default();
        arns.push_str(task_arn);
        arns.push('\n');
        std::fs::write(path, arns).expect("writing the moto control file");
    }

    /// Every `RegisterTaskDefinition` holds its family for `hold` before it answers, and a
    /// second registration of the family meanwhile is refused as ECS refuses concurrent
    /// revisions ("Too many concurrent attempts..."). Zero (the default) holds nothing.
    pub fn set_register_hold(&self, hold: Duration) {
        std::fs::write(
            self.dir.path().join("register_hold"),
            format!("{:.3}", hold.as_secs_f64()),
        )
        .expect("writing the moto control file");
    }

    /// One raw DynamoDB call (JSON 1.0, `X-Amz-Target: DynamoDB_20120810.<operation>`), for
    /// test code that looks at or shapes a table behind the code under test's back: the
    /// HTTP status and the JSON answer.
    pub fn dynamodb(&self, operation: &str, input: &serde_json::Value) -> (u16, serde_json::Value) {
        let target = format!("DynamoDB_20120810.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=fgt-oracle/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ];
        let r = self
            .http("POST", "/", &headers, input.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("moto DynamoDB {operation}: {e}"));
        let answer = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, answer)
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

    /// Calls `operation` of a JSON-protocol service of this server (`signing_name` as in a
    /// SigV4 scope, e.g. `secretsmanager` or `logs`; `target` the `X-Amz-Target` prefix,
    /// e.g. `secretsmanager` or `Logs_20140328`) with `input`, in the oracle view; the
    /// answer. Panics on an error answer: for test code checking or seeding state.
    pub fn aws_json(
        &self,
        signing_name: &str,
        target: &str,
        operation: &str,
        input: &serde_json::Value,
    ) -> serde_json::Value {
        self.try_aws_json(signing_name, target, operation, input)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Moto::aws_json`], with an error answer (or no answer) as `Err` with its text.
    pub fn try_aws_json(
        &self,
        signing_name: &str,
        target: &str,
        operation: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ORACLE_ACCESS_KEY}/20250101/us-east-1/{signing_name}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let target = format!("{target}.{operation}");
        let r = self
            .http(
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("X-Amz-Target", &target),
                    ("Authorization", &auth),
                ],
                input.to_string().as_bytes(),
            )
            .map_err(|e| format!("moto {target}: {e}"))?;
        if r.status >= 300 {
            return Err(format!("moto {target}: HTTP {}: {}", r.status, r.body));
        }
        Ok(serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null))
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
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
