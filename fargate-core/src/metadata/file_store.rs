//! [`FileMetadataStore`]: job records as files in a private directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;

use super::{JobLock, JobRecord, MetadataStore};

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

/// `O_NOFOLLOW`: `open` fails (`ELOOP`) when the last component of the path is a symbolic
/// link, even a dangling one, also with `O_CREAT`. Its value differs between architectures,
/// hence `libc`; the unit test `o_nofollow_refuses_a_symbolic_link` checks it.
const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// How often one lock attempt starts over at once because the lock file it opened was
/// released and unlinked meanwhile (each time, another holder got and released the lock),
/// before it reports the lock as busy and waits like any other waiter.
const STALE_RETRIES: usize = 16;

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

    /// Checks that the directory is safe to use, creating it (0700) first when it is missing
    /// and `create` is set. `Ok(false)`: it does not exist (and `create` is not set).
    fn check_dir(&self, create: bool) -> Result<bool> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == IoKind::NotFound && !create => return Ok(false),
            Err(e) if e.kind() == IoKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(|e| {
                        Error::io(
                            format!("creating metadata directory {}", self.dir.display()),
                            e,
                        )
                        .with_backend(BACKEND)
                    })?;
                fs::symlink_metadata(&self.dir).map_err(|e| self.dir_read_error(e))?
            }
            Err(e) => return Err(self.dir_read_error(e)),
        };
        let euid = effective_uid()?;
        match dir_problem(&meta, euid) {
            None => Ok(true),
            Some(problem) => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "metadata directory {} {} (owner uid {}, mode {:04o}; the driver runs as uid {euid}): job records hold SSH private keys",
                    self.dir.display(),
                    problem.why(),
                    meta.uid(),
                    meta.mode() & 0o7777,
                ),
            )
            .with_backend(BACKEND)
            .with_hint(problem.hint(&self.dir, euid))),
        }
    }

    fn dir_read_error(&self, e: std::io::Error) -> Error {
        Error::io(
            format!("reading metadata directory {}", self.dir.display()),
            e,
        )
        .with_backend(BACKEND)
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
                "check in the ECS console that no task of job {key} is still running, then delete the file"
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

    /// Removes temporary files of `key` (names `.<key>.tmp-<pid>-<hex>`, nothing else),
    /// returning how many were removed.
    fn remove_temp_files(&self, key: &JobKey, which: TempFiles) -> Result<usize> {
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

    /// Tries once to take the lock: `Ok(None)` when another holder has it.
    fn try_lock_blocking(&self, key: &JobKey) -> Result<Option<LockGuard>> {
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
}

impl FileMetadataStore {
    /// Takes the lock of `key`, waiting at most `wait` (retrying every 50 ms), on this
    /// thread; released when the guard is dropped.
    pub(super) fn lock_blocking(&self, key: &JobKey, wait: Duration) -> Result<LockGuard> {
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
fn remove_file_if_there(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == IoKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e).with_backend(BACKEND)),
    }
}

/// The key of a lock file name, exactly `<key>.lock`.
fn lock_file_key(name: &str) -> Option<JobKey> {
    JobKey::parse(name.strip_suffix(".lock")?).ok()
}

/// The writer's pid if `name` is the name of a temporary file of any key (see
/// [`temp_file_pid`]).
fn any_temp_file_pid(name: &str) -> Option<u32> {
    let (key, _) = name.strip_prefix('.')?.split_once('.')?;
    temp_file_pid(name, &JobKey::parse(key).ok()?)
}

/// Which temporary files of a key [`FileMetadataStore::remove_temp_files`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TempFiles {
    /// All of them.
    All,
    /// Those whose writer is no longer running.
    OfDeadWriters,
}

/// The pid in `name` if it is the name of a temporary file of `key`, exactly
/// `.<key>.tmp-<decimal pid>-<lowercase hex>`. Keys contain no `.`, so the key of such a
/// name is never ambiguous.
fn temp_file_pid(name: &str, key: &JobKey) -> Option<u32> {
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
fn process_may_be_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match fs::symlink_metadata(format!("/proc/{pid}")) {
        Err(e) if e.kind() == IoKind::NotFound => fs::symlink_metadata("/proc/self").is_err(),
        _ => true,
    }
}

