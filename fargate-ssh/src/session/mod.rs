//! The blocking side: one libssh2 session per call, driven from a blocking thread.
//!
//! - [`connection`]: the TCP connection and SSH handshake, host-key check,
//!   authentication, and what their failures mean;
//! - [`bootstrap`]: the `sh` command that starts bash on the script, and the marker lines
//!   it prints, kept out of the script's output;
//! - [`pump`]: one running script: sending it, reading its output into the channel to the
//!   async side, its outcome, and stopping it on cancel.

mod bootstrap;
mod connection;
mod pump;

use std::time::Duration;

use fargate_core::{Error, ErrorKind, Result, RunOutcome, RunRequest};
use ssh2::ErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::BACKEND;
use crate::config::Ssh2Config;

use bootstrap::{BOOTSTRAP, MarkerScanner};
pub(crate) use connection::Connection;
pub(crate) use connection::probe;
use pump::Run;

/// Size of one read from the channel, and so the largest chunk handed to the sink.
const CHUNK: usize = fargate_core::MAX_OUTPUT_CHUNK;

/// How long one `poll` waits at most, so that a cancel is seen promptly.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(50);
/// libssh2's "would block".
const EAGAIN: i32 = -37;
/// Decides, between the SSH thread and the task awaiting `run`, whether the script gets
/// started: a cancel before the start returns at once (the thread may still be in a TCP
/// connect or handshake) and the thread then does not start the script.
#[derive(Debug, Default)]
pub(crate) struct StartGate(std::sync::Mutex<GateState>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum GateState {
    #[default]
    Pending,
    Started,
    Abandoned,
}

impl StartGate {
    /// Leaves `Pending` for `to` (if still pending); returns the state before.
    fn leave_pending(&self, to: GateState) -> GateState {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = *state;
        if before == GateState::Pending {
            *state = to;
        }
        before
    }

    /// The thread is about to start the script: `false` if it must not.
    pub(crate) fn start(&self) -> bool {
        self.leave_pending(GateState::Started) == GateState::Pending
    }

    /// The caller gives up: `true` if the script was not (and now will not be) started.
    pub(crate) fn abandon(&self) -> bool {
        matches!(
            self.leave_pending(GateState::Abandoned),
            GateState::Pending | GateState::Abandoned
        )
    }
}

/// A chunk of output, passed from the blocking thread to the task awaiting `run`.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// The script's channel is open (only the keeper relays this).
    Started,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}
fn ssh_error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message).with_backend(BACKEND)
}

fn is_eagain(err: &ssh2::Error) -> bool {
    err.code() == ErrorCode::Session(EAGAIN)
}

/// The handshaken connection of the last successful probe, for a login right after it:
/// prepare probes until the task's SSH server answers, then logs in once; reusing the
/// probe's connection saves that login a TCP connect and key exchange.
#[derive(Default)]
pub(crate) struct ProbeCache(std::sync::Mutex<Option<(std::time::Instant, Connection)>>);

/// How long a probed connection is kept for a login.
const PROBE_REUSE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for ProbeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeCache")
    }
}

impl ProbeCache {
    /// Keeps `conn` (replacing an older one).
    pub(crate) fn put(&self, conn: Connection) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), conn));
    }

    /// The kept connection, logged in for `request`, if it fits ([`ProbeCache::take_for`]);
    /// `None` when there is none or it is unusable. A refused key is an error.
    fn login(&self, config: &Ssh2Config, request: &RunRequest) -> Result<Option<Connection>> {
        let Some(conn) = self.take_for(request) else {
            return Ok(None);
        };
        conn.set_timeout(config.handshake_timeout);
        match conn.authenticate(request) {
            Ok(()) => {
                tracing::debug!(endpoint = %conn.endpoint, "logged in on the probe's connection");
                Ok(Some(conn))
            }
            Err(e) if e.kind() == ErrorKind::AuthenticationFailed => Err(e),
            Err(e) => {
                tracing::debug!("the probe's connection is unusable: {e}");
                Ok(None)
            }
        }
    }

    /// The kept connection, if it is recent and to `request`'s endpoint with its pinned
    /// host key (a request that pins nothing never reuses one).
    fn take_for(&self, request: &RunRequest) -> Option<Connection> {
        let (at, conn) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let pinned = request.host_key.as_ref()?;
        (at.elapsed() < PROBE_REUSE
            && conn.endpoint == request.endpoint
            && conn.host_key().fingerprint == pinned.fingerprint)
            .then_some(conn)
    }
}

