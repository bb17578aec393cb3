//! The keeper process's side: one authenticated SSH connection, a 0600 Unix socket, one
//! script at a time in a new channel of that connection.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fargate_core::{Error, ErrorKind, Result, RunOutcome, RunRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::KeeperOptions;
use super::frame::{self, Next, Reader};
use crate::BACKEND;
use crate::config::Ssh2Config;
use crate::session::{self, Chunk, Connection, StartGate};

/// How long the keeper waits for a client's request once it connected.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How often the idle keeper checks its connection, idle time and deadline.
const IDLE_SLICE: Duration = Duration::from_millis(500);

/// Whether the keeper goes on after a client.
enum Flow {
    Continue,
    /// The client closed without a request (a probe such as `fargate gc`'s, which checks
    /// that the keeper is alive): the keeper's idle time goes on.
    NoRequest,
    Quit,
}

/// Listens on `options.socket` (mode 0600; only the keeper's own user may connect), calls
/// `listening`, connects and authenticates as `login` says (its script is ignored), and
/// runs each client's script in a new channel of the one connection, until a client asks
/// it to quit, the connection is lost (the task stopped), it was idle for
/// `options.idle_timeout`, or `options.until` passed. Removes the socket when it ends.
///
/// A client that connects while the keeper is still connecting waits for it; if the
/// keeper cannot connect, the client sees it close the socket before starting anything,
/// and connects directly.
///
/// Blocking: call it from a thread that is not a tokio runtime's (e.g. `spawn_blocking`).
pub fn serve(
    config: &Ssh2Config,
    login: &RunRequest,
    options: &KeeperOptions,
    listening: impl FnOnce(),
) -> Result<()> {
    let listener = bind(&options.socket)?;
    listening();
    let conn = match session::connect(config, login) {
        Ok(conn) => conn,
        Err(err) => {
            let _ = std::fs::remove_file(&options.socket);
            return Err(err);
        }
    };
    tracing::debug!(socket = %options.socket.display(), endpoint = %login.endpoint, "connection keeper ready");
    let mut idle_since = Instant::now();
    let ended = loop {
        if idle_since.elapsed() >= options.idle_timeout {
            break "idle";
        }
        if options.until.is_some_and(|t| SystemTime::now() >= t) {
            break "the task's deadline passed";
        }
        if conn.peer_closed() {
            break "the SSH server closed the connection";
        }
        if options.while_exists.as_ref().is_some_and(|p| !p.exists()) {
            break "the job's record is gone";
        }
        if !wait_readable(&listener, IDLE_SLICE) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!("connection keeper: accept failed: {e}");
                continue;
            }
        };
        if !same_user(&stream) {
            tracing::warn!("connection keeper: refused a client of another user");
            continue;
        }
        match serve_client(&conn, config, login, stream) {
            Flow::Continue => idle_since = Instant::now(),
            Flow::NoRequest => {}
            Flow::Quit => break "asked to quit",
        }
    };
    let _ = std::fs::remove_file(&options.socket);
    tracing::debug!("connection keeper ends: {ended}");
    Ok(())
}

