//! What writers and lock holders leave behind: temporary files of dead writers and lock
//! files nobody holds, their names, and removing them.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::job::JobKey;

use super::dir::{O_NOFOLLOW, open_error};
use super::flock::{LockGuard, Take, take_lock};
use super::{BACKEND, FileMetadataStore};

impl FileMetadataStore {
    /// Removes temporary files of `key` (names `.<key>.tmp-<pid>-<hex>`, nothing else),
    /// returning how many were removed.
    pub(super) fn remove_temp_files(&self, key: &JobKey, which: TempFiles) -> Result<usize> {
        let listing_error = |e| {
            Error::io(
                format!("listing metadata directory {}", self.dir.display()),
                e,
            )
            .with_backend(BACKEND)
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| temp_file_pid(n, key))
            else {
                continue;
            };
            // We never create directories; leave one that merely has such a name alone.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if which == TempFiles::OfDeadWriters && process_may_be_running(pid) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("removing temporary file {}", path.display()),
                        e,
                    )
                    .with_backend(BACKEND));
                }
            }
        }
        Ok(removed)
    }

    /// Removes what no live process owns (see the Guarantees: lock files nobody holds whose
    /// key has no record, temporary files of writers that are no longer running) and returns
    /// the paths it removed, sorted. A missing directory has none.
    ///
    /// Blocking (file system calls): from async code, call it in `spawn_blocking`.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>> {
        self.leftovers_blocking(true)
    }

    /// What [`remove_leftovers`](Self::remove_leftovers) would remove now, removing nothing
    /// (it takes and releases each unheld lock without unlinking its file).
    ///
    /// Blocking, like [`remove_leftovers`](Self::remove_leftovers).
    pub fn leftovers(&self) -> Result<Vec<PathBuf>> {
        self.leftovers_blocking(false)
    }

    fn leftovers_blocking(&self, remove: bool) -> Result<Vec<PathBuf>> {
        if !self.check_dir(false)? {
            return Ok(Vec::new());
        }
        let listing_error = |e| {
            Error::io(
                format!("listing metadata directory {}", self.dir.display()),
                e,
            )
            .with_backend(BACKEND)
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // `file_type` does not follow links: only regular files are ever removed.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let leftover = if let Some(key) = lock_file_key(&name) {
                self.unheld_lock_without_record(&key, &path, remove)?
            } else if let Some(pid) = any_temp_file_pid(&name) {
                !process_may_be_running(pid) && (!remove || remove_file_if_there(&path)?)
            } else {
                false
            };
            if leftover {
                found.push(path);
            }
        }
        if remove && !found.is_empty() {
            let _ = self.sync_dir();
        }
        found.sort();
        Ok(found)
    }

    /// Whether the lock file `path` of `key` is held by nobody and `key` has no record;
    /// with `remove`, such a file is removed (released as [`LockGuard`] does).
    fn unheld_lock_without_record(&self, key: &JobKey, path: &Path, remove: bool) -> Result<bool> {
        if self.record_may_exist(key) {
            return Ok(false);
        }
        // Never created here: a file that is gone meanwhile was released by its holder.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(false),
            Err(e) => return Err(open_error("lock file", path, e)),
        };
        let Take::Held(file) = take_lock(file, path)? else {
            return Ok(false);
        };
        // Checked again under the lock: whoever writes the record holds it while doing so.
        if self.record_may_exist(key) {
            return Ok(false); // dropping `file` releases the flock and keeps the file
        }
        if remove {
            drop(LockGuard {
                file,
                path: path.to_owned(),
            });
        }
        Ok(true)
    }

    /// Whether `key` may have a record: anything under its record's name but "not found".
    fn record_may_exist(&self, key: &JobKey) -> bool {
        !matches!(fs::symlink_metadata(self.record_path(key)), Err(e) if e.kind() == IoKind::NotFound)
    }
}

/// Removes `path`: `Ok(false)` when it is already gone.
pub(super) fn remove_file_if_there(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == IoKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e).with_backend(BACKEND)),
    }
}

/// The key of a lock file name, exactly `<key>.lock`.
pub(super) fn lock_file_key(name: &str) -> Option<JobKey> {
    JobKey::parse(name.strip_suffix(".lock")?).ok()
}

/// The writer's pid if `name` is the name of a temporary file of any key (see
/// [`temp_file_pid`]).
pub(super) fn any_temp_file_pid(name: &str) -> Option<u32> {
    let (key, _) = name.strip_prefix('.')?.split_once('.')?;
    temp_file_pid(name, &JobKey::parse(key).ok()?)
}

/// Which temporary files of a key [`FileMetadataStore::remove_temp_files`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TempFiles {
    /// All of them.
    All,
    /// Those whose writer is no longer running.
    OfDeadWriters,
}

/// The pid in `name` if it is the name of a temporary file of `key`, exactly
/// `.<key>.tmp-<decimal pid>-<lowercase hex>`. Keys contain no `.`, so the key of such a
/// name is never ambiguous.
pub(super) fn temp_file_pid(name: &str, key: &JobKey) -> Option<u32> {
    let rest = name
        .strip_prefix('.')?
        .strip_prefix(key.as_str())?
        .strip_prefix(".tmp-")?;
    let (pid, random) = rest.split_once('-')?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if pid.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || random.is_empty()
        || !random.bytes().all(hex)
    {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be running: `false` only when `/proc` is mounted and has
/// no `/proc/<pid>`. (A pid of another pid namespace looks dead: a writer there loses its
/// temporary file and its `put` fails; it never loses a record.)
pub(super) fn process_may_be_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match fs::symlink_metadata(format!("/proc/{pid}")) {
        Err(e) if e.kind() == IoKind::NotFound => fs::symlink_metadata("/proc/self").is_err(),
        _ => true,
    }
}
