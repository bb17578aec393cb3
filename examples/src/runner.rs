//! A gitlab-runner custom executor emulator: drives a driver binary through one job the way
//! gitlab-runner 17.9+ does (`PROTOCOL.md` §1): a new process per stage, a temporary
//! directory as working directory, the runner's variables, `CUSTOM_ENV_*` job variables,
//! stdin from `/dev/null`, its own process group, bash stage scripts written like the
//! runner's, prepare retried up to three times with a cleanup after each failed attempt,
//! SIGTERM then SIGKILL on cancel, and cleanup at the end.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
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
            on_output: Vec::new(),
            kill_prepare: None,
            graceful_kill: Duration::from_secs(30),
        }
    }
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

/// Resource usage of one exited child process, from `wait4(2)`.
///
/// Linux caveat: `ru_maxrss` of a child is the maximum over its whole life *including the
/// address space it had before `execve`*; a child started with `vfork`/`posix_spawn` (as
/// `std::process::Command` does) shares its parent's address space until then, so the
/// figure is never below the parent's own peak RSS at spawn time. Compare against a
/// trivial program (`/bin/true`) spawned the same way to see that floor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kb: u64,
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
}

impl Usage {
    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    fn from_rusage(ru: &libc::rusage) -> Usage {
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Usage {
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
        }
    }
}

/// `wait4(pid, WNOHANG)`: `Ok(None)` while the child runs, else its exit status and usage.
/// Once this returned `Some`, the child is reaped: do not wait for it again (e.g. with
/// [`std::process::Child::wait`]).
///
/// # Errors
/// The `wait4` error (`ECHILD` when `pid` is not an unwaited child of this process).
pub fn try_wait_usage(pid: u32) -> std::io::Result<Option<(std::process::ExitStatus, Usage)>> {
    wait_usage_flags(pid, libc::WNOHANG)
}

/// `wait4(pid, 0)`: blocks until the child exits; returns its exit status and usage. The
/// child is reaped: do not wait for it again.
///
/// # Errors
/// The `wait4` error (`ECHILD` when `pid` is not an unwaited child of this process).
pub fn wait_usage(pid: u32) -> std::io::Result<(std::process::ExitStatus, Usage)> {
    loop {
        match wait_usage_flags(pid, 0) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn wait_usage_flags(
    pid: u32,
    flags: libc::c_int,
) -> std::io::Result<Option<(std::process::ExitStatus, Usage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `ru` are valid, writable, and live for the call.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut ru) };
    match r {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some((
            std::process::ExitStatus::from_raw(status),
            Usage::from_rusage(&ru),
        ))),
    }
}

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

const RUN_STAGES_BEFORE: &[&str] = &[
    "prepare_script",
    "get_sources",
    "restore_cache",
    "download_artifacts",
];

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

struct Exec<'a> {
    emu: &'a RunnerEmu,
    log: Arc<Mutex<String>>,
    stages: Vec<StageRun>,
    on_output: Vec<(String, OnOutput)>,
    cancelled: bool,
}

