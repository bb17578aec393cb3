//! The prepare stage: launch the job's task and wait until it can run scripts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelBudget;
use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::{JobContext, JobIdentity};
use crate::launcher::{Endpoint, Launched, TaskSpec, TaskState};
use crate::metadata::{AttemptOutcome, JobRecord, LaunchAttempt, Phase};
use crate::observe::{Event, PreparePhase, StopCause, SummaryPoint, WarmOutcome};
use crate::retry::{Failed, Retry};
use crate::shell::{CapturedOutput, HostKey, KeyPair, RunOutcome, RunRequest};
use crate::task_details::TaskDetails;

use super::shape::ShapeDecision;
use super::{
    Driver, PrepareReport, SSH_PUBLIC_KEY_ENV, TASK_DEADLINE_ENV, TaskDefinitionChoice,
    resolve_task_definition,
};

/// How long a cancelled prepare still waits for a launch call in flight, so that the task
/// it may start is known and stopped rather than left behind.
pub(super) const LAUNCH_SETTLE: Duration = CancelBudget::DEFAULT.launch_settle;

/// The script prepare runs once to check that the task can run the job's scripts.
pub const LOGIN_CHECK_SCRIPT: &[u8] = b"true\n";

/// The first retry of a refused SSH probe (then doubling up to `[SSH] ProbeInterval`).
const FIRST_PROBE_RETRY: Duration = Duration::from_millis(25);

/// How long prepare keeps trying when the task's SSH server refuses the job's key (the
/// entrypoint may install it a moment after sshd starts).
const LOGIN_GRACE: Duration = Duration::from_secs(3);

pub(super) struct Ready {
    pub(super) endpoint: Endpoint,
    pub(super) host_key: HostKey,
    pub(super) address_known: Duration,
    pub(super) describe_calls: u32,
    pub(super) probes: u32,
    /// What the last describe reported.
    pub(super) details: TaskDetails,
}

