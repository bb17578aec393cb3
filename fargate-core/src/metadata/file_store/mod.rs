//! [`FileMetadataStore`]: job records as files in a private directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;

use super::{JobLock, JobRecord, MetadataStore, SlotGrant};

mod dir;
mod flock;
mod leftovers;
mod slots;
#[cfg(test)]
mod tests;

use dir::{O_NOFOLLOW, open_error};
pub use dir::{effective_uid, permission_warnings};
use flock::LockGuard;
use leftovers::TempFiles;

/// Job records as files `<dir>/<key>.json` (mode 0600) in a private directory, which is a
/// trust boundary: the records hold the jobs' SSH private keys.
///
/// # Guarantees
/// - **The directory is checked before every operation.** `put`, `get`, `delete`, `list`
///   and `lock` first `lstat` the directory and refuse it ([`ErrorKind::InvalidConfig`],
///   naming its owner and mode, with a hint) unless it is a real directory (not a symbolic
///   link to one), owned by the effective uid of this process (read from the `Uid:` line
///   of `/proc/self/status`) and not writable by group or others. A missing directory is
///   created (recursively, mode 0700) by `put` and `lock` and then checked; `get`, `list`
///   and `delete` treat it as empty. Nothing is cached: each call checks again.
/// - **No symbolic link is followed** for a record, a lock or a temporary file. Records and
///   lock files are opened with `O_NOFOLLOW`; a link in their place is an
///   [`ErrorKind::InvalidConfig`] error ("is a symbolic link; refusing to follow it"), never
///   a missing or corrupt record. Temporary files are created with `O_EXCL`, which does not
///   follow links either, and a `rename` over a link replaces the link itself.
/// - **Writes are atomic.** A record is written to a temporary file
///   `.<key>.tmp-<pid>-<random hex>` (0600) in the same directory, fsynced, renamed over
///   the record, and the directory is fsynced.
/// - **Nothing is left behind.** `delete` removes the record and every temporary file of
///   the key; `put` first removes the temporary files of the key whose writer (the pid in
///   the name) is no longer running, i.e. has no `/proc/<pid>` (nothing is removed when
///   `/proc` is not mounted). Only names of exactly these patterns are ever removed. Lock
///   files are removed when the lock is released.
/// - **What a killed process left is removable.** [`remove_leftovers`] (run by `fargate gc`)
///   removes, in the directory only, the lock files `<key>.lock` that nobody holds and
///   whose key has no record (it takes each lock without waiting, checks for the record
///   while holding it, and releases it as `unlock` does: unlink, then close, so that it
///   never lets two holders in), and the temporary files of writers that are no longer
///   running, of any key. A held lock, the lock of a key with a record, a temporary file of
///   a running writer, a link or a directory of such a name, and any other name stay.
///   [`leftovers`] says what it would remove, removing nothing.
/// - **Counters** ([`MetadataStore::acquire_slot`]) are files `<counter>.slots` (the
///   holders and their times, JSON, written atomically) read and written under the lock
///   `slots_<counter>`; a holder whose time is up counts while its record file exists.
/// - **Locks hold across processes** and vanish with a killed holder: a lock is an `flock`
///   on `<dir>/<key>.lock`, with the unlink-while-holding protocol so that removing the file
///   never lets two holders in. To lock: open (create, 0600, `O_NOFOLLOW`) the lock file,
///   `flock` it without blocking (retried every 50 ms until the wait is over), then compare
///   the open file (`fstat`) with what the path names now (`lstat`). If the path is gone or
///   names another file, the previous holder unlinked it after we opened it: close and start
///   over. Otherwise we hold the lock, and nobody else can hold the file the path names. To
///   release ([`MetadataStore::unlock`], or dropping the [`JobLock`]): unlink the path,
///   then close the file, which releases the `flock`; anyone still waiting on the unlinked
///   file finds it stale. No lease: a lock lasts as long as its holder's open file.
///
/// Records of GitLab's Go driver in the same directory are read too.
///
/// [`remove_leftovers`]: FileMetadataStore::remove_leftovers
/// [`leftovers`]: FileMetadataStore::leftovers
///
/// The checks use `/proc`, so the store works on Linux only; on other systems every
/// operation fails with a clear error.
#[derive(Clone, Debug)]
pub struct FileMetadataStore {
    dir: PathBuf,
}

const BACKEND: &str = "file store";

