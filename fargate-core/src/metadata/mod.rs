//! [`MetadataStore`]: the job's state between stage processes, and [`FileMetadataStore`].
//!
//! Every stage is a new process, so the job record is the job's only memory. Prepare writes
//! it *before* each side effect (write-ahead), so that a driver killed at any instant leaves
//! enough behind for cleanup to find and stop the task.

mod call_budget;
mod decode;
mod file_store;
mod interruptions;
mod legacy;
mod lock;
mod namespaces;
mod record;
mod slots;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::job::JobKey;

pub use call_budget::FileCallBudget;
pub use file_store::{FileMetadataStore, effective_uid, permission_warnings};
pub use interruptions::{InterruptionMemory, InterruptionNote, interruption_key};
pub use lock::JobLock;
pub use namespaces::NamespaceClaim;
pub use record::{
    AttemptOutcome, ContainerLogin, JobRecord, LaunchAttempt, Phase, PoolSlot, RECORD_FORMAT,
};
pub use slots::{MAX_COUNTER_LEN, SlotGrant, SlotHolder, SlotHolders, SlotStanding, check_counter};

/// Stores job records between stage processes.
///
/// # Behaviour every implementation guarantees (checked by
/// `fargate_core::testing::conformance::store`)
/// - `put` replaces the whole record atomically: a reader sees the old or the new record,
///   never a mix, even if the writer dies half-way.
/// - `get` of a missing record is `Ok(None)`; an unreadable one is
///   [`ErrorKind::CorruptRecord`](crate::ErrorKind::CorruptRecord).
/// - `delete` of a missing record succeeds.
/// - `lock` gives one holder per job at a time, across processes for persistent stores; it
///   waits up to `wait` and then fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
/// - `unlock` releases the lock at once: the next `lock` of the job succeeds without waiting.
///   Unlocking a lock whose lease expired and that another holder took over since leaves the
///   new holder's lock alone.
/// - A store whose locks can outlive their holder (a database row, a lock service) gives
///   them a lease ([`JobLock::lease`]): once it has expired, `lock` takes the lock over. A
///   store whose locks vanish with their holder (an `flock`, a process-local mutex) needs no
///   lease, and releases a [`JobLock`] that is dropped without `unlock`.
/// - **Writes under a lock are fenced** when locks have leases: `put_locked` and
///   `delete_locked` carry the holder's [`JobLock`], and once another holder took the lock
///   over (the lease expired while its holder was paused, partitioned or slow) they fail with
///   [`ErrorKind::LockLost`](crate::ErrorKind::LockLost) and change nothing, so a holder
///   that lost its lock can never overwrite the new holder's state. Such a store gives each
///   acquisition a fencing token ([`JobLock::fence`]) that its writes check in the same
///   atomic step as the write. A store whose locks cannot be lost while their holder lives
///   (an `flock`) needs no token: `put_locked` is `put`.
///
/// # Locking protocol
/// The driver takes the job's lock at the start of prepare and cleanup, writes the job's
/// record only with `put_locked`/`delete_locked` while it holds it, and releases it with
/// [`MetadataStore::unlock`] when the stage ends, successful or not. When the stage's future
/// is dropped (an embedder's timeout, a panic) `unlock` never runs: the lock is then released
/// by dropping the [`JobLock`] (stores that can) or when its lease expires. A store that
/// renews a held lock's lease while its `JobLock` lives (a database store, in the
/// background) bounds only how long a killed or paused holder keeps the lock, and its lease
/// can be short; a store that does not renew needs a lease longer than the longest stage
/// (the options' `timeouts.ready` plus `timeouts.stop`, see
/// [`Timeouts`](crate::options::Timeouts)). Either way it should be short enough that a
/// lock left by a killed driver does not hold the next stage long (the driver waits 30 s
/// for a lock).
#[async_trait]
pub trait MetadataStore: Send + Sync + fmt::Debug {
    /// Writes `record` under `record.key`.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the old or the new record, never a mix.
    async fn put(&self, record: &JobRecord) -> Result<()>;
    /// Reads the record of `key`.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>>;
    /// Deletes the record of `key`.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the record deleted or not; deleting again is harmless.
    async fn delete(&self, key: &JobKey) -> Result<()>;
    /// Keys of all stored records.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn list(&self) -> Result<Vec<JobKey>>;
    /// Takes the job's lock, waiting at most `wait` (`Duration::ZERO`: try once).
    ///
    /// # Cancel safety
    /// Dropping the future before it returns leaves the lock free (or, for a store that
    /// took it in the same instant, held until its lease expires).
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock>;

