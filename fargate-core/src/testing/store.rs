use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use async_trait::async_trait;

use super::faults::{Fault, Faults, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;
use crate::metadata::{
    InterruptionMemory, InterruptionNote, JobLock, JobRecord, MetadataStore, SlotGrant, SlotHolder,
    SlotHolders, check_counter,
};

/// An in-memory [`MetadataStore`] with fault injection. Locks hold within the process.
///
/// Its locks work as a database-backed store's would: a table of holders, one row per
/// job, with an optional lease ([`MemoryStore::with_lock_lease`]) after which another
/// `lock` takes the row over. Each acquisition gets a fencing token ([`JobLock::fence`]),
/// and `put_locked`/`delete_locked` fail with [`ErrorKind::LockLost`] once the row is not
/// the writer's any more. A dropped [`JobLock`] also releases its row (the table is in
/// this process, so that can happen synchronously). Leases are not renewed: a lock
/// expires `lease` after it was taken, held or not.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<JobKey, JobRecord>>,
    notes: Mutex<BTreeMap<JobKey, InterruptionNote>>,
    beats: Mutex<BTreeMap<JobKey, std::time::SystemTime>>,
    slots: Mutex<BTreeMap<String, SlotHolders>>,
    locks: Arc<LockTable>,
    lease: Option<Duration>,
    /// Faults to inject; also counts calls.
    pub faults: Faults,
}

/// The lock rows, and a wake-up for waiters when one is released.
#[derive(Debug, Default)]
struct LockTable {
    rows: Mutex<HashMap<JobKey, Row>>,
    released: Notify,
    next_holder: AtomicU64,
}

#[derive(Debug)]
struct Row {
    holder: u64,
    expires: Option<Instant>,
}

impl LockTable {
    /// Takes the row of `key` if it is free or its lease expired.
    fn try_take(
        &self,
        key: &JobKey,
        lease: Option<Duration>,
    ) -> std::result::Result<u64, Option<Instant>> {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(row) = rows.get(key)
            && row.expires.is_none_or(|at| at > now)
        {
            return Err(row.expires);
        }
        let holder = self.next_holder.fetch_add(1, Ordering::Relaxed);
        rows.insert(
            key.clone(),
            Row {
                holder,
                expires: lease.map(|l| now + l),
            },
        );
        Ok(holder)
    }

    /// Whether `holder` holds the row of `key` (expired or not, as long as nobody took it
    /// over).
    fn holds(&self, key: &JobKey, holder: Option<u64>) -> bool {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        holder.is_some_and(|h| rows.get(key).is_some_and(|row| row.holder == h))
    }

    /// Deletes the row of `key` if `holder` still holds it.
    fn release(&self, key: &JobKey, holder: u64) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        if rows.get(key).is_some_and(|row| row.holder == holder) {
            rows.remove(key);
            self.released.notify_waiters();
        }
    }
}

/// Releases its row when dropped (a [`JobLock`] dropped without `unlock`).
#[derive(Debug)]
struct RowGuard {
    table: Arc<LockTable>,
    key: JobKey,
    holder: u64,
}

