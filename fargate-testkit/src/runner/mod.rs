//! A gitlab-runner custom executor emulator: drives a driver binary through one job the way
//! gitlab-runner 17.9+ does (<https://docs.gitlab.com/runner/executors/custom/>): a new
//! process per stage, a temporary directory as working directory, the runner's variables,
//! `CUSTOM_ENV_*` job variables, stdin from `/dev/null`, its own process group, bash stage
//! scripts written like the runner's, prepare retried up to three times with a cleanup after
//! each failed attempt, SIGTERM then SIGKILL on cancel, and cleanup at the end.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hook called when a stage's output first contains a marker.
pub type Hook = Box<dyn FnOnce() + Send>;

/// What to do when a stage prints a marker.
pub enum OnOutput {
    /// Cancel the job: SIGTERM to the stage's process group (the runner's job cancel).
    Cancel,
    /// Cancel the job this long after the marker appeared.
    CancelAfter(Duration),
    /// Call a function (e.g. stop the task behind the driver's back).
    Call(Hook),
}

impl std::fmt::Debug for OnOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnOutput::Cancel => f.write_str("Cancel"),
            OnOutput::CancelAfter(d) => write!(f, "CancelAfter({d:?})"),
            OnOutput::Call(_) => f.write_str("Call(..)"),
        }
    }
}

/// Where to SIGKILL a prepare attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillPoint {
    /// As soon as the job record shows this phase (`launch_requested`, `launched`, `ready`).
    RecordPhase(String),
    /// As soon as any record in the metadata directory contains this text (e.g.
    /// `claimed_by`: a warm pool slot being claimed).
    RecordText(String),
    /// This long after the prepare process started.
    After(Duration),
}

/// One job.
#[derive(Debug)]
pub struct Job {
    /// `CI_JOB_ID`.
    pub job_id: i64,
    /// `CI_PIPELINE_ID`.
    pub pipeline_id: i64,
    /// `CI_PROJECT_URL`.
    pub project_url: String,
    /// `CI_RUNNER_SHORT_TOKEN`.
    pub short_token: String,
    /// The project's id, in the job payload (`job_info.project_id`).
    pub project_id: u64,
    /// The job's name, in the job payload (`job_info.name`).
    pub name: String,
    /// CI/CD variables (become `CUSTOM_ENV_*` and exports in the scripts).
    pub variables: Vec<(String, String)>,
    /// The job's `script:` lines.
    pub script: Vec<String>,
    /// The job's `after_script:` lines.
    pub after_script: Vec<String>,
    /// The job's `image:` as the payload has it (`{"name": .., "entrypoint": ..}`); `None`
    /// for a job without one.
    pub image: Option<serde_json::Value>,
    /// The job's `services:` as the payload has them.
    pub services: Vec<serde_json::Value>,
    /// Registries (`url`s) the payload's `credentials` give the job a login for, as GitLab
    /// sends them: type `registry`, user `gitlab-ci-token`, the job token
    /// ([`job_token`]) as password.
    pub registries: Vec<String>,
    /// What `get_sources` does in the builds directory (the runner's checkout); empty: it
    /// only says that it ran.
    pub sources: Vec<String>,
    /// React to markers in the stages' output, each once, when its marker first appears.
    pub on_output: Vec<(String, OnOutput)>,
    /// SIGKILL the first prepare attempt at this point.
    pub kill_prepare: Option<KillPoint>,
    /// Time between SIGTERM and SIGKILL (`graceful_kill_timeout`).
    pub graceful_kill: Duration,
}

impl Job {
    /// A job with id `job_id` running `script`.
    pub fn new(job_id: i64, script: &[&str]) -> Job {
        Job {
            job_id,
            pipeline_id: 100,
            project_url: "https://gitlab.example.com/group/project".into(),
            short_token: "zxcv1234".into(),
            project_id: 42,
            name: "test".into(),
            variables: Vec::new(),
            script: script.iter().map(|s| s.to_string()).collect(),
            after_script: Vec::new(),
            image: None,
            services: Vec::new(),
            registries: Vec::new(),
            sources: Vec::new(),
            on_output: Vec::new(),
            kill_prepare: None,
            graceful_kill: Duration::from_secs(30),
        }
    }
}

/// The job token of job `job_id` in the payload the emulator writes (in its `token`, the
/// clone URL and the registry logins).
pub fn job_token(job_id: i64) -> String {
    format!("glcbt-64_secret-of-job-{job_id}")
}

/// How the job ended, as GitLab would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Passed.
    Success,
    /// The script failed with this exit code (`script_failure`).
    ScriptFailure(i32),
    /// A system failure in this stage (`runner_system_failure`).
    SystemFailure(String),
    /// The job was cancelled.
    Canceled,
}