    /// Releases `lock`, which this store gave.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the lock released or held; a held one is released as
    /// when a [`JobLock`] is dropped (see the trait's docs).
    async fn unlock(&self, lock: JobLock) -> Result<()>;

    /// Writes `record` as the holder of `lock`, the lock of `record.key`: fails with
    /// [`ErrorKind::LockLost`](crate::ErrorKind::LockLost), writing nothing, when another
    /// holder has taken the lock over since (see the trait's docs). The default, for stores
    /// whose locks cannot be lost while their holder lives, checks the key and calls `put`.
    ///
    /// # Cancel safety
    /// As `put`.
    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        same_key(lock, &record.key)?;
        self.put(record).await
    }

    /// Deletes the record of `lock`'s key as the holder of `lock` (the lock stays held until
    /// `unlock`): fails with [`ErrorKind::LockLost`](crate::ErrorKind::LockLost), deleting
    /// nothing, when another holder has taken the lock over since. The default calls
    /// `delete`.
    ///
    /// # Cancel safety
    /// As `delete`.
    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        self.delete(lock.key()).await
    }

    /// Reads the record of `lock`'s key as the holder of `lock`: the record as the store
    /// holds it now, for decisions taken under the lock. A store may answer from what it
    /// read when it took the lock, updated by this holder's own writes under it (nothing
    /// else writes the record while the lock is held), with no request. The default calls
    /// `get`.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn get_locked(&self, lock: &JobLock) -> Result<Option<JobRecord>> {
        self.get(lock.key()).await
    }

    /// Reads the record of `key` for a stage that decides nothing destructive with it (a
    /// run stage: which task to run its script in, with which key). A store shared by
    /// several hosts may answer from a copy this host keeps of what it last wrote itself
    /// (the runner calls every stage of a job on the same host), with no request; a record
    /// another host changed since may then be stale, which costs that stage a failed
    /// connection at worst. Never use it for what to stop, delete or write: that is
    /// decided under the lock ([`MetadataStore::get_locked`]). The default calls `get`.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.get(key).await
    }

    /// Deletes the record of `lock`'s key as the holder of `lock` and releases the lock:
    /// the end of a stage whose last step under the lock is the delete. Fails as
    /// `delete_locked` does, deleting nothing, when another holder took the lock over; the
    /// lock is released either way (or left to its new holder). A store may do both in one
    /// request. The default calls `delete_locked`, then `unlock`.
    ///
    /// # Cancel safety
    /// As `delete_locked` followed by `unlock`.
    async fn delete_and_unlock(&self, lock: JobLock) -> Result<()> {
        let deleted = self.delete_locked(&lock).await;
        let unlocked = self.unlock(lock).await;
        deleted.and(unlocked)
    }

    /// The records whose key starts with `prefix` (e.g. a namespace's warm pool slots),
    /// in key order; one that cannot be read is left out (and logged). A store may read
    /// them all in one request (a database's scan). The default calls `list`, then `get`
    /// for each key that matches.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        let mut records = Vec::new();
        for key in self.list().await? {
            if !key.as_str().starts_with(prefix) {
                continue;
            }
            match self.get(&key).await {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(record = %key, error = %err, "skipping an unreadable record")
                }
            }
        }
        Ok(records)
    }

    /// Whether records of GitLab's Go driver or of this driver's format 1 may be in the
    /// store (a metadata directory used before an upgrade): stages then look a job's
    /// record up under its legacy name too when it has none under its own. A store only
    /// this driver's current format ever wrote (a DynamoDB table) answers `false` and
    /// saves that read. The default: `true`.
    fn may_hold_legacy_records(&self) -> bool {
        true
    }

    /// Notes a sign of life of the job of `key`, which has a record: its stages call it
    /// (prepare when it ends, a run stage when it starts and every
    /// [`HEARTBEAT_EVERY`](crate::driver::HEARTBEAT_EVERY) while its script runs). A store
    /// shared by several hosts keeps it, so that `gc` on any host can tell a job whose host
    /// died ([`MetadataStore::last_heartbeat`]). Such a store may skip a heartbeat when it
    /// knows the job gave a sign of life less than
    /// [`HEARTBEAT_EVERY`](crate::driver::HEARTBEAT_EVERY) ago (a write of its record, or
    /// an earlier heartbeat). The default keeps nothing; it never changes the record, and
    /// needs no lock.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// When the job of `key` last gave a sign of life ([`MetadataStore::heartbeat`]), if
    /// the store keeps them and it gave one. The default: `None`.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        let _ = key;
        Ok(None)
    }

    /// Takes a slot of the counter `counter` for `holder` if it holds one already or fewer
    /// than `limit` other holders count, atomically (across the processes, or the hosts,
    /// that share the store); else answers [`SlotGrant::Full`] and changes nothing that
    /// counts. `holder` counts until `ttl` from now, and after that as long as its job has
    /// a record (see [`SlotHolders`]); a holder that takes its slot again renews its time.
    /// The driver counts the jobs of a project with it
    /// (`[[Fargate.ProjectRule]] MaxConcurrentJobs`).
    ///
    /// The default keeps no counters: it fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the slot taken or not; a taken one counts until `ttl`
    /// (or the job's record) ends, or until [`MetadataStore::release_slot`].
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        let _ = (holder, limit, ttl);
        Err(no_counters(counter))
    }

    /// Gives back `holder`'s slot of `counter`; giving back a slot not held succeeds.
    /// The default does nothing.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the slot given back or not; again is harmless.
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        let _ = (counter, holder);
        Ok(())
    }

    /// The holders of `counter` in key order, each with whether it counts and why
    /// ([`SlotStanding`]), decided by the rule [`MetadataStore::acquire_slot`] applies
    /// ([`SlotHolders::standings`]) at the time of the call. Read only: a holder that no
    /// longer counts is listed as [`SlotStanding::Gone`], not forgotten. A counter never
    /// taken has no holders. For an admin's listing (`fargate slots`), never for a decision.
    ///
    /// The default keeps no counters: it fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn slot_holders(&self, counter: &str) -> Result<Vec<SlotHolder>> {
        Err(no_counters(counter))
    }

    /// The names of the counters that start with `prefix` (a namespace's counters:
    /// `<namespace>.`), sorted; a counter whose holders all gave their slots back may be
    /// listed. A store may read them all in one request (a database's scan).
    ///
    /// The default keeps no counters: it fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        Err(no_counters(&format!("{prefix}*")))
    }
}

