//! [`Driver`]: the custom executor's stages as operations over the three traits.
//!
//! ```text
//! prepare:  lock ─ leftover record? stop it ─ key pair ─ put(LaunchRequested, token)
//!           ─ launch ─ put(Launched, task) ─ wait: describe until IP, probe SSH until up
//!           ─ put(Ready, endpoint, host key)
//!           any failure or cancel after the first put: stop what was launched (own deadline)
//! run:      get(Ready) ─ run script, pinned host key ─ exit N: script failure N
//!           connection trouble: describe the task, name ECS's stop reason
//! cleanup:  lock ─ get ─ put(Stopping) ─ stop the recorded task, or find the job's tasks
//!           ─ delete the record (only once every task is stopped)
//! ```
//!
//! Each stage is its own process under gitlab-runner: nothing is shared in memory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{DriverConfig, task_definition_allowed};
use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::{JobContext, JobKey};
use crate::launcher::{DynTaskLauncher, Endpoint, StopDetails, TaskRef, TaskSpec};
use crate::metadata::{DynMetadataStore, JobRecord, Phase, unix_now};
use crate::shell::{DynRemoteShell, HostKey, OutputSink, RunOutcome, RunRequest};

/// Environment variable that carries the job's public key into the task.
pub const SSH_PUBLIC_KEY_ENV: &str = "SSH_PUBLIC_KEY";
/// Job variable that asks for another task definition.
pub const TASK_DEFINITION_VARIABLE: &str = "FARGATE_TASK_DEFINITION";
/// Job variable that asks for another platform version.
pub const PLATFORM_VERSION_VARIABLE: &str = "FARGATE_PLATFORM_VERSION";

/// How long a stage waits for another stage of the same job to release the job's lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What the config stage prints: `{"driver":{..},"hostname":..}` plus the optional keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigOutput {
    /// Driver name and version, shown by the runner.
    pub driver: DriverInfo,
    /// The job's hostname (the Go driver's job id).
    pub hostname: String,
    /// `builds_dir` override, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builds_dir: Option<String>,
    /// `cache_dir` override, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
}

/// Name and version of the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverInfo {
    /// `fargate`.
    pub name: String,
    /// Version string.
    pub version: String,
}

/// The config stage: no backend call, only the job's identity.
pub fn config_output(config: &DriverConfig, job: &JobContext, version: &str) -> ConfigOutput {
    ConfigOutput {
        driver: DriverInfo {
            name: "fargate".into(),
            version: version.into(),
        },
        hostname: job.identity.go_id(),
        builds_dir: config.builds_dir.clone(),
        cache_dir: config.cache_dir.clone(),
    }
}

/// Settings given by the administrator on the command line (`--task-def`,
/// `--platform-version`), which beat both the file and job variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminOverrides {
    /// Task definition to use instead of `[Fargate] TaskDefinition`.
    pub task_definition: Option<String>,
    /// Platform version to use instead of `[Fargate] PlatformVersion`.
    pub platform_version: Option<String>,
}

/// The task definition and platform version for `job`, with job variables checked against
/// what the administrator allowed.
///
/// Order: `--task-def` (admin), then the job's `FARGATE_TASK_DEFINITION` (only if it matches
/// `[Fargate] AllowedTaskDefinitions`, or equals the default), then `[Fargate] TaskDefinition`.
pub fn resolve_task_definition(
    config: &DriverConfig,
    admin: &AdminOverrides,
    job: &JobContext,
) -> Result<(String, Option<String>)> {
    let f = &config.fargate;
    let default_td = admin
        .task_definition
        .clone()
        .unwrap_or_else(|| f.task_definition.clone());
    let td = match job.variable(TASK_DEFINITION_VARIABLE) {
        None => default_td,
        Some(asked) if asked == default_td => default_td,
        Some(asked) if task_definition_allowed(asked, &f.allowed_task_definitions) => {
            asked.to_owned()
        }
        Some(asked) => {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "the job asks for task definition {asked:?} ({TASK_DEFINITION_VARIABLE}), which this runner does not allow"
                ),
            )
            .with_hint(if f.allowed_task_definitions.is_empty() {
                "remove the variable, or ask the runner's administrator to list allowed task definitions in [Fargate] AllowedTaskDefinitions".to_owned()
            } else {
                format!("allowed: {}", f.allowed_task_definitions.join(", "))
            }));
        }
    };
    let default_pv = admin
        .platform_version
        .clone()
        .or_else(|| f.platform_version.clone());
    let pv = match job.variable(PLATFORM_VERSION_VARIABLE) {
        Some(asked) if f.allow_platform_version_override => Some(asked.to_owned()),
        Some(asked) if Some(asked) != default_pv.as_deref() => {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!("the job asks for platform version {asked:?} ({PLATFORM_VERSION_VARIABLE}), which this runner does not allow"),
            )
            .with_hint("remove the variable, or ask the runner's administrator to set [Fargate] AllowPlatformVersionOverride = true"));
        }
        _ => default_pv,
    };
    Ok((td, pv))
}

