//! The host's copy of the ready records it wrote itself ([`DynamoStore::with_local_copy`]):
//! what lets a run stage start without reading the table, and a heartbeat be skipped when
//! the host knows the last one is recent.
//!
//! The copy is a file store of its own (`<metadata dir>/table-copy`: files 0600 in a 0700
//! directory, written atomically, as the file store writes records). It holds a record
//! only while the record is [`Phase::Ready`] as this host last wrote it, and the file's
//! modification time is when this host last gave the job a sign of life in the table (the
//! record's write, or a heartbeat). The table stays the authority: before every write of a
//! record the copy is forgotten, and it is written again only once the table's write
//! succeeded, so a failed or refused write never leaves a copy the table does not hold.
//! Only [`MetadataStore::get_cached`] reads it (see `docs/ownership.md`).
//!
//! [`DynamoStore::with_local_copy`]: super::DynamoStore::with_local_copy
//! [`MetadataStore::get_cached`]: fargate_core::MetadataStore::get_cached

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fargate_core::metadata::{FileMetadataStore, Phase};
use fargate_core::{Error, ErrorKind, JobKey, JobRecord, MetadataStore, Result};

use super::errors::BACKEND;

/// How old a copy whose record the table no longer has must be before a listing removes
/// it (a record written while the listing's scan ran is not in the scan).
const SWEEP_AFTER: Duration = Duration::from_secs(60);

/// The copy's directory under the metadata directory.
pub const COPY_DIR: &str = "table-copy";

/// The copies: a file store in their own directory.
#[derive(Clone, Debug)]
pub(super) struct LocalCopy {
    files: FileMetadataStore,
}

impl LocalCopy {
    /// Copies in `dir` (created 0700 on the first write).
    pub(super) fn new(dir: impl Into<PathBuf>) -> Self {
        LocalCopy {
            files: FileMetadataStore::new(dir),
        }
    }

    /// Forgets the copy of `key`: before any write of its record to the table, so that a
    /// write that fails (or whose outcome is unknown) leaves no copy behind.
    pub(super) async fn forget(&self, key: &JobKey) -> Result<()> {
        self.files.delete(key).await
    }

    /// After a write of `record` to the table succeeded at `now`: keeps a copy of it when it
    /// is ready. A copy that cannot be written is only logged (the stages then read the
    /// table).
    pub(super) async fn keep(&self, record: &JobRecord, now: SystemTime) {
        if record.phase != Phase::Ready {
            return;
        }
        let kept = async {
            self.files.put(record).await?;
            self.stamp(&record.key, now).await
        }
        .await;
        if let Err(err) = kept {
            tracing::warn!(job = %record.key, error = %err, "could not keep this host's copy of the job's record; its stages read the table");
            let _ = self.forget(&record.key).await;
        }
    }

    /// The copy of `key`'s record, if this host has one (an unreadable copy is none).
    pub(super) async fn read(&self, key: &JobKey) -> Option<JobRecord> {
        match self.files.get(key).await {
            Ok(Some(record)) if record.phase == Phase::Ready => Some(record),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(job = %key, error = %err, "this host's copy of the job's record is unusable; reading the table");
                None
            }
        }
    }

    /// When this host last gave the job of `key` a sign of life in the table, if it has a
    /// copy of its record.
    pub(super) async fn stamped(&self, key: &JobKey) -> Option<SystemTime> {
        let path = self.files.record_path(key);
        tokio::task::spawn_blocking(move || {
            std::fs::symlink_metadata(path)
                .ok()
                .filter(|m| m.is_file())?
                .modified()
                .ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Notes `now` as the job's last sign of life (when it has a copy).
    pub(super) async fn stamp(&self, key: &JobKey, now: SystemTime) -> Result<()> {
        let path = self.files.record_path(key);
        let stamped = tokio::task::spawn_blocking(move || {
            // The directory is this user's, 0700 (the file store checks it): nobody else
            // can put a link there; the check is for a copy gone meanwhile.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            match OpenOptions::new().write(true).open(&path) {
                Ok(file) => file.set_modified(now),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await;
        match stamped {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(Error::io("stamping this host's copy of a job record", e).with_backend(BACKEND))
            }
            Err(e) => Err(Error::new(
                ErrorKind::Unexpected,
                format!("stamping this host's copy of a job record: {e}"),
            )
            .with_backend(BACKEND)),
        }
    }

    /// Removes the copies of records the table no longer holds (`live`: the keys a scan of
    /// the table found), older than [`SWEEP_AFTER`]: records another host's `gc` removed.
    pub(super) async fn sweep(&self, live: &[JobKey], now: SystemTime) {
        let Ok(copies) = self.files.list().await else {
            return;
        };
        for key in copies {
            if live.binary_search(&key).is_ok() {
                continue;
            }
            let old = self
                .stamped(&key)
                .await
                .and_then(|at| now.duration_since(at).ok())
                .is_none_or(|age| age >= SWEEP_AFTER);
            if old && let Err(err) = self.forget(&key).await {
                tracing::debug!(job = %key, error = %err, "could not remove a copy of a record the table no longer holds");
            }
        }
    }
}
