//! A local Fargate: the moto ECS emulator plus one real OpenSSH `sshd` per task, listening
//! on the task's own loopback IP with the task's `SSH_PUBLIC_KEY`, stopped when the task
//! stops. Everything stays on 127.0.0.0/8.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fault_proxy::FaultProxy;
use crate::moto::{Moto, MotoEcs};
use crate::sshd::{Sshd, login_user};
use aws_sdk_ecs::types::DesiredStatus;

/// The `Namespace` of [`LocalFargate::fargate_toml`]: job keys are `local-<job id>`.
pub const NAMESPACE: &str = "local";

/// Options of a [`LocalFargate`].
#[derive(Clone, Debug)]
pub struct LocalFargateOptions {
    /// sshd of a new task starts this long after the task is `RUNNING` (image still booting).
    pub sshd_delay: Duration,
    /// The SSH port of every task (each task has its own IP).
    pub ssh_port: u16,
    /// Jobs log in as a dedicated user with this login shell and a fresh home
    /// ([`crate::sshd::login_user`]), like in a task image (default `/bin/bash`).
    /// `None`: as root, with the rc files of the machine this runs on (which may be slow or
    /// hang: a pyenv `init` in root's `.bashrc` waits a minute on a lock a killed shell left).
    pub login_shell: Option<PathBuf>,
    /// For this long after `RunTask`, the ECS API does not show a task to the driver
    /// (`DescribeTasks` answers `MISSING`, `ListTasks` leaves it out), as real ECS may do
    /// ([`crate::moto::MotoBuilder::visibility_lag`]). The task itself (its sshd)
    /// starts at once.
    pub visibility_lag: Duration,
    /// Extra `sshd_config` lines for every task's sshd (e.g. to offer only algorithms the
    /// driver cannot use).
    pub sshd_config: Vec<String>,
    /// What each task announces as its SSH servers' host keys in its log stream (as the
    /// example task image's entry point does): the real ones by default.
    pub announced_host_keys: AnnouncedHostKeys,
}

/// What a task of the [`LocalFargate`] writes to its containers' CloudWatch Logs streams
/// (in moto, named as the task definition's `awslogs` configuration says) as
/// `fargate-host-key:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnouncedHostKeys {
    /// Each SSH server's own host key.
    #[default]
    Real,
    /// A key no server has: as if another host answered for the task's address.
    Other,
}

impl Default for LocalFargateOptions {
    fn default() -> Self {
        LocalFargateOptions {
            sshd_delay: Duration::ZERO,
            ssh_port: 2222,
            login_shell: Some(PathBuf::from("/bin/bash")),
            visibility_lag: Duration::from_secs(1),
            sshd_config: Vec::new(),
            announced_host_keys: AnnouncedHostKeys::Real,
        }
    }
}

/// moto plus a task watcher that gives each running task an sshd, and a fault-injecting
/// proxy between the driver and moto.
pub struct LocalFargate {
    moto: Arc<Moto>,
    proxy: FaultProxy,
    /// Cluster, task definition, subnets and security group created in moto.
    pub ecs: MotoEcs,
    options: LocalFargateOptions,
    /// The SSH user of the jobs.
    username: String,
    delay: Arc<Mutex<Duration>>,
    servers: Arc<Mutex<HashMap<String, Vec<Sshd>>>>,
    events: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalFargate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFargate")
            .field("moto", &self.moto)
            .field("ecs", &self.ecs)
            .finish_non_exhaustive()
    }
}

