//! `demo`: runs one sample CI job through the real `fargate` binary, exactly as gitlab-runner
//! drives it (config, prepare, every run stage, cleanup; one process per stage), against a
//! local Fargate (moto's ECS emulator plus one real OpenSSH `sshd` per task on the task's
//! loopback IP). Prints the job log, a per-stage summary and the job status, then stops
//! everything it started. Nothing leaves the loopback interface; no AWS account is used.
//!
//! `scripts/demo` installs the dependencies, builds this binary and runs it.
//!
//! Signals: the binary re-executes itself as a worker in a process group of its own, so a
//! Ctrl-C at the terminal reaches only this supervisor, not moto or the sshds. The supervisor
//! forwards SIGINT/SIGTERM/SIGHUP to the worker, which cancels the job the way gitlab-runner
//! does (SIGTERM to the running stage's process group, then cleanup) and stops the local
//! Fargate. A second signal stops at once (SIGKILL to the stages). The worker also gets
//! SIGTERM if the supervisor dies.
//!
//! Exit status: 0 when the job succeeded, 1 when it failed, 130 when interrupted, 2 when the
//! demo itself could not run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_testkit::runner::{Job, JobResult, JobStatus, RunnerEmu};

mod procs;

use procs::{Proc, Watch, alive, read_proc};

/// Set in the worker's environment by the supervisor.
const WORKER_ENV: &str = "FARGATE_DEMO_WORKER";
/// Exit status when interrupted (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;
/// Exit status when the demo could not run.
const SETUP_ERROR: u8 = 2;

const USAGE: &str = "\
usage: demo [--fargate PATH] [--fail] [--sleep SECS] [--image IMAGE] [--warm]

Runs a sample CI job through the real `fargate` binary, exactly as gitlab-runner would,
against a local Fargate (moto's ECS emulator plus one real sshd per task, on loopback), prints
the job log, a per-stage summary and the job status, and stops everything it started.

  --fargate PATH  the driver binary (default: `fargate` next to this binary)
  --fail          make the job's script fail with exit code 3 (a script failure)
  --sleep SECS    add a step that sleeps SECS seconds (time to try Ctrl-C)
  --image IMAGE   give the job `image: IMAGE` with job images enabled: get_sources runs in
                  the helper container, the scripts in the job container (the local
                  Fargate's second sshd)
  --warm          with a warm pool of one task: `fargate pool fill --wait` before the
                  job (which then takes that task and swaps its key), `pool drain` after
  -h, --help      this text

Needs root (sshd logs the job in as root), /usr/sbin/sshd and moto 5.2.5
(FARGATE_MOTO_PYTHON); `scripts/demo` installs them and builds everything.
Ctrl-C cancels the job as gitlab-runner does (then cleanup); a second Ctrl-C stops at once.
Exit status: 0 job succeeded, 1 job failed, 130 interrupted, 2 demo could not run.";

/// Signals received so far (SIGINT, SIGTERM, SIGHUP).
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_signal: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Counts SIGINT, SIGTERM and SIGHUP in [`SIGNALS`] instead of dying of them.
fn count_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction(2) with a zeroed (valid) struct and a handler that only touches
        // an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Writes a line to stdout; a closed stdout is not a reason to leave processes behind.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Writes a line to stderr.
fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[derive(Debug, Default)]
struct Options {
    fargate: Option<PathBuf>,
    fail: bool,
    sleep: Option<u32>,
    image: Option<String>,
    warm: bool,
    help: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut o = Options::default();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--fargate" => {
                    let path = args.next().ok_or("--fargate needs a path")?;
                    o.fargate = Some(PathBuf::from(path));
                }
                "--fail" => o.fail = true,
                "--warm" => o.warm = true,
                "--image" => {
                    o.image = Some(args.next().ok_or("--image needs an image name")?);
                }
                "--sleep" => {
                    let secs = args.next().ok_or("--sleep needs a number of seconds")?;
                    o.sleep = Some(
                        secs.parse()
                            .map_err(|_| format!("--sleep {secs}: not a number of seconds"))?,
                    );
                }
                "-h" | "--help" => o.help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            err(&format!("demo: {e}\n\n{USAGE}"));
            return ExitCode::from(SETUP_ERROR);
        }
    };
    if options.help {
        out(USAGE);
        return ExitCode::SUCCESS;
    }
    if std::env::var_os(WORKER_ENV).is_some() {
        match worker(&options) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                err(&format!("demo: error: {e}"));
                ExitCode::from(SETUP_ERROR)
            }
        }
    } else {
        supervisor()
    }
}

