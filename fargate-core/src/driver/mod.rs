//! [`Driver`]: the custom executor's stages as operations over the three traits.
//!
//! ```text
//! prepare:  identity (JOB_RESPONSE_FILE + namespace) ─ lock ─ leftover record? stop its tasks
//!           ─ key pair ─ per attempt: put(attempt token) then launch ─ put(Launched, task)
//!           ─ wait: the IP from the launch answer, else describe at once and then on a
//!             sparse schedule until IP (unknown task = not visible yet, within the
//!             consistency window); probe SSH until up (retries from 25 ms, doubling to
//!             ProbeInterval) ─ log in once (key, bash)
//!           ─ put(Ready, endpoint, host key)
//!           any failure or cancel after the first put: stop what was launched (own deadline)
//!           with a warm pool: a job whose task would be a pool task claims one instead
//!           (see [`pool`]); a refill runs beside prepare
//! run:      get(Ready) ─ run script, pinned host key ─ exit N: script failure N
//!           beside it: watch the task (own short timeout), a stopped task ends the stage
//! cleanup:  lock ─ get ─ (a failed job whose project keeps failed tasks: keep the task,
//!           see [`keep`]) ─ put(Stopping) ─ stop the union of the recorded tasks, the replayed
//!           pending launches and what a search by the job's key finds ─ delete the record
//!           (only once every task is known to be stopping)
//! ```
//!
//! Each stage is its own process under gitlab-runner: nothing is shared in memory.
//!
//! # Cancel safety
//!
//! | Stage | cancel through the token | drop the future |
//! |---|---|---|
//! | [`Driver::prepare`] | waits for a launch in flight (up to 20 s), stops what it started, removes the record | stops nothing; the record stays and `cleanup` finds and stops the task |
//! | [`Driver::run`] | stops the remote script (signal, then kill of its process group) | the remote script keeps running until it ends or the task stops |
//! | [`Driver::cleanup`] | (takes no token: gitlab-runner never cancels cleanup) | safe; call it again |
//!
//! [`Driver::prepare`] records every launch attempt's client token before sending it, so
//! dropping its future at any point (an embedder's `tokio::time::timeout`, a panic) loses
//! no task: [`Driver::cleanup`] of the same job replays the recorded launch, searches by
//! the job's key, and stops what it finds. So always call `cleanup` after `prepare`,
//! whatever happened, as gitlab-runner does. The job's lock is released when the dropped
//! future drops its [`JobLock`] (or, for a store with leases, when the
//! lease expires; see the [locking protocol](crate::MetadataStore#locking-protocol)).
//! A test drops `prepare` at every step of a slow launch and checks that `cleanup` then
//! stops every task.

mod images;
mod keep;
pub mod pool;
mod prepare;
mod project_slot;
mod retry;
mod run;
mod shape;
mod slot_report;
mod stop;
mod summary;

pub use keep::{KeptTask, LAST_RUN_STAGE, is_user_step};
pub use prepare::LOGIN_CHECK_SCRIPT;
pub use project_slot::{SLOT_NOTE_EVERY, SLOT_POLL};
pub use shape::{
    CAPACITY_VARIABLE, CPU_ARCHITECTURE_VARIABLE, CPU_VARIABLE, EPHEMERAL_STORAGE_VARIABLE,
    MEMORY_VARIABLE, ShapeDecision, ShapeRequest, TASK_ROLE_VARIABLE, TrustedProject,
    resolve_shape,
};
pub use slot_report::{ProjectSlots, SlotHolding, SlotReport};

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{IdentitySource, JobContext, JobIdentity, JobKey, Namespace};
use crate::launcher::{DynTaskLauncher, Endpoint, TaskRef};
use crate::metadata::{DynMetadataStore, InterruptionMemory, JobLock, JobRecord};
use crate::observe::{DynObserver, JobSummary, NoopObserver, ObservedLauncher, PriceTable};
use crate::options::DriverOptions;
use crate::setting::Setting;
use crate::shell::{DynRemoteShell, HostKey};

/// Environment variable that carries the job's public key into the task.
pub const SSH_PUBLIC_KEY_ENV: &str = "SSH_PUBLIC_KEY";
/// Environment variable that carries the task's deadline ([`crate::TaskSpec::deadline`])
/// into the task, as Unix seconds: the container should end itself then.
pub const TASK_DEADLINE_ENV: &str = "FARGATE_TASK_DEADLINE";
/// Job variable that asks for another task definition.
pub const TASK_DEFINITION_VARIABLE: &str = "FARGATE_TASK_DEFINITION";
/// Job variable that asks for another platform version.
pub const PLATFORM_VERSION_VARIABLE: &str = "FARGATE_PLATFORM_VERSION";