impl LocalFargate {
    /// Starts moto, creates the cluster and task definition, and starts the task watcher.
    ///
    /// # Panics
    /// When moto or sshd is missing (with the command that installs them), or when the user
    /// of [`LocalFargateOptions::login_shell`] cannot be created (it needs root).
    pub async fn start(options: LocalFargateOptions) -> LocalFargate {
        let username = match &options.login_shell {
            Some(shell) => login_user(shell).unwrap_or_else(|e| panic!("{e}")),
            None => "root".to_owned(),
        };
        let moto = Arc::new(
            Moto::builder()
                .visibility_lag(options.visibility_lag)
                .start(),
        );
        let proxy = FaultProxy::start(&moto.endpoint_url());
        let ecs = moto.setup().await;
        let delay = Arc::new(Mutex::new(options.sshd_delay));
        let servers = Arc::new(Mutex::new(HashMap::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (moto, cluster, delay, servers, events, stop) = (
                moto.clone(),
                ecs.cluster.clone(),
                delay.clone(),
                servers.clone(),
                events.clone(),
                stop.clone(),
            );
            let options = options.clone();
            std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(watch(moto, cluster, options, delay, servers, events, stop));
            })
        };
        LocalFargate {
            moto,
            proxy,
            ecs,
            options,
            username,
            delay,
            servers,
            events,
            stop,
            watcher: Some(watcher),
        }
    }

    /// The user jobs log in as over SSH (root, or the user of
    /// [`LocalFargateOptions::login_shell`]).
    pub fn ssh_username(&self) -> &str {
        &self.username
    }

    /// The moto server.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The proxy the driver's requests go through ([`LocalFargate::driver_env`]): inject
    /// throttling, failures or a slow API there.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// Starts another task for job key `job_key` the way the driver does (same `startedBy`
    /// and `fargate:job-key` tag), with its own client token: what an earlier launch whose
    /// answer was lost leaves behind. Returns its ARN.
    ///
    /// # Panics
    /// When moto refuses it.
    pub async fn start_stray_task(&self, job_key: &str) -> String {
        let key = fargate_core::JobKey::parse(job_key).unwrap_or_else(|e| panic!("{e}"));
        let spec = self.ecs.spec(1);
        let out = self
            .moto
            .ecs_client()
            .run_task()
            .cluster(&self.ecs.cluster)
            .task_definition(&self.ecs.task_definition)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .started_by(fargate_aws::tags::started_by(&key))
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key(fargate_aws::tags::JOB_KEY)
                    .value(key.as_str())
                    .build(),
            )
            .overrides(
                aws_sdk_ecs::types::TaskOverride::builder()
                    .container_overrides(
                        aws_sdk_ecs::types::ContainerOverride::builder()
                            .name(&spec.container_name)
                            .environment(
                                aws_sdk_ecs::types::KeyValuePair::builder()
                                    .name("SSH_PUBLIC_KEY")
                                    .value(&spec.environment["SSH_PUBLIC_KEY"])
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .network_configuration(
                aws_sdk_ecs::types::NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                            .subnets(&self.ecs.subnets[0])
                            .security_groups(&self.ecs.security_groups[0])
                            .build()
                            .unwrap_or_else(|e| panic!("{e}")),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("starting a stray task: {e:?}"));
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .unwrap_or_else(|| panic!("moto started no task"))
            .to_owned()
    }

    /// Changes the sshd start delay of tasks started from now on.
    pub fn set_sshd_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// What the watcher did (`sshd for <task> on <ip>`, `stopped sshd of <task>`).
    pub fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Environment for the `fargate` binary: AWS endpoint (the [proxy](LocalFargate::proxy)
    /// in front of moto), dummy credentials, region, and no instance metadata lookups.
    pub fn driver_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.proxy.endpoint_url()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A `fargate.toml` for this cluster, with records in `metadata_dir`.
    pub fn fargate_toml(&self, metadata_dir: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "LogLevel = \"info\"");
        let _ = writeln!(s, "Namespace = \"{NAMESPACE}\"");
        let _ = writeln!(s, "[Fargate]");
        let _ = writeln!(s, "  Cluster = \"{}\"", self.ecs.cluster);
        let _ = writeln!(s, "  Region = \"us-east-1\"");
        let _ = writeln!(s, "  Subnets = {:?}", self.ecs.subnets);
        let _ = writeln!(s, "  SecurityGroups = {:?}", self.ecs.security_groups);
        let _ = writeln!(s, "  TaskDefinition = \"{}\"", self.ecs.task_definition);
        let _ = writeln!(s, "  ReadyTimeout = \"60s\"");
        let _ = writeln!(s, "  PollInitialInterval = \"500ms\"");
        let _ = writeln!(s, "  PollMaxInterval = \"2s\"");
        let _ = writeln!(s, "  StopTimeout = \"30s\"");
        let _ = writeln!(s, "[TaskMetadata]");
        let _ = writeln!(s, "  Directory = {:?}", metadata_dir.display().to_string());
        let _ = writeln!(s, "[SSH]");
        let _ = writeln!(s, "  Username = {:?}", self.username);
        let _ = writeln!(s, "  Port = {}", self.options.ssh_port);
        let _ = writeln!(s, "  ConnectTimeout = \"5s\"");
        let _ = writeln!(s, "  ProbeInterval = \"100ms\"");
        s
    }

    /// ARNs of the tasks whose desired status is `RUNNING`, as ECS really has them (the
    /// fixture's own view, never lagged).
    ///
    /// # Panics
    /// When moto does not answer: an assertion that nothing runs must not pass because the
    /// fixture failed.
    pub async fn running_tasks(&self) -> Vec<String> {
        list_running(&self.moto.ecs_client(), &self.ecs.cluster)
            .await
            .unwrap_or_else(|e| panic!("listing the running tasks: {e}"))
    }

    /// The deadline (Unix seconds) that the driver last wrote for `task_arn`'s self-stop
    /// (`FARGATE_DEADLINE_FILE` of its first container's SSH server), if any.
    pub fn task_deadline(&self, task_arn: &str) -> Option<u64> {
        let file = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_arn)?
            .first()?
            .deadline_file();
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Stops a task as ECS would on its own (e.g. the essential container exited).
    pub async fn stop_task(&self, task_arn: &str, reason: &str) {
        let _ = self
            .moto
            .ecs_client()
            .stop_task()
            .cluster(&self.ecs.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await;
        // The container goes away with the task.
        let server = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_arn);
        for sshd in server.into_iter().flatten() {
            sshd.kill();
        }
    }
}

impl Drop for LocalFargate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

async fn list_running(client: &aws_sdk_ecs::Client, cluster: &str) -> Result<Vec<String>, String> {
    let mut arns = Vec::new();
    let mut next = None;
    loop {
        let page = client
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        arns.extend(page.task_arns().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => return Ok(arns),
        }
    }
}

/// The SSH port of the task's job container (a derived task definition's `job` container,
/// [`fargate_core::images::JOB_CONTAINER`]) when the task has one with an SSH key override.
async fn job_container_port(
    client: &aws_sdk_ecs::Client,
    task: &aws_sdk_ecs::types::Task,
) -> Option<u16> {
    let job = fargate_core::images::JOB_CONTAINER;
    let overridden = task
        .overrides()
        .map(|o| o.container_overrides())
        .unwrap_or_default()
        .iter()
        .any(|c| c.name() == Some(job));
    if !overridden {
        return None;
    }
    let out = client
        .describe_task_definition()
        .task_definition(task.task_definition_arn()?)
        .send()
        .await
        .ok()?;
    let port = out
        .task_definition()?
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(job))?
        .port_mappings()
        .first()?
        .container_port()?;
    u16::try_from(port).ok()
}

