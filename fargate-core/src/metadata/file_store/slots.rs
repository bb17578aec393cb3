//! The file store's counters ([`MetadataStore::acquire_slot`]): `<dir>/<counter>.slots`,
//! the JSON of a [`SlotHolders`], read and written (atomically) under the lock
//! `slots_<counter>`, so that every process of the host counts alike.
//!
//! [`MetadataStore::acquire_slot`]: crate::metadata::MetadataStore::acquire_slot

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobKey, MAX_KEY_LEN};
use crate::metadata::slots::{SlotGrant, SlotHolder, SlotHolders, check_counter};

use super::{BACKEND, FileMetadataStore};

/// How long a process waits for another's turn at a counter's file (each turn: a read,
/// record checks, an atomic write).
const LOCK_WAIT: Duration = Duration::from_secs(30);

impl FileMetadataStore {
    /// The file of `counter`: `<dir>/<counter>.slots`.
    pub fn slots_path(&self, counter: &str) -> PathBuf {
        self.dir().join(format!("{counter}.slots"))
    }

    /// The lock of `counter`'s file (counters whose names differ only by `.`/`_`, or past
    /// the key's length, share a lock: harmless).
    fn slots_lock_key(counter: &str) -> JobKey {
        let mut name = format!("slots_{}", counter.replace('.', "_"));
        name.truncate(MAX_KEY_LEN);
        JobKey(name)
    }

    /// Reads `counter`'s holders, lets `f` change them, writes them back when they changed;
    /// under the counter's lock, blocking.
    fn update_slots<T>(
        &self,
        counter: &str,
        f: impl FnOnce(&Self, &mut SlotHolders) -> Result<T>,
    ) -> Result<T> {
        check_counter(counter)?;
        let key = Self::slots_lock_key(counter);
        let _lock = self.lock_blocking(&key, LOCK_WAIT)?;
        let path = self.slots_path(counter);
        let mut holders = self.read_slots(&path)?;
        let before = holders.clone();
        let out = f(self, &mut holders)?;
        if holders != before {
            let bytes = serde_json::to_vec_pretty(&holders).map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("encoding a slot counter: {e}"),
                )
            })?;
            self.write_atomic(&key, &path, &bytes, "slot counter")?;
        }
        Ok(out)
    }

    /// The holders in the counter file `path` (none when it does not exist).
    fn read_slots(&self, path: &Path) -> Result<SlotHolders> {
        match self.read_file(path, "slot counter")? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::CorruptRecord,
                    format!("slot counter {} is unreadable: {e}", path.display()),
                )
                .with_backend(BACKEND)
                .with_hint("delete the file: the jobs that hold its slots take them again when they next ask")
            }),
            None => Ok(SlotHolders::default()),
        }
    }

    /// The holders of `holders` whose time is up at `now` and whose job has no record
    /// file (an unreadable record still counts: only a missing one frees the slot); what
    /// acquiring and listing give [`SlotHolders::standings`].
    fn without_record(&self, holders: &SlotHolders, now: SystemTime) -> Vec<JobKey> {
        holders
            .expired(now)
            .into_iter()
            .filter(|key| !self.record_path(key).exists())
            .collect()
    }

    /// `MetadataStore::acquire_slot`, blocking.
    pub(super) fn acquire_slot_blocking(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        self.update_slots(counter, |store, holders| {
            let now = crate::world::now();
            let without_record = store.without_record(holders, now);
            Ok(holders.try_take(holder, limit, ttl, now, &without_record))
        })
    }

    /// `MetadataStore::slot_holders`, blocking: the counter file as last written (writes
    /// are atomic renames), without its lock.
    pub(super) fn slot_holders_blocking(&self, counter: &str) -> Result<Vec<SlotHolder>> {
        check_counter(counter)?;
        let holders = self.read_slots(&self.slots_path(counter))?;
        let now = crate::world::now();
        Ok(holders.standings(now, &self.without_record(&holders, now)))
    }

    /// `MetadataStore::slot_counters`, blocking: the names of the `<counter>.slots` files.
    pub(super) fn slot_counters_blocking(&self, prefix: &str) -> Result<Vec<String>> {
        if !self.check_dir(false)? {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(self.dir()).map_err(|e| {
            Error::io(
                format!("listing metadata directory {}", self.dir().display()),
                e,
            )
            .with_backend(BACKEND)
        })?;
        let mut counters: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let counter = name.strip_suffix(".slots")?;
                // Temporary files start with `.`, which no counter does.
                let ours = counter.starts_with(prefix) && check_counter(counter).is_ok();
                ours.then(|| counter.to_owned())
            })
            .collect();
        counters.sort();
        Ok(counters)
    }

    /// `MetadataStore::release_slot`, blocking.
    pub(super) fn release_slot_blocking(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.update_slots(counter, |_, holders| {
            holders.release(holder);
            Ok(())
        })
    }
}