impl FileMetadataStore {
    /// A store in `dir`. The directory is created (0700) on first write or lock.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileMetadataStore { dir: dir.into() }
    }

    /// The directory used when the configuration names none: `/var/lib/fargate-driver` for
    /// root, else `$XDG_STATE_HOME/fargate-driver` or `~/.local/state/fargate-driver`. Never
    /// the working directory, which gitlab-runner changes for every prepare attempt and
    /// deletes after the job.
    pub fn default_dir() -> PathBuf {
        let root = effective_uid().is_ok_and(|uid| uid == 0);
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/");
        match (
            root,
            std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()),
            home,
        ) {
            (true, _, _) => PathBuf::from("/var/lib/fargate-driver"),
            (false, Some(state), _) => PathBuf::from(state).join("fargate-driver"),
            (false, None, Some(home)) => PathBuf::from(home).join(".local/state/fargate-driver"),
            (false, None, None) => PathBuf::from("/var/lib/fargate-driver"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file of `key`.
    pub fn record_path(&self, key: &JobKey) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn lock_path(&self, key: &JobKey) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn put_blocking(&self, record: &JobRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("encoding job record: {e}")))?;
        self.write_atomic(
            &record.key,
            &self.record_path(&record.key),
            &bytes,
            "job record",
        )
    }

    /// Writes `bytes` to `path` (a file of `key`) atomically, 0600: a temporary file of
    /// `key`, fsynced, renamed over `path`, the directory fsynced.
    pub(super) fn write_atomic(
        &self,
        key: &JobKey,
        path: &Path,
        bytes: &[u8],
        what: &str,
    ) -> Result<()> {
        self.check_dir(true)?;
        if self.remove_temp_files(key, TempFiles::OfDeadWriters)? > 0 {
            let _ = self.sync_dir();
        }
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}-{:x}",
            key,
            std::process::id(),
            random_u64()
        ));
        let write = || -> std::io::Result<()> {
            // `create_new` is O_CREAT|O_EXCL: it fails on any existing name, links included.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            self.sync_dir()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {what} {}", path.display()), e).with_backend(BACKEND)
        })
    }

    /// The bytes of `path` in the directory, without following a link; `None` when the
    /// directory or the file is missing.
    pub(super) fn read_file(&self, path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
        if !self.check_dir(false)? {
            return Ok(None);
        }
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
            Err(e) => return Err(open_error(what, path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| {
            Error::io(format!("reading {what} {}", path.display()), e).with_backend(BACKEND)
        })?;
        Ok(Some(bytes))
    }

    fn get_blocking(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let path = self.record_path(key);
        let Some(bytes) = self.read_file(&path, "job record")? else {
            return Ok(None);
        };
        JobRecord::from_json(key, &bytes).map(Some).map_err(|why| {
            Error::new(
                ErrorKind::CorruptRecord,
                format!("job record {} is unreadable: {why}", path.display()),
            )
            .with_backend(BACKEND)
            .with_hint(format!(
                "check that no task of job {key} is still running (`fargate gc --dry-run` lists them), then delete the file"
            ))
        })
    }

    fn delete_blocking(&self, key: &JobKey) -> Result<()> {
        if !self.check_dir(false)? {
            return Ok(());
        }
        let path = self.record_path(key);
        let mut removed = match fs::remove_file(&path) {
            Ok(()) => 1,
            Err(e) if e.kind() == IoKind::NotFound => 0,
            Err(e) => {
                return Err(
                    Error::io(format!("deleting job record {}", path.display()), e)
                        .with_backend(BACKEND),
                );
            }
        };
        removed += self.remove_temp_files(key, TempFiles::All)?;
        if removed > 0 {
            let _ = self.sync_dir();
        }
        Ok(())
    }

    fn list_blocking(&self) -> Result<Vec<JobKey>> {
        if !self.check_dir(false)? {
            return Ok(Vec::new());
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("listing metadata directory {}", self.dir.display()),
                    e,
                )
                .with_backend(BACKEND));
            }
        };
        let mut keys: Vec<JobKey> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                JobKey::parse(name.strip_suffix(".json")?).ok()
            })
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// A random number for a file's name or a lock's holder (0 without randomness).
fn random_u64() -> u64 {
    crate::world::random_u64().unwrap_or(0)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("metadata store task failed: {e}"),
        )
        .with_backend(BACKEND)
    })?
}

#[async_trait]
impl MetadataStore for FileMetadataStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let (this, record) = (self.clone(), record.clone());
        blocking(move || this.put_blocking(&record)).await
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.get_blocking(&key)).await
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.delete_blocking(&key)).await
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        let this = self.clone();
        blocking(move || this.list_blocking()).await
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (this, k) = (self.clone(), key.clone());
            if let Some(guard) = blocking(move || this.try_lock_blocking(&k)).await? {
                let holder = format!("pid {} #{:016x}", std::process::id(), random_u64());
                return Ok(JobLock::new(key.clone(), holder).with_guard(guard));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "job {key} is locked by another driver process (waited {} s)",
                        wait.as_secs()
                    ),
                )
                .with_backend(BACKEND)
                .with_hint("another stage of the same job is still running; if none is, check for a hung fargate process"));
            }
            // Retry loop bounded by the deadline above: flock has no timed wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        let (this, counter, holder) = (self.clone(), counter.to_owned(), holder.clone());
        blocking(move || this.acquire_slot_blocking(&counter, &holder, limit, ttl)).await
    }

    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        let (this, counter, holder) = (self.clone(), counter.to_owned(), holder.clone());
        blocking(move || this.release_slot_blocking(&counter, &holder)).await
    }

    async fn slot_holders(&self, counter: &str) -> Result<Vec<crate::metadata::SlotHolder>> {
        let (this, counter) = (self.clone(), counter.to_owned());
        blocking(move || this.slot_holders_blocking(&counter)).await
    }

    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        let (this, prefix) = (self.clone(), prefix.to_owned());
        blocking(move || this.slot_counters_blocking(&prefix)).await
    }

    async fn unlock(&self, mut lock: JobLock) -> Result<()> {
        match lock.take_guard::<LockGuard>() {
            // Dropping the guard unlinks and closes the lock file: file system calls.
            Some(guard) => {
                blocking(move || {
                    drop(guard);
                    Ok(())
                })
                .await
            }
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the lock of job {} was not given by a file store",
                    lock.key()
                ),
            )
            .with_backend(BACKEND)),
        }
    }
}
