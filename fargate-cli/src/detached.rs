//! The processes a stage leaves running, as detached processes of this binary: the job's
//! SSH connection keeper ([`fargate_ssh::keeper`]; prepare starts it, each `run` stage goes
//! through it, cleanup ends it) and the warm pool's refill (started by prepare).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fargate_core::driver::AdminOverrides;
use fargate_core::job::CUSTOM_ENV_PREFIX;
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

/// This binary with this stage's configuration and logging flags and `command`, started
/// as [`detached_command`] says: what the runner neither waits for nor signals.
fn spawn(relaunch: &Relaunch, command: &[&OsStr], stdout: Stdio) -> Option<tokio::process::Child> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!("cannot start {command:?}: cannot find this program: {e}");
            return None;
        }
    };
    let mut cmd = detached_command(&exe, relaunch.args(command), std::env::vars_os(), stdout);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::debug!("cannot start {command:?}: {e}");
            None
        }
    }
}

/// `exe` with `args`, in a process group of its own, stdin and stderr closed, with the
/// stage's environment `vars` [`scrubbed`] of the job's variables.
fn detached_command(
    exe: &Path,
    args: Vec<OsString>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    stdout: Stdio,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .env_clear()
        .envs(scrubbed(vars))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .process_group(0)
        // The child outlives this stage: tokio must not kill it when the handle drops.
        .kill_on_drop(false);
    cmd
}

/// Variables the runner sets for one job: the job's payload (with its token) and its
/// stage's exit codes. A detached process outlives the stage and serves no job's stage
/// itself, so it gets none of them.
const JOB_VARIABLES: [&str; 4] = [
    "JOB_RESPONSE_FILE",
    "BUILD_EXIT_CODE_FILE",
    "BUILD_FAILURE_EXIT_CODE",
    "SYSTEM_FAILURE_EXIT_CODE",
];

/// The environment of a detached process: this stage's `vars` without the job's variables
/// (`CUSTOM_ENV_*`, the pipeline's and the project's CI/CD variables, secrets included) and
/// without the runner's per-job ones ([`JOB_VARIABLES`]). The rest (`PATH`, `HOME`, the
/// AWS SDK's settings and credentials) is the runner's own and is kept.
fn scrubbed(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> impl Iterator<Item = (OsString, OsString)> {
    vars.into_iter().filter(|(name, _)| {
        let name = name.as_encoded_bytes();
        !name.starts_with(CUSTOM_ENV_PREFIX.as_bytes())
            && !JOB_VARIABLES.iter().any(|v| v.as_bytes() == name)
    })
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

    /// The keeper outlives the stage for the life of the job: it must not hold the job's
    /// variables (secrets among them) in its environment, where `/proc/<pid>/environ` and
    /// core dumps show them.
    #[tokio::test]
    async fn a_detached_process_gets_no_job_variable() {
        let stage: Vec<(OsString, OsString)> = [
            ("PATH", "/usr/bin:/bin"),
            ("AWS_REGION", "eu-west-1"),
            ("CUSTOM_ENV_DB_PASSWORD", "hunter2"),
            ("CUSTOM_ENV_CI_JOB_TOKEN", "glcbt-secret"),
            ("JOB_RESPONSE_FILE", "/tmp/custom-executor1/response.json"),
            ("SYSTEM_FAILURE_EXIT_CODE", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        // What a child started the way `spawn` starts one sees.
        let child = detached_command(Path::new("/usr/bin/env"), vec![], stage, Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort_unstable();
        assert_eq!(names, ["AWS_REGION", "PATH"], "{env}");
    }
}