/// What is wrong with a metadata directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirProblem {
    Symlink,
    NotADirectory,
    NotOwned,
    Writable,
}

impl DirProblem {
    fn why(self) -> &'static str {
        match self {
            DirProblem::Symlink => "is a symbolic link; refusing to follow it",
            DirProblem::NotADirectory => "is not a directory",
            DirProblem::NotOwned => "is not owned by the user running the driver",
            DirProblem::Writable => "is writable by group or others",
        }
    }

    fn hint(self, dir: &Path, euid: u32) -> String {
        let d = dir.display();
        match self {
            DirProblem::Symlink => format!(
                "point [TaskMetadata] Directory at the real directory instead of the link {d}, or replace the link with a private directory (`mkdir -m 700 {d}`)"
            ),
            DirProblem::NotADirectory => {
                format!("point [TaskMetadata] Directory at a private directory, not at {d}")
            }
            DirProblem::NotOwned | DirProblem::Writable => format!(
                "run `chown {euid} {d} && chmod 700 {d}`, or point [TaskMetadata] Directory at a private directory"
            ),
        }
    }
}

/// Why the directory with metadata `meta` (from `lstat`) may not hold records of a process
/// with effective uid `euid`, if it may not.
fn dir_problem(meta: &fs::Metadata, euid: u32) -> Option<DirProblem> {
    if meta.file_type().is_symlink() {
        Some(DirProblem::Symlink)
    } else if !meta.is_dir() {
        Some(DirProblem::NotADirectory)
    } else if meta.uid() != euid {
        Some(DirProblem::NotOwned)
    } else if meta.mode() & 0o022 != 0 {
        Some(DirProblem::Writable)
    } else {
        None
    }
}

/// The effective uid of this process.
///
/// `libc::geteuid` would need `unsafe`; this reads the `Uid:` line of `/proc/self/status` (real, effective, saved and filesystem uid), which the
/// kernel fills in from the process's credentials: no side effect, and unlike the owner of
/// `/proc/self` it is right for non-dumpable (e.g. setuid) processes too.
fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").map_err(|e| {
        Error::io("reading /proc/self/status to learn the effective uid", e)
            .with_backend(BACKEND)
            .with_hint("the file store needs Linux with /proc mounted")
    })?;
    parse_effective_uid(&status).ok_or_else(|| {
        Error::new(
            ErrorKind::Unexpected,
            "/proc/self/status has no readable Uid: line",
        )
        .with_backend(BACKEND)
    })
}

/// The second field of the `Uid:` line of a `/proc/<pid>/status` text.
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The error for a failed `open` with `O_NOFOLLOW` of `path`, a `what`.
fn open_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{what} {} is a symbolic link; refusing to follow it",
                path.display()
            ),
        )
        .with_backend(BACKEND)
        .with_hint("the driver never creates links: find out who made it, then remove it")
    } else {
        Error::io(format!("opening {what} {}", path.display()), e).with_backend(BACKEND)
    }
}