impl Driver {
    /// Starts the job's task and waits until its SSH server answers and accepts the job's
    /// key.
    ///
    /// Every launch attempt's client token is recorded before the call. On any failure or
    /// cancellation after the first launch attempt, the job's tasks are stopped under
    /// `[Fargate] StopTimeout` (never under the cancelled token) and the record removed once
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
        self.locked(
            &key,
            self.prepare_locked(start, identity, job, choice, shape, cancel),
        )
        .await
    }

    /// The part of prepare that runs under the job's lock.
    async fn prepare_locked(
        &self,
        start: Instant,
        identity: JobIdentity,
        job: &JobContext,
        choice: TaskDefinitionChoice,
        shape: ShapeDecision,
        cancel: &CancellationToken,
    ) -> std::result::Result<PrepareReport, Failure> {
        let key = identity.key();
        if let Some(old) = self.load_record_for_cleanup(&identity, job).await? {
            tracing::warn!(job = %key, phase = ?old.phase, "found the record of an earlier attempt of this job; stopping its tasks first");
            let stopped = self.stop_job(&key, old).await?;
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
                    .prepare_warm(start, claim, record, &keys.public_key, cancel)
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
            self.prepare_cold(start, identity, job, choice, shape, keys, cancel)
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

        tracing::debug!(task_definition = %spec.task_definition, "starting a Fargate task");
        self.observe(Event::Launching {
            task_definition: spec.task_definition.clone(),
        });
        self.observe(Event::Phase {
            phase: PreparePhase::Launching,
            elapsed: start.elapsed(),
        });
        let launch_started = Instant::now();
        let launched = match self
            .launch_with_fallback(&mut record, &mut spec, &fallbacks, &mut notes, cancel)
            .await
        {
            Ok(launched) => launched,
            Err(err) => return Err(self.roll_back(record, err).await),
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
        if let Err(err) = self.store.put(&record).await {
            return Err(self.roll_back(record, err).await);
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
            Err(err) => return Err(self.roll_back(record, err).await),
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
            return Err(self.roll_back(record, err).await);
        }
        let job_login = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::cancelled("logging in to the job container")),
            r = self.ready_job_container(&mut record, deadline) => r,
        };
        if let Err(err) = job_login {
            return Err(self.roll_back(record, err).await);
        }
        record.phase = Phase::Ready;
        record.touch();
        if let Err(err) = self.store.put(&record).await {
            return Err(self.roll_back(record, err).await);
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

    /// Launches `spec`, retrying under `[Retry]`: a failure whose outcome is unknown (no
    /// answer) is retried with the same client token, so it can start at most one task; a
    /// definite refusal that may pass (throttling, capacity) is retried with a new token.
    /// Each token is recorded (and the record written) before it is sent.
    ///
    /// With `fail_fast_on_capacity` (the job has a capacity to fall back to), a capacity
    /// error is returned at once.
    pub(super) async fn launch(
        &self,
        record: &mut JobRecord,
        spec: &TaskSpec,
        fail_fast_on_capacity: bool,
        cancel: &CancellationToken,
    ) -> Result<Launched> {
        // The token to send again: that of an attempt whose outcome is unknown.
        let mut replay: Option<String> = None;
        let attempt = async |_| {
            let token = match replay.take() {
                Some(token) => token,
                None => {
                    let token = crate::world::client_token();
                    record.attempts.push(LaunchAttempt::pending(token.clone()));
                    record.touch();
                    self.store.put(record).await.map_err(Failed::Return)?;
                    token
                }
            };
            let result = self
                .launch_settled(&spec.clone().with_client_token(token.clone()), cancel)
                .await;
            match result {
                Ok(launched) => {
                    let task = launched.task.clone();
                    record.settle(&token, AttemptOutcome::Accepted { task: task.clone() });
                    record.task = Some(task);
                    record.phase = Phase::Launched;
                    record.touch();
                    if cancel.is_cancelled() {
                        return Err(Failed::Return(Error::cancelled("starting the task")));
                    }
                    Ok(launched)
                }
                Err(err) => {
                    let unknown = err.outcome_unknown();
                    if !unknown {
                        record.settle(&token, AttemptOutcome::Refused);
                    }
                    if cancel.is_cancelled() || err.kind() == ErrorKind::Cancelled {
                        return Err(Failed::Return(Error::cancelled("starting the task")));
                    }
                    let retryable = (unknown || err.is_temporary())
                        && !(fail_fast_on_capacity && err.kind() == ErrorKind::CapacityUnavailable);
                    if !retryable {
                        return Err(Failed::GiveUp(err));
                    }
                    // Sent again only if the engine retries.
                    replay = unknown.then_some(token);
                    Err(Failed::Retry(err))
                }
            }
        };
        Retry::new(&self.options.retry, "starting the task", &*self.observer)
            .cancelled_by(cancel)
            .run(attempt, |err, attempt, delay| {
                tracing::warn!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    same_token = err.outcome_unknown(),
                    error = %err,
                    "starting the task failed, retrying"
                );
            })
            .await
    }

    /// One launch call. When `cancel` fires while it is in flight, the call is not dropped:
    /// it gets [`LAUNCH_SETTLE`] more to answer, so the task it may start is known.
    async fn launch_settled(
        &self,
        spec: &TaskSpec,
        cancel: &CancellationToken,
    ) -> Result<Launched> {
        let call = self.launcher.launch_observed(spec);
        tokio::pin!(call);
        tokio::select! {
            biased;
            r = &mut call => r,
            _ = cancel.cancelled() => {
                tracing::warn!("cancelled while starting the task; waiting for ECS's answer so that the task can be stopped");
                match tokio::time::timeout(LAUNCH_SETTLE, &mut call).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::timeout("starting the task after a cancel")),
                }
            }
        }
    }

    /// Polls the task until its address is known, then probes SSH until it answers.
    ///
    /// No idle wait: an address the launch answer carried is probed at once; otherwise the
    /// first describe is sent at once, and the later ones follow the sparse schedule
    /// (`[Fargate] PollInitialInterval`, growing 1.5x up to `PollMaxInterval`) that a long
    /// boot needs. SSH is probed as soon as any answer carried the address.
    ///
    /// A task the launcher does not know yet is "not visible yet" until
    /// `[Fargate] ConsistencyWindow` after `launched`; after that it is gone.
    pub(super) async fn wait_ready(
        &self,
        launch: &Launched,
        launched: Instant,
        deadline: Instant,
    ) -> Result<Ready> {
        let task = &launch.task;
        let started = Instant::now();
        let t = &self.options.timeouts;
        let port = self.options.ssh.port;
        let mut interval = t.poll_initial;
        let mut address: Option<(IpAddr, Duration)> = launch.address().map(|ip| {
            tracing::debug!(%ip, "task IP address known from the launch answer");
            (ip, Duration::ZERO)
        });
        // With the address known, describing only watches for an early stop.
        let mut next_describe = match address {
            Some(_) => started + t.poll_initial,
            None => started,
        };
        let mut describe_calls = 0u32;
        let mut probes = 0u32;
        // Refused probes are retried after 25 ms, doubling up to `[SSH] ProbeInterval`: an
        // sshd that starts right after the address is known is found without waiting a
        // whole interval; a long boot is probed at the configured pace.
        let mut probe_delay = self.options.ssh.probe_interval.min(FIRST_PROBE_RETRY);
        let mut last_probe_error: Option<Error> = None;
        // What the launch answer said of the task (ECS's RunTask answer describes it): the
        // summary has its shape even when the task is ready before ECS shows it.
        let mut details = launch
            .status
            .as_ref()
            .map(|s| s.details.clone())
            .unwrap_or_default();
        let mut last_state = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let mut err = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the task did not become reachable within {} s",
                        t.ready.as_secs()
                    ),
                )
                .with_context("task", task);
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
                    Ok(status) if status.state.is_terminal() => {
                        let details = status.stop.unwrap_or_default();
                        return Err(Error::new(
                            ErrorKind::TaskStopped,
                            format!("the task stopped before it was ready: {details}"),
                        )
                        .with_context("task", task)
                        .with_hint("the reason above comes from ECS; check the image, the task definition and the container's logs"));
                    }
                    Ok(status) if status.state == TaskState::Missing => {
                        if launched.elapsed() >= t.consistency_window {
                            return Err(Error::new(
                                ErrorKind::TaskStopped,
                                format!(
                                    "ECS still does not know the task {} s after accepting it",
                                    launched.elapsed().as_secs()
                                ),
                            )
                            .with_context("task", task)
                            .with_hint("the task may have been deleted; check the cluster's events, or raise [Fargate] ConsistencyWindow if ECS is slow to show new tasks in this region"));
                        }
                        tracing::debug!(task = %task, "ECS does not show the task yet (eventual consistency)");
                    }
                    Ok(status) => {
                        if last_state != Some(status.state) {
                            last_state = Some(status.state);
                            self.observe(Event::TaskState {
                                task: task.clone(),
                                state: status.state,
                            });
                        }
                        details = status.details;
                        if address.is_none()
                            && let Some(ip) = status.address
                        {
                            tracing::debug!(%ip, elapsed_ms = started.elapsed().as_millis() as u64, state = ?status.state, "task IP address known");
                            address = Some((ip, started.elapsed()));
                        }
                    }
                    Err(err) if err.is_temporary() || err.outcome_unknown() => {
                        tracing::warn!(error = %err, "describing the task failed; will try again");
                    }
                    Err(err) => return Err(err),
                }
                // Once the address is known, describing only watches for an early stop.
                if address.is_some() {
                    interval = t.poll_max;
                }
                next_describe = Instant::now() + interval;
                interval = interval.mul_f64(1.5).min(t.poll_max);
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
                        details,
                    });
                }
                Ok(Err(err)) if err.kind() == ErrorKind::Unreachable => {
                    last_probe_error = Some(err);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => continue, // the deadline passed: reported at the top of the loop
            }
            let next_probe = probe_started + probe_delay;
            probe_delay = (probe_delay * 2).min(self.options.ssh.probe_interval);
            tokio::time::sleep_until(next_probe.min(next_describe).min(deadline)).await;
        }
    }

    /// Logs in once with the job's key and runs [`LOGIN_CHECK_SCRIPT`], so that a task that will
    /// never run the job's scripts (its sshd refuses the key, its image has no bash) fails
    /// prepare in seconds, as a system failure with a hint.
    pub(super) async fn check_login(&self, record: &JobRecord, deadline: Instant) -> Result<()> {
        let (Some(endpoint), Some(host_key)) = (record.endpoint, record.host_key.clone()) else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "the task has no endpoint to log in to",
            ));
        };
        let request = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: record.private_key.clone(),
            host_key: Some(host_key),
            script: Arc::from(LOGIN_CHECK_SCRIPT),
        };
        let first = Instant::now();
        loop {
            let mut out = CapturedOutput::default();
            let result = tokio::time::timeout_at(
                deadline,
                self.shell
                    .run(&request, &mut out, &CancellationToken::new()),
            )
            .await
            .unwrap_or_else(|_| Err(Error::timeout("logging in to the task")));
            match result {
                Ok(RunOutcome::Exited(0)) => return Ok(()),
                Ok(outcome) => {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "the task's SSH server cannot run scripts: `true` ended with {outcome:?} ({})",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    )
                    .with_hint("check the SSH user's login shell and the task image"));
                }
                Err(err)
                    if err.kind() == ErrorKind::AuthenticationFailed
                        && first.elapsed() < LOGIN_GRACE =>
                {
                    tracing::debug!(error = %err, "the task refused the job's key; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) if err.kind() == ErrorKind::AuthenticationFailed => {
                    return Err(err.set_temporary(false));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Stops whatever prepare may have launched, and returns `err` as the failure.
    pub(super) async fn roll_back(&self, record: JobRecord, err: Error) -> Failure {
        // The error itself is reported once, by the caller; the stops are events.
        tracing::debug!(error = %err, "prepare failed; stopping the task it started");
        let key = record.key.clone();
        match self.stop_job(&key, record).await {
            Ok(stopped) => self.observe_stops(&stopped, StopCause::Rollback),
            Err(stop_err) => {
                tracing::error!(error = %stop_err, "could not stop the task; the cleanup stage will try again")
            }
        }
        Failure::from(err)
    }
}

/// `now + lifetime`, cut to whole seconds (as the tag and the container see it).
pub(super) fn whole_seconds_after(now: SystemTime, lifetime: Duration) -> SystemTime {
    let secs = unix_seconds(now).saturating_add(lifetime.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Seconds since the Unix epoch (0 before it).
pub(super) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
