//! The per-job SSH connection keeper: one authenticated connection for all of a job's
//! `run` stages.
//!
//! Every custom-executor stage is its own process, so without help each `run` stage
//! connects, exchanges keys and authenticates anew. After prepare, the driver starts a
//! keeper ([`serve`], in a detached process of the same binary): it connects once, with
//! the pinned host key and the job's key, and listens on a Unix socket in the state
//! directory, mode 0600, accepting only clients of its own user (`SO_PEERCRED`). An
//! [`Ssh2Shell`](crate::Ssh2Shell) built [`with_keeper`](crate::Ssh2Shell::with_keeper)
//! hands each script to it; the keeper runs it in a new channel of its connection with
//! the same bootstrap, output streaming, exit status and cancel (process-group kill) as
//! a direct connection, and relays everything back. Nothing secret crosses the socket
//! but the script itself, which the runner also keeps in a file of the same user.
//!
//! If the keeper is gone or broken before the script started, the stage connects
//! directly (logged at debug level): a keeper can make a job faster, never fail it. Once
//! it started the script, its failure is the stage's (as a lost connection would be).
//!
//! A keeper ends when asked ([`quit`], at cleanup), when its connection is lost (the
//! task stopped), when the job's record is gone, after an idle time without a stage, or at
//! the task's deadline, so it never outlives its job by more than those bounds; it
//! removes its socket.

mod client;
mod frame;
mod server;

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fargate_core::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};

pub(crate) use client::{Attempt, run};
pub use server::serve;

/// Where and how long a keeper holds its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeeperOptions {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// The keeper ends after this long without a client.
    pub idle_timeout: Duration,
    /// The keeper ends at this time (the task's deadline), if set.
    pub until: Option<SystemTime>,
    /// The keeper ends once this file is gone (the job's record: cleanup removes it, so a
    /// keeper whose cleanup ran before it listened does not stay), if set.
    pub while_exists: Option<PathBuf>,
}

impl KeeperOptions {
    /// A keeper on `socket` that ends after `idle_timeout` without a client.
    pub fn new(socket: impl Into<PathBuf>, idle_timeout: Duration) -> Self {
        KeeperOptions {
            socket: socket.into(),
            idle_timeout,
            until: None,
            while_exists: None,
        }
    }

    /// Also end once `path` is gone.
    pub fn while_exists(mut self, path: impl Into<PathBuf>) -> Self {
        self.while_exists = Some(path.into());
        self
    }

    /// Also end at `until`.
    pub fn with_until(mut self, until: Option<SystemTime>) -> Self {
        self.until = until;
        self
    }
}

/// The keeper socket of the job named `job_key` in state directory `dir`: a short name
/// (Unix socket paths are limited to about 100 bytes), derived from the key.
pub fn socket_path(dir: &Path, job_key: &str) -> PathBuf {
    let digest = Sha256::digest(job_key.as_bytes());
    dir.join(format!("keeper-{}.sock", hex::encode(&digest[..8])))
}

/// Whether `name` is exactly the name of a keeper socket, `keeper-<16 lowercase hex>.sock`
/// (see [`socket_path`]).
pub fn is_socket_name(name: &str) -> bool {
    name.strip_prefix("keeper-")
        .and_then(|n| n.strip_suffix(".sock"))
        .is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Whether `socket` is a keeper socket file (a socket, not a link) that nobody listens on:
/// connecting is refused, as it is once the keeper that bound it died without removing it
/// (SIGKILL). A socket whose keeper is alive, a missing path, any other file and any other
/// connect error (a path too long, no permission) are not dead.
///
/// The probe is a connection: a live keeper sees a client that closes at once.
pub fn is_dead_socket(socket: &Path) -> bool {
    dead_socket_identity(socket).is_some()
}

/// The `(dev, ino)` of `socket` if it is a dead keeper socket (see [`is_dead_socket`]).
fn dead_socket_identity(socket: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(socket).ok()?;
    if !meta.file_type().is_socket() {
        return None;
    }
    match UnixStream::connect(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some((meta.dev(), meta.ino()))
        }
        _ => None,
    }
}

/// Removes `socket` if it is a dead keeper socket ([`is_dead_socket`]); returns whether it
/// did. A live keeper's socket is never removed: the file is removed only if the path still
/// names the socket that refused the connection (a keeper of the same job that bound a new
/// one meanwhile keeps it; only a new keeper binding in the instant between that check and
/// the removal could lose its socket, and then its stages connect directly).
///
/// # Errors
/// [`ErrorKind::Io`] when the dead socket cannot be removed.
pub fn remove_if_dead(socket: &Path) -> Result<bool> {
    let Some(dead) = dead_socket_identity(socket) else {
        return Ok(false);
    };
    match std::fs::symlink_metadata(socket) {
        Ok(now) if (now.dev(), now.ino()) == dead => {}
        _ => return Ok(false),
    }
    match std::fs::remove_file(socket) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(
            format!("removing the dead keeper socket {}", socket.display()),
            e,
        )),
    }
}

/// The dead keeper sockets in `dir` ([`is_dead_socket`], only names of [`is_socket_name`]),
/// sorted, removing nothing; none when `dir` is missing.
///
/// # Errors
/// [`ErrorKind::Io`] when `dir` cannot be listed.
pub fn dead_sockets(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dead: Vec<PathBuf> = socket_files(dir)?
        .into_iter()
        .filter(|p| is_dead_socket(p))
        .collect();
    dead.sort();
    Ok(dead)
}

