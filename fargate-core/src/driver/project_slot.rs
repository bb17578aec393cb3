//! Per-project concurrency limits (`[[Fargate.ProjectRule]] MaxConcurrentJobs`): prepare
//! takes a slot of the project's counter before it launches anything and waits while the
//! project is at its limit; cleanup gives it back. The project is the one
//! `JOB_RESPONSE_FILE` names ([`TrustedProject`](super::TrustedProject)), never a job
//! variable, and the counter lives in the metadata store: shared by the host's processes
//! (file store) or by the whole fleet (a shared store).
//!
//! A job whose stage died without giving its slot back stops counting once its record is
//! gone (its cleanup, or `gc`, removes it) and its slot's time is up (see
//! [`SlotHolders`](crate::metadata::SlotHolders)): nothing leaks a slot for good.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Driver;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobIdentity, JobKey, Namespace};
use crate::metadata::SlotGrant;
use crate::options::ConcurrencyLimit;

/// How often a job over its project's limit asks again for a slot.
pub const SLOT_POLL: Duration = Duration::from_secs(5);
/// How often a waiting job says so in its log.
pub const SLOT_NOTE_EVERY: Duration = Duration::from_secs(30);

/// The counter of a project's jobs, and its limit.
#[derive(Clone, Debug)]
pub(super) struct ProjectSlot {
    counter: String,
    project: String,
    limit: ConcurrencyLimit,
}

/// The counter of the project of `identity` in its namespace: `<namespace>.project-<id>`,
/// or `<namespace>.path-<hex of the path>` when `JOB_RESPONSE_FILE` gave no id.
fn counter_name(identity: &JobIdentity) -> Option<String> {
    let ns = identity.namespace.as_str();
    match (identity.project_id, &identity.project_path) {
        (Some(id), _) => Some(format!("{ns}.project-{id}")),
        (None, Some(path)) => {
            let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
            let mut name = format!("{ns}.path-{hex}");
            name.truncate(crate::metadata::MAX_COUNTER_LEN);
            Some(name)
        }
        (None, None) => None,
    }
}

/// The project of `counter`, a counter of `namespace` ([`counter_name`]'s inverse): its id,
/// or its path (`None` when the name holds neither, or a path cut to the longest name).
pub(super) fn counter_project(
    namespace: &Namespace,
    counter: &str,
) -> (Option<u64>, Option<String>) {
    let Some(rest) = counter
        .strip_prefix(namespace.as_str())
        .and_then(|r| r.strip_prefix('.'))
    else {
        return (None, None);
    };
    if let Some(id) = rest.strip_prefix("project-") {
        return (id.parse().ok(), None);
    }
    let path = rest
        .strip_prefix("path-")
        .filter(|hex| hex.len() % 2 == 0 && counter.len() < crate::metadata::MAX_COUNTER_LEN)
        .and_then(|hex| {
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            String::from_utf8(bytes?).ok()
        });
    (None, path)
}

impl Driver {
    /// The slot the job of `identity` needs, if a rule limits its project.
    pub(super) fn project_slot(&self, identity: &JobIdentity) -> Option<ProjectSlot> {
        let limit = self
            .options
            .shape
            .concurrency_limit(identity.project_path.as_deref(), identity.project_id)?;
        let project = match (&identity.project_path, identity.project_id) {
            (Some(p), _) => p.clone(),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => return None,
        };
        Some(ProjectSlot {
            counter: counter_name(identity)?,
            project,
            limit,
        })
    }

    /// Takes the job's slot of its project, waiting while the project is at its limit
    /// (saying so in the job log every [`SLOT_NOTE_EVERY`]), at most the rule's wait.
    pub(super) async fn take_project_slot(
        &self,
        slot: &ProjectSlot,
        key: &JobKey,
        cancel: &CancellationToken,
    ) -> Result<()> {
        // Counts without a record until prepare has surely written it.
        let ttl = self.options.timeouts.ready + super::LOCK_WAIT + Duration::from_secs(60);
        let start = Instant::now();
        let mut noted: Option<Instant> = None;
        let limit = slot.limit.limit;
        loop {
            let holders = match self
                .store
                .acquire_slot(&slot.counter, key, limit, ttl)
                .await?
            {
                SlotGrant::Taken => {
                    if noted.is_some() {
                        tracing::warn!(
                            "project {} has a free slot after {} s: starting",
                            slot.project,
                            start.elapsed().as_secs()
                        );
                    }
                    return Ok(());
                }
                SlotGrant::Full { holders } => holders.len(),
            };
            if start.elapsed() >= slot.limit.wait {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "project {} had {holders} jobs running (limit {limit}, rule {:?}) for {} s: gave up waiting for a slot",
                        slot.project,
                        slot.limit.rule,
                        slot.limit.wait.as_secs()
                    ),
                )
                .with_hint(format!(
                    "retry the job when fewer of the project's jobs run, or raise MaxConcurrentJobs or SlotWait of [[Fargate.ProjectRule]] {:?}",
                    slot.limit.rule
                )));
            }
            if noted.is_none_or(|at| at.elapsed() >= SLOT_NOTE_EVERY) {
                tracing::warn!(
                    "project {} has {holders} jobs running (limit {limit}): waiting",
                    slot.project
                );
                noted = Some(Instant::now());
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::cancelled("waiting for a slot of the project")),
                _ = tokio::time::sleep(SLOT_POLL) => {}
            }
        }
    }

    /// Gives back the job's slot of its project (a failure is only logged: the slot stops
    /// counting once the job's record is gone and its time is up).
    pub(super) async fn give_back_project_slot(&self, slot: &ProjectSlot, key: &JobKey) {
        if let Err(err) = self.store.release_slot(&slot.counter, key).await {
            tracing::warn!(job = %key, error = %err, "could not give back the job's slot of project {}", slot.project);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobResponse;

    #[test]
    fn a_counter_names_its_project() {
        let ns = Namespace::parse("ci").unwrap();
        let mut response = JobResponse::new(7);
        response.project_id = Some(42);
        response.project_path = Some("group/app".into());
        let by_id = JobIdentity::from_response(ns.clone(), &response);
        let counter = counter_name(&by_id).unwrap();
        assert_eq!(counter_project(&ns, &counter), (Some(42), None));
        response.project_id = None;
        let by_path = JobIdentity::from_response(ns.clone(), &response);
        let counter = counter_name(&by_path).unwrap();
        assert_eq!(
            counter_project(&ns, &counter),
            (None, Some("group/app".into()))
        );
        // A path cut to the longest name is not guessed at.
        response.project_path = Some("g/".repeat(100));
        let long = JobIdentity::from_response(ns.clone(), &response);
        let counter = counter_name(&long).unwrap();
        assert_eq!(counter_project(&ns, &counter), (None, None));
        // Another namespace's counter is not this namespace's project.
        let other = Namespace::parse("cix").unwrap();
        assert_eq!(counter_project(&other, "ci.project-42"), (None, None));
    }
}
