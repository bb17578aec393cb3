//! SIGTERM and SIGINT (from gitlab-runner, to the whole process group) cancel the stage.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on every SIGTERM or SIGINT, for as long as the runtime lives.
///
/// Every signal is received and logged (the Go driver listened once, on an unbuffered
/// channel); cancelling twice is harmless.
pub(crate) fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => break,
            };
            tracing::warn!(signal = name, "received {name}: cancelling this stage");
            token.cancel();
        }
    });
    Ok(())
}
