//! [`MetadataStore`]: the job's state between stage processes, and [`FileMetadataStore`].
//!
//! Every stage is a new process, so the job record is the job's only memory. Prepare writes
//! it *before* each side effect (write-ahead), so that a driver killed at any instant leaves
//! enough behind for cleanup to find and stop the task.

mod file_store;
mod legacy;
mod record;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::job::JobKey;

pub use file_store::{FileMetadataStore, permission_warnings};
pub use record::{AttemptOutcome, JobRecord, LaunchAttempt, Phase, RECORD_FORMAT, unix_now};

/// Holds a job's lock until dropped.
pub struct JobLock {
    _guard: Box<dyn Any + Send + Sync>,
}

impl JobLock {
    /// Wraps any guard that releases the lock when dropped.
    pub fn new(guard: impl Any + Send + Sync) -> Self {
        JobLock {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for JobLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobLock")
    }
}

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
#[async_trait]
pub trait MetadataStore: Send + Sync + fmt::Debug {
    /// Writes `record` under `record.key`.
    async fn put(&self, record: &JobRecord) -> Result<()>;
    /// Reads the record of `key`.
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>>;
    /// Deletes the record of `key`.
    async fn delete(&self, key: &JobKey) -> Result<()>;
    /// Keys of all stored records.
    async fn list(&self) -> Result<Vec<JobKey>>;
    /// Takes the job's lock, waiting at most `wait`.
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock>;
}

/// A shared, dynamically chosen store.
pub type DynMetadataStore = Arc<dyn MetadataStore>;

#[async_trait]
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
}