/// How long a stage waits for another stage of the same job to release the job's lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How often a run stage notes that its job is alive while its script runs
/// ([`MetadataStore::heartbeat`](crate::MetadataStore::heartbeat)); prepare notes it once
/// when it succeeds, and each run stage when it starts.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// The bound on one heartbeat call (a heartbeat that does not go through is not retried:
/// the next one comes).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

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
pub fn config_output(options: &DriverOptions, job: &JobContext, version: &str) -> ConfigOutput {
    ConfigOutput {
        driver: DriverInfo {
            name: "fargate".into(),
            version: version.into(),
        },
        hostname: job.go_job_id().go_id(),
        builds_dir: options.builds_dir.clone(),
        cache_dir: options.cache_dir.clone(),
    }
}

/// Settings given by the administrator on the command line (`--task-def`,
/// `--platform-version`), which beat both the file and job variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminOverrides {
    /// Task definition to use instead of the configured one.
    pub task_definition: Option<String>,
    /// Platform version to use instead of the configured one.
    pub platform_version: Option<String>,
}

/// The task definition and platform version a job runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskDefinitionChoice {
    /// Family, `family:revision` or ARN.
    pub task_definition: String,
    /// Platform version (a backend's runtime version, e.g. Fargate's `1.4.0`); `None` for the
    /// launcher's default.
    pub platform_version: Option<String>,
    /// The job's own image and services, once checked ([`crate::images`]); `None`: the
    /// task definition as it is. [`resolve_task_definition`] leaves it `None`.
    pub images: Option<Box<crate::images::ImageRequest>>,
}

/// The task definition and platform version for `job`, with job variables checked against
/// what the administrator allowed.
///
/// Order: `--task-def` (admin), then the job's `FARGATE_TASK_DEFINITION` (only if
/// [`TaskPolicy::allows`](crate::options::TaskPolicy::allows) it, or it equals the default),
/// then [`TaskPolicy::task_definition`](crate::options::TaskPolicy).
pub fn resolve_task_definition(
    options: &DriverOptions,
    admin: &AdminOverrides,
    job: &JobContext,
) -> Result<TaskDefinitionChoice> {
    let f = &options.task;
    let default_td = admin
        .task_definition
        .clone()
        .unwrap_or_else(|| f.task_definition.clone());
    let td = match job.variable(TASK_DEFINITION_VARIABLE) {
        None => default_td,
        Some(asked) if asked == default_td => default_td,
        Some(asked) if f.allows(asked) => asked.to_owned(),
        Some(asked) => {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "the job asks for task definition {asked:?} ({TASK_DEFINITION_VARIABLE}), which this runner does not allow"
                ),
            )
            .with_hint(if f.allowed_task_definitions.is_empty() {
                "remove the variable, or ask the runner's administrator to list the allowed task definitions".to_owned()
            } else {
                format!("allowed: {}", f.allowed_task_definitions.join(", "))
            })
            .with_setting(Setting::AllowedTaskDefinitions));
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
            .with_hint("remove the variable, or ask the runner's administrator to allow the platform version override")
            .with_setting(Setting::AllowPlatformVersionOverride));
        }
        _ => default_pv,
    };
    Ok(TaskDefinitionChoice {
        task_definition: td,
        platform_version: pv,
        images: None,
    })
}

/// What prepare did, for the job log.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// [`TaskLauncher::describe`](crate::TaskLauncher::describe) calls made while waiting.
    pub describe_calls: u32,
    /// SSH probes made while waiting.
    pub probes: u32,
    /// The shape the task got (after clamps and fallbacks).
    pub shape: crate::TaskShape,
    /// Whether the task came from the warm pool ([`pool`]).
    pub warm: bool,
    /// The job's summary: timeline, shape and cost so far.
    pub summary: JobSummary,
}

/// What cleanup did.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Tasks asked to stop.
    pub stopped: Vec<TaskRef>,
    /// Whether a job record existed.
    pub had_record: bool,
    /// The summary of the recorded task, taken before it was stopped (when the record named
    /// a task and the backend still knew it).
    pub summary: Option<JobSummary>,
    /// The task, when the job failed and its project keeps failed jobs' tasks for
    /// debugging: it was not stopped ([`KeptTask`]).
    pub kept: Option<KeptTask>,
}

