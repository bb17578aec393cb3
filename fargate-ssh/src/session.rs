//! The blocking side: one libssh2 session per call, driven from a blocking thread.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fargate_core::{Endpoint, Error, ErrorKind, HostKey, Result, RunOutcome, RunRequest};
use ssh2::{BlockDirections, Channel, ErrorCode, Session};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::BACKEND;
use crate::config::Ssh2Config;
use crate::keys::{describe_private_key, host_key_from_blob};
use crate::negotiation::{self, Supported};

/// Size of one read from the channel, and so the largest chunk handed to the sink.
pub(crate) const CHUNK: usize = fargate_core::MAX_OUTPUT_CHUNK;

/// How long one `poll` waits at most, so that a cancel is seen promptly.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// libssh2's "would block".
const EAGAIN: i32 = -37;
/// libssh2's codes for a refused public key.
const AUTH_FAILED: i32 = -18;
const PUBKEY_UNVERIFIED: i32 = -19;
/// libssh2 could not use the private key (bad format, unsupported type).
const KEY_FILE: i32 = -16;

/// The marker the bootstrap prints (on stdout, before anything of the script) with the
/// process group id of the script.
pub(crate) const PGID_MARKER: &[u8] = b"\x1efargate-pgid:";

/// The line the bootstrap prints (on stdout) instead of the pgid marker when there is no
/// bash to run the script with.
pub(crate) const NO_BASH_MARKER: &[u8] = b"\x1efargate-no-bash\n";

/// What the bootstrap's markers start with.
const MARKER_PREFIX: &[u8] = b"\x1efargate-";

/// The exec command. Run by the user's login shell with `-c`, so it is POSIX `sh`.
///
/// 1. check that bash exists (the runner's scripts need it); if not, print
///    [`NO_BASH_MARKER`] and exit 127, and `run` fails with `InvalidConfig`;
/// 2. print the marker and `$$`: sshd starts each session in a new session and process
///    group whose id is the pid of the login shell, which `exec`s bash below, so `$$` is
///    the process group of the script and of everything it starts;
/// 3. `exec bash /dev/fd/3` with fd 3 = the channel's stdin, on which the client sends the
///    script, and stdin = `/dev/null`: the script's commands see EOF on stdin.
pub(crate) const BOOTSTRAP: &str = "command -v bash >/dev/null 2>&1 || \
{ printf '\\036fargate-no-bash\\n'; exit 127; }; \
printf '\\036fargate-pgid:%s\\n' \"$$\"; \
exec bash /dev/fd/3 3<&0 </dev/null";

/// Opening and closing of the `{ ... }` group the script is sent in. bash parses a whole
/// compound command before running any of it, so a script cut short (lost connection,
/// cancel while sending) is a syntax error and nothing of it runs.
const GROUP_OPEN: &[u8] = b"{ ";
const GROUP_CLOSE: &[u8] = b"}\n";

/// Decides, between the SSH thread and the task awaiting `run`, whether the script gets
/// started: a cancel before the start returns at once (the thread may still be in a TCP
/// connect or handshake) and the thread then does not start the script.
#[derive(Debug, Default)]
pub(crate) struct StartGate(std::sync::Mutex<GateState>);

#[derive(Debug, Default, PartialEq, Eq)]
enum GateState {
    #[default]
    Pending,
    Started,
    Abandoned,
}

impl StartGate {
    /// The thread is about to start the script: `false` if it must not.
    fn start(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *state == GateState::Pending {
            *state = GateState::Started;
            true
        } else {
            false
        }
    }

    /// The caller gives up: `true` if the script was not (and now will not be) started.
    pub(crate) fn abandon(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *state == GateState::Pending {
            *state = GateState::Abandoned;
            true
        } else {
            *state == GateState::Abandoned
        }
    }
}

/// A chunk of output, passed from the blocking thread to the task awaiting `run`.
#[derive(Debug)]
pub(crate) enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

fn ssh_error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message).with_backend(BACKEND)
}

fn is_eagain(err: &ssh2::Error) -> bool {
    err.code() == ErrorCode::Session(EAGAIN)
}

/// A TCP connection with a finished SSH handshake.
pub(crate) struct Connection {
    sess: Session,
    /// A clone of the socket, for `poll`.
    socket: TcpStream,
    endpoint: Endpoint,
    host_key: HostKey,
}