/// Opens (creating, 0600) the lock file `path`, never through a symbolic link.
fn open_lock_file(path: &Path) -> Result<File> {
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
enum Take {
    /// We hold the lock: `path` names the locked file.
    Held(File),
    /// Another holder has it.
    Busy,
    /// We locked a file that its previous holder has unlinked since we opened it: start over.
    Stale,
}

/// `flock`s `file`, opened from `path`, and checks that `path` still names it.
fn take_lock(file: File, path: &Path) -> Result<Take> {
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
pub(super) struct LockGuard {
    file: File,
    path: PathBuf,
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

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_ne_bytes(b)
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

/// Checks a metadata directory for settings that expose private keys, returning warnings.
///
/// At most one warning: why [`FileMetadataStore`] will refuse the directory (a symbolic
/// link, not a directory, owned by another user, writable by group or others), or else that
/// group or others have access to it (mode & 0o077). A missing directory gets none.
pub fn permission_warnings(dir: &Path) -> Vec<String> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Vec::new();
    };
    let mode = meta.mode() & 0o7777;
    if let Ok(euid) = effective_uid()
        && let Some(problem) = dir_problem(&meta, euid)
    {
        return vec![format!(
            "metadata directory {} {} (owner uid {}, mode {mode:04o}): the file store will refuse it; {}",
            dir.display(),
            problem.why(),
            meta.uid(),
            problem.hint(dir, euid)
        )];
    }
    if meta.is_dir() && mode & 0o077 != 0 {
        return vec![format!(
            "metadata directory {} has mode {mode:04o}: group or others have access to job records, which hold private keys; use `chmod 700 {}`",
            dir.display(),
            dir.display()
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobIdentity, Namespace};
    use crate::launcher::TaskRef;
    use crate::metadata::{Phase, RECORD_FORMAT};
    use crate::shell::PrivateKey;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(s: &str) -> JobKey {
        JobKey::parse(s).unwrap()
    }

    /// A record of job `k`, a key `<namespace>-<job id>`. (The only place that builds one.)
    fn record(k: &str) -> JobRecord {
        let (namespace, job_id) = k.rsplit_once('-').unwrap();
        let identity = JobIdentity::from_untrusted_job_id(
            Namespace::parse(namespace).unwrap(),
            job_id.parse().unwrap(),
        );
        let rec = JobRecord::new(
            identity,
            PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n".into()),
        );
        assert_eq!(rec.key, key(k));
        rec
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The pid of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} was reused at once"
        );
        pid
    }

    /// Runs every operation of `store` and asserts that each fails with `InvalidConfig` and
    /// a message containing all of `expect`.
    async fn assert_every_operation_refused(store: &FileMetadataStore, expect: &[&str]) {
        let k = key("t-1");
        let errors = [
            ("put", store.put(&record("t-1")).await.unwrap_err()),
            ("get", store.get(&k).await.unwrap_err()),
            ("delete", store.delete(&k).await.unwrap_err()),
            ("list", store.list().await.unwrap_err()),
            (
                "lock",
                store.lock(&k, Duration::from_millis(10)).await.unwrap_err(),
            ),
        ];
        for (op, err) in errors {
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{op}: {err}");
            assert_eq!(err.backend(), Some("file store"), "{op}");
            for e in expect {
                assert!(err.message().contains(e), "{op}: {err} lacks {e:?}");
            }
            assert!(err.hint().is_some(), "{op}: {err}");
        }
    }

    #[tokio::test]
    async fn put_get_delete_roundtrip_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta/nested");
        let store = FileMetadataStore::new(&dir);
        let mut rec = record("t-1");
        store.put(&rec).await.unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let path = store.record_path(&rec.key);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
        rec.phase = Phase::Launched;
        rec.task = Some(TaskRef::new("arn:1"));
        store.put(&rec).await.unwrap();
        assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
        assert_eq!(store.list().await.unwrap(), vec![rec.key.clone()]);
        store.delete(&rec.key).await.unwrap();
        store.delete(&rec.key).await.unwrap();
        assert_eq!(store.get(&rec.key).await.unwrap(), None);
        // No record, temporary or lock file is left behind.
        assert_eq!(names(&dir), Vec::<String>::new());
    }

    #[tokio::test]
    async fn reads_of_a_missing_directory_do_not_create_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta");
        let store = FileMetadataStore::new(&dir);
        assert_eq!(store.get(&key("t-1")).await.unwrap(), None);
        assert_eq!(store.list().await.unwrap(), Vec::<JobKey>::new());
        store.delete(&key("t-1")).await.unwrap();
        assert!(!dir.exists());
        // Locking creates it, private.
        drop(store.lock(&key("t-1"), Duration::ZERO).await.unwrap());
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(names(&dir), Vec::<String>::new());
    }

    #[tokio::test]
    async fn reads_go_driver_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("test-293ac3a36135714f5953037b893ee39de22e40d9c8622a626308e13b91fa0c3f");
        // base64 of "-----BEGIN RSA PRIVATE KEY-----\n"
        let pem_b64 = "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=";
        fs::write(
            store.record_path(&k),
            format!(
                "{{\"TaskARN\":\"arn:aws:ecs:r:1:task/c/abc\",\"ContainerIP\":\"10.0.0.1\",\"PrivateKey\":\"{pem_b64}\"}}\n"
            ),
        )
        .unwrap();
        let rec = store.get(&k).await.unwrap().unwrap();
        assert_eq!(rec.phase, Phase::Ready);
        assert_eq!(rec.task, Some(TaskRef::new("arn:aws:ecs:r:1:task/c/abc")));
        assert_eq!(rec.endpoint.unwrap().ip.to_string(), "10.0.0.1");
        assert_eq!(rec.endpoint.unwrap().port, 0);
        assert_eq!(rec.host_key, None);
        assert_eq!(
            rec.private_key.expose(),
            "-----BEGIN RSA PRIVATE KEY-----\n"
        );
        // The lowercase keys of the Go tests, and a record written before the IP was known.
        fs::write(store.record_path(&k), "{\"taskARN\":\"1234\"}").unwrap();
        let rec = store.get(&k).await.unwrap().unwrap();
        assert_eq!(rec.phase, Phase::Launched);
        assert_eq!(rec.task, Some(TaskRef::new("1234")));
    }

    #[tokio::test]
    async fn corrupt_records_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        for (content, expect) in [
            ("", "not JSON"),
            ("{\"format\":1,", "not JSON"),
            ("[]", "not a JSON object"),
            ("{}", "neither a driver record"),
            ("{\"format\":1}", "invalid"),
            ("{\"TaskARN\":5}", "TaskARN is 5"),
            ("{\"TaskARN\":\"a\",\"ContainerIP\":\"nope\"}", "not an IP"),
            ("{\"TaskARN\":\"a\",\"PrivateKey\":\"!!\"}", "not base64"),
        ] {
            fs::write(store.record_path(&k), content).unwrap();
            let err = store.get(&k).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::CorruptRecord, "{content}");
            assert!(err.message().contains(expect), "{content}: {err}");
            assert!(err.hint().unwrap().contains("t-1"));
        }
        let mut other = record("t-2");
        other.format = 9;
        fs::write(store.record_path(&k), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert!(err.message().contains("format 9"), "{err}");
        other.format = RECORD_FORMAT;
        fs::write(store.record_path(&k), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert!(err.message().contains("not t-1"), "{err}");
    }

    #[tokio::test]
    async fn metadata_path_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap();
        let store = FileMetadataStore::new(&file);
        assert_every_operation_refused(&store, &["not a directory", &file.display().to_string()])
            .await;
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    }

    #[tokio::test]
    async fn refuses_a_directory_writable_by_group_or_others() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta");
        fs::create_dir(&dir).unwrap();
        let store = FileMetadataStore::new(&dir);
        let owner = fs::metadata(&dir).unwrap().uid();
        for mode in [0o777, 0o770, 0o720, 0o702, 0o1777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let shown = format!("mode {mode:04o}");
            let uid = format!("owner uid {owner}");
            assert_every_operation_refused(
                &store,
                &[
                    &dir.display().to_string(),
                    "writable by group or others",
                    &shown,
                    &uid,
                ],
            )
            .await;
            let err = store.get(&key("t-1")).await.unwrap_err();
            assert!(
                err.hint().unwrap().contains(&format!(
                    "chown {owner} {d} && chmod 700 {d}",
                    d = dir.display()
                )),
                "{err:?}"
            );
            assert_eq!(names(&dir), Vec::<String>::new(), "mode {mode:o}");
        }
        // Readable by others is not refused (the CLI warns about it); private is fine too.
        for mode in [0o755, 0o700] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            store.put(&record("t-1")).await.unwrap();
            store.delete(&key("t-1")).await.unwrap();
        }
    }

    #[tokio::test]
    async fn refuses_a_directory_that_is_a_symbolic_link() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        let store = FileMetadataStore::new(&link);
        assert_every_operation_refused(
            &store,
            &[
                &link.display().to_string(),
                "is a symbolic link; refusing to follow it",
            ],
        )
        .await;
        assert_eq!(names(&real), Vec::<String>::new());
        // A dangling link is not "missing": it is not created through.
        fs::remove_dir(&real).unwrap();
        assert_every_operation_refused(&store, &["symbolic link"]).await;
        assert!(!real.exists());
    }

    #[tokio::test]
    async fn refuses_a_directory_owned_by_another_user() {
        let tmp = tempfile::tempdir().unwrap();
        let euid = effective_uid().unwrap();
        // As root, give a directory away; otherwise use one that root owns.
        let dir = if euid == 0 {
            let dir = tmp.path().join("meta");
            fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            dir
        } else {
            PathBuf::from("/")
        };
        let owner = fs::metadata(&dir).unwrap().uid();
        assert_ne!(owner, euid);
        let store = FileMetadataStore::new(&dir);
        let uid = format!("owner uid {owner}");
        let runs_as = format!("runs as uid {euid}");
        assert_every_operation_refused(
            &store,
            &["not owned by the user running the driver", &uid, &runs_as],
        )
        .await;
    }

    #[test]
    fn dir_problems_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let meta = fs::symlink_metadata(tmp.path()).unwrap();
        assert_eq!(dir_problem(&meta, meta.uid()), None);
        assert_eq!(
            dir_problem(&meta, meta.uid() + 1),
            Some(DirProblem::NotOwned)
        );
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o730)).unwrap();
        let meta = fs::symlink_metadata(tmp.path()).unwrap();
        assert_eq!(dir_problem(&meta, meta.uid()), Some(DirProblem::Writable));
        let link = tmp.path().join("l");
        symlink(tmp.path(), &link).unwrap();
        let meta = fs::symlink_metadata(&link).unwrap();
        assert_eq!(dir_problem(&meta, meta.uid()), Some(DirProblem::Symlink));
    }

    #[test]
    fn effective_uid_owns_the_files_we_create() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "").unwrap();
        assert_eq!(effective_uid().unwrap(), fs::metadata(&file).unwrap().uid());
    }

    #[test]
    fn parses_the_effective_uid_of_proc_status() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\n";
        assert_eq!(parse_effective_uid(status), Some(1001));
        assert_eq!(parse_effective_uid("Uid:\t1000\n"), None);
        assert_eq!(parse_effective_uid("Gid:\t1\t2\t3\t4\n"), None);
    }

    #[test]
    fn o_nofollow_refuses_a_symbolic_link() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "secret").unwrap();
        let link = tmp.path().join("link");
        symlink(&target, &link).unwrap();
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .custom_flags(O_NOFOLLOW)
                .open(p)
        };
        assert!(
            open(&link).is_err(),
            "O_NOFOLLOW = {O_NOFOLLOW:#o} followed a link"
        );
        assert!(open(&target).is_ok());
        // Without the flag the same open follows the link: the test above can fail.
        assert!(File::open(&link).is_ok());
    }

    #[tokio::test]
    async fn a_record_that_is_a_symbolic_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path().join("meta"));
        let k = key("t-1");
        // A valid record elsewhere, linked in place of the record.
        let elsewhere = tmp.path().join("elsewhere.json");
        fs::write(&elsewhere, serde_json::to_vec(&record("t-1")).unwrap()).unwrap();
        store.put(&record("t-2")).await.unwrap();
        let path = store.record_path(&k);
        symlink(&elsewhere, &path).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(
            err.message().contains(&format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            )),
            "{err}"
        );
        // A dangling link is not a missing record either.
        fs::remove_file(&path).unwrap();
        symlink(tmp.path().join("nowhere"), &path).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        // `put` replaces the link itself, not its target.
        fs::remove_file(&path).unwrap();
        symlink(&elsewhere, &path).unwrap();
        let before = fs::read(&elsewhere).unwrap();
        let mut rec = record("t-1");
        rec.task = Some(TaskRef::new("new"));
        store.put(&rec).await.unwrap();
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&elsewhere).unwrap(), before);
        assert_eq!(store.get(&k).await.unwrap(), Some(rec));
    }

    #[tokio::test]
    async fn a_lock_file_that_is_a_symbolic_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path().join("meta"));
        let k = key("t-1");
        store.put(&record("t-1")).await.unwrap();
        let target = tmp.path().join("created-through-the-link");
        let lock = store.dir().join("t-1.lock");
        symlink(&target, &lock).unwrap();
        let err = store.lock(&k, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(
            err.message().contains(&format!(
                "lock file {} is a symbolic link; refusing to follow it",
                lock.display()
            )),
            "{err}"
        );
        assert!(!target.exists(), "the lock was created through the link");
    }

    #[test]
    fn a_lock_file_unlinked_by_its_holder_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        let path = store.lock_path(&k);
        let first = store.try_lock_blocking(&k).unwrap().unwrap();
        // A second process opens the lock file while the first holds it ...
        let opened = open_lock_file(&path).unwrap();
        // ... the first releases it (unlink, close) before the second flocks it.
        drop(first);
        assert!(!path.exists());
        // The flock now succeeds on the unlinked file, and must not count as holding it.
        assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
        // Same when a third process has recreated the file meanwhile.
        let second = store.try_lock_blocking(&k).unwrap().unwrap();
        let opened = open_lock_file(&path).unwrap();
        drop(second);
        let third = store.try_lock_blocking(&k).unwrap().unwrap();
        assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
        // While the third holds it, a fresh attempt is busy; after it, the file is gone.
        assert!(store.try_lock_blocking(&k).unwrap().is_none());
        drop(third);
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn lock_excludes_a_second_holder_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        let guard = store.lock(&k, Duration::from_secs(1)).await.unwrap();
        assert_eq!(names(tmp.path()), vec!["t-1.lock".to_owned()]);
        // A second store instance opens its own file description, as another process would.
        let other = FileMetadataStore::new(tmp.path());
        let err = other
            .lock(&k, Duration::from_millis(120))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        drop(guard);
        assert_eq!(names(tmp.path()), Vec::<String>::new());
        drop(other.lock(&k, Duration::from_secs(1)).await.unwrap());
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    /// Threads with their own stores (their own file descriptions, as separate processes
    /// have) take one lock over and over, retrying at once instead of every 50 ms so that
    /// attempts often open the file just before its holder unlinks it.
    #[test]
    fn hammered_lock_has_one_holder_at_a_time_and_leaves_no_file() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 300;
        let tmp = tempfile::tempdir().unwrap();
        let holders = AtomicUsize::new(0);
        let total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let store = FileMetadataStore::new(tmp.path());
                let (holders, total) = (&holders, &total);
                scope.spawn(move || {
                    let k = key("t-1");
                    for _ in 0..ROUNDS {
                        let guard = loop {
                            if let Some(guard) = store.try_lock_blocking(&k).unwrap() {
                                break guard;
                            }
                            std::thread::yield_now();
                        };
                        assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        // A read-modify-write that loses updates without mutual exclusion.
                        let seen = total.load(Ordering::SeqCst);
                        std::thread::yield_now();
                        total.store(seen + 1, Ordering::SeqCst);
                        assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                        drop(guard);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), THREADS * ROUNDS);
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    /// The same through the async `lock`, from tasks of a multi-threaded runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn contended_async_lock_has_one_holder_at_a_time_and_leaves_no_file() {
        const TASKS: usize = 6;
        const ROUNDS: usize = 20;
        let tmp = tempfile::tempdir().unwrap();
        let holders = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let store = FileMetadataStore::new(tmp.path());
            let holders = holders.clone();
            tasks.push(tokio::spawn(async move {
                let k = key("t-1");
                for _ in 0..ROUNDS {
                    let guard = store.lock(&k, Duration::from_secs(60)).await.unwrap();
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::task::yield_now().await;
                    assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                    drop(guard);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn concurrent_writers_leave_one_whole_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rec = record("t-1");
                rec.task = Some(TaskRef::new(format!("writer-{i}-{}", "x".repeat(i * 1000))));
                store.put(&rec).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rec = store.get(&key("t-1")).await.unwrap().unwrap();
        let written = rec.task.unwrap().id;
        assert!(written.starts_with("writer-"));
        let n: usize = written.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(written.len(), format!("writer-{n}-").len() + n * 1000);
        assert_eq!(names(tmp.path()), vec!["t-1.json".to_owned()]);
    }

    #[test]
    fn temp_file_names_match_exactly() {
        let k = key("t-1");
        assert_eq!(temp_file_pid(".t-1.tmp-123-abc0", &k), Some(123));
        for name in [
            ".t-1.tmp-123",
            ".t-1.tmp-123-",
            ".t-1.tmp--abc",
            ".t-1.tmp-12a-abc",
            ".t-1.tmp-123-ABC",
            ".t-1.tmp-123-abc-1",
            ".t-1.tmp-123-xyz",
            ".t-1.tmp-99999999999-abc",
            "t-1.tmp-123-abc",
            ".t-10.tmp-123-abc",
            ".t.tmp-123-abc",
            ".t-1.json",
            "t-1.json",
            "t-1.lock",
        ] {
            assert_eq!(temp_file_pid(name, &k), None, "{name}");
        }
        // What `put` writes matches.
        let name = format!(".t-1.tmp-{}-{:x}", std::process::id(), random_u64());
        assert_eq!(temp_file_pid(&name, &k), Some(std::process::id()));
    }

    /// Names that look like temporary files of `t-1` but are not: never removed.
    const NOT_TEMP_FILES: [&str; 5] = [
        ".t-1.tmp-1",
        ".t-1.tmp-1-xyz",
        "t-1.tmp-1-abc",
        ".t-1.tmp-1-abc.keep",
        ".t-10.tmp-1-abc",
    ];

    #[tokio::test]
    async fn put_removes_the_temp_files_of_dead_writers_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let dead = dead_pid();
        let me = std::process::id();
        let stale = format!(".t-1.tmp-{dead}-{:x}", random_u64());
        let live = format!(".t-1.tmp-{me}-{:x}", random_u64());
        let other_key = format!(".t-2.tmp-{dead}-{:x}", random_u64());
        for name in [&stale, &live, &other_key]
            .into_iter()
            .map(String::as_str)
            .chain(NOT_TEMP_FILES)
        {
            fs::write(tmp.path().join(name), "secret").unwrap();
        }
        store.put(&record("t-1")).await.unwrap();
        let mut expect: Vec<String> = [&live, &other_key, "t-1.json"]
            .into_iter()
            .map(|s| s.to_owned())
            .chain(NOT_TEMP_FILES.map(str::to_owned))
            .collect();
        expect.sort();
        assert_eq!(names(tmp.path()), expect);
        assert!(!tmp.path().join(&stale).exists());
    }

    #[tokio::test]
    async fn delete_removes_every_temp_file_of_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        store.put(&record("t-1")).await.unwrap();
        store.put(&record("t-2")).await.unwrap();
        let me = std::process::id();
        let dead = dead_pid();
        let other_key = format!(".t-2.tmp-{me}-{:x}", random_u64());
        for name in [
            format!(".t-1.tmp-{me}-{:x}", random_u64()),
            format!(".t-1.tmp-{dead}-{:x}", random_u64()),
            format!(".t-1.tmp-1-{:x}", random_u64()),
            other_key.clone(),
        ]
        .iter()
        .map(String::as_str)
        .chain(NOT_TEMP_FILES)
        {
            fs::write(tmp.path().join(name), "secret").unwrap();
        }
        store.delete(&key("t-1")).await.unwrap();
        let mut expect: Vec<String> = [other_key.as_str(), "t-2.json"]
            .into_iter()
            .chain(NOT_TEMP_FILES)
            .map(str::to_owned)
            .collect();
        expect.sort();
        assert_eq!(names(tmp.path()), expect);
        // Also when there is no record any more.
        let again = format!(".t-1.tmp-{me}-{:x}", random_u64());
        fs::write(tmp.path().join(&again), "secret").unwrap();
        store.delete(&key("t-1")).await.unwrap();
        assert!(!tmp.path().join(&again).exists());
    }

    /// A lock file left by a killed holder (its flock went with it, the file stayed: made
    /// here by creating it), and a temporary file of a dead writer, are removed; a held
    /// lock, the lock of a key with a record, a running writer's temporary file, links,
    /// directories and other names stay.
    #[tokio::test]
    async fn remove_leftovers_takes_only_what_has_no_live_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta");
        let store = FileMetadataStore::new(&dir);
        store.put(&record("t-3")).await.unwrap();
        // Held by "another process": a store of its own, its own open file description.
        let held = FileMetadataStore::new(&dir)
            .try_lock_blocking(&key("t-2"))
            .unwrap()
            .unwrap();
        let (dead, me) = (dead_pid(), std::process::id());
        let outside = tmp.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let dead_temp = format!(".t-4.tmp-{dead}-{:x}", random_u64());
        let dead_temp_of_record = format!(".t-3.tmp-{dead}-{:x}", random_u64());
        let live_temp = format!(".t-5.tmp-{me}-{:x}", random_u64());
        for name in [
            "t-1.lock",
            "t-3.lock",
            &dead_temp,
            &dead_temp_of_record,
            &live_temp,
            "keeper-0123456789abcdef.sock",
            "t-8.lock.old",
            "not a key.lock",
        ]
        .into_iter()
        .chain(NOT_TEMP_FILES)
        {
            fs::write(dir.join(name), "").unwrap();
        }
        symlink(&outside, dir.join("t-6.lock")).unwrap();
        symlink(&outside, dir.join(format!(".t-6.tmp-{dead}-abc"))).unwrap();
        fs::create_dir(dir.join("t-7.lock")).unwrap();
        let before = names(&dir);
        let expect: Vec<PathBuf> = {
            let mut e: Vec<PathBuf> = ["t-1.lock", &dead_temp, &dead_temp_of_record]
                .into_iter()
                .map(|n| dir.join(n))
                .collect();
            e.sort();
            e
        };
        // A dry run names them and changes nothing.
        assert_eq!(store.leftovers().unwrap(), expect);
        assert_eq!(names(&dir), before);
        assert_eq!(store.remove_leftovers().unwrap(), expect);
        let mut left: Vec<String> = before
            .into_iter()
            .filter(|n| !expect.contains(&dir.join(n)))
            .collect();
        left.sort();
        assert_eq!(names(&dir), left);
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        // Nothing more to remove; the held lock is still held, and released as usual.
        assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
        assert!(store.try_lock_blocking(&key("t-2")).unwrap().is_none());
        drop(held);
        assert!(!dir.join("t-2.lock").exists());
        // The removed lock is free to take.
        drop(store.try_lock_blocking(&key("t-1")).unwrap().unwrap());
        // Once its record is gone, the record's leftover lock goes too.
        store.delete(&key("t-3")).await.unwrap();
        assert_eq!(
            store.remove_leftovers().unwrap(),
            vec![dir.join("t-3.lock")]
        );
        // A missing directory has none and is not created.
        let missing = FileMetadataStore::new(tmp.path().join("missing"));
        assert_eq!(missing.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
        assert!(!tmp.path().join("missing").exists());
    }

    /// Removing an unheld lock file follows the release protocol: whoever opened it before
    /// the removal finds it stale and starts over, so two holders never overlap.
    #[test]
    fn a_removed_leftover_lock_is_stale_for_whoever_opened_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        let path = store.lock_path(&k);
        fs::write(&path, "").unwrap();
        let opened = open_lock_file(&path).unwrap();
        assert_eq!(store.remove_leftovers().unwrap(), vec![path.clone()]);
        assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
        let guard = store.try_lock_blocking(&k).unwrap().unwrap();
        // A held lock file is not a leftover, even without a record.
        assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
        drop(guard);
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    /// 1,000 jobs as prepare and cleanup run them, 20 at a time (fsyncs dominate the
    /// time: sequentially they take 2 s on an idle disk but 20 s on a busy one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_thousand_jobs_leave_an_empty_directory() {
        const JOBS: usize = 1000;
        const AT_ONCE: usize = 20;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta");
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for first in 0..AT_ONCE {
            let store = FileMetadataStore::new(&dir);
            tasks.push(tokio::spawn(async move {
                for i in (first..JOBS).step_by(AT_ONCE) {
                    let mut rec = record(&format!("job-{i}"));
                    let lock = store.lock(&rec.key, Duration::from_secs(5)).await.unwrap();
                    store.put(&rec).await.unwrap();
                    rec.phase = Phase::Launched;
                    store.put(&rec).await.unwrap();
                    assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
                    store.delete(&rec.key).await.unwrap();
                    drop(lock);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        eprintln!("{JOBS} jobs took {:?}", started.elapsed());
        assert_eq!(names(&dir), Vec::<String>::new());
    }

    #[test]
    fn warns_about_open_or_refused_directories() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let w = permission_warnings(tmp.path());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("mode 0755") && w[0].contains("chmod 700"),
            "{w:?}"
        );
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(permission_warnings(tmp.path()).len(), 1);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o775)).unwrap();
        let w = permission_warnings(tmp.path());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("writable by group or others") && w[0].contains("will refuse"),
            "{w:?}"
        );
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(permission_warnings(tmp.path()).is_empty());
        let link = tmp.path().join("link");
        symlink(tmp.path(), &link).unwrap();
        let w = permission_warnings(&link);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("symbolic link"), "{w:?}");
        assert!(permission_warnings(&tmp.path().join("missing")).is_empty());
    }
}
