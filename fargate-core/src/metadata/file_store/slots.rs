//! The file store's counters ([`MetadataStore::acquire_slot`]): `<dir>/<counter>.slots`,
//! the JSON of a [`SlotHolders`], read and written (atomically) under the lock
//! `slots_<counter>`, so that every process of the host counts alike.
//!
//! [`MetadataStore::acquire_slot`]: crate::metadata::MetadataStore::acquire_slot

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobKey, MAX_KEY_LEN};
use crate::metadata::slots::{SlotGrant, SlotHolders, check_counter};

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
        let mut holders: SlotHolders = match self.read_file(&path, "slot counter")? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::CorruptRecord,
                    format!("slot counter {} is unreadable: {e}", path.display()),
                )
                .with_backend(BACKEND)
                .with_hint("delete the file: the jobs that hold its slots take them again when they next ask")
            })?,
            None => SlotHolders::default(),
        };
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
            let mut gone = Vec::new();
            for key in holders.expired(now) {
                // An unreadable record still counts: only a missing one frees the slot.
                if !store.record_path(&key).exists() {
                    gone.push(key);
                }
            }
            Ok(holders.try_take(holder, limit, ttl, now, &gone))
        })
    }

    /// `MetadataStore::release_slot`, blocking.
    pub(super) fn release_slot_blocking(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.update_slots(counter, |_, holders| {
            holders.release(holder);
            Ok(())
        })
    }
}