impl Exec<'_> {
    fn say(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_str(line);
        log.push('\n');
    }

    fn job(&mut self, job: &mut Job, config_output: &mut String) -> JobStatus {
        let mut tmp = None;
        let mut build_error = None;
        for attempt in 1..=3 {
            // A fresh executor, and so a fresh temporary directory, per attempt.
            let dir = match tempfile::Builder::new().prefix("custom-executor").tempdir() {
                Ok(d) => d,
                Err(e) => return JobStatus::SystemFailure(format!("temp dir: {e}")),
            };
            let ctx = Ctx::new(dir.path(), job);
            let (code, out) = self.spawn(
                "config",
                &["custom", "config"],
                &ctx,
                None,
                job.graceful_kill,
            );
            *config_output = out;
            if code != Some(0) {
                self.say(&format!("Preparation failed: config exited {code:?}"));
                continue;
            }
            self.say("Using Custom executor...");
            let kill = if attempt == 1 {
                job.kill_prepare.clone()
            } else {
                None
            };
            let (code, _) = self.spawn(
                "prepare",
                &["custom", "prepare"],
                &ctx,
                kill,
                job.graceful_kill,
            );
            if code == Some(0) {
                tmp = Some((dir, ctx));
                break;
            }
            let written_code = std::fs::read_to_string(&ctx.build_exit_code_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            self.say(&format!("Preparation failed: exit code {code:?}"));
            // The runner cleans up every failed attempt.
            self.spawn(
                "cleanup",
                &["custom", "cleanup"],
                &ctx,
                None,
                job.graceful_kill,
            );
            if code == Some(1) {
                // A build error is not retried: the job fails as a script failure.
                build_error = Some(written_code.unwrap_or(1));
                break;
            }
            if self.cancelled {
                break;
            }
            self.say("Will be retried in 3s ...");
        }
        let Some((_dir, ctx)) = tmp else {
            return match (self.cancelled, build_error) {
                (true, _) => JobStatus::Canceled,
                (false, Some(code)) => JobStatus::ScriptFailure(code),
                (false, None) => JobStatus::SystemFailure("prepare".into()),
            };
        };
        let status = self.run_stages(job, &ctx);
        self.spawn(
            "cleanup",
            &["custom", "cleanup"],
            &ctx,
            None,
            job.graceful_kill,
        );
        status
    }

    fn run_stages(&mut self, job: &Job, ctx: &Ctx) -> JobStatus {
        for stage in RUN_STAGES_BEFORE {
            let body = format!("echo {}", shell_quote(&format!("Running {stage}")));
            if let Err(status) = self.run_stage(stage, &body, ctx, job) {
                return status;
            }
        }
        let mut body = String::new();
        for (k, v) in &job.variables {
            let _ = writeln!(body, "export {k}={}", ansi_c_quote(v));
        }
        let _ = writeln!(
            body,
            "mkdir -p {0} && cd {0}",
            shell_quote(&self.emu.builds_dir)
        );
        for line in &job.script {
            let _ = writeln!(body, "echo {}", ansi_c_quote(&format!("$ {line}")));
            let _ = writeln!(body, "{line}");
        }
        let user = self.run_stage("build_script", &body, ctx, job);
        if !job.after_script.is_empty() {
            let mut body = String::new();
            let status = if user.is_ok() { "success" } else { "failed" };
            let _ = writeln!(body, "export CI_JOB_STATUS={status}");
            for line in &job.after_script {
                let _ = writeln!(body, "{line}");
            }
            // after_script errors do not fail the job.
            let _ = self.run_stage("after_script", &body, ctx, job);
        }
        let suffix = if user.is_ok() { "" } else { "_on_failure" };
        for stage in [
            format!("archive_cache{suffix}"),
            format!(
                "upload_artifacts_on_{}",
                if user.is_ok() { "success" } else { "failure" }
            ),
        ] {
            let _ = self.run_stage(&stage, "echo done", ctx, job);
        }
        let _ = self.run_stage("cleanup_file_variables", "true", ctx, job);
        match user {
            Ok(()) => JobStatus::Success,
            Err(status) => status,
        }
    }

    fn run_stage(
        &mut self,
        stage: &str,
        body: &str,
        ctx: &Ctx,
        job: &Job,
    ) -> Result<(), JobStatus> {
        if self.cancelled {
            return Err(JobStatus::Canceled);
        }
        let dir = ctx.dir.join(format!("script{}", self.stages.len()));
        let script = dir.join("script");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&script, runner_script(body)))
            .and_then(|()| {
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))
            });
        if let Err(e) = written {
            return Err(JobStatus::SystemFailure(format!(
                "writing {stage} script: {e}"
            )));
        }
        let script_arg = script.display().to_string();
        let (code, _) = self.spawn(
            stage,
            &["custom", "run", &script_arg, stage],
            ctx,
            None,
            job.graceful_kill,
        );
        match code {
            Some(0) => Ok(()),
            _ if self.cancelled => Err(JobStatus::Canceled),
            Some(1) => {
                let code = std::fs::read_to_string(&ctx.build_exit_code_file)
                    .ok()
                    .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
                    .unwrap_or(1);
                Err(JobStatus::ScriptFailure(code))
            }
            _ => Err(JobStatus::SystemFailure(stage.to_owned())),
        }
    }

    /// Runs one driver process; returns its exit code (None if killed) and its stdout.
    fn spawn(
        &mut self,
        name: &str,
        stage_args: &[&str],
        ctx: &Ctx,
        kill: Option<KillPoint>,
        graceful: Duration,
    ) -> (Option<i32>, String) {
        let _ = std::fs::remove_file(&ctx.build_exit_code_file);
        let mut cmd = self.emu.command(ctx, stage_args);
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.say(&format!("failed to start command: {e}"));
                return (Some(2), String::new());
            }
        };
        let pid = child.id() as libc::pid_t;
        let stdout_buf = Arc::new(Mutex::new(String::new()));
        let chunks: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .map(|(i, mut s)| {
            let log = self.log.clone();
            let chunks = chunks.clone();
            let capture = (i == 0 && name == "config").then(|| stdout_buf.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    chunks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((Instant::now(), text.to_string()));
                    match &capture {
                        Some(c) => c.lock().unwrap_or_else(|p| p.into_inner()).push_str(&text),
                        None => log
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push_str(&text),
                    }
                }
            })
        })
        .collect();
        let mut term_at: Option<Instant> = None;
        let mut cancel_at: Option<Instant> = None;
        let mut killed = false;
        let mut usage = Usage::default();
        let mut poll = Duration::from_millis(1);
        // wait4 rather than `child.try_wait()`, for the resource usage; once it has reaped
        // the child, `child` is only dropped (dropping a `Child` does not wait).
        let status = loop {
            match try_wait_usage(child.id()) {
                Ok(Some((status, u))) => {
                    usage = u;
                    break Some(status);
                }
                Ok(None) => {}
                Err(_) => break None,
            }
            if let Some(point) = &kill
                && !killed
                && should_kill(point, started, self.emu.metadata_dir.as_deref())
            {
                // SAFETY: plain kill(2) on the child's process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                killed = true;
                self.say(&format!("(emulator: SIGKILL to {name} at {point:?})"));
            }
            if term_at.is_none() && !self.on_output.is_empty() {
                let seen: Vec<usize> = {
                    let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                    self.on_output
                        .iter()
                        .enumerate()
                        .filter(|(_, (marker, _))| log.contains(marker.as_str()))
                        .map(|(i, _)| i)
                        .collect()
                };
                for i in seen.into_iter().rev() {
                    match self.on_output.remove(i).1 {
                        OnOutput::Cancel => cancel_at = Some(Instant::now()),
                        OnOutput::CancelAfter(d) => cancel_at = Some(Instant::now() + d),
                        OnOutput::Call(f) => f(),
                    }
                }
            }
            if term_at.is_none()
                && let Some(at) = cancel_at
                && Instant::now() >= at
            {
                self.cancelled = true;
                self.say("(emulator: job cancelled, SIGTERM to the stage)");
                // SAFETY: plain kill(2) on the child's process group.
                unsafe { libc::kill(-pid, libc::SIGTERM) };
                term_at = Some(Instant::now());
            }
            if let Some(t) = term_at
                && t.elapsed() > graceful
            {
                // SAFETY: plain kill(2) on the child's process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            // Polling a child process: bounded by the stage itself. 1 ms at first, doubling up
            // to 20 ms, so that short stages (config: a few ms) get an accurate wall time.
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_millis(20));
        };
        for r in readers {
            let _ = r.join();
        }
        let exit_code = status.and_then(|s| {
            s.code()
                .or_else(|| s.signal().map(|_| -1))
                .filter(|c| *c >= 0)
        });
        self.stages.push(StageRun {
            name: name.to_owned(),
            exit_code,
            wall: started.elapsed(),
            exit_after_term: term_at.map(|t| t.elapsed()),
            max_rss_kb: usage.max_rss_kb,
            cpu: usage.cpu(),
            output: std::mem::take(&mut *chunks.lock().unwrap_or_else(|p| p.into_inner())),
        });
        let out = stdout_buf.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (exit_code, out)
    }
}

