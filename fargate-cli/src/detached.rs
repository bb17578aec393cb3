//! The processes a stage leaves running, as detached processes of this binary: the job's
//! SSH connection keeper ([`fargate_ssh::keeper`]; prepare starts it, each `run` stage goes
//! through it, cleanup ends it) and the warm pool's refill (started by prepare).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fargate_core::driver::AdminOverrides;
use fargate_core::{JobContext, JobKey};
use fargate_ssh::keeper;
use tokio::io::AsyncReadExt as _;

use crate::config::FileConfig;

/// How long cleanup waits for the keeper to end.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// How long prepare waits for the keeper to listen (it binds its socket first thing).
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// How to start this binary again as the stage was started: its configuration file and
/// logging flags (paths absolute: the runner changes the working directory).
#[derive(Clone, Debug)]
pub(crate) struct Relaunch {
    /// `--config`, absolute.
    pub(crate) config_file: PathBuf,
    /// `--log-file`, absolute.
    pub(crate) log_file: Option<PathBuf>,
    /// `--log-level`.
    pub(crate) log_level: Option<String>,
    /// `--debug`.
    pub(crate) debug: bool,
    /// `--task-def` and `--platform-version`: a refill must launch what this stage's
    /// claims take.
    pub(crate) overrides: AdminOverrides,
}

impl Relaunch {
    /// The arguments of this binary for `command` with this stage's configuration, command
    /// line overrides and logging flags.
    fn args(&self, command: &[&OsStr]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--config".into(), self.config_file.clone().into()];
        if let Some(file) = &self.log_file {
            args.extend(["--log-file".into(), file.clone().into()]);
        }
        if let Some(level) = &self.log_level {
            args.extend(["--log-level".into(), level.into()]);
        }
        if self.debug {
            args.push("--debug".into());
        }
        if let Some(td) = &self.overrides.task_definition {
            args.extend(["--task-def".into(), td.into()]);
        }
        if let Some(pv) = &self.overrides.platform_version {
            args.extend(["--platform-version".into(), pv.into()]);
        }
        args.extend(command.iter().map(|c| c.to_os_string()));
        args
    }
}

/// The keeper socket of `job`, when the keeper is enabled and the job has an identity.
pub(crate) fn keeper_socket(config: &FileConfig, job: &JobContext) -> Option<PathBuf> {
    if !config.keeper.enabled {
        return None;
    }
    let namespace = config.options.namespace.as_ref()?;
    let key = job.identity(namespace).ok()?.key();
    Some(keeper::socket_path(&config.metadata_dir, key.as_str()))
}

/// Starts the keeper of job `key` as a detached process of this binary (its own process
/// group, no stdio the runner sees: the runner neither waits for it nor signals it), with
/// this stage's configuration and logging flags, and waits until it listens, so that the
/// first `run` stage finds its socket (and waits there while it connects).
pub(crate) async fn start_keeper(relaunch: &Relaunch, socket: &Path, key: &JobKey) {
    let keeper: [&OsStr; 5] = [
        OsStr::new("keeper"),
        OsStr::new("--socket"),
        socket.as_os_str(),
        OsStr::new("--job"),
        OsStr::new(key.as_str()),
    ];
    let Some(mut child) = spawn(relaunch, &keeper, Stdio::piped()) else {
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

/// Ends the keeper at `socket`, if there is one, and waits (briefly) until it is gone; a
/// socket that no keeper listens on any more (its keeper was killed) is removed, a live
/// keeper's never.
pub(crate) fn stop_keeper(socket: &Path) {
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

/// Starts `fargate pool fill --background` detached, as the keeper: the warm pool's refill
/// after a prepare, off the job's path (prepare does not wait for it).
pub(crate) fn start_refill(relaunch: &Relaunch) {
    let refill = [
        OsStr::new("pool"),
        OsStr::new("fill"),
        OsStr::new("--background"),
    ];
    if let Some(child) = spawn(relaunch, &refill, Stdio::null()) {
        tracing::debug!(pid = child.id(), "warm pool refill started");
    }
}

/// This binary with this stage's configuration and logging flags and `command`, in a
/// process group of its own, stdin and stderr closed: what the runner neither waits for
/// nor signals.
fn spawn(relaunch: &Relaunch, command: &[&OsStr], stdout: Stdio) -> Option<tokio::process::Child> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!("cannot start {command:?}: cannot find this program: {e}");
            return None;
        }
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(relaunch.args(command))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_refill_launches_what_the_stage_would() {
        let relaunch = Relaunch {
            config_file: PathBuf::from("/etc/gitlab-runner/fargate.toml"),
            log_file: None,
            log_level: Some("debug".into()),
            debug: false,
            overrides: AdminOverrides {
                task_definition: Some("ci:7".into()),
                platform_version: Some("1.4.0".into()),
            },
        };
        let args = relaunch.args(&[OsStr::new("pool"), OsStr::new("fill")]);
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--config",
                "/etc/gitlab-runner/fargate.toml",
                "--log-level",
                "debug",
                "--task-def",
                "ci:7",
                "--platform-version",
                "1.4.0",
                "pool",
                "fill"
            ]
        );
    }
}
