//! Files the driver writes outside its private metadata directory (the metrics file and
//! its companions, the log file), in directories other users may share: node_exporter's
//! textfile directory is often group-writable.
//!
//! There, a name may be a link planted by another user to make the driver overwrite a file
//! of its choice, or a file of theirs with forged content. So: files are opened with
//! `O_NOFOLLOW` (a link in their place is refused, not followed); a file the driver reads
//! or locks must be a regular file of its own user; new content goes to a temporary file
//! created with `O_EXCL` under a random name, then renamed over the target (`rename`
//! replaces a link, never follows it); and a directory that others may write to without
//! the sticky bit (where they could replace the driver's files) is refused with the fix.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fargate_core::metadata::effective_uid;
use fargate_core::{Error, ErrorKind, Result};

/// Checks that the directory of `file` (named by configuration key `key`) may hold the
/// driver's files: an error with the fix for a directory of another user (other than
/// root), one that group or others may write to without the sticky bit, or one that
/// cannot be read.
pub(crate) fn check_dir(file: &Path, key: &str) -> Result<()> {
    let dir = parent(file);
    let meta = std::fs::metadata(&dir)
        .map_err(|e| Error::io(format!("cannot read the directory {}", dir.display()), e))?;
    let euid = effective_uid()?;
    let mode = meta.mode() & 0o7777;
    let shown = dir.display();
    let problem = if !meta.is_dir() {
        Some((
            "is not a directory".to_owned(),
            format!("point {key} at a file in a directory"),
        ))
    } else if meta.uid() != euid && meta.uid() != 0 {
        Some((
            format!(
                "belongs to uid {}, not to the driver's user (uid {euid}) or root",
                meta.uid()
            ),
            format!("`chown {euid} {shown}`, or point {key} at a directory of the runner's user"),
        ))
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        Some((
            format!(
                "is writable by group or others (mode {mode:04o}) without the sticky bit: another user could replace the driver's files there"
            ),
            format!("`chmod go-w {shown}` (let node_exporter only read it), or `chmod +t {shown}`"),
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some((why, fix)) => Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("{key}: the directory {shown} {why}"),
        )
        .with_hint(fix)),
    }
}

/// The directory `file` is in (`.` for a bare name).
fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens `path` with `options` and `O_NOFOLLOW`, and checks that it is a regular file of
/// this process's user; `what` names it in errors.
fn open_own(path: &Path, options: &mut OpenOptions, what: &str) -> Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| open_error(what, path, e))?;
    owned(file, path, what)
}

/// `file` (opened from `path`), when it is a regular file of this process's user.
fn owned(file: File, path: &Path, what: &str) -> Result<File> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    let euid = effective_uid()?;
    if !meta.is_file() || meta.uid() != euid {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{what} {} is not a regular file of the driver's user (uid {euid}; it belongs to uid {}); refusing to use it",
                path.display(),
                meta.uid()
            ),
        )
        .with_hint("the driver creates these files itself: find out who made it, then remove it"));
    }
    Ok(file)
}

/// Checks what is at `path` now, if anything: a link or a file that is not a regular file
/// of this user is an error (what [`open_lock`], [`read_own`] and [`open_append`] would
/// refuse).
pub(crate) fn check_existing(path: &Path, what: &str) -> Result<()> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => owned(file, path, what).map(drop),
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(e) => Err(open_error(what, path, e)),
    }
}

/// The error of a failed `open` of `path` with `O_NOFOLLOW`.
fn open_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{what} {} is a symbolic link; refusing to follow it",
                path.display()
            ),
        )
        .with_hint("the driver never creates links: find out who made it, then remove it")
    } else {
        Error::io(format!("cannot open {what} {}", path.display()), e)
    }
}

/// Opens (creating, mode `mode`) `path` to append to it: no link followed, a regular file
/// of this user only.
pub(crate) fn open_append(path: &Path, mode: u32, what: &str) -> Result<File> {
    open_own(
        path,
        OpenOptions::new().append(true).create(true).mode(mode),
        what,
    )
}

/// Opens (creating, 0600) the lock file `path`, never written: no link followed, a regular
/// file of this user only (another user's file there could be held locked by them).
pub(crate) fn open_lock(path: &Path) -> Result<File> {
    open_own(
        path,
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
        "lock file",
    )
}

/// The content of `path`, `None` when it does not exist: no link followed, a regular file
/// of this user only (another user's file there would be forged content).
pub(crate) fn read_own(path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(what, path, e)),
    };
    let mut bytes = Vec::new();
    owned(file, path, what)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` (mode `mode`): written to a new temporary file beside it
/// (`.<name>.<random>.tmp`, created with `O_EXCL | O_NOFOLLOW`) and renamed over it, so a
/// reader sees the old content or the new, and a link at either name is never followed.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temporary_name(path)?;
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        if e.kind() != IoKind::AlreadyExists {
            let _ = std::fs::remove_file(&tmp);
        }
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

/// `.<file name>.<16 random hex digits>.tmp` beside `path`.
fn temporary_name(path: &Path) -> Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("no random bytes for a temporary file name: {e}"),
        )
    })?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok(parent(path).join(format!(".{name}.{hex}.tmp")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_temporary_name_is_hidden_random_and_beside_the_file() {
        let a = temporary_name(Path::new("/var/lib/node/fargate.prom")).unwrap();
        let b = temporary_name(Path::new("/var/lib/node/fargate.prom")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/var/lib/node")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".fargate.prom.") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(name.len(), ".fargate.prom.".len() + 16 + ".tmp".len());
    }

    #[test]
    fn a_directory_others_may_write_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fargate.prom");
        let chmod = |mode| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for mode in [0o755, 0o700, 0o1777, 0o1775] {
            chmod(mode);
            check_dir(&file, "[Metrics] File").unwrap();
        }
        for mode in [0o775, 0o777, 0o757] {
            chmod(mode);
            let err = check_dir(&file, "[Metrics] File").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(
                err.to_string().contains("writable by group or others"),
                "{err}"
            );
            assert!(
                err.hint().unwrap_or_default().contains("chmod go-w"),
                "{err:?}"
            );
        }
    }
}