/// Binds the socket at `path` with mode 0600, replacing a stale one (its keeper is gone).
fn bind(path: &std::path::Path) -> Result<UnixListener> {
    if path.exists() {
        // A live keeper of an earlier attempt of this job holds a connection to a task that
        // is being stopped: it goes; a dead one left its socket file.
        super::quit(path, Duration::from_secs(2));
        let _ = std::fs::remove_file(path);
    }
    let io_error = |what: &str, e: io::Error| {
        Error::io(format!("{what} {}", path.display()), e).with_backend(BACKEND)
    };
    let listener = UnixListener::bind(path).map_err(|e| io_error("cannot listen on", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error("cannot restrict", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("cannot use", e))?;
    Ok(listener)
}

/// Waits up to `timeout` for a client.
fn wait_readable(listener: &UnixListener, timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, count one.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// Whether the client runs as this process's user (`SO_PEERCRED`).
fn same_user(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid cannot fail.
    rc == 0 && cred.uid == unsafe { libc::geteuid() }
}

fn serve_client(
    conn: &Connection,
    config: &Ssh2Config,
    login: &RunRequest,
    mut stream: UnixStream,
) -> Flow {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let mut reader = Reader::default();
    let request = match reader.next(&mut stream) {
        Ok(Next::Frame(f)) => f,
        _ => return Flow::NoRequest,
    };
    match request.tag {
        frame::QUIT => {
            let _ = std::fs::remove_file(socket_of(&stream));
            let _ = frame::write(&mut stream, frame::BYE, b"");
            // Closed when the process exits, so that the client's end of file tells it
            // that the keeper is gone.
            std::mem::forget(stream);
            Flow::Quit
        }
        frame::RUN => run_script(conn, config, login, stream, reader, &request.payload),
        _ => Flow::Continue,
    }
}

/// The path the listener is bound to, from an accepted stream's local address.
fn socket_of(stream: &UnixStream) -> std::path::PathBuf {
    stream
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_owned()))
        .unwrap_or_default()
}

fn run_script(
    conn: &Connection,
    config: &Ssh2Config,
    login: &RunRequest,
    mut stream: UnixStream,
    mut reader: Reader,
    payload: &[u8],
) -> Flow {
    let Some([endpoint, host_key, script]) = frame::fields(payload, 3).and_then(|f| {
        let [a, b, c] = f[..] else { return None };
        Some([a, b, c])
    }) else {
        return Flow::Continue;
    };
    let pinned = login
        .host_key
        .as_ref()
        .map_or("", |k| k.fingerprint.as_str());
    if endpoint != login.endpoint.to_string().as_bytes() || host_key != pinned.as_bytes() {
        let err = Error::new(
            ErrorKind::Unexpected,
            "the connection keeper holds a connection to another task",
        );
        let _ = frame::write(&mut stream, frame::FAILED, &failure(&err));
        return Flow::Continue;
    }
    let stop = CancellationToken::new();
    let quit = Arc::new(AtomicBool::new(false));
    // Client frames while the script runs: a cancel, or the client going away, stops it.
    let Ok(mut incoming) = stream.try_clone() else {
        return Flow::Continue;
    };
    let _ = incoming.set_read_timeout(None);
    let listen = {
        let (stop, quit) = (stop.clone(), Arc::clone(&quit));
        std::thread::spawn(move || {
            loop {
                match reader.next(&mut incoming) {
                    Ok(Next::Frame(f)) if f.tag == frame::CANCEL => stop.cancel(),
                    Ok(Next::Frame(f)) if f.tag == frame::QUIT => {
                        quit.store(true, Ordering::SeqCst);
                        stop.cancel();
                    }
                    Ok(Next::Frame(_) | Next::Pending) => {}
                    Ok(Next::Closed) | Err(_) => {
                        stop.cancel();
                        return;
                    }
                }
            }
        })
    };
    let (tx, mut rx) = mpsc::channel::<Chunk>(8);
    let Ok(mut out) = stream.try_clone() else {
        return Flow::Continue;
    };
    let forward = std::thread::spawn(move || {
        while let Some(chunk) = rx.blocking_recv() {
            let written = match &chunk {
                Chunk::Started => frame::write(&mut out, frame::STARTED, b""),
                Chunk::Stdout(d) => frame::write(&mut out, frame::STDOUT, d),
                Chunk::Stderr(d) => frame::write(&mut out, frame::STDERR, d),
            };
            if written.is_err() {
                // The client is gone: dropping the receiver stops the script.
                return;
            }
        }
    });
    let result = session::run_on(
        conn,
        config,
        &login.username,
        script,
        &tx,
        &stop,
        &StartGate::default(),
    );
    drop(tx);
    let _ = forward.join();
    let lost = matches!(&result, Err(e) if e.kind() == ErrorKind::Unreachable);
    let _ = match &result {
        Ok(RunOutcome::Exited(code)) => {
            frame::write(&mut stream, frame::EXITED, &code.to_be_bytes())
        }
        Ok(RunOutcome::Signaled { signal }) => {
            frame::write(&mut stream, frame::SIGNALED, signal.as_bytes())
        }
        Ok(other) => {
            let err = Error::new(ErrorKind::Unexpected, format!("unknown outcome {other:?}"));
            frame::write(&mut stream, frame::FAILED, &failure(&err))
        }
        Err(err) => frame::write(&mut stream, frame::FAILED, &failure(err)),
    };
    // Ends the listening thread's read.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = listen.join();
    if lost || quit.load(Ordering::SeqCst) {
        Flow::Quit
    } else {
        Flow::Continue
    }
}

/// A [`frame::FAILED`] payload.
fn failure(err: &Error) -> Vec<u8> {
    format!(
        "{}\n{}\n{}\n{}",
        err.kind().as_str(),
        u8::from(err.is_temporary()),
        err.message().replace('\n', " "),
        err.hint().unwrap_or_default()
    )
    .into_bytes()
}
