//! Claiming a warm task for a job, and taking it over (see the [module docs](super)).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Failure, Result};
use crate::job::JobKey;
use crate::launcher::{Launched, TaskRef, TaskSpec};
use crate::metadata::{JobLock, JobRecord, Phase};
use crate::observe::{Event, PreparePhase, StopCause, SummaryPoint};
use crate::shell::{CapturedOutput, RunOutcome, RunRequest};
use crate::task_details::TaskDetails;
use crate::world::{unix_now, unix_seconds, whole_seconds_after};

use super::super::prepare::{LOGIN_CHECK_SCRIPT, Ready};
use super::super::retry::with_retries;
use super::super::{Driver, PrepareReport, SSH_PUBLIC_KEY_ENV, TASK_DEADLINE_ENV};
use super::{AUTHORIZED_KEYS_ENV, PoolReport, PoolTemplate, template_matches};

/// A slot this process claimed: its record (marked as claimed), its task and launch, and
/// its lock.
pub(in crate::driver) struct Claim {
    slot: JobRecord,
    task: TaskRef,
    spec: TaskSpec,
    lock: JobLock,
    /// The job's deadline: what the task's labels and self-stop say once it is the job's.
    deadline: SystemTime,
}

/// Why a take-over failed.
enum TakeOverError {
    /// The job fails (a cancel, a task that never became ready).
    Fails(Error),
    /// The claimed task cannot serve the job: it is stopped and the job launches its own.
    Unusable(Error),
}