/// Re-executes this binary as the worker in a process group of its own and forwards
/// signals to it; exits with its status.
fn supervisor() -> ExitCode {
    count_signals();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            err(&format!(
                "demo: error: cannot find this program's path: {e}"
            ));
            return ExitCode::from(SETUP_ERROR);
        }
    };
    // SAFETY: getpid(2) cannot fail.
    let me = unsafe { libc::getpid() };
    let mut command = Command::new(&exe);
    command
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, "1")
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid, signal) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The worker is told (SIGTERM: cancel and clean up) when the supervisor dies.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() != me {
                return Err(std::io::Error::other("the demo supervisor is gone"));
            }
            // Out of the terminal's foreground group: writing to it must not stop us.
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            Ok(())
        });
    }
    // Spawned from the main thread, which lives as long as the process: PR_SET_PDEATHSIG
    // fires when the spawning thread exits.
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            err(&format!("demo: error: cannot start {}: {e}", exe.display()));
            return ExitCode::from(SETUP_ERROR);
        }
    };
    let mut forwarded = 0;
    loop {
        let received = SIGNALS.load(Ordering::SeqCst);
        while forwarded < received {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            forwarded += 1;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
            }
            Ok(None) => {}
            Err(e) => {
                err(&format!("demo: error: waiting for the worker: {e}"));
                return ExitCode::from(SETUP_ERROR);
            }
        }
        // Polling our child and the signal counter.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The driver binary: `--fargate`, else `fargate` next to this program.
fn fargate_binary(options: &Options) -> Result<PathBuf, String> {
    let path = match &options.fargate {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("fargate"),
    };
    if !path.is_file() {
        return Err(format!(
            "the fargate binary {} does not exist: build it with `cargo build -p fargate-cli` \
             (scripts/demo does) or pass --fargate PATH",
            path.display()
        ));
    }
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What the local Fargate needs, with the command that provides it.
fn preflight() -> Result<(), String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root: the task's sshd logs the job in as root (run with sudo)".to_owned());
    }
    if !Path::new(fargate_testkit::sshd::SSHD_PATH).is_file() {
        missing.push(format!(
            "the OpenSSH server ({}): {}",
            fargate_testkit::sshd::SSHD_PATH,
            fargate_testkit::sshd::INSTALL_HINT
        ));
    }
    let python = std::env::var_os("FARGATE_MOTO_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let has_moto = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_moto {
        missing.push(format!(
            "moto {} for {} (set FARGATE_MOTO_PYTHON to a Python that has it): {}",
            fargate_testkit::moto::MOTO_VERSION,
            python.display(),
            fargate_testkit::moto::MOTO_INSTALL
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the local Fargate cannot start; missing:\n  - {}\n`scripts/demo` installs all of this.",
            missing.join("\n  - ")
        ))
    }
}

