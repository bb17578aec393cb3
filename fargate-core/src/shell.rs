//! [`RemoteShell`]: runs the runner's stage scripts inside the task.

use std::fmt;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::endpoint::Endpoint;
use crate::error::Result;

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

impl HostKey {
    /// The host key of an SSH public key blob (the wire encoding, as in `known_hosts`):
    /// the algorithm is the blob's first string, the fingerprint OpenSSH's
    /// `SHA256:<unpadded base64>` of the whole blob.
    pub fn from_blob(blob: &[u8]) -> HostKey {
        use base64ct::{Base64Unpadded, Encoding as _};
        use sha2::{Digest as _, Sha256};
        let algorithm = blob
            .get(..4)
            .and_then(|len| <[u8; 4]>::try_from(len).ok())
            .map(|len| u32::from_be_bytes(len) as usize)
            .and_then(|len| blob.get(4..4usize.saturating_add(len)))
            .and_then(|name| std::str::from_utf8(name).ok())
            .filter(|name| !name.is_empty() && name.is_ascii())
            .unwrap_or("unknown")
            .to_owned();
        HostKey {
            algorithm,
            fingerprint: format!(
                "SHA256:{}",
                Base64Unpadded::encode_string(&Sha256::digest(blob))
            ),
        }
    }

    /// The host key of an OpenSSH public key line, `<algorithm> <base64 blob> [comment]`
    /// (a `*.pub` file, `ssh-keygen -y`); `None` when it is not one, or when the blob's
    /// algorithm is not the line's.
    pub fn from_openssh(line: &str) -> Option<HostKey> {
        use base64ct::{Base64, Encoding as _};
        let mut words = line.split_whitespace();
        let (algorithm, encoded) = (words.next()?, words.next()?);
        let blob = Base64::decode_vec(encoded).ok()?;
        let key = HostKey::from_blob(&blob);
        (key.algorithm == algorithm).then_some(key)
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

/// The largest chunk a [`RemoteShell`] hands to an [`OutputSink`] in one call: 256 KiB.
///
/// The SSH backend reads the channel in pieces of this size (fewer hand-offs between its
/// blocking thread and the async task than smaller pieces, measured in `benches/`); the
/// in-memory shell splits its output the same way.
pub const MAX_OUTPUT_CHUNK: usize = 256 * 1024;

/// Where a script's output goes, as it arrives.
///
/// # Threading contract
/// - The methods are called from the async task that awaits [`RemoteShell::run`] (on the
///   tokio runtime, never from a thread of the backend), one call at a time, in arrival
///   order per stream. Output of the two streams is not ordered relative to each other.
/// - They **must not block**: no blocking I/O on slow devices, no waiting for a lock held
///   across an `.await`, no `blocking_send`. A sink that needs to wait hands the chunk on
///   (see [`ChannelSink`]) and returns. Writing to this process's stdout/stderr, as
///   [`StdioSink`] does, is fine: gitlab-runner reads it continuously.
/// - Each chunk is non-empty and at most [`MAX_OUTPUT_CHUNK`] bytes; a chunk may end in the
///   middle of a line or of a UTF-8 character.
/// - An error stops the script: `run` cancels it and fails with
///   [`ErrorKind::Io`](crate::ErrorKind::Io). No call follows an error.
///
/// The sink is borrowed for the duration of `run` only (`&mut dyn OutputSink`, no `'static`
/// bound), so a sink may borrow from the caller's stack.
pub trait OutputSink: Send {
    /// A chunk of the script's standard output.
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// A chunk of the script's standard error.
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()>;
}

/// One piece of a script's output, as a [`ChannelSink`] forwards it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputChunk {
    /// Bytes the script wrote to its standard output.
    Stdout(Vec<u8>),
    /// Bytes the script wrote to its standard error.
    Stderr(Vec<u8>),
}

/// An [`OutputSink`] that forwards every chunk into a tokio channel, for a consumer that
/// runs in its own task (a log shipper, a websocket, a database writer).
///
/// The channel is unbounded because a sink must not block (see the
/// [threading contract](OutputSink#threading-contract)): memory grows while the consumer
/// lags behind the script. Once the receiver is dropped, the next chunk fails with
/// [`io::ErrorKind::BrokenPipe`], which stops the script.
///
/// ```
/// # use fargate_core::{ChannelSink, OutputChunk, OutputSink};
/// let (mut sink, mut rx) = ChannelSink::new();
/// sink.stdout(b"hello\n").unwrap();
/// assert_eq!(rx.try_recv().unwrap(), OutputChunk::Stdout(b"hello\n".to_vec()));
/// ```
#[derive(Clone, Debug)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::UnboundedSender<OutputChunk>,
}

