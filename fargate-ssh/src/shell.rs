//! [`Ssh2Shell`]: the [`RemoteShell`] on libssh2.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fargate_core::{
    CancelBudget, Endpoint, Error, ErrorKind, HostKey, KeyPair, KeyType, OutputSink, RemoteShell,
    Result, RunOutcome, RunRequest,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::BACKEND;
use crate::config::Ssh2Config;
use crate::keeper;
use crate::keys;
use crate::session::{self, Chunk, ProbeCache, StartGate};

/// Chunks (of up to 256 KiB, [`fargate_core::MAX_OUTPUT_CHUNK`]) in flight between the SSH thread and the sink: with the
/// libssh2 channel window (2 MiB) this bounds the memory a run uses, whatever the output.
const CHANNEL_CHUNKS: usize = 8;

/// After a cancel, the longest `run` waits for the SSH thread to stop the remote script.
const CANCEL_WAIT: Duration = CancelBudget::DEFAULT.shell_wait();

/// The [`RemoteShell`] of the driver: libssh2 (through the `ssh2` crate), one SSH
/// connection per call, on a blocking thread. See the [crate docs](crate) for the design.
///
/// Built [`with_keeper`](Ssh2Shell::with_keeper), `run` hands the script to the job's
/// connection keeper ([`crate::keeper`]) and connects directly only when there is none.
#[derive(Clone, Debug, Default)]
pub struct Ssh2Shell {
    config: Arc<Ssh2Config>,
    keeper: Option<Arc<Path>>,
    /// The last probe's connection, for the login that follows it.
    probed: Arc<ProbeCache>,
}

impl Ssh2Shell {
    /// A shell with the default settings ([`Ssh2Config::default`]).
    pub fn new() -> Self {
        Ssh2Shell::default()
    }

    /// A shell with these settings.
    pub fn with_config(config: Ssh2Config) -> Self {
        Ssh2Shell {
            config: Arc::new(config),
            keeper: None,
            probed: Arc::default(),
        }
    }

    /// The same shell, running scripts through the connection keeper listening on
    /// `socket` ([`crate::keeper`]) while there is one.
    pub fn with_keeper(mut self, socket: impl Into<PathBuf>) -> Self {
        self.keeper = Some(Arc::from(socket.into()));
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &Ssh2Config {
        &self.config
    }
}

fn join_error(what: &str, e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("the SSH thread {what} failed: {e}"),
    )
    .with_backend(BACKEND)
}

#[async_trait]
impl RemoteShell for Ssh2Shell {
    async fn generate_key(&self, key_type: KeyType) -> Result<KeyPair> {
        tokio::task::spawn_blocking(move || keys::generate(key_type))
            .await
            .map_err(|e| join_error("generating the key", e))?
    }

    async fn probe(&self, endpoint: Endpoint) -> Result<HostKey> {
        let timeout = self.config.probe_timeout;
        let cache = Arc::clone(&self.probed);
        tokio::task::spawn_blocking(move || {
            let (host_key, conn) = session::probe(endpoint, timeout)?;
            cache.put(conn);
            Ok(host_key)
        })
        .await
        .map_err(|e| join_error("probing", e))?
    }

    async fn run(
        &self,
        request: &RunRequest,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome> {
        if cancel.is_cancelled() {
            return Err(
                Error::cancelled("running the script (nothing was sent)").with_backend(BACKEND)
            );
        }
        let (tx, mut rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        // Fires on cancel and when the sink fails.
        let stop = cancel.child_token();
        let config = Arc::clone(&self.config);
        let thread_request = request.clone();
        let thread_stop = stop.clone();
        let gate = Arc::new(StartGate::default());
        let thread_gate = Arc::clone(&gate);
        let keeper = self.keeper.clone();
        let probed = Arc::clone(&self.probed);
        let mut handle = tokio::task::spawn_blocking(move || {
            let keeper_tried = keeper.is_some();
            if let Some(socket) = keeper {
                match keeper::run(&socket, &thread_request, &tx, &thread_stop, &thread_gate) {
                    keeper::Attempt::Done(result) => return result,
                    keeper::Attempt::Unused(why) => {
                        tracing::debug!("connecting directly, not through the keeper: {why}");
                    }
                }
            }
            // The keeper may have passed the start gate: then a fresh one (the caller waits
            // for this thread either way).
            let fresh = StartGate::default();
            let gate = if keeper_tried { &fresh } else { &*thread_gate };
            session::run(&config, &probed, &thread_request, &tx, &thread_stop, gate)
        });

        let mut sink_error: Option<std::io::Error> = None;
        let mut give_up_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        if stop.is_cancelled() {
                            continue;
                        }
                        let written = match &chunk {
                            Chunk::Started => Ok(()),
                            Chunk::Stdout(data) => output.stdout(data),
                            Chunk::Stderr(data) => output.stderr(data),
                        };
                        if let Err(e) = written {
                            sink_error = Some(e);
                            stop.cancel();
                        }
                    }
                    None => break,
                },
                () = stop.cancelled(), if give_up_at.is_none() => {
                    if gate.abandon() {
                        // Still connecting: the thread will not start the script.
                        return Err(stopped_error(sink_error, cancel, "the script was not started"));
                    }
                    give_up_at = Some(tokio::time::Instant::now() + CANCEL_WAIT);
                }
                () = sleep_until(give_up_at), if give_up_at.is_some() => {
                    // The SSH thread is stuck (e.g. in a TCP connect); it ends on its own.
                    drop(rx);
                    return Err(stopped_error(sink_error, cancel, "the SSH connection did not \
                        end in time; the remote script may still be running"));
                }
            }
        }
        let result = match give_up_at {
            Some(deadline) => match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(joined) => joined.map_err(|e| join_error("running the script", e))?,
                Err(_) => {
                    return Err(stopped_error(
                        sink_error,
                        cancel,
                        "the SSH connection did not end in time; the remote script may still \
                         be running",
                    ));
                }
            },
            None => handle
                .await
                .map_err(|e| join_error("running the script", e))?,
        };
        match (result, sink_error) {
            (_, Some(e)) => Err(sink_failed(e)),
            (Err(e), None) if e.kind() == ErrorKind::Cancelled => Err(e),
            (Ok(_), None) if cancel.is_cancelled() => Err(Error::cancelled(
                "running the script (it ended as the job was cancelled)",
            )
            .with_backend(BACKEND)),
            (other, None) => other,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn sink_failed(e: std::io::Error) -> Error {
    Error::io(
        "writing the script's output failed, so the script was stopped",
        e,
    )
    .with_backend(BACKEND)
}

fn stopped_error(
    sink_error: Option<std::io::Error>,
    cancel: &CancellationToken,
    how: &str,
) -> Error {
    match sink_error {
        Some(e) if !cancel.is_cancelled() => sink_failed(e),
        _ => Error::new(
            ErrorKind::Cancelled,
            format!("running the script was cancelled; {how}"),
        )
        .with_backend(BACKEND),
    }
}