/// Writes `fargate-host-key: <key>` for each `(container, public key line)` to the
/// container's log stream in moto, named as the task's definition says
/// (`<awslogs-stream-prefix>/<container>/<task id>` of `awslogs-group`); containers without
/// an `awslogs` configuration announce nothing (their output goes nowhere).
async fn announce(
    moto: &Moto,
    client: &aws_sdk_ecs::Client,
    task: &aws_sdk_ecs::types::Task,
    keys: &[(&str, String)],
) -> Result<(), String> {
    let Some(arn) = task.task_definition_arn() else {
        return Ok(());
    };
    let out = client
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let Some(definition) = out.task_definition() else {
        return Ok(());
    };
    let task_id = task
        .task_arn()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    for (container, line) in keys {
        let Some(options) = definition
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(*container))
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
        else {
            continue;
        };
        let (Some(group), Some(prefix)) = (
            options.get("awslogs-group"),
            options.get("awslogs-stream-prefix"),
        ) else {
            continue;
        };
        let stream = format!("{prefix}/{container}/{task_id}");
        let logs = |op: &str, input: serde_json::Value| {
            moto.try_aws_json("logs", "Logs_20140328", op, &input)
        };
        // The group is shared by every task; it may exist already.
        let _ = logs("CreateLogGroup", serde_json::json!({"logGroupName": group}));
        logs(
            "CreateLogStream",
            serde_json::json!({"logGroupName": group, "logStreamName": stream}),
        )?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut words = line.split_whitespace();
        let key = format!(
            "fargate-host-key: {} {}",
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default()
        );
        logs(
            "PutLogEvents",
            serde_json::json!({
                "logGroupName": group,
                "logStreamName": stream,
                "logEvents": [
                    {"timestamp": now, "message": "docker-entrypoint: installed the job's public key"},
                    {"timestamp": now, "message": key},
                ],
            }),
        )?;
    }
    Ok(())
}

