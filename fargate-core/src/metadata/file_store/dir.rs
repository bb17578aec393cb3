//! The directory checks: the directory must be a private directory of this user (no link,
//! not writable by others), files are opened without following links, and what
//! [`permission_warnings`] tells an operator.

use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::setting::Setting;

use super::{BACKEND, FileMetadataStore};

/// `O_NOFOLLOW`: `open` fails (`ELOOP`) when the last component of the path is a symbolic
/// link, even a dangling one, also with `O_CREAT`. Its value differs between architectures,
/// hence `libc`; the unit test `o_nofollow_refuses_a_symbolic_link` checks it.
pub(super) const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

impl FileMetadataStore {
    /// Checks that the directory is safe to use, creating it (0700) first when it is missing
    /// and `create` is set. `Ok(false)`: it does not exist (and `create` is not set).
    pub(super) fn check_dir(&self, create: bool) -> Result<bool> {
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
            .with_hint(problem.hint(&self.dir, euid))
            .with_setting(Setting::MetadataDirectory)),
        }
    }

    pub(super) fn dir_read_error(&self, e: std::io::Error) -> Error {
        Error::io(
            format!("reading metadata directory {}", self.dir.display()),
            e,
        )
        .with_backend(BACKEND)
    }
}

/// What is wrong with a metadata directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DirProblem {
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
                "point the metadata directory at the real directory instead of the link {d}, or replace the link with a private directory (`mkdir -m 700 {d}`)"
            ),
            DirProblem::NotADirectory => {
                format!("point the metadata directory at a private directory, not at {d}")
            }
            DirProblem::NotOwned | DirProblem::Writable => format!(
                "run `chown {euid} {d} && chmod 700 {d}`, or point the metadata directory at a private directory"
            ),
        }
    }
}

/// Why the directory with metadata `meta` (from `lstat`) may not hold records of a process
/// with effective uid `euid`, if it may not.
pub(super) fn dir_problem(meta: &fs::Metadata, euid: u32) -> Option<DirProblem> {
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

/// The effective uid of this process (the owner of the files it creates).
///
/// `libc::geteuid` would need `unsafe`; this reads the `Uid:` line of `/proc/self/status` (real, effective, saved and filesystem uid), which the
/// kernel fills in from the process's credentials: no side effect, and unlike the owner of
/// `/proc/self` it is right for non-dumpable (e.g. setuid) processes too.
pub fn effective_uid() -> Result<u32> {
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
pub(super) fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The error for a failed `open` with `O_NOFOLLOW` of `path`, a `what`.
pub(super) fn open_error(what: &str, path: &Path, e: std::io::Error) -> Error {
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