/// Removes the dead keeper sockets in `dir` ([`remove_if_dead`], only names of
/// [`is_socket_name`], nothing outside `dir`, no link followed) and returns them, sorted;
/// none when `dir` is missing.
///
/// # Errors
/// [`ErrorKind::Io`] when `dir` cannot be listed or a dead socket cannot be removed (the
/// others are still removed; the first error is returned).
pub fn remove_dead_sockets(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut first_error = None;
    for path in socket_files(dir)? {
        match remove_if_dead(&path) {
            Ok(true) => removed.push(path),
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            removed.sort();
            Ok(removed)
        }
    }
}

/// The paths in `dir` named like keeper sockets.
fn socket_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing_error = |e| Error::io(format!("listing {}", dir.display()), e);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(listing_error(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(listing_error)?;
        if entry.file_name().to_str().is_some_and(is_socket_name) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Asks the keeper at `socket` to end, and waits up to `wait` until it has (its end of
/// the connection closes when its process exits). Returns whether a keeper answered.
pub fn quit(socket: &Path, wait: Duration) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_write_timeout(Some(wait));
    if frame::write(&mut stream, frame::QUIT, b"").is_err() {
        return false;
    }
    let _ = stream.set_read_timeout(Some(wait));
    // BYE, then end of file once the keeper's process is gone.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    rest.first() == Some(&frame::BYE)
}

/// The kinds a script run through the keeper can fail with once it reached the keeper
/// (lost connection, cancel, no bash, a refused channel, an unusable key); the keeper sends
/// a kind by its [`as_str`](ErrorKind::as_str) name.
const RUN_FAILURES: [ErrorKind; 6] = [
    ErrorKind::Unreachable,
    ErrorKind::Cancelled,
    ErrorKind::InvalidConfig,
    ErrorKind::InvalidInput,
    ErrorKind::HostKeyMismatch,
    ErrorKind::AuthenticationFailed,
];

/// The run failure kind named `name` (`Unexpected` for any other).
fn kind_named(name: &str) -> ErrorKind {
    RUN_FAILURES
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(ErrorKind::Unexpected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_and_per_job() {
        let dir = Path::new("/var/lib/gitlab-runner/fargate");
        let a = socket_path(dir, "ci-1234-5678");
        assert_eq!(a, socket_path(dir, "ci-1234-5678"));
        assert_ne!(a, socket_path(dir, "ci-1234-5679"));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name.len(), "keeper-".len() + 16 + ".sock".len(), "{name}");
    }

    #[test]
    fn socket_names_match_exactly() {
        let dir = Path::new("/d");
        let made = socket_path(dir, "ci-1");
        assert!(is_socket_name(made.file_name().unwrap().to_str().unwrap()));
        for name in [
            "keeper-0123456789abcdef.sock.old",
            "keeper-0123456789ABCDEF.sock",
            "keeper-0123456789abcde.sock",
            "keeper-0123456789abcdef0.sock",
            "keeper-0123456789abcdeg.sock",
            "xkeeper-0123456789abcdef.sock",
            "ci-1.lock",
        ] {
            assert!(!is_socket_name(name), "{name}");
        }
    }

    /// A keeper killed with SIGKILL leaves its socket file, on which connecting is refused
    /// (made here by binding and dropping a listener): it is removed. A live listener's
    /// socket, a link to a dead socket, a regular file of that name and other names stay.
    #[test]
    fn dead_sockets_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let dead = socket_path(dir, "ci-1");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        assert!(dead.exists(), "a dropped listener leaves its socket file");
        let live = socket_path(dir, "ci-2");
        let listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let outside = tmp.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        let dead_outside = outside.join("keeper-0000000000000000.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead_outside).unwrap());
        let link = socket_path(dir, "ci-3");
        std::os::unix::fs::symlink(&dead_outside, &link).unwrap();
        let file = socket_path(dir, "ci-4");
        std::fs::write(&file, "").unwrap();
        let other_name = dir.join("other.sock");
        drop(std::os::unix::net::UnixListener::bind(&other_name).unwrap());

        assert!(is_dead_socket(&dead));
        assert!(!is_dead_socket(&live));
        assert_eq!(dead_sockets(dir).unwrap(), vec![dead.clone()]);
        assert!(dead.exists(), "listing removes nothing");
        assert_eq!(remove_dead_sockets(dir).unwrap(), vec![dead.clone()]);
        assert!(!dead.exists());
        for kept in [&live, &link, &file, &other_name, &dead_outside] {
            assert!(
                std::fs::symlink_metadata(kept).is_ok(),
                "{} removed",
                kept.display()
            );
        }
        assert_eq!(remove_dead_sockets(dir).unwrap(), Vec::<PathBuf>::new());
        // The live listener is still reachable; once it is gone, its socket is dead.
        assert!(UnixStream::connect(&live).is_ok());
        drop(listener);
        assert!(remove_if_dead(&live).unwrap());
        assert!(!remove_if_dead(&live).unwrap());
        assert_eq!(
            remove_dead_sockets(&tmp.path().join("missing")).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn error_kinds_cross_the_socket_by_name() {
        for k in [
            ErrorKind::Cancelled,
            ErrorKind::Unreachable,
            ErrorKind::InvalidConfig,
        ] {
            assert_eq!(kind_named(k.as_str()), k);
        }
        assert_eq!(kind_named("no such kind"), ErrorKind::Unexpected);
    }
}