/// Gives each new running task an sshd (two for a task of a job image: the helper's and the
/// job container's), and takes them away when the task stops.
async fn watch(
    moto: Arc<Moto>,
    cluster: String,
    options: LocalFargateOptions,
    delay: Arc<Mutex<Duration>>,
    servers: Arc<Mutex<HashMap<String, Vec<Sshd>>>>,
    events: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let client = moto.ecs_client();
    let log = |e: String| events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(running) = list_running(&client, &cluster).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let new: Vec<String> = running
            .iter()
            .filter(|a| !seen.contains(*a))
            .cloned()
            .collect();
        if !new.is_empty()
            && let Ok(out) = client
                .describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(new))
                .send()
                .await
        {
            for task in out.tasks() {
                let Some(arn) = task.task_arn() else { continue };
                seen.insert(arn.to_owned());
                let ip = task
                    .attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .find(|d| d.name() == Some("privateIPv4Address"))
                    .and_then(|d| d.value())
                    .and_then(|v| v.parse::<IpAddr>().ok());
                let key = task
                    .overrides()
                    .map(|o| o.container_overrides())
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|c| c.environment())
                    .find(|e| e.name() == Some("SSH_PUBLIC_KEY"))
                    .and_then(|e| e.value())
                    .map(str::to_owned);
                let (Some(ip), Some(key)) = (ip, key) else {
                    log(format!(
                        "task {arn} has no IP or no SSH_PUBLIC_KEY: no sshd"
                    ));
                    continue;
                };
                // Only loopback: a task IP elsewhere would mean the fixture is broken.
                if !ip.is_loopback() {
                    log(format!("task {arn} has non-loopback IP {ip}: no sshd"));
                    continue;
                }
                let d = *delay.lock().unwrap_or_else(|p| p.into_inner());
                // A task of a job image has a second SSH server: the job container's.
                let job_port = job_container_port(&client, task).await;
                let mut containers = vec![("helper", options.ssh_port)];
                containers.extend(job_port.map(|port| ("job", port)));
                let mut started = Vec::new();
                for (container, port) in &containers {
                    let mut builder = Sshd::builder().address(ip).port(*port).start_delay(d);
                    if let Some(shell) = &options.login_shell {
                        builder = builder.login_shell(shell);
                    }
                    for line in &options.sshd_config {
                        builder = builder.config_line(line);
                    }
                    if job_port.is_some() {
                        builder =
                            builder.config_line(format!("SetEnv FARGATE_CONTAINER={container}"));
                    }
                    match builder.start().and_then(|s| s.authorize(&key).map(|()| s)) {
                        Ok(sshd) => {
                            log(format!(
                                "sshd for {arn} on {ip}:{port} (after {d:?}){}",
                                if *container == "job" {
                                    " in the job container"
                                } else {
                                    ""
                                }
                            ));
                            started.push(sshd);
                        }
                        Err(e) => log(format!("cannot start sshd for {arn}: {e}")),
                    }
                }
                // The entry point announces the host keys in the container's log stream.
                let announced: Vec<(&str, String)> = containers
                    .iter()
                    .zip(&started)
                    .map(|((container, _), sshd)| {
                        let name = if *container == "job" {
                            fargate_core::images::JOB_CONTAINER
                        } else {
                            crate::moto::CONTAINER
                        };
                        let line = match options.announced_host_keys {
                            AnnouncedHostKeys::Real => sshd.host_public_key().to_owned(),
                            AnnouncedHostKeys::Other => {
                                crate::sshd::throwaway_public_key().unwrap_or_default()
                            }
                        };
                        (name, line)
                    })
                    .collect();
                if let Err(e) = announce(&moto, &client, task, &announced).await {
                    log(format!("cannot announce the host keys of {arn}: {e}"));
                }
                servers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(arn.to_owned(), started);
            }
        }
        let gone: Vec<String> = servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|a| !running.contains(*a))
            .cloned()
            .collect();
        for arn in gone {
            servers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&arn);
            log(format!("stopped sshd of {arn}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