/// The sample job.
fn sample_job(options: &Options) -> Job {
    let mut script = vec![
        r#"echo "Hello from job $CI_JOB_NAME on $CI_COMMIT_REF_NAME: $GREETING""#.to_owned(),
        "uname -a".to_owned(),
        r#"echo "user $(id -un), shell $BASH_VERSION, in $PWD""#.to_owned(),
        "env | grep -E '^(CI_|GREETING)' | sort".to_owned(),
        "mkdir -p build && for m in lexer parser codegen; do echo \"compiling $m … ok\"; done".to_owned(),
        r#"printf '#!/bin/sh\necho "Grüße aus dem Build ✓"\n' > build/hello && chmod +x build/hello"#.to_owned(),
        "./build/hello".to_owned(),
        "./build/hello | grep -q Grüße && echo 'test result: ok. 3 passed; 0 failed ✅'".to_owned(),
    ];
    if let Some(secs) = options.sleep {
        script.push(format!("echo 'sleeping {secs} s (try Ctrl-C)'"));
        script.push(format!("sleep {secs}"));
    }
    if options.fail {
        script.push("echo 'failing on purpose (--fail)'".to_owned());
        script.push("exit 3".to_owned());
    }
    let lines: Vec<&str> = script.iter().map(String::as_str).collect();
    let mut job = Job::new(4242, &lines);
    job.variables = vec![
        ("CI_JOB_NAME".into(), "demo".into()),
        ("CI_COMMIT_REF_NAME".into(), "main".into()),
        ("GREETING".into(), "héllo wörld, 你好 ✓".into()),
    ];
    job.after_script = vec![r#"echo "after_script: the job's status is $CI_JOB_STATUS""#.into()];
    if let Some(image) = &options.image {
        job.image = Some(serde_json::json!({ "name": image }));
        job.sources = vec![
            r#"echo "sources checked out in the $FARGATE_CONTAINER container" > CHECKOUT"#.into(),
        ];
        job.script.insert(0, "cat CHECKOUT".into());
        job.script.insert(
            1,
            r#"echo "this script runs in the $FARGATE_CONTAINER container""#.into(),
        );
    }
    job
}
fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs the demo; returns the exit status.
fn worker(options: &Options) -> Result<u8, String> {
    count_signals();
    let started = Instant::now();
    let fargate = fargate_binary(options)?;
    preflight()?;
    // SAFETY: getpid(2) cannot fail.
    let me = unsafe { libc::getpid() };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;

    out("== fargate demo: one CI job through the real driver, against a local Fargate ==");
    out(&format!("driver:        {}", fargate.display()));
    out("local Fargate: moto's ECS emulator + one OpenSSH sshd per task on its loopback IP");
    let local_started = Instant::now();
    let local = rt
        .block_on(async { tokio::spawn(LocalFargate::start(LocalFargateOptions::default())).await })
        .map_err(|e| format!("the local Fargate did not start ({e}); see the message above"))?;
    out(&format!(
        "ECS endpoint:  {} (cluster {})",
        local.moto().endpoint_url(),
        local.ecs.cluster
    ));
    out(&format!(
        "task IPs from: {} (sshd on port 2222 of each)",
        local.moto().task_cidr()
    ));
    out(&format!("started in:    {}", secs(local_started.elapsed())));

    let mut watch = Watch {
        me,
        fargate: fargate.clone(),
        seen: BTreeMap::new(),
        stages: BTreeSet::new(),
        termed: BTreeSet::new(),
        handled_signals: 0,
        last_full_scan: None,
    };
    watch.poll();

    let dir = tempfile::Builder::new()
        .prefix("fargate-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let metadata = dir.path().join("metadata");
    let config = dir.path().join("fargate.toml");
    let mut toml = local.fargate_toml(&metadata);
    if let Some(image) = &options.image {
        // Job images on: this image only, the job container's SSH server on its own port.
        toml.push_str(&format!(
            "[Fargate.Images]\n  AllowedImages = [{image:?}]\n  JobSSHPort = 2223\n"
        ));
    }
    if options.warm {
        toml.push_str("[Fargate.WarmPool]\n  Size = 1\n");
    }
    std::fs::write(&config, toml).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    // `fargate pool <action>`, its output shown.
    let pool = |action: &[&str]| -> Result<(), String> {
        out(&format!("$ fargate pool {}", action.join(" ")));
        let output = Command::new(&fargate)
            .arg("--config")
            .arg(&config)
            .arg("pool")
            .args(action)
            .envs(local.driver_env())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run fargate pool: {e}"))?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            out(&format!("  {line}"));
        }
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            err(&format!("  {line}"));
        }
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("fargate pool {} failed", action.join(" ")))
        }
    };
    let mut emu = RunnerEmu::new(&fargate, &config, local.driver_env());
    emu.metadata_dir = Some(metadata);
    // The "task" is an sshd on this machine: keep the job's files in our temporary directory,
    // in a builds directory that the job's login user owns (the directory itself is 0700).
    let builds = dir.path().join("builds");
    std::fs::create_dir(&builds).map_err(|e| format!("cannot create {}: {e}", builds.display()))?;
    let owned = Command::new("chown")
        .arg(local.ssh_username())
        .arg(&builds)
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if !owned.success() {
        return Err(format!(
            "cannot give {} to the job's user",
            builds.display()
        ));
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).map_err(|e| {
        format!(
            "cannot open {} to the job's user: {e}",
            dir.path().display()
        )
    })?;
    emu.builds_dir = builds.display().to_string();

    let mut result: Option<JobResult> = None;
    let mut job_wall = Duration::ZERO;
    if SIGNALS.load(Ordering::SeqCst) == 0 {
        out(&format!("config:        {}", config.display()));
        out("");
        if options.warm {
            pool(&["fill", "--wait"])?;
            out("");
        }
        out("Running job 4242 as gitlab-runner would (one driver process per stage):");
        let job = sample_job(options);
        let job_started = Instant::now();
        let runner = std::thread::spawn(move || emu.run(job));
        while !runner.is_finished() {
            watch.poll();
            // Polling our child processes for progress and for signals.
            std::thread::sleep(Duration::from_millis(5));
        }
        job_wall = job_started.elapsed();
        result = Some(
            runner
                .join()
                .map_err(|_| "the runner emulator panicked (see above)".to_owned())?,
        );
    }
    let interrupted = SIGNALS.load(Ordering::SeqCst) > 0;

    if let Some(result) = &result {
        report(result, job_wall, interrupted);
        if options.warm && SIGNALS.load(Ordering::SeqCst) < 2 {
            // The task the job's prepare started for the pool.
            pool(&["drain"])?;
        }
        if SIGNALS.load(Ordering::SeqCst) < 2 {
            let running = rt.block_on(local.running_tasks());
            if running.is_empty() {
                out("Tasks still running in the local Fargate after cleanup: none");
            } else {
                out(&format!(
                    "Tasks still running in the local Fargate after cleanup: {running:?}"
                ));
            }
        }
        out("Local Fargate events:");
        for event in local.events() {
            out(&format!("  {event}"));
        }
    }

    // Teardown: moto and every sshd (with its sessions) go with the local Fargate.
    watch.poll();
    // moto and the sshds: our children that are not driver processes.
    let own_comm = read_proc(me).map(|p| p.comm).unwrap_or_default();
    let driver_comm = fargate
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect::<String>());
    let server_list: Vec<String> = watch
        .seen
        .iter()
        .filter(|(pid, p)| p.ppid == me && !watch.stages.contains(pid))
        .filter(|(_, p)| p.comm != own_comm && Some(p.comm.as_str()) != driver_comm.as_deref())
        .map(|(pid, p)| format!("{} pid {pid}", p.comm))
        .collect();
    let teardown = Instant::now();
    drop(local);
    drop(dir);
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<(i32, Proc)>;
    loop {
        left = watch
            .seen
            .iter()
            .filter(|(pid, p)| alive(**pid, p))
            .map(|(pid, p)| (*pid, p.clone()))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        // Waiting for processes we stopped to go away.
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, p) in &left {
        err(&format!(
            "[demo] warning: {} (pid {pid}) was still running after teardown: SIGKILL",
            p.comm
        ));
        // SAFETY: kill(2) on a process this demo started (same PID and start time).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    out(&format!(
        "Stopped the local Fargate ({}) in {}; of the {} processes the demo started, {} left running.",
        server_list.join(", "),
        secs(teardown.elapsed()),
        watch.seen.len(),
        if left.is_empty() {
            "none".to_owned()
        } else {
            format!("{} were", left.len())
        },
    ));
    out(&format!("Demo finished in {}.", secs(started.elapsed())));

    Ok(match result.map(|r| r.status) {
        _ if interrupted => INTERRUPTED,
        Some(JobStatus::Success) => 0,
        _ => 1,
    })
}

/// Prints the job log, the per-stage table and the job status.
fn report(result: &JobResult, job_wall: Duration, interrupted: bool) {
    out("");
    out("---------------------------------- job log ----------------------------------");
    out(result.log.trim_end());
    out("-----------------------------------------------------------------------------");
    out("");
    out(&format!(
        "{:<32} {:>6} {:>10}",
        "stage (driver process)", "exit", "wall"
    ));
    for s in &result.stages {
        let code = s
            .exit_code
            .map_or_else(|| "killed".to_owned(), |c| c.to_string());
        out(&format!("{:<32} {:>6} {:>10}", s.name, code, secs(s.wall)));
    }
    out(&format!("{:<32} {:>6} {:>10}", "total", "", secs(job_wall)));
    out("");
    let status = match &result.status {
        _ if interrupted => "Job canceled (interrupted)".to_owned(),
        JobStatus::Success => "Job succeeded".to_owned(),
        JobStatus::ScriptFailure(code) => {
            format!("Job failed: the script exited with {code} (script_failure)")
        }
        JobStatus::SystemFailure(stage) => {
            format!("Job failed: system failure in {stage} (runner_system_failure)")
        }
        JobStatus::Canceled => "Job canceled".to_owned(),
    };
    out(&status);
    out("");
}