/// What prepare did, for the job log.
#[derive(Clone, Debug)]
pub struct PrepareReport {
    /// The task.
    pub task: TaskRef,
    /// Where its SSH server answers.
    pub endpoint: Endpoint,
    /// The pinned host key.
    pub host_key: HostKey,
    /// Time from start of prepare until the launcher accepted the task.
    pub launch_accepted: Duration,
    /// Time until the task's address was known.
    pub address_known: Duration,
    /// Time until SSH answered.
    pub ssh_ready: Duration,
    /// DescribeTasks calls made while waiting.
    pub describe_calls: u32,
    /// SSH probes made while waiting.
    pub probes: u32,
}

/// What cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Tasks asked to stop.
    pub stopped: Vec<TaskRef>,
    /// Whether a job record existed.
    pub had_record: bool,
}

/// Runs the stages of jobs against a launcher, a shell and a store.
#[derive(Clone, Debug)]
pub struct Driver {
    config: Arc<DriverConfig>,
    launcher: DynTaskLauncher,
    shell: DynRemoteShell,
    store: DynMetadataStore,
    admin: AdminOverrides,
}

impl Driver {
    /// A driver with the given backends.
    pub fn new(
        config: DriverConfig,
        launcher: DynTaskLauncher,
        shell: DynRemoteShell,
        store: DynMetadataStore,
    ) -> Self {
        Driver {
            config: Arc::new(config),
            launcher,
            shell,
            store,
            admin: AdminOverrides::default(),
        }
    }

    /// Sets the administrator's command-line overrides.
    pub fn with_admin_overrides(mut self, admin: AdminOverrides) -> Self {
        self.admin = admin;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Starts the job's task and waits until its SSH server answers.
    ///
    /// On any failure or cancellation after the task may have been launched, the task is
    /// stopped under `[Fargate] StopTimeout` (never under the cancelled token) and the record
    /// removed once it is stopped; if stopping fails, the record stays for cleanup.
    pub async fn prepare(
        &self,
        job: &JobContext,
        cancel: &CancellationToken,
    ) -> std::result::Result<PrepareReport, Failure> {
        let start = Instant::now();
        let key = job.identity.key();
        let (task_definition, platform_version) =
            resolve_task_definition(&self.config, &self.admin, job).map_err(|e| {
                // The job asked for something it may not have: its own fault, not the system's.
                Failure::script(1, e.to_string())
            })?;
        let _lock = self.store.lock(&key, LOCK_WAIT).await?;

        if let Some(old) = self.read_record_for_cleanup(&key).await? {
            tracing::warn!(job = %key, phase = ?old.phase, "found the record of an earlier attempt of this job; stopping its task first");
            self.stop_job(&key, Some(old)).await?;
        }

        let keys = self.shell.generate_key(self.config.ssh.key_type).await?;
        let mut record = JobRecord::new(
            key.clone(),
            job.identity.clone(),
            new_client_token(),
            keys.private_key,
        );
        self.store.put(&record).await?;

        let spec = TaskSpec {
            job: job.identity.clone(),
            key: key.clone(),
            client_token: record.client_token.clone(),
            task_definition,
            platform_version,
            container_name: self.config.fargate.container_name.clone(),
            environment: BTreeMap::from([(SSH_PUBLIC_KEY_ENV.to_owned(), keys.public_key)]),
        };
        tracing::info!(task_definition = %spec.task_definition, "starting a Fargate task");
        let launched = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::cancelled("starting the task")),
            r = self.launcher.launch(&spec) => r,
        };
        let task = match launched {
            Ok(task) => task,
            Err(err) => {
                // The launcher may have accepted the task before failing (lost response,
                // cancellation): look for it by the job's identity.
                return Err(self.roll_back(&key, record, err).await);
            }
        };
        let launch_accepted = start.elapsed();
        tracing::info!(task = %task, elapsed_ms = launch_accepted.as_millis() as u64, "task accepted");
        record.task = Some(task.clone());
        record.phase = Phase::Launched;
        record.updated_at = unix_now();
        if let Err(err) = self.store.put(&record).await {
            return Err(self.roll_back(&key, record, err).await);
        }

