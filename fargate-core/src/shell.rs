//! [`RemoteShell`]: runs the runner's stage scripts inside the task.

use std::fmt;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::launcher::Endpoint;

/// Type of the per-job client key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyType {
    /// Ed25519 (the default).
    #[default]
    Ed25519,
    /// RSA with this many bits (at least 3072), signed with rsa-sha2-256/512.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Ed25519 => f.write_str("ed25519"),
            KeyType::Rsa { bits } => write!(f, "rsa-{bits}"),
        }
    }
}

/// Private key material: zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKey(Zeroizing<String>);

impl PrivateKey {
    /// Wraps an encoded private key (OpenSSH or PEM format).
    pub fn new(encoded: String) -> Self {
        PrivateKey(Zeroizing::new(encoded))
    }

    /// The encoded key. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A fresh client key pair for one job.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// One `authorized_keys` line, e.g. `ssh-ed25519 AAAA... fargate-job`, no newline.
    pub public_key: String,
    /// The private key, in a format the same [`RemoteShell`] can use.
    pub private_key: PrivateKey,
}

/// An SSH server's host key, as pinned in the job record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostKey {
    /// Key algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 SHA-256 of the key blob (OpenSSH's format).
    pub fingerprint: String,
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.fingerprint)
    }
}

/// Everything needed to run one script.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Where the SSH server is.
    pub endpoint: Endpoint,
    /// Login user.
    pub username: String,
    /// The job's private key.
    pub private_key: PrivateKey,
    /// The host key the server must present. `None` accepts any key (only for records
    /// written by the Go driver, which pinned nothing).
    pub host_key: Option<HostKey>,
    /// The script, run by bash whatever the login shell is. Not sent as a command line.
    pub script: Arc<[u8]>,
}

/// How a script ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// The script exited with this status.
    Exited(i32),
    /// The script was killed by a signal (e.g. `KILL` by the OOM killer).
    Signaled {
        /// The signal name without `SIG`, as SSH reports it.
        signal: String,
    },
}

/// Where a script's output goes, as it arrives.
///
/// Called from the task that awaits [`RemoteShell::run`], in arrival order per stream.
pub trait OutputSink: Send {
    /// A chunk of the script's standard output.
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// A chunk of the script's standard error.
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()>;
}

/// An [`OutputSink`] that keeps everything in memory (for tests and small outputs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl OutputSink for CapturedOutput {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stdout.extend_from_slice(chunk);
        Ok(())
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stderr.extend_from_slice(chunk);
        Ok(())
    }
}

/// An [`OutputSink`] that forwards to this process's stdout and stderr, flushing each chunk.
#[derive(Debug, Default)]
pub struct StdioSink;

impl OutputSink for StdioSink {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        use io::Write;
        let mut out = io::stdout().lock();
        out.write_all(chunk)?;
        out.flush()
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        use io::Write;
        let mut err = io::stderr().lock();
        err.write_all(chunk)?;
        err.flush()
    }
}

/// Runs scripts in the task.
///
/// # Behaviour every implementation guarantees (checked by
/// `fargate_core::testing::conformance::shell`)
/// - `run` returns [`RunOutcome::Exited`] with the script's status, also when it is not 0;
///   stdout and stderr reach the sink separately and completely.
/// - A host key other than `host_key` fails with [`crate::ErrorKind::HostKeyMismatch`]
///   before any script byte is sent.
/// - When `cancel` fires, the remote script and its children are stopped and `run` returns
///   an [`crate::ErrorKind::Cancelled`] error promptly (within about 2 s).
/// - A connection that cannot be made fails with [`crate::ErrorKind::Unreachable`]; a
///   connection lost while the script runs fails with the same kind and says so.
/// - `probe` answers with the server's host key, or fails with `Unreachable` when nothing
///   (or no SSH server) answers.
#[async_trait]
pub trait RemoteShell: Send + Sync + fmt::Debug {
    /// Makes a fresh client key pair of `key_type`.
    async fn generate_key(&self, key_type: KeyType) -> Result<KeyPair>;

    /// Checks whether an SSH server answers at `endpoint`, and with which host key.
    async fn probe(&self, endpoint: Endpoint) -> Result<HostKey>;

    /// Runs `request.script` and streams its output into `output` until it ends or `cancel`
    /// fires.
    async fn run(
        &self,
        request: &RunRequest,
        output: &mut (dyn OutputSink + 'static),
        cancel: &CancellationToken,
    ) -> Result<RunOutcome>;
}

/// A shared, dynamically chosen shell.
pub type DynRemoteShell = Arc<dyn RemoteShell>;

#[async_trait]
impl<T: RemoteShell + ?Sized> RemoteShell for Arc<T> {
    async fn generate_key(&self, key_type: KeyType) -> Result<KeyPair> {
        (**self).generate_key(key_type).await
    }
    async fn probe(&self, endpoint: Endpoint) -> Result<HostKey> {
        (**self).probe(endpoint).await
    }
    async fn run(
        &self,
        request: &RunRequest,
        output: &mut (dyn OutputSink + 'static),
        cancel: &CancellationToken,
    ) -> Result<RunOutcome> {
        (**self).run(request, output, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_is_redacted() {
        let key = PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret".into());
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        let pair = KeyPair {
            public_key: "ssh-ed25519 AAAA".into(),
            private_key: key,
        };
        assert!(!format!("{pair:?}").contains("secret"));
    }
}
