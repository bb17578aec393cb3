//! [`JobLock`]: a held job lock, as a [`MetadataStore`](super::MetadataStore) hands it out.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use crate::job::JobKey;

/// A job's lock, held until given back with
/// [`MetadataStore::unlock`](super::MetadataStore::unlock).
///
/// A store builds it from what identifies the hold: the job's key, a holder id unique per
/// acquisition (what a database row would store, so that only this holder can release it),
/// the lease when the lock expires on its own, a fencing token when the store fences writes
/// (see [`MetadataStore::put_locked`](super::MetadataStore::put_locked)), and optionally a
/// guard: a process-local value whose `Drop` releases the lock, for when the `JobLock` is
/// dropped without `unlock` (a dropped future). Stores that cannot release synchronously
/// rely on the lease instead.
pub struct JobLock {
    key: JobKey,
    holder: String,
    lease: Option<Duration>,
    fence: Option<u64>,
    guard: Option<Box<dyn Any + Send + Sync>>,
}

impl JobLock {
    /// A lock on `key` held by `holder`, without lease or guard.
    pub fn new(key: JobKey, holder: impl Into<String>) -> Self {
        JobLock {
            key,
            holder: holder.into(),
            lease: None,
            fence: None,
            guard: None,
        }
    }

    /// Gives the lock a fencing token: a number that differs for every acquisition of the
    /// key's lock (a version the store keeps per key), which the store's writes under the
    /// lock check.
    pub fn with_fence(mut self, fence: u64) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Says that the lock expires `lease` after it was taken, unless released before.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Attaches a guard that releases the lock when dropped.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The job whose lock this is.
    pub fn key(&self) -> &JobKey {
        &self.key
    }

    /// Who holds it: unique per acquisition.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long the lock lasts without being released, if it expires at all.
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// The fencing token, when the store fences writes under its locks.
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// The guard, if it is a `T` (for the store's operations under the lock).
    pub fn guard<T: Any>(&self) -> Option<&T> {
        self.guard.as_deref()?.downcast_ref::<T>()
    }

    /// Takes the guard out if it is a `T` (for the store's `unlock`), leaving none behind.
    pub fn take_guard<T: Any>(&mut self) -> Option<Box<T>> {
        let guard = self.guard.take()?;
        match guard.downcast::<T>() {
            Ok(guard) => Some(guard),
            Err(other) => {
                self.guard = Some(other);
                None
            }
        }
    }
}

impl fmt::Debug for JobLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLock")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .field("fence", &self.fence)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}
