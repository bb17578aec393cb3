//! One job's run through the driver: stages, output watching, cancel and kill.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::script::shell_quote;
use super::{
    Job, JobStatus, KillPoint, OnOutput, RunnerEmu, StageRun, Usage, ansi_c_quote, runner_script,
    try_wait_usage,
};

const RUN_STAGES_BEFORE: &[&str] = &[
    "prepare_script",
    "get_sources",
    "restore_cache",
    "download_artifacts",
];

pub(super) struct Exec<'a> {
    pub(super) emu: &'a RunnerEmu,
    pub(super) log: Arc<Mutex<String>>,
    pub(super) stages: Vec<StageRun>,
    pub(super) on_output: Vec<(String, OnOutput)>,
    pub(super) cancelled: bool,
}

impl Exec<'_> {
    fn say(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_str(line);
        log.push('\n');
    }

    /// The cleanup stage (after every failed prepare attempt and at the end).
    fn cleanup(&mut self, ctx: &Ctx, job: &Job) {
        self.spawn(
            "cleanup",
            &["custom", "cleanup"],
            ctx,
            None,
            job.graceful_kill,
        );
    }

    pub(super) fn job(&mut self, job: &mut Job, config_output: &mut String) -> JobStatus {
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
            self.cleanup(&ctx, job);
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
        self.cleanup(&ctx, job);
        status
    }

    fn run_stages(&mut self, job: &Job, ctx: &Ctx) -> JobStatus {
        for stage in RUN_STAGES_BEFORE {
            let mut body = format!("echo {}", shell_quote(&format!("Running {stage}")));
            if *stage == "get_sources" && !job.sources.is_empty() {
                let _ = write!(
                    body,
                    "\nmkdir -p {0} && cd {0}\n{1}",
                    shell_quote(&self.emu.builds_dir),
                    job.sources.join("\n")
                );
            }
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
        // Calls on output the stage printed just before it ended (the loop above may have
        // seen the exit first) run now, before the next stage starts.
        if !self.on_output.is_empty() {
            let seen: Vec<usize> = {
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                self.on_output
                    .iter()
                    .enumerate()
                    .filter(|(_, (marker, action))| {
                        matches!(action, OnOutput::Call(_)) && log.contains(marker.as_str())
                    })
                    .map(|(i, _)| i)
                    .collect()
            };
            for i in seen.into_iter().rev() {
                if let OnOutput::Call(f) = self.on_output.remove(i).1 {
                    f();
                }
            }
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
        KillPoint::RecordPhase(phase) => {
            any_record(metadata_dir, &format!("\"phase\": \"{phase}\""))
        }
        KillPoint::RecordText(text) => any_record(metadata_dir, text),
    }
}

/// Whether a record in `metadata_dir` contains `text`.
fn any_record(metadata_dir: Option<&Path>, text: &str) -> bool {
    metadata_dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|s| s.contains(text))
}

pub(super) struct Ctx {
    pub(super) dir: PathBuf,
    pub(super) build_exit_code_file: PathBuf,
    pub(super) response_file: PathBuf,
    pub(super) custom_env: Vec<(String, String)>,
}

impl Ctx {
    pub(super) fn new(dir: &Path, job: &Job) -> Ctx {
        let response_file = dir.join("response.json");
        // What GitLab sends, trimmed: the job token is in it, and in the clone URL.
        let token = super::job_token(job.job_id);
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
            "image": job.image,
            "services": job.services,
            "credentials": job.registries.iter().map(|url| serde_json::json!({"type": "registry", "url": url, "username": "gitlab-ci-token", "password": token})).collect::<Vec<_>>(),
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
