//! [`MetadataStore`]: the job's state between stage processes, and [`FileMetadataStore`].
//!
//! Every stage is a new process, so the job record is the job's only memory. Prepare writes
//! it *before* each side effect (write-ahead), so that a driver killed at any instant leaves
//! enough behind for cleanup to find and stop the task.

mod decode;
mod file_store;
mod interruptions;
mod legacy;
mod lock;
mod namespaces;
mod record;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::job::JobKey;

pub use file_store::{FileMetadataStore, effective_uid, permission_warnings};
pub use interruptions::{InterruptionMemory, InterruptionNote, interruption_key};
pub use lock::JobLock;
pub use namespaces::NamespaceClaim;
pub use record::{
    AttemptOutcome, ContainerLogin, JobRecord, LaunchAttempt, Phase, PoolSlot, RECORD_FORMAT,
};

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
///
/// # Locking protocol
/// The driver takes the job's lock at the start of prepare and cleanup, and releases it with
/// [`MetadataStore::unlock`] when the stage ends, successful or not. When the stage's future
/// is dropped (an embedder's timeout, a panic) `unlock` never runs: the lock is then released
/// by dropping the [`JobLock`] (stores that can) or when its lease expires. A lease should
/// therefore be longer than the longest stage (the options' `timeouts.ready` plus
/// `timeouts.stop`, see [`Timeouts`](crate::options::Timeouts)), and short enough that a
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
}