impl Connection {
    /// TCP connect and SSH handshake, both bounded; with `shared`, `connect_timeout`
    /// bounds both together and `handshake_timeout` is ignored.
    pub(crate) fn open(
        endpoint: Endpoint,
        connect_timeout: Duration,
        handshake_timeout: Duration,
        shared: bool,
    ) -> Result<Connection> {
        let started = Instant::now();
        let addr = SocketAddr::new(endpoint.ip, endpoint.port);
        let tcp = TcpStream::connect_timeout(&addr, connect_timeout)
            .map_err(|e| connect_error(endpoint, connect_timeout, e))?;
        let _ = tcp.set_nodelay(true);
        let socket = tcp.try_clone().map_err(|e| {
            ssh_error(
                ErrorKind::Unexpected,
                format!("could not use the socket to {endpoint}: {e}"),
            )
            .with_source(e)
        })?;
        let mut sess = Session::new().map_err(|e| {
            ssh_error(
                ErrorKind::Unexpected,
                format!("could not start an SSH session (libssh2): {e}"),
            )
        })?;
        sess.set_tcp_stream(tcp);
        let handshake_timeout = if shared {
            connect_timeout.saturating_sub(started.elapsed())
        } else {
            handshake_timeout
        };
        sess.set_timeout(millis(handshake_timeout));
        let handshake_deadline = Instant::now() + handshake_timeout;
        if let Err(e) = sess.handshake() {
            return Err(handshake_error(&sess, endpoint, handshake_deadline, e));
        }
        let host_key = sess
            .host_key()
            .map(|(blob, _)| host_key_from_blob(blob))
            .ok_or_else(|| {
                ssh_error(
                    ErrorKind::Unexpected,
                    format!("the SSH server at {endpoint} sent no host key"),
                )
            })?;
        Ok(Connection {
            sess,
            socket,
            endpoint,
            host_key,
        })
    }

    /// Fails with `HostKeyMismatch` unless the host key is `expected`.
    fn check_host_key(&self, expected: Option<&HostKey>) -> Result<()> {
        let Some(expected) = expected else {
            return Ok(());
        };
        if expected.fingerprint == self.host_key.fingerprint {
            return Ok(());
        }
        Err(ssh_error(
            ErrorKind::HostKeyMismatch,
            format!(
                "the SSH server at {} presented host key {}, but this job's task presented {} \
                 when it became ready; nothing was sent to it",
                self.endpoint, self.host_key, expected
            ),
        )
        .with_hint(
            "another machine now answers at the task's address (the task was replaced or its IP \
             reused); the job cannot safely continue on it: retry the job",
        ))
    }

    /// Public key authentication with the job's key.
    fn authenticate(&self, request: &RunRequest) -> Result<()> {
        let user = request.username.as_str();
        // Asking for the methods also tries "none", which some servers accept.
        let offered = match self.sess.auth_methods(user) {
            Ok(methods) => methods.to_owned(),
            Err(_) if self.sess.authenticated() => return Ok(()),
            Err(e) => return Err(self.transport_error("authenticating", e)),
        };
        let refused = || {
            let key_type = describe_private_key(&request.private_key);
            auth_failed(self.endpoint, user, &key_type, &offered)
        };
        if !offered.split(',').any(|m| m == "publickey") {
            return Err(refused());
        }
        match self
            .sess
            .userauth_pubkey_memory(user, None, request.private_key.expose(), None)
        {
            Ok(()) if self.sess.authenticated() => Ok(()),
            Ok(()) => Err(refused()),
            Err(e) => match e.code() {
                ErrorCode::Session(AUTH_FAILED | PUBKEY_UNVERIFIED) => Err(refused()),
                ErrorCode::Session(KEY_FILE) => Err(ssh_error(
                    ErrorKind::InvalidInput,
                    format!(
                        "the job's private SSH key ({}) could not be used: {}",
                        describe_private_key(&request.private_key),
                        e.message()
                    ),
                )
                .with_hint("the job record may be damaged; retry the job")),
                _ => Err(self.transport_error("authenticating", e)),
            },
        }
    }

    /// A failure of the connection before the script started.
    fn transport_error(&self, doing: &str, e: ssh2::Error) -> Error {
        ssh_error(
            ErrorKind::Unreachable,
            format!(
                "could not connect to the SSH server at {} ({doing}): {}",
                self.endpoint,
                e.message()
            ),
        )
        .with_source(e)
    }