/// The error of a store that keeps no counters.
fn no_counters(counter: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Unsupported,
        format!("this metadata store keeps no counters (counter {counter})"),
    )
    .with_hint("MaxConcurrentJobs needs the file store or the DynamoDB store")
}

/// Refuses a write of `key` under the lock of another key (a caller's mistake).
pub(crate) fn same_key(lock: &JobLock, key: &JobKey) -> Result<()> {
    if lock.key() == key {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::InvalidInput,
        format!(
            "a write of {key} under the lock of {}: a record is written under its own lock",
            lock.key()
        ),
    ))
}

/// The error of a write under `lock` that another holder took over: what a fencing store
/// answers.
pub fn lock_lost(lock: &JobLock, what: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::LockLost,
        format!(
            "{what} of {} refused: its lock (held by {}, fence {}) was taken over by another holder after its lease expired",
            lock.key(),
            lock.holder(),
            lock.fence().map_or("none".to_owned(), |f| f.to_string()),
        ),
    )
    .with_hint("this process was paused or cut off longer than the lock's lease; the new holder decides, nothing was written")
}

/// A shared, dynamically chosen store.
pub type DynMetadataStore = Arc<dyn MetadataStore>;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: MetadataStore + ?Sized> MetadataStore for Arc<T> {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        (**self).put(record).await
    }
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        (**self).get(key).await
    }
    async fn delete(&self, key: &JobKey) -> Result<()> {
        (**self).delete(key).await
    }
    async fn list(&self) -> Result<Vec<JobKey>> {
        (**self).list().await
    }
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        (**self).lock(key, wait).await
    }
    async fn unlock(&self, lock: JobLock) -> Result<()> {
        (**self).unlock(lock).await
    }
    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        (**self).put_locked(lock, record).await
    }
    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        (**self).delete_locked(lock).await
    }
    async fn get_locked(&self, lock: &JobLock) -> Result<Option<JobRecord>> {
        (**self).get_locked(lock).await
    }
    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        (**self).get_cached(key).await
    }
    async fn delete_and_unlock(&self, lock: JobLock) -> Result<()> {
        (**self).delete_and_unlock(lock).await
    }
    fn may_hold_legacy_records(&self) -> bool {
        (**self).may_hold_legacy_records()
    }
    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        (**self).records_with_prefix(prefix).await
    }
    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        (**self).heartbeat(key).await
    }
    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        (**self).last_heartbeat(key).await
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        (**self).acquire_slot(counter, holder, limit, ttl).await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        (**self).release_slot(counter, holder).await
    }
    async fn slot_holders(&self, counter: &str) -> Result<Vec<SlotHolder>> {
        (**self).slot_holders(counter).await
    }
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        (**self).slot_counters(prefix).await
    }
}