/// One driver process.
#[derive(Clone, Debug)]
pub struct StageRun {
    /// `config`, `prepare`, `cleanup`, or the run stage's name.
    pub name: String,
    /// Exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Wall time.
    pub wall: Duration,
    /// Time from SIGTERM to exit, when it was cancelled.
    pub exit_after_term: Option<Duration>,
    /// Peak resident set size in KiB (`ru_maxrss` from `wait4`; see [`Usage`]).
    pub max_rss_kb: u64,
    /// CPU time, user plus system (`ru_utime + ru_stime` from `wait4`).
    pub cpu: Duration,
    /// Output chunks read from the process (stdout and stderr), with when each arrived.
    pub output: Vec<(Instant, String)>,
}

impl StageRun {
    /// The longest time without output between the first chunk that contains `from` and
    /// the first later one that contains `to` (both inclusive), or `None` if either is
    /// missing.
    pub fn longest_output_gap(&self, from: &str, to: &str) -> Option<Duration> {
        let start = self.output.iter().position(|(_, t)| t.contains(from))?;
        let end = start
            + self.output[start..]
                .iter()
                .position(|(_, t)| t.contains(to))?;
        Some(
            self.output[start..=end]
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .max()
                .unwrap_or_default(),
        )
    }
}

mod exec;
mod script;
mod usage;

use exec::{Ctx, Exec};
pub use script::{ansi_c_quote, runner_script};
pub use usage::{Usage, try_wait_usage, wait_usage};

/// The outcome of a job.
#[derive(Clone, Debug)]
pub struct JobResult {
    /// Final status.
    pub status: JobStatus,
    /// Everything the driver printed (the job log), with the runner's own lines.
    pub log: String,
    /// Every driver process, in order.
    pub stages: Vec<StageRun>,
    /// The config stage's stdout.
    pub config_output: String,
}

impl JobResult {
    /// The runs of stage `name`.
    pub fn stage(&self, name: &str) -> Vec<&StageRun> {
        self.stages.iter().filter(|s| s.name == name).collect()
    }
}

/// Runs jobs through a driver binary.
#[derive(Clone, Debug)]
pub struct RunnerEmu {
    /// The driver binary.
    pub driver: PathBuf,
    /// Arguments before the stage (`--config FILE`).
    pub args: Vec<String>,
    /// Extra environment for every driver process (AWS endpoint...).
    pub env: Vec<(String, String)>,
    /// `builds_dir`.
    pub builds_dir: String,
    /// The driver's metadata directory (for [`KillPoint::RecordPhase`]).
    pub metadata_dir: Option<PathBuf>,
}

impl RunnerEmu {
    /// An emulator for `driver` with `--config config`.
    pub fn new(driver: &Path, config: &Path, env: Vec<(String, String)>) -> RunnerEmu {
        RunnerEmu {
            driver: driver.to_owned(),
            args: vec!["--config".into(), config.display().to_string()],
            env,
            builds_dir: "/tmp/builds".into(),
            metadata_dir: None,
        }
    }

    /// The driver process of one stage of `job`, exactly as [`RunnerEmu::run`] starts it:
    /// `driver args... stage_args...` in `dir` (the executor's temporary directory, where
    /// the job response file is written now), with the runner's environment and the job's
    /// `CUSTOM_ENV_*` variables, stdin from `/dev/null`, stdout and stderr piped, in its own
    /// process group. For benchmarks: set [`RunnerEmu::driver`] to another program (e.g.
    /// `/bin/true`) for a baseline started the same way.
    pub fn stage_command(&self, job: &Job, dir: &Path, stage_args: &[&str]) -> Command {
        self.command(&Ctx::new(dir, job), stage_args)
    }

    fn command(&self, ctx: &Ctx, stage_args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.driver);
        cmd.args(&self.args)
            .args(stage_args)
            .current_dir(&ctx.dir)
            .env("TMPDIR", &ctx.dir)
            .env("BUILD_FAILURE_EXIT_CODE", "1")
            .env("SYSTEM_FAILURE_EXIT_CODE", "2")
            .env("BUILD_EXIT_CODE_FILE", &ctx.build_exit_code_file)
            .env("JOB_RESPONSE_FILE", &ctx.response_file)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(ctx.custom_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Runs `job` to the end.
    pub fn run(&self, mut job: Job) -> JobResult {
        let mut r = Exec {
            emu: self,
            log: Arc::new(Mutex::new(String::new())),
            stages: Vec::new(),
            on_output: std::mem::take(&mut job.on_output),
            cancelled: false,
        };
        let mut config_output = String::new();
        let status = r.job(&mut job, &mut config_output);
        let log = r.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        JobResult {
            status,
            log,
            stages: r.stages,
            config_output,
        }
    }
}
