//! A run stage's side: hand the script to the job's keeper and relay what comes back.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use fargate_core::{Error, ErrorKind, Result, RunOutcome, RunRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Next, Reader};
use crate::BACKEND;
use crate::session::{Chunk, POLL_SLICE, StartGate};

/// How long writing the request may block (the keeper reads it at once).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// What asking the keeper gave.
pub(crate) enum Attempt {
    /// The keeper ran the script (or the run failed or was cancelled once it had
    /// started): this is the stage's result.
    Done(Result<RunOutcome>),
    /// The keeper did not start the script (there is none, it is broken, it refused):
    /// the caller connects directly. Says why.
    Unused(String),
}

/// Runs `request` through the keeper at `socket`, with the same output, outcome and cancel
/// semantics as a direct connection.
pub(crate) fn run(
    socket: &Path,
    request: &RunRequest,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    gate: &StartGate,
) -> Attempt {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return Attempt::Unused(format!("no keeper at {}: {e}", socket.display())),
    };
    if stop.is_cancelled() || !gate.start() {
        return Attempt::Done(Err(not_started()));
    }
    let mut payload = format!(
        "{}\n{}\n",
        request.endpoint,
        request
            .host_key
            .as_ref()
            .map_or("", |k| k.fingerprint.as_str())
    )
    .into_bytes();
    payload.extend_from_slice(&request.script);
    let _ = stream.set_write_timeout(Some(WRITE_WAIT));
    if let Err(e) = frame::write(&mut stream, frame::RUN, &payload) {
        return Attempt::Unused(format!("the keeper did not take the script: {e}"));
    }
    tracing::debug!(socket = %socket.display(), "running the script through the job's connection keeper");
    let _ = stream.set_read_timeout(Some(POLL_SLICE));
    let mut reader = Reader::default();
    let mut started = false;
    let mut cancel_sent = false;
    let mut receiver_gone = false;
    loop {
        if (stop.is_cancelled() || receiver_gone) && !cancel_sent {
            cancel_sent = true;
            let _ = frame::write(&mut stream, frame::CANCEL, b"");
            let _ = stream.flush();
        }
        let next = reader.next(&mut stream).unwrap_or_else(|e| {
            tracing::debug!("reading from the keeper: {e}");
            Next::Closed
        });
        let f = match next {
            Next::Pending => continue,
            Next::Closed if started => return Attempt::Done(Err(keeper_lost())),
            Next::Closed if cancel_sent => return Attempt::Done(Err(not_started())),
            Next::Closed => {
                return Attempt::Unused("the keeper closed the connection".to_owned());
            }
            Next::Frame(f) => f,
        };
        let chunk = match f.tag {
            frame::STARTED => {
                started = true;
                continue;
            }
            frame::STDOUT => Chunk::Stdout(f.payload),
            frame::STDERR => Chunk::Stderr(f.payload),
            frame::EXITED => {
                let code = <[u8; 4]>::try_from(&f.payload[..]).map(i32::from_be_bytes);
                return Attempt::Done(code.map(RunOutcome::Exited).map_err(|_| garbled()));
            }
            frame::SIGNALED => {
                let signal = String::from_utf8_lossy(&f.payload).into_owned();
                return Attempt::Done(Ok(RunOutcome::Signaled { signal }));
            }
            frame::FAILED => {
                let err = parse_failure(&f.payload);
                if !started && !cancel_sent && err.kind() != ErrorKind::Cancelled {
                    return Attempt::Unused(format!("the keeper could not start it: {err}"));
                }
                return Attempt::Done(Err(err));
            }
            _ => return Attempt::Done(Err(garbled())),
        };
        if !receiver_gone && tx.blocking_send(chunk).is_err() {
            receiver_gone = true;
        }
    }
}

fn not_started() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "running the script was cancelled; the script was not started",
    )
    .with_backend(BACKEND)
}

fn keeper_lost() -> Error {
    Error::new(
        ErrorKind::Unreachable,
        "the job's SSH connection keeper ended while the script was running",
    )
    .with_hint("the keeper process was killed, or the task stopped; the script may have partly run")
    .with_backend(BACKEND)
    .set_temporary(false)
}

fn garbled() -> Error {
    Error::new(
        ErrorKind::Unexpected,
        "the job's SSH connection keeper sent an unreadable answer",
    )
    .with_backend(BACKEND)
}

/// The error a [`frame::FAILED`] payload describes.
fn parse_failure(payload: &[u8]) -> Error {
    let Some(parts) = frame::fields(payload, 4) else {
        return garbled();
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kind = super::kind_named(&text(parts[0]));
    let mut err = Error::new(kind, text(parts[2]))
        .with_backend(BACKEND)
        .set_temporary(parts[1] == b"1");
    if !parts[3].is_empty() {
        err = err.with_hint(text(parts[3]));
    }
    err
}