impl ChannelSink {
    /// A sink and the receiving end of its channel.
    pub fn new() -> (Self, tokio::sync::mpsc::UnboundedReceiver<OutputChunk>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ChannelSink { tx }, rx)
    }

    /// A sink that sends into an existing channel (several runs can share one receiver).
    pub fn from_sender(tx: tokio::sync::mpsc::UnboundedSender<OutputChunk>) -> Self {
        ChannelSink { tx }
    }

    fn send(&self, chunk: OutputChunk) -> io::Result<()> {
        self.tx.send(chunk).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the receiver of the script's output is gone",
            )
        })
    }
}

impl OutputSink for ChannelSink {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.send(OutputChunk::Stdout(chunk.to_vec()))
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.send(OutputChunk::Stderr(chunk.to_vec()))
    }
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
///   an [`crate::ErrorKind::Cancelled`] error within [`CancelBudget::run`](crate::CancelBudget)
///   (2 s).
/// - A connection that cannot be made fails with [`crate::ErrorKind::Unreachable`]; a
///   connection lost while the script runs fails with the same kind and says so.
/// - `probe` answers with the server's host key, or fails with `Unreachable` when nothing
///   (or no SSH server) answers.
#[async_trait]
pub trait RemoteShell: Send + Sync + fmt::Debug {
    /// Makes a fresh client key pair of `key_type`.
    ///
    /// # Cancel safety
    /// Safe to drop: nothing outside the process changes.
    async fn generate_key(&self, key_type: KeyType) -> Result<KeyPair>;

    /// Checks whether an SSH server answers at `endpoint`, and with which host key.
    ///
    /// # Cancel safety
    /// Safe to drop: the probe only connects and reads the server's key. (A backend on a
    /// blocking thread may finish the probe in the background; its result is discarded.)
    async fn probe(&self, endpoint: Endpoint) -> Result<HostKey>;

    /// Runs `request.script` and streams its output into `output` until it ends or `cancel`
    /// fires.
    ///
    /// # Cancel safety
    /// Cancel through `cancel`: the remote script and its process group are stopped before
    /// `run` returns [`Cancelled`](crate::ErrorKind::Cancelled). Dropping the future instead
    /// stops nothing remote: the script keeps running until it ends or the task stops, and
    /// its further output is discarded.
    async fn run(
        &self,
        request: &RunRequest,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome>;
}

/// A shared, dynamically chosen shell.
pub type DynRemoteShell = Arc<dyn RemoteShell>;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
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
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome> {
        (**self).run(request, output, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryShell, ScriptResult, interpret};

    fn request(script: &str) -> RunRequest {
        RunRequest {
            endpoint: Endpoint {
                ip: [127, 0, 0, 1].into(),
                port: 22,
            },
            username: "root".into(),
            private_key: PrivateKey::new("k".into()),
            host_key: None,
            script: Arc::from(script.as_bytes()),
        }
    }

    #[tokio::test]
    async fn channel_sink_forwards_output_to_another_task_in_bounded_chunks() {
        let shell = MemoryShell::new();
        let big = vec![b'x'; MAX_OUTPUT_CHUNK + 10];
        let out = big.clone();
        shell.set_handler(move |_| ScriptResult {
            stdout: out.clone(),
            stderr: b"warn\n".to_vec(),
            ..interpret("exit 0")
        });
        let (mut sink, mut rx) = ChannelSink::new();
        let consumer = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(chunk) = rx.recv().await {
                seen.push(chunk);
            }
            seen
        });
        let outcome = shell
            .run(&request("big"), &mut sink, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(outcome, RunOutcome::Exited(0));
        drop(sink);
        let seen = consumer.await.unwrap();
        assert_eq!(
            seen,
            vec![
                OutputChunk::Stdout(big[..MAX_OUTPUT_CHUNK].to_vec()),
                OutputChunk::Stdout(big[MAX_OUTPUT_CHUNK..].to_vec()),
                OutputChunk::Stderr(b"warn\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_channel_sink_without_receiver_stops_the_script_with_an_io_error() {
        let shell = MemoryShell::new();
        let (mut sink, rx) = ChannelSink::new();
        drop(rx);
        let err = shell
            .run(&request("echo hi"), &mut sink, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io, "{err}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(source, Some(io::ErrorKind::BrokenPipe));
    }

    #[tokio::test]
    async fn a_sink_may_borrow_from_the_caller() {
        struct Borrowing<'a>(&'a mut Vec<u8>);
        impl OutputSink for Borrowing<'_> {
            fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
                self.0.extend_from_slice(chunk);
                Ok(())
            }
            fn stderr(&mut self, _: &[u8]) -> io::Result<()> {
                Ok(())
            }
        }
        let mut buf = Vec::new();
        let shell: Arc<dyn RemoteShell> = Arc::new(MemoryShell::new());
        shell
            .run(
                &request("echo hi"),
                &mut Borrowing(&mut buf),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(buf, b"hi\n");
    }

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