impl Driver {
    /// Claims an idle slot for job `job` whose task runs `template` until at least
    /// `needed_until`; `None` when there is none. Never waits for a lock: a slot another
    /// process is claiming is skipped.
    pub(in crate::driver) async fn claim(
        &self,
        job: &JobKey,
        template: &PoolTemplate,
        needed_until: SystemTime,
    ) -> Option<Claim> {
        let mut candidates = match self.slots().await {
            Ok(slots) => slots,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the warm pool; launching a task for the job");
                return None;
            }
        };
        let now = unix_now();
        candidates.retain(|s| claimable(s, template, now, needed_until));
        // Ready ones first (no wait), then the oldest (closest to expiry, furthest booted).
        candidates.sort_by_key(|s| (s.phase != Phase::Ready, s.created_at));
        for candidate in candidates {
            let lock = match self.store.lock(&candidate.key, Duration::ZERO).await {
                Ok(lock) => lock,
                Err(_) => continue, // another process holds it (claiming, refilling, gc)
            };
            let mut slot = match self.store.get_locked(&lock).await {
                Ok(Some(slot)) if claimable(&slot, template, unix_now(), needed_until) => slot,
                _ => {
                    self.release(lock).await;
                    continue;
                }
            };
            // A claimable slot has both (see `claimable`).
            let (Some(task), Some(spec)) = (slot.task.clone(), slot.spec.clone()) else {
                self.release(lock).await;
                continue;
            };
            if let Some(pool) = slot.pool.as_mut() {
                pool.claimed_by = Some(job.clone());
            }
            slot.touch();
            if let Err(err) = self.store.put_locked(&lock, &slot).await {
                tracing::warn!(slot = %slot.key, error = %err, "cannot claim a warm task");
                self.release(lock).await;
                continue;
            }
            return Some(Claim {
                slot,
                task,
                spec,
                lock,
                deadline: whole_seconds_after(needed_until, Duration::ZERO),
            });
        }
        None
    }

    /// Takes the claimed task over for the job of `record` (whose key is in it, and whose
    /// lock is `job_lock`) and makes it ready for the job: see the [module docs](self).
    /// `Ok(None)`: the task could not serve the job and was stopped; launch one for it.
    pub(in crate::driver) async fn prepare_warm(
        &self,
        job_lock: &JobLock,
        start: Instant,
        claim: Claim,
        mut record: JobRecord,
        job_public_key: &str,
        cancel: &CancellationToken,
    ) -> std::result::Result<Option<PrepareReport>, Failure> {
        let Claim {
            slot,
            task,
            spec,
            lock,
            deadline,
        } = claim;
        // The job's record names the task before the slot goes.
        record.task = Some(task.clone());
        record.spec = Some(spec.clone());
        record.phase = Phase::Launched;
        record.touch();
        let taken = self.save(job_lock, &record).await;
        if taken.is_ok() {
            // The slot's record and lock go in one step (one request for a store that can).
            if let Err(err) = self.store.delete_and_unlock(lock).await {
                tracing::warn!(slot = %slot.key, error = %err, "could not remove the claimed slot's record; a sweep will");
            }
        } else {
            self.release(lock).await;
        }
        if let Err(err) = taken {
            // The slot still names the task (claimed): it is stopped by the job's cleanup.
            return Err(Failure::from(err));
        }
        let idle = unix_now().saturating_sub(slot.created_at);
        tracing::info!(task = %task, idle_s = idle, "using a warm task from the pool");
        self.observe(Event::Launched { task: task.clone() });
        self.observe(Event::Phase {
            phase: PreparePhase::Accepted,
            elapsed: start.elapsed(),
        });
        let launch_accepted = start.elapsed();

        // ECS's timeline of the task, for the summary, beside the take-over.
        let take_over = async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(TakeOverError::Fails(Error::cancelled("taking over a warm task"))),
                r = self.take_over(start, &slot, &task, &mut record, job_public_key, deadline) => r,
            }
        };
        let (outcome, details) = tokio::join!(take_over, self.describe_for_summary(&task));
        let ready = match outcome {
            Ok(ready) => ready,
            Err(TakeOverError::Fails(err)) => {
                return Err(self.roll_back(job_lock, record, err).await);
            }
            Err(TakeOverError::Unusable(why)) => {
                tracing::warn!(task = %task, "the warm task cannot serve the job ({why}); stopping it and launching a task for the job");
                return match self.stop_job(job_lock, record).await {
                    Ok(stopped) => {
                        self.observe_stops(&stopped, StopCause::Pool);
                        Ok(None)
                    }
                    Err(err) => Err(Failure::from(err)),
                };
            }
        };
        let endpoint = ready.endpoint;
        record.phase = Phase::Ready;
        record.touch();
        if let Err(err) = self.save(job_lock, &record).await {
            return Err(self.roll_back(job_lock, record, err).await);
        }
        let ssh_ready = start.elapsed();
        let ready_at = crate::world::now();
        self.observe(Event::Phase {
            phase: PreparePhase::SshUp,
            elapsed: ssh_ready,
        });
        self.observe(Event::Ready {
            task: task.clone(),
            endpoint,
            elapsed: ssh_ready,
        });
        tracing::info!("task shape: {}", spec.shape);
        let details = details.unwrap_or(ready.details);
        let summary = self.summarize(
            SummaryPoint::Prepared,
            &task,
            details,
            Some(launch_accepted),
            Some(ready_at),
            Some(ssh_ready),
        );
        Ok(Some(PrepareReport {
            summary,
            task,
            endpoint,
            host_key: ready.host_key,
            launch_accepted,
            address_known: ready.address_known,
            ssh_ready,
            describe_calls: ready.describe_calls,
            probes: ready.probes,
            shape: spec.shape,
            warm: true,
        }))
    }

    /// Finds the claimed task's SSH server, swaps its key (and tells the task its new
    /// `deadline`), verifies the swap, and hands the task to the job
    /// ([`TaskLauncher::adopt`](crate::TaskLauncher::adopt): its labels name the job and its
    /// deadline from now on); sets the endpoint, host key and the job's spec in `record`.
    async fn take_over(
        &self,
        start: Instant,
        slot: &JobRecord,
        task: &TaskRef,
        record: &mut JobRecord,
        job_public_key: &str,
        job_deadline: SystemTime,
    ) -> std::result::Result<Ready, TakeOverError> {
        use TakeOverError::{Fails, Unusable};
        let ready = match (slot.endpoint, slot.host_key.clone()) {
            // Seen ready by the pool: the swap's own connection checks that it still
            // answers, with the pinned host key (else HostKeyMismatch: unusable).
            (Some(endpoint), Some(host_key)) => Ready {
                endpoint,
                host_key,
                address_known: Duration::ZERO,
                describe_calls: 0,
                probes: 0,
                details: TaskDetails::default(),
            },
            // Never seen ready: wait for it as for a task of the job's own.
            _ => {
                let deadline = start + self.options.timeouts.ready;
                match self
                    .wait_ready(&Launched::new(task.clone()), Instant::now(), deadline)
                    .await
                {
                    Ok(ready) => ready,
                    Err(err) if err.kind() == ErrorKind::TaskStopped => return Err(Unusable(err)),
                    Err(err) => return Err(Fails(err)),
                }
            }
        };
        let (endpoint, host_key) = (ready.endpoint, ready.host_key.clone());
        let as_pool = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: slot.private_key.clone(),
            host_key: Some(host_key.clone()),
            script: Arc::from(
                key_swap_script(job_public_key, unix_seconds(job_deadline))
                    .map_err(Fails)?
                    .into_bytes(),
            ),
        };
        let deadline = Instant::now() + self.options.pool.claim_timeout;
        match run_captured(self, &as_pool, deadline).await {
            Ok((RunOutcome::Exited(0), _)) => {}
            Ok((outcome, stderr)) => {
                return Err(Unusable(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("replacing its authorized key ended with {outcome:?}: {stderr}"),
                )));
            }
            Err(err) => return Err(Unusable(err)),
        }
        // Only the job's key may work from now on: the pool key is refused, and the job's
        // key logs in and runs `true` (both checked at once).
        let old_key = RunRequest {
            script: Arc::from(LOGIN_CHECK_SCRIPT),
            ..as_pool
        };
        record.endpoint = Some(endpoint);
        record.host_key = Some(host_key);
        let (refused, login) = tokio::join!(
            run_captured(self, &old_key, deadline),
            self.check_login(record, deadline)
        );
        match refused {
            Err(err) if err.kind() == ErrorKind::AuthenticationFailed => {}
            Ok(_) => {
                return Err(Unusable(Error::new(
                    ErrorKind::NotAllowed,
                    "the pool key still logs in after the swap",
                )
                .with_hint(format!("the task image's SSH server must read the login user's authorized keys from ~/.ssh/authorized_keys (or from ${AUTHORIZED_KEYS_ENV} in its sessions' environment)"))));
            }
            Err(err) => return Err(Unusable(err)),
        }
        login.map_err(Unusable)?;
        // The task is the job's now: its labels say so (gc and a search by the job find it
        // with the job's deadline), and so does the job's record.
        let job_spec = job_spec(slot, record, job_public_key, job_deadline).map_err(Fails)?;
        with_retries(
            &self.options.retry,
            "handing the warm task to the job",
            &*self.observer,
            || self.launcher.adopt(task, &job_spec),
        )
        .await
        .map_err(Unusable)?;
        record.spec = Some(job_spec);
        Ok(ready)
    }

    /// Stops the slots claimed by `job` that its record does not name (a prepare killed
    /// between its claim and its record): part of the job's cleanup.
    pub(in crate::driver) async fn stop_claimed_slots(&self, job: &JobKey) -> Vec<TaskRef> {
        if !self.options.pool.enabled() {
            return Vec::new();
        }
        let mut report = PoolReport::default();
        if let Ok(slots) = self.slots().await {
            for slot in slots {
                if slot.pool.as_ref().and_then(|p| p.claimed_by.as_ref()) == Some(job) {
                    self.stop_slot(slot, "its claiming job ended", &mut report)
                        .await;
                }
            }
        }
        report
            .stopped
            .into_iter()
            .map(|(task, _)| TaskRef::new(task))
            .collect()
    }
}