/// `run`: log in (on the connection `cache` kept from a probe when it fits, else on a new
/// one: connect, check the host key, authenticate), run the script, stream its output
/// into `tx`.
pub(crate) fn run(
    config: &Ssh2Config,
    cache: &ProbeCache,
    request: &RunRequest,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    gate: &StartGate,
) -> Result<RunOutcome> {
    // Disconnects when dropped, whichever way this returns.
    let conn = match cache.login(config, request)? {
        Some(conn) => conn,
        None => connect(config, request)?,
    };
    run_on(
        &conn,
        config,
        &request.username,
        &request.script,
        tx,
        stop,
        gate,
    )
}

/// An authenticated connection for `request` (its endpoint, pinned host key, user and
/// key).
pub(crate) fn connect(config: &Ssh2Config, request: &RunRequest) -> Result<Connection> {
    let conn = Connection::open(
        request.endpoint,
        config.connect_timeout,
        config.handshake_timeout,
        false,
    )?;
    conn.check_host_key(request.host_key.as_ref())?;
    conn.authenticate(request)?;
    Ok(conn)
}

/// Runs `script` in a new channel of `conn` (authenticated as `user`) and streams its
/// output into `tx`. `conn` is left in blocking mode, ready for another channel.
pub(crate) fn run_on(
    conn: &Connection,
    config: &Ssh2Config,
    user: &str,
    script: &[u8],
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    gate: &StartGate,
) -> Result<RunOutcome> {
    if stop.is_cancelled() || !gate.start() {
        return Err(cancelled("the script was not started"));
    }
    conn.sess.set_blocking(true);
    let mut channel = conn.sess.channel_session().map_err(|e| {
        ssh_error(
            ErrorKind::Unexpected,
            format!(
                "the SSH server at {} refused to open a session: {}",
                conn.endpoint,
                e.message()
            ),
        )
    })?;
    channel.exec(BOOTSTRAP).map_err(|e| {
        ssh_error(
            ErrorKind::Unexpected,
            format!(
                "the SSH server at {} refused to run a command: {}",
                conn.endpoint,
                e.message()
            ),
        )
    })?;
    tracing::debug!(endpoint = %conn.endpoint, "script bootstrap started");
    let _ = tx.blocking_send(Chunk::Started);
    let keepalive = config.keepalive_interval.as_secs();
    if keepalive > 0 {
        conn.sess
            .set_keepalive(true, u32::try_from(keepalive).unwrap_or(u32::MAX));
    }
    conn.sess.set_blocking(false);
    let mut run = Run {
        conn,
        user,
        channel,
        tx,
        buf: vec![0; CHUNK],
        scanner: MarkerScanner::default(),
        discard: false,
        receiver_gone: false,
        eof: false,
    };
    let result = (|| {
        let sent = run.send_script(script, stop)?;
        if sent && run.pump_until_closed(Some(stop), None, keepalive > 0)? {
            return run.outcome();
        }
        let how = run.kill(sent, config.cancel_grace);
        tracing::debug!(endpoint = %conn.endpoint, "script cancelled: {how}");
        Err(cancelled(&how))
    })();
    drop(run);
    conn.sess.set_blocking(true);
    result
}

fn cancelled(how: &str) -> Error {
    ssh_error(
        ErrorKind::Cancelled,
        format!("running the script was cancelled; {how}"),
    )
}
