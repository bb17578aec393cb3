//! The lock protocol: an `flock` on `<dir>/<key>.lock`, unlinked while held, so that
//! removing the file never lets two holders in (see [`FileMetadataStore`]'s guarantees).

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;

use super::dir::{O_NOFOLLOW, open_error};
use super::{BACKEND, FileMetadataStore};

/// How often one lock attempt starts over at once because the lock file it opened was
/// released and unlinked meanwhile (each time, another holder got and released the lock),
/// before it reports the lock as busy and waits like any other waiter.
pub(super) const STALE_RETRIES: usize = 16;

impl FileMetadataStore {
    /// Tries once to take the lock: `Ok(None)` when another holder has it.
    pub(super) fn try_lock_blocking(&self, key: &JobKey) -> Result<Option<LockGuard>> {
        self.check_dir(true)?;
        let path = self.lock_path(key);
        for _ in 0..STALE_RETRIES {
            match take_lock(open_lock_file(&path)?, &path)? {
                Take::Held(file) => return Ok(Some(LockGuard { file, path })),
                Take::Busy => return Ok(None),
                Take::Stale => {}
            }
        }
        Ok(None)
    }

    /// Takes the lock of `key`, waiting at most `wait` (retrying every 50 ms), on this
    /// thread; released when the guard is dropped.
    pub(in crate::metadata) fn lock_blocking(
        &self,
        key: &JobKey,
        wait: Duration,
    ) -> Result<LockGuard> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(guard) = self.try_lock_blocking(key)? {
                return Ok(guard);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{key} is locked by another driver process"),
                )
                .with_backend(BACKEND));
            }
            // Bounded by the deadline above: flock has no timed wait.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Opens (creating, 0600) the lock file `path`, never through a symbolic link.
pub(super) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(|e| open_error("lock file", path, e))
}

/// The outcome of one [`take_lock`].
#[derive(Debug)]
pub(super) enum Take {
    /// We hold the lock: `path` names the locked file.
    Held(File),
    /// Another holder has it.
    Busy,
    /// We locked a file that its previous holder has unlinked since we opened it: start over.
    Stale,
}

/// `flock`s `file`, opened from `path`, and checks that `path` still names it.
pub(super) fn take_lock(file: File, path: &Path) -> Result<Take> {
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(Take::Busy),
        Err(fs::TryLockError::Error(e)) => {
            return Err(Error::io(format!("locking {}", path.display()), e).with_backend(BACKEND));
        }
    }
    let held = file.metadata().map_err(|e| {
        Error::io(format!("reading lock file {}", path.display()), e).with_backend(BACKEND)
    })?;
    if !held.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("lock file {} is not a regular file", path.display()),
        )
        .with_backend(BACKEND)
        .with_hint("the driver only creates regular files: find out who made it, then remove it"));
    }
    match fs::symlink_metadata(path) {
        Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => Ok(Take::Held(file)),
        Ok(_) => Ok(Take::Stale),
        Err(e) if e.kind() == IoKind::NotFound => Ok(Take::Stale),
        Err(e) => {
            Err(Error::io(format!("reading lock file {}", path.display()), e).with_backend(BACKEND))
        }
    }
}

/// A held job lock: the open, `flock`ed lock file. Dropping it unlinks the lock file and
/// then closes it, which releases the `flock`.
#[derive(Debug)]
pub(in crate::metadata) struct LockGuard {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // While we hold the flock, only we may unlink the file, so `path` still names it,
        // unless something outside the protocol removed it (then another process may hold a
        // new file there, which must stay): unlink only our own file.
        let ours = match (self.file.metadata(), fs::symlink_metadata(&self.path)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            _ => false,
        };
        if ours {
            let _ = fs::remove_file(&self.path);
        }
        // `self.file` is closed after this, when the fields are dropped: unlink, then unlock.
    }
}
