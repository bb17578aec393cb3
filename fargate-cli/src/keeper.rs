//! The per-job SSH connection keeper ([`fargate_ssh::keeper`]) as the stages use it:
//! prepare starts it as a detached `fargate keeper` process, each `run` stage goes through
//! it, cleanup ends it.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fargate_core::{
    Error, ErrorKind, FileMetadataStore, JobContext, JobKey, MetadataStore, Phase, Result,
    RunRequest,
};
use fargate_ssh::keeper::{self, KeeperOptions};
use tokio::io::AsyncReadExt as _;

use crate::args::{Args, KeeperArgs};
use crate::config::FileConfig;

/// How long cleanup waits for the keeper to end.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// The keeper socket of `job`, when the keeper is enabled and the job has an identity.
pub(crate) fn socket(config: &FileConfig, job: &JobContext) -> Option<PathBuf> {
    if !config.keeper.enabled {
        return None;
    }
    let namespace = config.options.namespace.as_ref()?;
    let key = job.identity(namespace).ok()?.key();
    Some(keeper::socket_path(&config.metadata_dir, key.as_str()))
}

/// How long prepare waits for the keeper to listen (it binds its socket first thing).
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// Starts the keeper of job `key` as a detached process of this binary (its own process
/// group, no stdio the runner sees: the runner neither waits for it nor signals it), with
/// this stage's configuration and logging flags, and waits until it listens, so that the
/// first `run` stage finds its socket (and waits there while it connects).
pub(crate) async fn start(args: &Args, socket: &Path, key: &JobKey) {
    let keeper: [&OsStr; 5] = [
        OsStr::new("keeper"),
        OsStr::new("--socket"),
        socket.as_os_str(),
        OsStr::new("--job"),
        OsStr::new(key.as_str()),
    ];
    let Some(mut child) = spawn_detached(args, &keeper, Stdio::piped()) else {
        return;
    };
    let pid = child.id();
    let Some(mut out) = child.stdout.take() else {
        return;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(LISTEN_WAIT, out.read(&mut byte)).await {
        Ok(Ok(1)) => {
            tracing::debug!(pid, socket = %socket.display(), "connection keeper listening");
        }
        _ => tracing::debug!(pid, "the connection keeper did not start listening"),
    }
}

/// Starts `fargate pool fill --background` detached, as the keeper: the warm pool's refill
/// after a prepare, off the job's path (prepare does not wait for it).
pub(crate) fn start_refill(args: &Args) {
    let refill = [
        OsStr::new("pool"),
        OsStr::new("fill"),
        OsStr::new("--background"),
    ];
    if let Some(child) = spawn_detached(args, &refill, Stdio::null()) {
        tracing::debug!(pid = child.id(), "warm pool refill started");
    }
}

/// This binary with this stage's configuration and logging flags and `command`, in a
/// process group of its own, stdin and stderr closed: what the runner neither waits for
/// nor signals.
fn spawn_detached(args: &Args, command: &[&OsStr], stdout: Stdio) -> Option<tokio::process::Child> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!("cannot start {command:?}: cannot find this program: {e}");
            return None;
        }
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config").arg(absolute(&args.config));
    if let Some(file) = &args.log_file {
        cmd.arg("--log-file").arg(absolute(file));
    }
    if let Some(level) = &args.log_level {
        cmd.arg("--log-level").arg(level);
    }
    if args.debug {
        cmd.arg("--debug");
    }
    cmd.args(command)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .process_group(0)
        // The child outlives this stage: tokio must not kill it when the handle drops.
        .kill_on_drop(false);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::debug!("cannot start {command:?}: {e}");
            None
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Ends the keeper at `socket`, if there is one, and waits (briefly) until it is gone; a
/// socket that no keeper listens on any more (its keeper was killed) is removed, a live
/// keeper's never.
pub(crate) fn stop(socket: &Path) {
    if keeper::quit(socket, QUIT_WAIT) {
        tracing::debug!("connection keeper ended");
    }
    match keeper::remove_if_dead(socket) {
        Ok(true) => tracing::debug!(
            socket = %socket.display(),
            "removed the socket of a connection keeper that had died"
        ),
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(error = %err, "could not remove a dead keeper's socket; `fargate gc` will")
        }
    }
}

/// `fargate keeper`: holds the job's SSH connection until cleanup, the task's end, its
/// idle time or the task's deadline (see [`fargate_ssh::keeper`]).
pub(crate) async fn run(command: &KeeperArgs, config: FileConfig) -> Result<()> {
    let key = JobKey::parse(&command.job)?;
    let store = FileMetadataStore::new(config.metadata_dir.clone());
    let record = store
        .get(&key)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no record of job {key}")))?;
    let (Phase::Ready, Some(endpoint)) = (record.phase, record.endpoint) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("job {key} is not ready"),
        ));
    };
    let login = RunRequest {
        endpoint,
        username: config.options.ssh.username.clone(),
        private_key: record.private_key.clone(),
        host_key: record.host_key.clone(),
        script: Arc::from(&b""[..]),
    };
    let options = KeeperOptions::new(command.socket.clone(), config.keeper.idle_timeout)
        .with_until(record.spec.as_ref().and_then(|s| s.deadline))
        .while_exists(store.record_path(&key));
    let ssh = config.ssh.clone();
    // Tells `start` that the socket is there: one byte on stdout, its only output.
    let listening = || {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\n").and_then(|()| out.flush());
    };
    tokio::task::spawn_blocking(move || keeper::serve(&ssh, &login, &options, listening))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the keeper thread failed: {e}"),
            )
        })?
}