/// Whether `slot` is an idle task of `template` that lives until `needed_until`.
fn claimable(
    slot: &JobRecord,
    template: &PoolTemplate,
    now: u64,
    needed_until: SystemTime,
) -> bool {
    let Some(pool) = &slot.pool else {
        return false;
    };
    pool.claimed_by.is_none()
        && matches!(slot.phase, Phase::Launched | Phase::Ready)
        && slot.task.is_some()
        && now < pool.idle_until
        && template_matches(slot, template)
        && slot
            .spec
            .as_ref()
            .and_then(|s| s.deadline)
            .is_some_and(|d| d >= needed_until)
}

/// The launch of the job's task as if the job had launched it: the slot's, with the job's
/// identity, key, deadline and public key.
fn job_spec(
    slot: &JobRecord,
    record: &JobRecord,
    job_public_key: &str,
    deadline: SystemTime,
) -> Result<TaskSpec> {
    let (Some(spec), Some(identity)) = (&slot.spec, &record.identity) else {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "the warm pool slot has no launch, or the job no identity",
        ));
    };
    let mut spec = spec.clone();
    spec.job = identity.clone();
    spec.key = record.key.clone();
    spec.deadline = Some(deadline);
    spec.environment.insert(
        SSH_PUBLIC_KEY_ENV.to_owned(),
        job_public_key.trim().to_owned(),
    );
    spec.environment.insert(
        TASK_DEADLINE_ENV.to_owned(),
        unix_seconds(deadline).to_string(),
    );
    Ok(spec)
}

/// The script that makes `public_key` the login user's only authorized key, atomically
/// (a new file renamed over the old one, 0600 in a 0700 directory), and writes the job's
/// `deadline` (Unix seconds) where the task's self-stop reads it
/// (`$FARGATE_DEADLINE_FILE`, default `~/.fargate-deadline`; `keep::deadline_script`).
pub(super) fn key_swap_script(public_key: &str, deadline: u64) -> Result<String> {
    let line = public_key.trim();
    let safe = !line.is_empty()
        && line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " +/=@._:-".contains(c));
    if !safe {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "the job's public key has characters an authorized_keys line does not",
        ));
    }
    Ok(format!(
        "set -eu\n\
         umask 077\n\
         f=\"${{{AUTHORIZED_KEYS_ENV}:-$HOME/.ssh/authorized_keys}}\"\n\
         mkdir -p \"$(dirname \"$f\")\"\n\
         printf '%s\\n' '{line}' > \"$f.fargate-swap.$$\"\n\
         mv -f \"$f.fargate-swap.$$\" \"$f\"\n\
         {}",
        super::super::keep::deadline_script(deadline)
    ))
}

/// Runs `request` until `deadline`; its outcome and stderr.
async fn run_captured(
    driver: &Driver,
    request: &RunRequest,
    deadline: Instant,
) -> Result<(RunOutcome, String)> {
    let mut out = CapturedOutput::default();
    let outcome = tokio::time::timeout_at(
        deadline,
        driver
            .shell
            .run(request, &mut out, &CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|_| Err(Error::timeout("running a script on the warm task")))?;
    Ok((
        outcome,
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}