fn should_kill(point: &KillPoint, started: Instant, metadata_dir: Option<&Path>) -> bool {
    match point {
        KillPoint::After(d) => started.elapsed() >= *d,
        KillPoint::RecordPhase(phase) => metadata_dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .any(|s| s.contains(&format!("\"phase\": \"{phase}\""))),
    }
}

struct Ctx {
    dir: PathBuf,
    build_exit_code_file: PathBuf,
    response_file: PathBuf,
    custom_env: Vec<(String, String)>,
}

impl Ctx {
    fn new(dir: &Path, job: &Job) -> Ctx {
        let response_file = dir.join("response.json");
        // What GitLab sends, trimmed: the job token is in it, and in the clone URL.
        let token = format!("glcbt-64_secret-of-job-{}", job.job_id);
        let repo = job
            .project_url
            .replacen("://", &format!("://gitlab-ci-token:{token}@"), 1);
        let payload = serde_json::json!({
            "id": job.job_id,
            "token": token,
            "allow_git_fetch": true,
            "job_info": {
                "id": job.job_id,
                "name": job.name,
                "stage": "test",
                "project_id": job.project_id,
                "project_name": job.project_url.rsplit('/').next().unwrap_or_default(),
            },
            "git_info": {
                "repo_url": format!("{repo}.git"),
                "ref": "main",
                "sha": "0123456789abcdef0123456789abcdef01234567",
                "ref_type": "branch",
            },
            "runner_info": { "timeout": 3600 },
            "variables": job.variables.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v, "public": true})).collect::<Vec<_>>(),
            "image": null,
            "services": [],
        });
        let _ = std::fs::write(&response_file, payload.to_string());
        let mut custom_env = vec![
            ("CUSTOM_ENV_CI_JOB_ID".to_owned(), job.job_id.to_string()),
            (
                "CUSTOM_ENV_CI_PIPELINE_ID".to_owned(),
                job.pipeline_id.to_string(),
            ),
            (
                "CUSTOM_ENV_CI_PROJECT_URL".to_owned(),
                job.project_url.clone(),
            ),
            (
                "CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN".to_owned(),
                job.short_token.clone(),
            ),
            ("CUSTOM_ENV_CI_JOB_SERVICES".to_owned(), String::new()),
        ];
        custom_env.extend(
            job.variables
                .iter()
                .map(|(k, v)| (format!("CUSTOM_ENV_{k}"), v.clone())),
        );
        Ctx {
            dir: dir.to_owned(),
            build_exit_code_file: dir.join("build_exit_code"),
            response_file,
            custom_env,
        }
    }
}

/// A stage script as gitlab-runner's bash shell writes it (runner 17.4+).
pub fn runner_script(body: &str) -> String {
    format!(
        "#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\nset -eo pipefail\nset +o noclobber\n( trap 'exit 1' TERM; eval {} ) < /dev/null\nexit 0\n",
        ansi_c_quote(body)
    )
}

/// Bash `$'...'` quoting, as the runner's `ShellEscape` does.
pub fn ansi_c_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