/// Runs the stages of jobs against a launcher, a shell and a store.
///
/// The driver owns retrying ([`DriverOptions::retry`]): give it backends that do not retry
/// beyond transport-level hiccups, since the layers multiply ([`crate::retry`]).
#[derive(Clone, Debug)]
pub struct Driver {
    options: Arc<DriverOptions>,
    namespace: Namespace,
    launcher: DynTaskLauncher,
    shell: DynRemoteShell,
    store: DynMetadataStore,
    admin: AdminOverrides,
    interruptions: Option<Arc<dyn InterruptionMemory>>,
    observer: DynObserver,
    prices: Arc<PriceTable>,
}

impl Driver {
    /// A driver with the given backends. Build `options` with [`DriverOptions::builder`],
    /// which checks them. The namespace is `options.namespace`, or one derived from the host
    /// name alone ([`Namespace::default_for`] an unnamed directory); embedders should set
    /// one.
    pub fn new(
        options: DriverOptions,
        launcher: DynTaskLauncher,
        shell: DynRemoteShell,
        store: DynMetadataStore,
    ) -> Self {
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| Namespace::default_for(std::path::Path::new("")));
        Driver {
            options: Arc::new(options),
            namespace,
            launcher,
            shell,
            store,
            admin: AdminOverrides::default(),
            interruptions: None,
            observer: Arc::new(NoopObserver),
            prices: Arc::new(PriceTable::default()),
        }
    }

    /// Remembers Spot reclaims in `memory` (for the CLI, the metadata directory), so that a
    /// job whose task was reclaimed is retried on its capacity's fallback for
    /// [`ShapePolicy::interruption_memory`](crate::options::ShapePolicy::interruption_memory).
    /// Without it, nothing is remembered.
    pub fn with_interruption_memory(mut self, memory: Arc<dyn InterruptionMemory>) -> Self {
        self.interruptions = Some(memory);
        self
    }

    /// Sends the driver's [events](crate::observe) to `observer` (call once; the default
    /// ignores them). It also hears every launcher call ([`ObservedLauncher`]).
    pub fn with_observer(mut self, observer: DynObserver) -> Self {
        self.launcher = Arc::new(ObservedLauncher::new(self.launcher, observer.clone()));
        self.observer = observer;
        self
    }

    /// Prices for the summaries' cost estimates (default: [`PriceTable::default`]).
    pub fn with_price_table(mut self, prices: PriceTable) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// Sets the administrator's command-line overrides.
    pub fn with_admin_overrides(mut self, admin: AdminOverrides) -> Self {
        self.admin = admin;
        self
    }

    /// The options.
    pub fn options(&self) -> &DriverOptions {
        &self.options
    }

    /// The namespace of this driver's jobs.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The job's trusted identity, with a warning when it had to come from job variables or
    /// when a job variable contradicts it.
    pub fn identity(&self, job: &JobContext) -> Result<JobIdentity> {
        let identity = job.identity(&self.namespace)?;
        if identity.source == IdentitySource::Variables {
            tracing::warn!(
                "JOB_RESPONSE_FILE is not set (gitlab-runner older than 14.1?): the job's identity \
                 comes from the CI_JOB_ID variable, which a pipeline can set; upgrade gitlab-runner"
            );
        }
        if let Some(forged) = job.forged_job_id() {
            tracing::warn!(
                "the job's CI_JOB_ID variable ({forged:?}) is not its id ({}); the variable is ignored",
                identity.job_id
            );
        }
        Ok(identity)
    }

    /// Takes the job's lock, which the stage writes the job's record under, waiting for
    /// another stage of the job at most [`LOCK_WAIT`] (see the
    /// [locking protocol](crate::MetadataStore#locking-protocol)). The stage gives it back
    /// with [`Driver::unlock_job`] when it ends, successful or not.
    async fn lock_job(&self, key: &JobKey) -> Result<JobLock> {
        self.store.lock(key, LOCK_WAIT).await
    }

    /// Notes that the job of `key`, whose task is `task`, is alive (see
    /// [`HEARTBEAT_EVERY`]). When the store's heartbeat fails or times out (this host cut
    /// off from a store shared by several hosts, while the stage still works from the
    /// host's copy of the record), the sign of life goes on the task itself instead
    /// ([`TaskLauncher::mark_alive`](crate::TaskLauncher::mark_alive)), so that `gc` on
    /// another host does not judge a live job dead. Only then: a store that answers costs
    /// no launcher call. Each call has its own bound; a failure is only logged.
    pub(crate) async fn beat(&self, key: &JobKey, task: &TaskRef) {
        let failed = match tokio::time::timeout(HEARTBEAT_TIMEOUT, self.store.heartbeat(key)).await
        {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "it timed out".to_owned(),
        };
        let at = crate::world::now();
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, self.launcher.mark_alive(task, at)).await {
            Ok(Ok(())) => tracing::debug!(
                job = %key, %task, error = %failed,
                "could not note the job's heartbeat in the store; marked its task alive instead"
            ),
            Ok(Err(err)) => tracing::debug!(
                job = %key, %task, error = %failed, mark_error = %err,
                "could not note the job's heartbeat, in the store nor on its task"
            ),
            Err(_) => tracing::debug!(
                job = %key, %task, error = %failed,
                "could not note the job's heartbeat in the store; marking its task alive timed out"
            ),
        }
    }

    /// Releases the job's lock at the end of a stage.
    async fn unlock_job(&self, lock: JobLock) {
        let key = lock.key().clone();
        if let Err(err) = self.store.unlock(lock).await {
            tracing::warn!(job = %key, error = %err, "could not release the job's lock");
        }
    }

    /// Writes `record` as the holder of `lock`: fenced when `lock` is the record's own (a
    /// store with leases refuses the write once another holder took the lock over); a
    /// plain write for the record an earlier driver wrote for the same job under another
    /// name (found from the trusted job id, see [`Driver::load_record`]).
    pub(crate) async fn save(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        if lock.key() == &record.key {
            self.store.put_locked(lock, record).await
        } else {
            self.store.put(record).await
        }
    }

    /// Deletes the record of `key` as the holder of `lock`, fenced as [`Driver::save`].
    pub(crate) async fn remove(&self, lock: &JobLock, key: &JobKey) -> Result<()> {
        if lock.key() == key {
            self.store.delete_locked(lock).await
        } else {
            self.store.delete(key).await
        }
    }

    /// Deletes the record of `key` as the holder of `lock` and releases the lock: the end
    /// of a stage whose last step is the delete (one request for a store that can).
    pub(crate) async fn remove_and_unlock(&self, lock: JobLock, key: &JobKey) -> Result<()> {
        if lock.key() == key {
            return self.store.delete_and_unlock(lock).await;
        }
        let removed = self.store.delete(key).await;
        self.unlock_job(lock).await;
        removed
    }

    /// The record of `identity`'s job: this driver's, or one of the Go driver (or of this
    /// driver's format 1) named from the trusted job id. A record that names another job is
    /// an error, never used.
    ///
    /// With `lock` (the job's lock, held) the record is read as its holder
    /// ([`MetadataStore::get_locked`](crate::MetadataStore::get_locked)), for decisions;
    /// without, as a run stage reads it
    /// ([`MetadataStore::get_cached`](crate::MetadataStore::get_cached)).
    async fn load_record(
        &self,
        identity: &JobIdentity,
        job: &JobContext,
        lock: Option<&JobLock>,
    ) -> Result<Option<JobRecord>> {
        let key = identity.key();
        let found = match lock {
            Some(lock) if lock.key() == &key => self.store.get_locked(lock).await?,
            Some(_) => self.store.get(&key).await?,
            None => self.store.get_cached(&key).await?,
        };
        if let Some(record) = found {
            return match &record.identity {
                Some(named) if named.same_job(identity) => Ok(Some(record)),
                named => Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "the job record names {}, not {identity}; it is left alone",
                        named.as_ref().map_or("no job".to_owned(), |n| n.to_string())
                    ),
                )
                .with_context("record", &key)
                .with_hint("two runners may share the metadata directory with different settings; give each its own directory and Namespace")),
            };
        }
        if identity.source != IdentitySource::JobResponse || !self.store.may_hold_legacy_records() {
            return Ok(None);
        }
        // A job prepared before an upgrade: its record is named after the Go driver's id,
        // computed here with the trusted job id, so it cannot name another job.
        let legacy = job.go_job_id().record_key();
        match self.store.get(&legacy).await? {
            Some(record) if record.identity.is_none() => {
                tracing::info!(record = %legacy, "using the record an earlier driver wrote for this job");
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
