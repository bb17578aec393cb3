//! What the end-to-end tests share: a local Fargate (moto's ECS plus one real sshd per
//! task, on loopback), a `fargate.toml` of the test's own, and the runner emulator driving
//! the real `fargate` binary with it.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_testkit::runner::{Job, JobResult, JobStatus, RunnerEmu};

/// A local Fargate, a directory holding the `fargate.toml` and the metadata directory, and
/// a runner emulator using them.
pub(crate) struct Rig {
    pub(crate) fargate: Arc<LocalFargate>,
    pub(crate) emu: RunnerEmu,
    pub(crate) dir: tempfile::TempDir,
}

impl Rig {
    /// Starts a local Fargate with `options`; the runner's `fargate.toml` is the generated
    /// one as `edit` makes it (`edit` also gets the rig's directory).
    pub(crate) async fn start(
        options: LocalFargateOptions,
        edit: impl FnOnce(String, &Path) -> String,
    ) -> Rig {
        let fargate = Arc::new(LocalFargate::start(options).await);
        let dir = tempfile::tempdir().expect("temp dir");
        let metadata = dir.path().join("metadata");
        let config = dir.path().join("fargate.toml");
        let text = edit(fargate.fargate_toml(&metadata), dir.path());
        std::fs::write(&config, text).expect("write fargate.toml");
        let emu = runner_emu(&fargate, &config, metadata);
        Rig { fargate, emu, dir }
    }

    /// Runs `job` through every stage (on a blocking thread).
    pub(crate) async fn run(&self, job: Job) -> JobResult {
        run_job(&self.emu, job).await
    }

    /// The metadata directory.
    pub(crate) fn metadata(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }

    /// The `fargate.toml`.
    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("fargate.toml")
    }

    /// `fargate <args>` with this rig's configuration: exit code, stdout and stderr.
    pub(crate) fn fargate(&self, args: &[&str]) -> (i32, String, String) {
        run_fargate(&self.config(), &self.fargate.driver_env(), args)
    }
}

/// A local Fargate without visibility lag (the lag has its own tests).
pub(crate) fn no_lag() -> LocalFargateOptions {
    LocalFargateOptions {
        visibility_lag: Duration::ZERO,
        ..LocalFargateOptions::default()
    }
}

/// A runner emulator running the real `fargate` binary with `config`, `fargate`'s driver
/// environment and metadata directory `metadata`.
pub(crate) fn runner_emu(fargate: &LocalFargate, config: &Path, metadata: PathBuf) -> RunnerEmu {
    let mut emu = RunnerEmu::new(
        &PathBuf::from(env!("CARGO_BIN_EXE_fargate")),
        config,
        fargate.driver_env(),
    );
    emu.metadata_dir = Some(metadata);
    emu
}

/// Runs `job` with `emu` through every stage, on a blocking thread.
pub(crate) async fn run_job(emu: &RunnerEmu, job: Job) -> JobResult {
    let emu = emu.clone();
    tokio::task::spawn_blocking(move || emu.run(job))
        .await
        .expect("runner thread")
}

/// `fargate --config <config> <args>` with `env` and no stdin: exit code, stdout and stderr.
pub(crate) fn run_fargate(
    config: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fargate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running fargate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A [`run_fargate`] result as exit code and one text: stdout, then stderr after a
/// `--- stderr:` line.
pub(crate) fn joined((code, stdout, stderr): (i32, String, String)) -> (i32, String) {
    (code, format!("{stdout}\n--- stderr:\n{stderr}"))
}

/// `fargate pool <action> --json` with `config` and `env`, which must succeed: its answer.
pub(crate) fn pool_json(
    config: &Path,
    env: &[(String, String)],
    action: &[&str],
) -> serde_json::Value {
    let args = [&["pool"], action, &["--json"]].concat();
    let (code, out, err) = run_fargate(config, env, &args);
    assert_eq!(
        code,
        0,
        "{} pool {action:?}: {out}\n{err}",
        config.display()
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The slots of a `fargate pool status --json` answer: (task, state) of each.
pub(crate) fn slots_of(status: &serde_json::Value) -> Vec<(String, String)> {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["task"].as_str().unwrap_or("").to_owned(),
                s["state"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The pids of the connection keeper processes of metadata directory `metadata`
/// (`fargate ... keeper --socket <metadata>/...`; a process that exited has no command
/// line).
pub(crate) fn keeper_pids(metadata: &Path) -> Vec<u32> {
    let metadata = metadata.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&&b"keeper"[..])
                && args.iter().any(|a| a.starts_with(metadata.as_bytes()))
        })
        .collect()
}

/// The job failed at prepare, as a system failure.
#[track_caller]
pub(crate) fn assert_failed_at_prepare(result: &JobResult) {
    assert_eq!(
        result.status,
        JobStatus::SystemFailure("prepare".into()),
        "{}",
        result.log
    );
}

/// The task a job ran on, from its log's "task <arn> is ready at" line.
pub(crate) fn task_of(log: &str) -> String {
    log.lines()
        .find_map(|l| {
            let rest = &l[l.find("task arn:")?..];
            rest.contains(" is ready at ")
                .then(|| rest.split_whitespace().nth(1).map(str::to_owned))?
        })
        .unwrap_or_else(|| panic!("no ready line in\n{log}"))
}
