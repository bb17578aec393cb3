//! The prepare stage: launch the job's task and wait until it can run scripts.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Failure};
use crate::job::{JobContext, JobIdentity};
use crate::launcher::TaskSpec;
use crate::metadata::{JobLock, JobRecord, Phase};
use crate::observe::{Event, PreparePhase, StopCause, SummaryPoint, WarmOutcome};
use crate::setting::Setting;
use crate::shell::KeyPair;
use crate::world::{unix_seconds, whole_seconds_after};

use super::shape::ShapeDecision;
use super::{
    Driver, PrepareReport, SSH_PUBLIC_KEY_ENV, TASK_DEADLINE_ENV, TaskDefinitionChoice,
    resolve_task_definition,
};

mod host_key;
mod launch;
mod login;
mod ready;

pub use login::LOGIN_CHECK_SCRIPT;
pub(super) use ready::Ready;

impl Driver {
    /// Starts the job's task and waits until its SSH server answers and accepts the job's
    /// key.
    ///
    /// Every launch attempt's client token is recorded before the call. On any failure or
    /// cancellation after the first launch attempt, the job's tasks are stopped under
    /// the stop timeout (never under the cancelled token) and the record removed once
    /// they are; if that fails, the record stays for cleanup.
    ///
    /// # Cancel safety
    /// Cancel through `cancel` to have prepare stop what it started before it returns.
    /// Dropping the future stops nothing, but loses nothing: [`Driver::cleanup`] finds and
    /// stops the task (see the [module docs](super#cancel-safety)).
    pub async fn prepare(
        &self,
        job: &JobContext,
        cancel: &CancellationToken,
    ) -> std::result::Result<PrepareReport, Failure> {
        let start = Instant::now();
        let identity = self.identity(job)?;
        let key = identity.key();
        // A job variable asking for what the job may not have is a `NotAllowed` error: its
        // failure class makes it the job's own fault, not the system's.
        let mut choice = resolve_task_definition(&self.options, &self.admin, job)?;
        // The same for the task's shape (sizes, capacity, role, network).
        let shape = self.decide_shape(job, &identity).await?;
        // And for its image and services (no backend call: the allowlist, the plan).
        choice.images = self.job_images(job)?;
        if let Some(arch) = &shape.shape.cpu_architecture
            && choice.images.is_none()
        {
            return Err(Failure::from(architecture_needs_an_image(arch)));
        }
        // A job over its project's concurrency limit waits here, before anything exists.
        let slot = self.project_slot(&identity);
        if let Some(slot) = &slot {
            self.take_project_slot(slot, &key, cancel).await?;
        }
        let result = async {
            let lock = self.lock_job(&key).await?;
            let result = self
                .prepare_locked(&lock, start, identity, job, choice, shape, cancel)
                .await;
            self.unlock_job(lock).await;
            result
        }
        .await;
        if let (Err(_), Some(slot)) = (&result, &slot)
            && matches!(self.store.get(&key).await, Ok(None))
        {
            // Prepare stopped what it started. (A record left for cleanup keeps the slot
            // counted until cleanup gives it back, or gc removes the record.)
            self.give_back_project_slot(slot, &key).await;
        }
        if let Ok(report) = &result {
            self.beat(&key, &report.task).await;
        }
        result
    }