    /// The connection broke while the script ran.
    fn lost(&self, e: impl std::fmt::Display) -> Error {
        ssh_error(
            ErrorKind::Unreachable,
            format!(
                "the connection to the SSH server at {} was lost while the script was running: {e}",
                self.endpoint
            ),
        )
        .with_hint(
            "the task may have stopped (out of memory, stopped by someone, Spot interruption): \
             check the task's stopped reason in ECS; the script may have partly run",
        )
        .set_temporary(false)
    }

    /// Waits until the socket is ready in the direction libssh2 is blocked on, at most
    /// `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut events = libc::POLLIN;
        if matches!(
            self.sess.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            events |= libc::POLLOUT;
        }
        let mut fd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fd` is a valid pollfd for the duration of the call and we pass a count
        // of one. An error (EINTR) only ends the wait early.
        unsafe {
            libc::poll(&mut fd, 1, ms);
        }
    }

    /// Repeats a non-blocking libssh2 call until it stops saying "would block", or
    /// `deadline` passes (then `None`).
    fn retry<T>(
        &self,
        deadline: Instant,
        mut op: impl FnMut() -> std::result::Result<T, ssh2::Error>,
    ) -> Option<std::result::Result<T, ssh2::Error>> {
        loop {
            match op() {
                Err(e) if is_eagain(&e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.wait((deadline - now).min(POLL_SLICE));
                }
                other => return Some(other),
            }
        }
    }

    fn disconnect(&self) {
        self.sess.set_blocking(false);
        let _ = self
            .sess
            .disconnect(None, "fargate: done", None)
            .or_else(|e| if is_eagain(&e) { Ok(()) } else { Err(e) });
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn connect_error(endpoint: Endpoint, timeout: Duration, e: io::Error) -> Error {
    let (why, hint) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            "connection refused".to_owned(),
            "nothing listens on this port yet: the task's sshd may not have started, or the \
             configured SSH port is wrong",
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (
            format!("no answer within {} s", timeout.as_secs_f32()),
            "check that the task's security group allows SSH from the runner's host and that \
             the runner can route to the task's IP (public IP vs. private subnet)",
        ),
        _ => (
            e.to_string(),
            "check the network path from the runner's host to the task",
        ),
    };
    ssh_error(
        ErrorKind::Unreachable,
        format!("could not connect to the SSH server at {endpoint}: {why}"),
    )
    .with_hint(hint)
    .with_source(e)
}

/// A failed SSH handshake: `InvalidConfig` when the server and libssh2 share no
/// algorithm for one of the negotiations (that never gets better), `Unreachable` (worth
/// waiting for) otherwise.
fn handshake_error(sess: &Session, endpoint: Endpoint, deadline: Instant, e: ssh2::Error) -> Error {
    let maybe_negotiation = matches!(
        e.code(),
        ErrorCode::Session(negotiation::KEX_FAILURE | negotiation::METHOD_NONE)
    );
    if maybe_negotiation && let Some(err) = no_common_algorithm(sess, endpoint, deadline) {
        return err.with_source(e);
    }
    ssh_error(
        ErrorKind::Unreachable,
        format!(
            "could not connect to the SSH server at {endpoint}: the SSH handshake failed: {}",
            e.message()
        ),
    )
    .with_hint(
        "something accepted the TCP connection but did not complete an SSH handshake in \
         time; if the task is still starting this is expected, otherwise check that sshd \
         runs in the task's ci-coordinator container on this port",
    )
    .with_source(e)
}

/// After libssh2 failed the key exchange: the error to report if that is because the
/// server offers no algorithm libssh2 supports for some negotiation, `None` if not (or if
/// that cannot be told, e.g. the server closed the connection before sending its offer).
fn no_common_algorithm(sess: &Session, endpoint: Endpoint, deadline: Instant) -> Option<Error> {
    let supported = Supported::of(sess);
    // Even when libssh2 tells which negotiation failed, the server's offer makes the
    // message useful; at most 2 s for it (it usually takes a few milliseconds).
    let deadline = deadline.min(Instant::now() + Duration::from_secs(2));
    let addr = SocketAddr::new(endpoint.ip, endpoint.port);
    let offer = negotiation::read_server_offer(addr, deadline);
    if let Err(e) = &offer {
        tracing::debug!(%endpoint, "could not read the SSH server's algorithms: {e}");
    }
    let offer = offer.ok();
    let failed = match negotiation::failed_by_libssh2(sess) {
        Some(failed) => vec![failed],
        None => negotiation::failed_by_offer(offer.as_ref()?, &supported),
    };
    if failed.is_empty() {
        return None;
    }
    let what = failed
        .iter()
        .map(|n| n.what())
        .collect::<Vec<_>>()
        .join(" or ");
    let mut message = format!(
        "the SSH server at {endpoint} and this driver's SSH library (libssh2) have no \
         {what} algorithm in common, so no SSH connection to it can succeed"
    );
    if let Some(offer) = &offer {
        for negotiation in &failed {
            let offered = offer.offered(*negotiation);
            let offered = if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            };
            let _ = write!(
                message,
                "; the server offers {} algorithms: {offered}",
                negotiation.what()
            );
        }
    }
    let directives = failed
        .iter()
        .map(|n| n.directive())
        .collect::<Vec<_>>()
        .join(", ");
    Some(
        ssh_error(ErrorKind::InvalidConfig, message)
            .with_hint(format!(
                "allow at least one algorithm that libssh2 supports in the task image's \
                 sshd_config ({directives}); libssh2 offers: {}. OpenSSH's defaults since \
                 version 8.8 work",
                supported.describe()
            ))
            .set_temporary(false),
    )
}

fn auth_failed(endpoint: Endpoint, user: &str, key_type: &str, offered: &str) -> Error {
    let offered = if offered.is_empty() {
        "none".to_owned()
    } else {
        offered.replace(',', ", ")
    };
    ssh_error(
        ErrorKind::AuthenticationFailed,
        format!(
            "the SSH server at {endpoint} refused the job's {key_type} key for user \
             '{user}' (methods the server offers: {offered})"
        ),
    )
    .with_hint(format!(
        "the task's entrypoint must write the SSH_PUBLIC_KEY environment variable into \
         ~{user}/.ssh/authorized_keys before starting sshd, and sshd must allow public key \
         login for '{user}' (PermitRootLogin prohibit-password for root); check the SSH \
         username in the driver configuration"
    ))
    // The key or the image is wrong: trying again with the same ones cannot help.
    .set_temporary(false)
}

/// `probe`: TCP connect and SSH handshake, nothing else.
pub(crate) fn probe(endpoint: Endpoint, timeout: Duration) -> Result<HostKey> {
    let conn = Connection::open(endpoint, timeout, timeout, true)?;
    let key = conn.host_key.clone();
    conn.disconnect();
    Ok(key)
}

/// Finds the bootstrap's marker line at the start of stdout (the process group id, or
/// "no bash") and keeps it out of the script's output.
#[derive(Debug, Default)]
pub(crate) struct MarkerScanner {
    pending: Vec<u8>,
    done: bool,
    pgid: Option<u32>,
    no_bash: bool,
}

/// Output before the marker longer than this means there is no marker.
const MARKER_SEARCH_LIMIT: usize = 64 * 1024;

impl MarkerScanner {
    /// Feeds stdout bytes; returns the bytes that are script output.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.done {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        if let Some(start) = find(&self.pending, NO_BASH_MARKER) {
            self.no_bash = true;
            return self.take_around(start, start + NO_BASH_MARKER.len());
        }
        if let Some(start) = find(&self.pending, PGID_MARKER) {
            let digits_at = start + PGID_MARKER.len();
            if let Some(nl) = self.pending[digits_at..].iter().position(|&b| b == b'\n') {
                let digits = &self.pending[digits_at..digits_at + nl];
                self.pgid = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|&p| p > 1);
                return self.take_around(start, digits_at + nl + 1);
            }
        }
        if self.pending.len() > MARKER_SEARCH_LIMIT {
            self.done = true;
            return std::mem::take(&mut self.pending);
        }
        Vec::new()
    }

    /// Ends the search: returns what was held back, without `start..end` (the marker).
    fn take_around(&mut self, start: usize, end: usize) -> Vec<u8> {
        self.done = true;
        let mut out = std::mem::take(&mut self.pending);
        out.drain(start..end);
        out
    }

    /// The process group, once seen.
    pub(crate) fn pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// Whether the bootstrap reported that there is no bash.
    pub(crate) fn no_bash(&self) -> bool {
        self.no_bash
    }

    /// Whatever is held back (at the end of the stream), without the start of a marker
    /// cut off by the end of the stream.
    fn flush(&mut self) -> Vec<u8> {
        self.done = true;
        let mut out = std::mem::take(&mut self.pending);
        let cut = find(&out, MARKER_PREFIX).or_else(|| {
            // Even a few bytes of one at the very end.
            (1..MARKER_PREFIX.len())
                .rev()
                .find(|&n| out.ends_with(&MARKER_PREFIX[..n]))
                .map(|n| out.len() - n)
        });
        if let Some(start) = cut {
            out.truncate(start);
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// State of one running script.
struct Run<'a> {
    conn: &'a Connection,
    /// The user logged in as.
    user: &'a str,
    channel: Channel,
    tx: &'a mpsc::Sender<Chunk>,
    buf: Vec<u8>,
    scanner: MarkerScanner,
    /// Output is dropped (after a cancel).
    discard: bool,
    /// The receiving side went away.
    receiver_gone: bool,
    eof: bool,
}

impl Run<'_> {
    /// Reads what is available on both streams. Returns whether anything was read.
    fn read_available(&mut self) -> Result<bool> {
        let mut progressed = false;
        for stream_id in [0, 1] {
            let n = match self.channel.stream(stream_id).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(self.conn.lost(e)),
            };
            if n == 0 {
                continue;
            }
            progressed = true;
            let data = if stream_id == 0 {
                let out = self.scanner.feed(&self.buf[..n]);
                if out.is_empty() {
                    continue;
                }
                Chunk::Stdout(out)
            } else {
                Chunk::Stderr(self.buf[..n].to_vec())
            };
            self.deliver(data);
        }
        Ok(progressed)
    }

    fn deliver(&mut self, chunk: Chunk) {
        if self.discard || self.receiver_gone {
            return;
        }
        if self.tx.blocking_send(chunk).is_err() {
            self.receiver_gone = true;
        }
    }

    /// Pumps output until the channel is at EOF and closed, `stop` fires or `deadline`
    /// passes. Returns whether the channel closed.
    fn pump_until_closed(
        &mut self,
        stop: Option<&CancellationToken>,
        deadline: Option<Instant>,
        keepalive: bool,
    ) -> Result<bool> {
        loop {
            if stop.is_some_and(|s| s.is_cancelled()) || self.receiver_gone {
                return Ok(false);
            }
            let progressed = self.read_available()?;
            if !self.eof && self.channel.eof() {
                self.eof = true;
            }
            if self.eof {
                match self.channel.wait_close() {
                    Ok(()) => return Ok(true),
                    Err(e) if is_eagain(&e) => {}
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            if keepalive {
                match self.conn.sess.keepalive_send() {
                    Ok(_) => {}
                    Err(e) if is_eagain(&e) => {}
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            let mut slice = POLL_SLICE;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                slice = slice.min(deadline - now);
            }
            if !progressed {
                self.conn.wait(slice);
            }
        }
    }

    /// Sends the script (inside a `{ }` group) and EOF, reading output meanwhile.
    /// Returns `false` if `stop` fired first.
    fn send_script(&mut self, script: &[u8], stop: &CancellationToken) -> Result<bool> {
        let needs_newline = !script.is_empty() && !script.ends_with(b"\n");
        let parts: [&[u8]; 4] = [
            GROUP_OPEN,
            script,
            if needs_newline { b"\n" } else { b"" },
            GROUP_CLOSE,
        ];
        let mut part = 0;
        let mut offset = 0;
        let mut eof_sent = false;
        while !eof_sent {
            if stop.is_cancelled() || self.receiver_gone {
                return Ok(false);
            }
            let mut progressed = false;
            if part < parts.len() {
                let data = parts[part];
                if offset >= data.len() {
                    part += 1;
                    offset = 0;
                    continue;
                }
                match self.channel.write(&data[offset..]) {
                    Ok(n) => {
                        offset += n;
                        progressed |= n > 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The bootstrap ended without reading the script; `outcome` says why.
                    Err(_) if self.scanner.no_bash() => return Ok(true),
                    Err(e) => return Err(self.conn.lost(e)),
                }
            } else {
                match self.channel.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if is_eagain(&e) => {}
                    Err(_) if self.scanner.no_bash() => return Ok(true),
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            progressed |= self.read_available()?;
            if self.channel.eof() {
                // The remote ended before reading the whole script (e.g. no bash).
                self.eof = true;
                return Ok(true);
            }
            if !progressed && !eof_sent {
                self.conn.wait(POLL_SLICE);
            }
        }
        Ok(true)
    }

    fn outcome(&mut self) -> Result<RunOutcome> {
        let rest = self.scanner.flush();
        if !rest.is_empty() {
            self.deliver(Chunk::Stdout(rest));
        }
        if self.scanner.no_bash() {
            return Err(no_bash(self.conn.endpoint, self.user));
        }
        let signal = self
            .channel
            .exit_signal()
            .ok()
            .and_then(|s| s.exit_signal)
            .filter(|s| !s.is_empty());
        if let Some(signal) = signal {
            return Ok(RunOutcome::Signaled { signal });
        }
        self.channel
            .exit_status()
            .map(RunOutcome::Exited)
            .map_err(|e| {
                ssh_error(
                    ErrorKind::Unexpected,
                    format!(
                        "the SSH server at {} closed the session without an exit status: {}",
                        self.conn.endpoint,
                        e.message()
                    ),
                )
            })
    }

    /// Stops the remote script and all its children, within about 1.8 s.
    fn kill(&mut self, script_sent: bool, grace: Duration) -> String {
        self.discard = true;
        let started = Instant::now();
        let overall = started + Duration::from_millis(1800);
        // The marker may still be on its way.
        if self.scanner.pgid().is_none() && script_sent && !self.eof {
            let _ = self.pump_until(
                |run| run.scanner.pgid().is_some(),
                started + Duration::from_millis(300),
            );
        }
        let Some(pgid) = self.scanner.pgid() else {
            let _ = self.channel.close();
            return if script_sent {
                "the script's process group was not known; the session was closed".to_owned()
            } else {
                "the script had not been fully sent, so it did not start".to_owned()
            };
        };
        // One helper command: SIGTERM to the group, up to `grace` for it to go away
        // (`kill -s 0` fails once no process is left in it), then SIGKILL for whatever
        // ignored SIGTERM.
        let rounds = (grace.as_millis() / 100).max(1);
        let stop_group = format!(
            "kill -s TERM -- -{pgid} 2>/dev/null || kill -s TERM {pgid} 2>/dev/null; i=0; \
             while kill -s 0 -- -{pgid} 2>/dev/null && [ $i -lt {rounds} ]; do \
             sleep 0.1 2>/dev/null; i=$((i+1)); done; \
             kill -s KILL -- -{pgid} 2>/dev/null; exit 0"
        );
        let stopped = self.exec_helper(&stop_group, overall);
        let _ = self.channel.close();
        if stopped {
            format!(
                "the script's process group ({pgid}) was stopped (SIGTERM, then SIGKILL for \
                 what was left)"
            )
        } else {
            format!("stopping the script's process group ({pgid}) could not be confirmed")
        }
    }

    /// Pumps until `done(self)` or `deadline`.
    fn pump_until(&mut self, done: impl Fn(&Self) -> bool, deadline: Instant) -> Result<bool> {
        loop {
            if done(self) {
                return Ok(true);
            }
            let progressed = self.read_available()?;
            if self.channel.eof() {
                self.eof = true;
                return Ok(done(self));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if !progressed {
                self.conn.wait((deadline - now).min(POLL_SLICE));
            }
        }
    }

    /// Runs `command` in a second channel of the same session and waits for it to end.
    fn exec_helper(&mut self, command: &str, deadline: Instant) -> bool {
        let conn = self.conn;
        let Some(Ok(mut helper)) = conn.retry(deadline, || conn.sess.channel_session()) else {
            return false;
        };
        if !matches!(conn.retry(deadline, || helper.exec(command)), Some(Ok(()))) {
            return false;
        }
        let mut sink = [0u8; 1024];
        loop {
            // Keep the main channel flowing too, so its window does not block the session.
            if self.read_available().is_err() {
                return false;
            }
            let _ = helper.read(&mut sink);
            let _ = helper.stderr().read(&mut sink);
            if helper.eof() {
                return matches!(conn.retry(deadline, || helper.wait_close()), Some(Ok(())));
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            conn.wait((deadline - now).min(POLL_SLICE));
        }
    }
}

/// `run`: connect, check the host key, authenticate, run the script, stream its output
/// into `tx`.
pub(crate) fn run(
    config: &Ssh2Config,
    request: &RunRequest,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    gate: &StartGate,
) -> Result<RunOutcome> {
    let conn = Connection::open(
        request.endpoint,
        config.connect_timeout,
        config.handshake_timeout,
        false,
    )?;
    let result = run_on(&conn, config, request, tx, stop, gate);
    conn.disconnect();
    result
}

fn run_on(
    conn: &Connection,
    config: &Ssh2Config,
    request: &RunRequest,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    gate: &StartGate,
) -> Result<RunOutcome> {
    conn.check_host_key(request.host_key.as_ref())?;
    conn.authenticate(request)?;
    if stop.is_cancelled() || !gate.start() {
        return Err(cancelled("the script was not started"));
    }
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
    let keepalive = config.keepalive_interval.as_secs();
    if keepalive > 0 {
        conn.sess
            .set_keepalive(true, u32::try_from(keepalive).unwrap_or(u32::MAX));
    }
    conn.sess.set_blocking(false);
    let mut run = Run {
        conn,
        user: &request.username,
        channel,
        tx,
        buf: vec![0; CHUNK],
        scanner: MarkerScanner::default(),
        discard: false,
        receiver_gone: false,
        eof: false,
    };
    let sent = run.send_script(&request.script, stop)?;
    if sent && run.pump_until_closed(Some(stop), None, keepalive > 0)? {
        return run.outcome();
    }
    let how = run.kill(sent, config.cancel_grace);
    tracing::debug!(endpoint = %conn.endpoint, "script cancelled: {how}");
    Err(cancelled(&how))
}

/// The bootstrap found no bash to run the script with.
fn no_bash(endpoint: Endpoint, user: &str) -> Error {
    ssh_error(
        ErrorKind::InvalidConfig,
        format!(
            "bash was not found in the task image at {endpoint} (or it is not on the PATH \
             of the SSH user '{user}'), so the job's script was not run"
        ),
    )
    .with_hint(format!(
        "install bash in the task image (e.g. `apk add bash` on Alpine) and make sure it is \
         on the PATH of '{user}' in SSH sessions: the runner's job scripts are bash scripts"
    ))
    .set_temporary(false)
}

fn cancelled(how: &str) -> Error {
    ssh_error(
        ErrorKind::Cancelled,
        format!("running the script was cancelled; {how}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scanner_strips_marker_and_keeps_surrounding_output() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-pg"), b"");
        assert_eq!(s.feed(b"id:4242\nhello"), b"motd\nhello");
        assert_eq!(s.pgid(), Some(4242));
        assert_eq!(s.feed(b"\x1efargate-pgid:1\n"), b"\x1efargate-pgid:1\n");
    }

    #[test]
    fn scanner_gives_up_after_the_limit() {
        let mut s = MarkerScanner::default();
        let big = vec![b'x'; MARKER_SEARCH_LIMIT + 1];
        assert_eq!(s.feed(&big).len(), big.len());
        assert_eq!(s.pgid(), None);
        assert_eq!(s.feed(b"y"), b"y");
    }

    #[test]
    fn scanner_flushes_held_back_output() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"partial"), b"");
        assert_eq!(s.flush(), b"partial");
    }

    #[test]
    fn scanner_recognises_no_bash_split_across_chunks() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-no-"), b"");
        assert_eq!(s.feed(b"bash\nrest"), b"motd\nrest");
        assert!(s.no_bash());
        assert_eq!(s.pgid(), None);
        assert_eq!(s.feed(b"\x1efargate-no-bash\n"), b"\x1efargate-no-bash\n");
    }

    #[test]
    fn scanner_never_lets_a_marker_through_when_output_ends() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-pgid:12"), b"");
        assert_eq!(s.flush(), b"motd\n");
        assert!(!s.no_bash());
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efarg"), b"");
        assert_eq!(s.flush(), b"motd\n");
    }

    #[test]
    fn bootstrap_reports_the_pgid_or_no_bash_as_markers() {
        for (path, expected) in [
            ("/usr/bin:/bin", PGID_MARKER),
            ("/nonexistent", NO_BASH_MARKER),
        ] {
            let output = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(BOOTSTRAP)
                .env("PATH", path)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(output.stdout.starts_with(expected), "{output:?}");
            let mut s = MarkerScanner::default();
            let mut out = s.feed(&output.stdout);
            out.extend(s.flush());
            assert!(out.is_empty(), "{out:?}");
            assert_eq!(s.no_bash(), expected == NO_BASH_MARKER);
            assert_eq!(s.pgid().is_some(), expected == PGID_MARKER);
        }
    }
}