impl Drop for RowGuard {
    fn drop(&mut self) {
        self.table.release(&self.key, self.holder);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives locks a lease: a lock not released `lease` after it was taken can be taken
    /// over.
    pub fn with_lock_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The stored record of `key`, bypassing faults.
    pub fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        self.records().get(key).cloned()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobKey, JobRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fault(&self, op: Op) -> Result<Option<Fault>> {
        match self.faults.on_call(op) {
            Some(Fault::Fail(k)) => Err(Fault::Fail(k).error(op)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn lost(fault: Option<Fault>, op: Op) -> Result<()> {
    match fault {
        Some(f @ Fault::LoseResponse(_)) => Err(f.error(op)),
        _ => Ok(()),
    }
}

/// The holders of `holders` whose time is up at `now` and whose job has no record in
/// `records`: what acquiring and listing give [`SlotHolders::standings`].
fn without_record(
    holders: &SlotHolders,
    now: std::time::SystemTime,
    records: &BTreeMap<JobKey, JobRecord>,
) -> Vec<JobKey> {
    holders
        .expired(now)
        .into_iter()
        .filter(|k| !records.contains_key(k))
        .collect()
}

#[async_trait]
impl MetadataStore for MemoryStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let fault = self.fault(Op::Put).await?;
        self.records().insert(record.key.clone(), record.clone());
        lost(fault, Op::Put)
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.fault(Op::Get).await?;
        Ok(self.records().get(key).cloned())
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        let fault = self.fault(Op::Delete).await?;
        self.records().remove(key);
        lost(fault, Op::Delete)
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        Ok(self.records().keys().cloned().collect())
    }

    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        check_counter(counter)?;
        let records = self.records();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let holders = slots.entry(counter.to_owned()).or_default();
        let now = crate::world::now();
        let without_record = without_record(holders, now, &records);
        Ok(holders.try_take(holder, limit, ttl, now, &without_record))
    }

    async fn slot_holders(&self, counter: &str) -> Result<Vec<SlotHolder>> {
        check_counter(counter)?;
        let records = self.records();
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(holders) = slots.get(counter) else {
            return Ok(Vec::new());
        };
        let now = crate::world::now();
        Ok(holders.standings(now, &without_record(holders, now, &records)))
    }

    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slots
            .keys()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        check_counter(counter)?;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(holders) = slots.get_mut(counter) {
            holders.release(holder);
        }
        Ok(())
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before trying, so that a release in between is not missed.
            let released = self.locks.released.notified();
            let expires = match self.locks.try_take(key, self.lease) {
                Ok(holder) => {
                    let guard = RowGuard {
                        table: Arc::clone(&self.locks),
                        key: key.clone(),
                        holder,
                    };
                    let lock = JobLock::new(key.clone(), holder.to_string())
                        .with_fence(holder)
                        .with_guard(guard);
                    return Ok(match self.lease {
                        Some(lease) => lock.with_lease(lease),
                        None => lock,
                    });
                }
                Err(expires) => expires,
            };
            let wake = expires.map_or(deadline, |at| at.min(deadline));
            if Instant::now() >= deadline
                || tokio::time::timeout_at(wake, released).await.is_err() && wake >= deadline
            {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("job {key} is locked by another holder"),
                ));
            }
        }
    }

    async fn unlock(&self, mut lock: JobLock) -> Result<()> {
        match lock.take_guard::<RowGuard>() {
            Some(guard) if Arc::ptr_eq(&guard.table, &self.locks) => {
                drop(guard);
                Ok(())
            }
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the lock of job {} was not given by this store", lock.key()),
            )),
        }
    }

    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        crate::metadata::same_key(lock, &record.key)?;
        let fault = self.fault(Op::Put).await?;
        {
            // Checked and written under the records' mutex: one atomic step.
            let mut records = self.records();
            if !self.locks.holds(&record.key, lock.fence()) {
                return Err(crate::metadata::lock_lost(lock, "a write"));
            }
            records.insert(record.key.clone(), record.clone());
        }
        lost(fault, Op::Put)
    }

    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        let fault = self.fault(Op::Heartbeat).await?;
        if self.records().contains_key(key) {
            self.beats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), crate::world::now());
        }
        lost(fault, Op::Heartbeat)
    }

    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        if !self.records().contains_key(key) {
            return Ok(None);
        }
        Ok(self
            .beats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied())
    }

    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        let fault = self.fault(Op::Delete).await?;
        {
            let mut records = self.records();
            if !self.locks.holds(lock.key(), lock.fence()) {
                return Err(crate::metadata::lock_lost(lock, "a delete"));
            }
            records.remove(lock.key());
        }
        lost(fault, Op::Delete)
    }
}

/// Interruption notes kept in memory (expired ones are not returned).
#[async_trait]
impl InterruptionMemory for MemoryStore {
    async fn remember(&self, key: &JobKey, note: &InterruptionNote) -> Result<()> {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), note.clone());
        Ok(())
    }

    async fn recall(&self, key: &JobKey) -> Result<Option<InterruptionNote>> {
        Ok(self
            .notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|n| n.is_current())
            .cloned())
    }
}