    /// The part of prepare that runs under the job's lock, `lock`.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_locked(
        &self,
        lock: &JobLock,
        start: Instant,
        identity: JobIdentity,
        job: &JobContext,
        choice: TaskDefinitionChoice,
        shape: ShapeDecision,
        cancel: &CancellationToken,
    ) -> std::result::Result<PrepareReport, Failure> {
        let key = identity.key();
        if let Some(old) = self.load_record_for_cleanup(lock, &identity, job).await? {
            tracing::warn!(job = %key, phase = ?old.phase, "found the record of an earlier attempt of this job; stopping its tasks first");
            let stopped = self.stop_job(lock, old).await?;
            self.observe_stops(&stopped, StopCause::Rollback);
        }

        let keys = self.shell.generate_key(self.options.ssh.key_type).await?;
        // A job whose task would be exactly a pool task claims one.
        let job_timeout = job.response.as_ref().and_then(|r| r.timeout);
        let template = match self.pool_template() {
            // Resolved only for a job that would take a pool task (one backend call).
            Ok(Some(template)) if Self::fits_pool(&template, &choice, &shape.shape) => {
                self.resolve_template(template).await.map(Some)
            }
            other => other,
        };
        let claim = match template {
            Ok(Some(template)) if Self::fits_pool(&template, &choice, &shape.shape) => {
                let needed_until =
                    crate::world::now() + self.options.timeouts.task_lifetime(job_timeout);
                let claim = self.claim(&key, &template, needed_until).await;
                if claim.is_none() {
                    self.observe(Event::WarmPool {
                        outcome: WarmOutcome::Empty,
                    });
                }
                claim
            }
            Ok(Some(_)) => {
                self.observe(Event::WarmPool {
                    outcome: WarmOutcome::Ineligible,
                });
                None
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %err, "the warm pool's settings are unusable; launching a task for the job");
                None
            }
        };
        let work = async {
            if let Some(claim) = claim {
                let record = JobRecord::new(identity.clone(), keys.private_key.clone());
                let warm = self
                    .prepare_warm(lock, start, claim, record, &keys.public_key, cancel)
                    .await?;
                let outcome = match &warm {
                    Some(_) => WarmOutcome::Taken,
                    None => WarmOutcome::Unusable,
                };
                self.observe(Event::WarmPool { outcome });
                if let Some(report) = warm {
                    return Ok(report);
                }
            }
            self.prepare_cold(lock, start, identity, job, choice, shape, keys, cancel)
                .await
        };
        // The pool's refill is not the job's business: the embedder runs
        // [`Driver::pool_refill`] beside (the CLI: a detached process), never in its way.
        work.await
    }

    /// Prepare with a task of the job's own.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_cold(
        &self,
        lock: &JobLock,
        start: Instant,
        identity: JobIdentity,
        job: &JobContext,
        choice: TaskDefinitionChoice,
        shape: ShapeDecision,
        keys: KeyPair,
        cancel: &CancellationToken,
    ) -> std::result::Result<PrepareReport, Failure> {
        let ShapeDecision {
            shape,
            fallbacks,
            mut notes,
        } = shape;
        let mut spec = TaskSpec::new(identity.clone(), choice.task_definition).with_shape(shape);
        spec.platform_version = choice.platform_version;
        spec.container_name = self.options.task.container_name.clone();
        let job_timeout = job.response.as_ref().and_then(|r| r.timeout);
        let deadline = whole_seconds_after(
            crate::world::now(),
            self.options.timeouts.task_lifetime(job_timeout),
        );
        spec.environment = BTreeMap::from([
            (SSH_PUBLIC_KEY_ENV.to_owned(), keys.public_key),
            (
                TASK_DEADLINE_ENV.to_owned(),
                unix_seconds(deadline).to_string(),
            ),
        ]);
        spec.deadline = Some(deadline);
        spec.images = choice.images;
        let mut record = JobRecord::new(identity, keys.private_key);
        record.spec = Some(spec.clone());

        tracing::debug!(task_definition = %spec.task_definition, "starting a task");
        self.observe(Event::Launching {
            task_definition: spec.task_definition.clone(),
        });
        self.observe(Event::Phase {
            phase: PreparePhase::Launching,
            elapsed: start.elapsed(),
        });
        let launch_started = Instant::now();
        let launched = match self
            .launch_with_fallback(lock, &mut record, &mut spec, &fallbacks, &mut notes, cancel)
            .await
        {
            Ok(launched) => launched,
            Err(err) => return Err(self.roll_back(lock, record, err).await),
        };
        let task = launched.task.clone();
        let launch_accepted = start.elapsed();
        tracing::debug!(task = %task, elapsed_ms = launch_accepted.as_millis() as u64, "task accepted");
        self.observe(Event::Launched { task: task.clone() });
        self.observe(Event::Phase {
            phase: PreparePhase::Accepted,
            elapsed: launch_accepted,
        });
        // Why the shape differs from the request, while it is news (also when prepare fails
        // later).
        for note in &notes {
            tracing::warn!("task shape: {note}");
        }
        if let Err(err) = self.save(lock, &record).await {
            return Err(self.roll_back(lock, record, err).await);
        }

        let deadline = start + self.options.timeouts.ready;
        let waiting_from = start.elapsed();
        let waited = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::cancelled("waiting for the task")),
            r = self.wait_ready(&launched, launch_started, deadline) => r,
        };
        let ready = match waited {
            Ok(ready) => ready,
            Err(err) => {
                let err = match err.context_value(ready::PULL_FAILED_CONTEXT) {
                    Some(containers) => {
                        let containers: Vec<String> = containers
                            .split(',')
                            .filter(|c| !c.is_empty())
                            .map(str::to_owned)
                            .collect();
                        let hint = crate::images::pull_failure_hint(
                            &self.options.images,
                            spec.images.as_deref(),
                            &containers,
                        );
                        err.with_hint(hint).with_setting(Setting::Registries)
                    }
                    None => err,
                };
                return Err(self.roll_back(lock, record, err).await);
            }
        };
        self.observe(Event::Phase {
            phase: PreparePhase::AddressKnown,
            elapsed: waiting_from + ready.address_known,
        });
        self.observe(Event::Phase {
            phase: PreparePhase::SshUp,
            elapsed: start.elapsed(),
        });
        record.endpoint = Some(ready.endpoint);
        record.host_key = Some(ready.host_key.clone());
        // The summary needs ECS's timeline of the task: when no describe answered yet (the
        // address came with the launch answer), one runs beside the login.
        let summary_describe = async {
            match ready.details.started_at {
                Some(_) => None,
                None => self.describe_for_summary(&task).await,
            }
        };
        let login = async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Error::cancelled("logging in to the task")),
                r = self.check_login(&record, deadline) => r,
            }
        };
        let (login, described) = tokio::join!(login, summary_describe);
        if let Err(err) = login {
            return Err(self.roll_back(lock, record, err).await);
        }
        let job_login = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::cancelled("logging in to the job container")),
            r = self.ready_job_container(&mut record, deadline) => r,
        };
        if let Err(err) = job_login {
            return Err(self.roll_back(lock, record, err).await);
        }
        record.phase = Phase::Ready;
        record.touch();
        if let Err(err) = self.save(lock, &record).await {
            return Err(self.roll_back(lock, record, err).await);
        }
        let ssh_ready = start.elapsed();
        let ready_at = crate::world::now();
        self.observe(Event::Ready {
            task: task.clone(),
            endpoint: ready.endpoint,
            elapsed: ssh_ready,
        });
        tracing::debug!(
            task = %task,
            endpoint = %ready.endpoint,
            host_key = %ready.host_key,
            launch_accepted_ms = launch_accepted.as_millis() as u64,
            address_known_ms = ready.address_known.as_millis() as u64,
            ssh_ready_ms = ssh_ready.as_millis() as u64,
            describe_calls = ready.describe_calls,
            probes = ready.probes,
            "task is ready"
        );
        tracing::info!("task shape: {}", spec.shape);
        let details = described.unwrap_or(ready.details);
        let summary = self.summarize(
            SummaryPoint::Prepared,
            &task,
            details,
            Some(launch_accepted),
            Some(ready_at),
            None,
        );
        Ok(PrepareReport {
            summary,
            task,
            endpoint: ready.endpoint,
            host_key: ready.host_key,
            launch_accepted,
            address_known: ready.address_known,
            ssh_ready,
            describe_calls: ready.describe_calls,
            probes: ready.probes,
            shape: spec.shape,
            warm: false,
        })
    }

    /// Stops whatever prepare may have launched (the job's lock is `lock`), and returns
    /// `err` as the failure.
    pub(super) async fn roll_back(&self, lock: &JobLock, record: JobRecord, err: Error) -> Failure {
        // The error itself is reported once, by the caller; the stops are events.
        tracing::debug!(error = %err, "prepare failed; stopping the task it started");
        match self.stop_job(lock, record).await {
            Ok(stopped) => self.observe_stops(&stopped, StopCause::Rollback),
            Err(stop_err) => {
                tracing::error!(error = %stop_err, "could not stop the task; the cleanup stage will try again")
            }
        }
        Failure::from(err)
    }
}

/// The refusal of a job that asks for CPU architecture `arch` without an `image:`: a
/// backend may not change a task definition's architecture at launch (ECS's `RunTask`
/// cannot), so only a derived definition (a job image) carries it.
fn architecture_needs_an_image(arch: &str) -> Error {
    Error::new(
        crate::error::ErrorKind::NotAllowed,
        format!(
            "the job asks for CPU architecture {arch} ({}) but runs in the task image: the architecture comes with the task definition, and only a job with image: gets a task definition of its own",
            super::CPU_ARCHITECTURE_VARIABLE
        ),
    )
    .with_hint("give the job an image: built for that architecture, or have it choose a task definition built for it (FARGATE_TASK_DEFINITION, among the runner's allowed task definitions) instead of the variable")
    .with_setting(Setting::CpuArchitectures)
}
