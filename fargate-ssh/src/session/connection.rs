//! The TCP connection and SSH handshake, host-key check and authentication, and what
//! their failures mean.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fargate_core::{Endpoint, Error, ErrorKind, HostKey, Result, RunRequest};
use ssh2::{BlockDirections, ErrorCode, Session};

use super::{POLL_SLICE, is_eagain, ssh_error};
use crate::keys::{describe_private_key, host_key_from_blob};
use crate::negotiation::{self, Supported};

/// libssh2's codes for a refused public key.
const AUTH_FAILED: i32 = -18;
const PUBKEY_UNVERIFIED: i32 = -19;
/// libssh2 could not use the private key (bad format, unsupported type).
const KEY_FILE: i32 = -16;
/// A TCP connection with a finished SSH handshake.
pub(crate) struct Connection {
    pub(super) sess: Session,
    /// A clone of the socket, for `poll`.
    socket: TcpStream,
    pub(super) endpoint: Endpoint,
    host_key: HostKey,
}

impl Connection {
    /// TCP connect and SSH handshake, both bounded; with `shared`, `connect_timeout`
    /// bounds both together and `handshake_timeout` is ignored.
    pub(super) fn open(
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

    /// The host key the server presented.
    pub(crate) fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// Bounds each blocking libssh2 call (authentication) by `timeout`.
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        self.sess.set_timeout(millis(timeout));
    }

    /// Fails with `HostKeyMismatch` unless the host key is `expected`.
    pub(super) fn check_host_key(&self, expected: Option<&HostKey>) -> Result<()> {
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
    pub(super) fn authenticate(&self, request: &RunRequest) -> Result<()> {
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
    pub(super) fn lost(&self, e: impl std::fmt::Display) -> Error {
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

    /// Whether the server closed the connection (seen without taking data from libssh2:
    /// a peek that reads end of file). For an idle connection kept between scripts.
    pub(crate) fn peer_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: the buffer is valid for one byte; MSG_PEEK leaves the data for libssh2
        // and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.socket.as_raw_fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
            || (n < 0
                && !matches!(
                    io::Error::last_os_error().kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ))
    }

    /// Waits until the socket is ready in the direction libssh2 is blocked on, at most
    /// `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
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
    pub(super) fn retry<T>(
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
}

impl Drop for Connection {
    /// Says goodbye to the server, without waiting for its answer.
    fn drop(&mut self) {
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

/// `probe`: TCP connect and SSH handshake, nothing else. The connection is returned too,
/// for a login right after it ([`super::ProbeCache`]); it disconnects when dropped.
pub(crate) fn probe(endpoint: Endpoint, timeout: Duration) -> Result<(HostKey, Connection)> {
    let conn = Connection::open(endpoint, timeout, timeout, true)?;
    Ok((conn.host_key.clone(), conn))
}