        let deadline = start + self.config.fargate.ready_timeout;
        let waited = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::cancelled("waiting for the task")),
            r = self.wait_ready(&task, deadline) => r,
        };
        let ready = match waited {
            Ok(ready) => ready,
            Err(err) => return Err(self.roll_back(&key, record, err).await),
        };
        record.endpoint = Some(ready.endpoint);
        record.host_key = Some(ready.host_key.clone());
        record.phase = Phase::Ready;
        record.updated_at = unix_now();
        if let Err(err) = self.store.put(&record).await {
            return Err(self.roll_back(&key, record, err).await);
        }
        let ssh_ready = start.elapsed();
        tracing::info!(
            task = %task,
            endpoint = %ready.endpoint,
            host_key = %ready.host_key,
            launch_accepted_ms = launch_accepted.as_millis() as u64,
            address_known_ms = ready.address_known.as_millis() as u64,
            ssh_ready_ms = ssh_ready.as_millis() as u64,
            describe_calls = ready.describe_calls,
            "task is ready"
        );
        Ok(PrepareReport {
            task,
            endpoint: ready.endpoint,
            host_key: ready.host_key,
            launch_accepted,
            address_known: ready.address_known,
            ssh_ready,
            describe_calls: ready.describe_calls,
            probes: ready.probes,
        })
    }

    /// Polls the task until its address is known, then probes SSH until it answers.
    async fn wait_ready(&self, task: &TaskRef, deadline: Instant) -> Result<Ready> {
        let started = Instant::now();
        let f = &self.config.fargate;
        let port = self.config.ssh.port;
        let mut interval = f.poll_initial_interval;
        let mut next_describe = started + interval;
        let mut address: Option<(IpAddr, Duration)> = None;
        let mut describe_calls = 0u32;
        let mut probes = 0u32;
        let mut last_probe_error: Option<Error> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let mut err = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "task {task} did not become reachable within {} s",
                        self.config.fargate.ready_timeout.as_secs()
                    ),
                );
                err = match (&address, &last_probe_error) {
                    (None, _) => err.with_hint("ECS never reported the task's IP address; check the cluster's capacity and the task's events in the ECS console, or raise [Fargate] ReadyTimeout"),
                    (Some((ip, _)), Some(probe)) => err.with_hint(format!(
                        "the task got IP {ip} but SSH on port {port} never answered ({}); check that the container runs sshd on that port and that the security group allows it from this host",
                        probe.message()
                    )),
                    (Some(_), None) => err,
                };
                return Err(err);
            }
            if now >= next_describe {
                describe_calls += 1;
                let described =
                    match tokio::time::timeout_at(deadline, self.launcher.describe(task)).await {
                        Ok(r) => r,
                        Err(_) => continue, // the deadline passed: reported at the top of the loop
                    };
                match described {
                    Ok(status) => {
                        if status.state.is_terminal() {
                            let details = status.stop.unwrap_or_default();
                            return Err(Error::new(
                                ErrorKind::TaskStopped,
                                format!("task {task} stopped before it was ready: {details}"),
                            )
                            .with_hint("the reason above comes from ECS; check the image, the task definition and the container's logs"));
                        }
                        if address.is_none()
                            && let Some(ip) = status.address
                        {
                            tracing::info!(%ip, elapsed_ms = started.elapsed().as_millis() as u64, state = ?status.state, "task IP address known");
                            address = Some((ip, started.elapsed()));
                        }
                    }
                    Err(err) if err.is_temporary() => {
                        tracing::warn!(error = %err, "describing the task failed; will try again");
                    }
                    Err(err) => return Err(err),
                }
                // Once the address is known, describing only watches for an early stop.
                interval = if address.is_some() {
                    f.poll_max_interval
                } else {
                    interval.mul_f64(1.5).min(f.poll_max_interval)
                };
                next_describe = Instant::now() + interval;
            }
            let Some((ip, address_known)) = address else {
                tokio::time::sleep_until(next_describe.min(deadline)).await;
                continue;
            };
            let endpoint = Endpoint { ip, port };
            probes += 1;
            let probe_started = Instant::now();
            match tokio::time::timeout_at(deadline, self.shell.probe(endpoint)).await {
                Ok(Ok(host_key)) => {
                    return Ok(Ready {
                        endpoint,
                        host_key,
                        address_known,
                        describe_calls,
                        probes,
                    });
                }
                Ok(Err(err)) if err.kind() == ErrorKind::Unreachable => {
                    last_probe_error = Some(err);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => continue, // the deadline passed: reported at the top of the loop
            }
            let next_probe = probe_started + self.config.ssh.probe_interval;
            tokio::time::sleep_until(next_probe.min(next_describe).min(deadline)).await;
        }
    }

    /// Stops whatever prepare may have launched, and returns `err` as the failure.
    async fn roll_back(&self, key: &JobKey, record: JobRecord, err: Error) -> Failure {
        tracing::error!(error = %err, "prepare failed; stopping the task it started");
        if let Err(stop_err) = self.stop_job(key, Some(record)).await {
            tracing::error!(error = %stop_err, "could not stop the task; the cleanup stage will try again");
        }
        Failure::System(err)
    }

    /// Runs one stage script in the job's task.
    pub async fn run(
        &self,
        job: &JobContext,
        stage: &str,
        script: Arc<[u8]>,
        output: &mut (dyn OutputSink + 'static),
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let key = job.identity.key();
        let record = self.store.get(&key).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("there is no record of job {key}: its prepare stage did not succeed, or cleanup already ran"),
            )
            .with_hint("check the prepare stage's log above; [TaskMetadata] Directory must be the same for all stages")
        })?;
        let (Phase::Ready, Some(task), Some(mut endpoint)) =
            (record.phase, record.task.clone(), record.endpoint)
        else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "job {key} is not ready (its record is in phase {:?})",
                    record.phase
                ),
            )
            .with_hint("prepare did not finish; see its log above")
            .into());
        };
        if endpoint.port == 0 {
            endpoint.port = self.config.ssh.port;
        }
        let request = RunRequest {
            endpoint,
            username: self.config.ssh.username.clone(),
            private_key: record.private_key.clone(),
            host_key: record.host_key.clone(),
            script,
        };
        tracing::debug!(%stage, %endpoint, "running the stage script in the task");
        let outcome = match self.run_watched(&task, &request, output, cancel).await {
            Watched::Finished(outcome) => outcome,
            Watched::TaskStopped(details) => {
                return Err(Failure::System(
                    Error::new(
                        ErrorKind::TaskStopped,
                        format!("task {task} stopped while the {stage} script was running: {details}"),
                    )
                    .with_hint("the reason above comes from ECS (e.g. the container ran out of memory, or Fargate Spot reclaimed the task)"),
                ));
            }
        };
        match outcome {
            Ok(RunOutcome::Exited(0)) => Ok(()),
            Ok(RunOutcome::Exited(code)) => Err(Failure::script(
                code,
                format!("the {stage} script exited with status {code}"),
            )),
            Ok(RunOutcome::Signaled { signal }) => {
                let code = 128 + signal_number(&signal).unwrap_or(0);
                Err(Failure::script(
                    code,
                    format!("the {stage} script was killed by signal {signal}"),
                ))
            }
            Err(err) if err.kind() == ErrorKind::Cancelled => Err(Failure::System(err)),
            Err(err) => Err(Failure::System(
                self.explain_with_task_state(&task, err).await,
            )),
        }
    }

    /// Runs the script while checking every `[Fargate] WatchInterval` that the task still
    /// runs; a stopped task cancels the script.
    async fn run_watched(
        &self,
        task: &TaskRef,
        request: &RunRequest,
        output: &mut (dyn OutputSink + 'static),
        cancel: &CancellationToken,
    ) -> Watched {
        let interval = self.config.fargate.watch_interval;
        let script_cancel = cancel.child_token();
        let mut run = std::pin::pin!(self.shell.run(request, output, &script_cancel));
        let mut stopped = None;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(interval), if !interval.is_zero() && stopped.is_none() => {
                    if let Ok(status) = self.launcher.describe(task).await
                        && status.state.is_terminal()
                    {
                        tracing::error!(task = %task, "the task stopped while the script was running");
                        stopped = Some(status.stop.unwrap_or_default());
                        script_cancel.cancel();
                    }
                }
            }
        };
        match stopped {
            Some(details) => Watched::TaskStopped(details),
            None => Watched::Finished(result),
        }
    }

    /// When SSH fails, the task stopping is the likeliest cause: say so if it is.
    async fn explain_with_task_state(&self, task: &TaskRef, err: Error) -> Error {
        if !matches!(
            err.kind(),
            ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::Unexpected
        ) {
            return err;
        }
        match self.launcher.describe(task).await {
            Ok(status) if status.state.is_terminal() => Error::new(
                ErrorKind::TaskStopped,
                format!(
                    "task {task} stopped: {} ({})",
                    status.stop.unwrap_or_default(),
                    err.message()
                ),
            )
            .with_source(err),
            _ => err,
        }
    }

    /// Stops the job's task and deletes its record. Idempotent; needs no record.
    pub async fn cleanup(&self, job: &JobContext) -> std::result::Result<CleanupReport, Failure> {
        let key = job.identity.key();
        let _lock = self.store.lock(&key, LOCK_WAIT).await?;
        let record = self.read_record_for_cleanup(&key).await?;
        let had_record = record.is_some();
        let stopped = self.stop_job(&key, record).await?;
        Ok(CleanupReport {
            stopped,
            had_record,
        })
    }

    /// Reads the record; an unreadable one counts as absent (its tasks are found by identity).
    async fn read_record_for_cleanup(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        match self.store.get(key).await {
            Ok(r) => Ok(r),
            Err(err) if err.kind() == ErrorKind::CorruptRecord => {
                tracing::warn!(error = %err, "the job record is unreadable; looking for the job's tasks by its identity");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Stops the recorded task (or the job's tasks found by identity) under the stop
    /// deadline, then deletes the record.
    async fn stop_job(&self, key: &JobKey, record: Option<JobRecord>) -> Result<Vec<TaskRef>> {
        let deadline = self.config.fargate.stop_timeout;
        let work = async {
            let mut tasks = Vec::new();
            if let Some(mut record) = record {
                if record.phase != Phase::Stopping {
                    record.phase = Phase::Stopping;
                    record.updated_at = unix_now();
                    if let Err(err) = self.store.put(&record).await {
                        tracing::warn!(error = %err, "could not mark the record as stopping");
                    }
                }
                if let Some(task) = record.task {
                    tasks.push(task);
                }
            }
            // Without a recorded task (crash between launch and record, Go record without
            // ARN, lost launch response) the backend's own tags find it.
            if tasks.is_empty() {
                tasks = self.launcher.find(key).await?;
            }
            let reason = format!("fargate driver: job {key} finished");
            for task in &tasks {
                tracing::info!(task = %task, "stopping the task");
                self.launcher.stop(task, &reason).await?;
            }
            self.store.delete(key).await?;
            Ok(tasks)
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "stopping the task of job {key} took longer than {} s",
                    deadline.as_secs()
                ),
            )
            .with_hint("the record is kept; the cleanup stage (or a later one) will try again")),
        }
    }
}

enum Watched {
    Finished(Result<RunOutcome>),
    TaskStopped(StopDetails),
}

struct Ready {
    endpoint: Endpoint,
    host_key: HostKey,
    address_known: Duration,
    describe_calls: u32,
    probes: u32,
}

/// A fresh idempotency token: 32 hex characters.
fn new_client_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and pid, still unique per attempt.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    crate::job::hex(&b)
}

/// POSIX signal numbers of the names SSH reports (Linux numbering).
fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
