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
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fargate_core::ErrorKind;
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
    dir.join(format!("keeper-{}.sock", hex16(&digest)))
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
