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
//! With `--fleet`, two runner hosts (`host-a` and `host-b`: two configurations with the same
//! `Namespace` and `[TaskMetadata] DynamoDBTable` on moto's DynamoDB, each with its own
//! `HostName` and metadata directory) share one warm pool of 2: host A fills it, each host
//! runs a job at once, and the summary says which host claimed which task.
//!
//! Exit status: 0 when the job (every job) succeeded, 1 when one failed, 130 when
//! interrupted, 2 when the demo itself could not run.

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
usage: demo [--fargate PATH] [--fail] [--sleep SECS] [--image IMAGE] [--warm | --fleet]

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
  --fleet         two runner hosts (host-a, host-b) on one DynamoDB table (moto's): host-a
                  creates it (`fargate store init`) and fills a warm pool of 2, each host
                  runs a job at once on a task of that pool; the summary says which host
                  claimed which task
  -h, --help      this text

Needs root (sshd logs the job in as root), /usr/sbin/sshd and moto 5.2.5
(FARGATE_MOTO_PYTHON); `scripts/demo` installs them and builds everything.
Ctrl-C cancels the job as gitlab-runner does (then cleanup); a second Ctrl-C stops at once.
Exit status: 0 job(s) succeeded, 1 a job failed, 130 interrupted, 2 demo could not run.";

/// The fleet's table (`--fleet`), in the local Fargate's moto.
const FLEET_TABLE: &str = "fargate-demo-fleet";

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
    fleet: bool,
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
                "--fleet" => o.fleet = true,
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
        if o.fleet && (o.warm || o.image.is_some()) {
            return Err(
                "--fleet has a warm pool of its own and runs jobs without an image: \
                        leave out --warm and --image"
                    .into(),
            );
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

/// The sample job, with id `job_id`.
fn sample_job(options: &Options, job_id: i64) -> Job {
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
    let mut job = Job::new(job_id, &lines);
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

    if options.fleet {
        out("== fargate demo: two runner hosts on one DynamoDB table, against a local Fargate ==");
    } else {
        out("== fargate demo: one CI job through the real driver, against a local Fargate ==");
    }
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
    let names: &[&str] = if options.fleet {
        &["host-a", "host-b"]
    } else {
        &["fargate"]
    };
    let mut hosts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        hosts.push(host_setup(options, &local, &fargate, dir.path(), name, i)?);
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).map_err(|e| {
        format!(
            "cannot open {} to the job's user: {e}",
            dir.path().display()
        )
    })?;
    // `fargate <args>` on `host`, its output shown unless `quiet`; its stdout.
    let command = |host: &Host, args: &[&str], quiet: bool| -> Result<String, String> {
        if !quiet {
            match host.fleet_name() {
                Some(name) => out(&format!(
                    "[{name}] $ fargate --config {name}.toml {}",
                    args.join(" ")
                )),
                None => out(&format!("$ fargate {}", args.join(" "))),
            }
        }
        let output = Command::new(&fargate)
            .arg("--config")
            .arg(&host.config)
            .args(args)
            .envs(local.driver_env())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run fargate {}: {e}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !quiet {
            for line in stdout.lines() {
                out(&format!("  {line}"));
            }
        }
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            err(&format!("  {line}"));
        }
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("fargate {} failed", args.join(" ")))
        }
    };

    let mut results: Vec<(JobResult, Duration)> = Vec::new();
    let mut pool_tasks = Vec::new();
    if SIGNALS.load(Ordering::SeqCst) == 0 {
        for host in &hosts {
            out(&format!("config:        {}", host.config.display()));
        }
        out("");
        if options.fleet {
            out(&format!(
                "Two runner hosts, one DynamoDB table ({FLEET_TABLE}, in moto) and one warm pool of 2:"
            ));
            command(&hosts[0], &["store", "init"], false)?;
            command(&hosts[0], &["pool", "fill", "--wait"], false)?;
            command(&hosts[1], &["pool", "status"], false)?;
            pool_tasks =
                pool_status_tasks(&command(&hosts[1], &["pool", "status", "--json"], true)?);
            out("");
            out(&format!(
                "Running job {} on host-a and job {} on host-b at once, as two gitlab-runner hosts \
                 would (one driver process per stage):",
                hosts[0].job_id, hosts[1].job_id
            ));
        } else {
            if options.warm {
                command(&hosts[0], &["pool", "fill", "--wait"], false)?;
                out("");
            }
            out(&format!(
                "Running job {} as gitlab-runner would (one driver process per stage):",
                hosts[0].job_id
            ));
        }
        let runners: Vec<_> = hosts
            .iter()
            .map(|host| {
                let (emu, job) = (host.emu.clone(), sample_job(options, host.job_id));
                std::thread::spawn(move || {
                    let job_started = Instant::now();
                    let result = emu.run(job);
                    (result, job_started.elapsed())
                })
            })
            .collect();
        while !runners.iter().all(std::thread::JoinHandle::is_finished) {
            watch.poll();
            // Polling our child processes for progress and for signals.
            std::thread::sleep(Duration::from_millis(5));
        }
        for runner in runners {
            results.push(
                runner
                    .join()
                    .map_err(|_| "the runner emulator panicked (see above)".to_owned())?,
            );
        }
    }
    let interrupted = SIGNALS.load(Ordering::SeqCst) > 0;

    if !results.is_empty() {
        for (host, (result, wall)) in hosts.iter().zip(&results) {
            if let Some(name) = host.fleet_name() {
                out("");
                out(&format!(
                    "================ job {} on {name} ================",
                    host.job_id
                ));
            }
            report(result, *wall, interrupted);
        }
        if options.fleet {
            fleet_summary(&hosts, &results, &pool_tasks);
        }
        if SIGNALS.load(Ordering::SeqCst) < 2 {
            if options.fleet {
                // After the refills the jobs' prepares started (a fill waits for them),
                // either host drains the fleet's pool.
                command(&hosts[0], &["pool", "fill"], false)?;
                command(&hosts[1], &["pool", "drain"], false)?;
            } else if options.warm {
                // The task the job's prepare started for the pool.
                command(&hosts[0], &["pool", "drain"], false)?;
            }
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

    Ok(if interrupted {
        INTERRUPTED
    } else if !results.is_empty() && results.iter().all(|(r, _)| r.status == JobStatus::Success) {
        0
    } else {
        1
    })
}

/// One runner host of the demo: its configuration and runner.
struct Host {
    /// `fargate` for the one host of the plain demo, `host-a`/`host-b` with `--fleet`.
    name: String,
    config: PathBuf,
    emu: RunnerEmu,
    job_id: i64,
}

impl Host {
    /// The host's name in a fleet demo.
    fn fleet_name(&self) -> Option<&str> {
        self.name.starts_with("host-").then_some(self.name.as_str())
    }
}

/// Host `name` (the `index`th): its `fargate.toml` and metadata directory in `dir` and a
/// runner whose builds directory the job's login user owns.
fn host_setup(
    options: &Options,
    local: &LocalFargate,
    fargate: &Path,
    dir: &Path,
    name: &str,
    index: usize,
) -> Result<Host, String> {
    let suffix = if options.fleet {
        format!("-{name}")
    } else {
        String::new()
    };
    let metadata = dir.join(format!("metadata{suffix}"));
    let config = dir.join(format!("{name}.toml"));
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
    if options.fleet {
        // Same Namespace (the local Fargate's) and table on both hosts; its own name each.
        toml = toml.replace(
            "[TaskMetadata]\n",
            &format!(
                "[TaskMetadata]\n  DynamoDBTable = \"{FLEET_TABLE}\"\n  HostName = \"{name}\"\n"
            ),
        );
        toml.push_str("[Fargate.WarmPool]\n  Size = 2\n");
    }
    std::fs::write(&config, toml).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let mut emu = RunnerEmu::new(fargate, &config, local.driver_env());
    emu.metadata_dir = Some(metadata);
    // The "task" is an sshd on this machine: keep the job's files in our temporary directory,
    // in a builds directory that the job's login user owns (the directory itself is 0711).
    let builds = dir.join(format!("builds{suffix}"));
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
    emu.builds_dir = builds.display().to_string();
    Ok(Host {
        name: name.to_owned(),
        config,
        emu,
        job_id: 4242 + i64::try_from(index).unwrap_or(0),
    })
}

/// The tasks of `fargate pool status --json`.
fn pool_status_tasks(json: &str) -> Vec<String> {
    let status: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    status["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|slot| slot["task"].as_str().map(str::to_owned))
        .collect()
}

/// The task a job ran on, from its log's `task <arn> is ready at` line.
fn task_of(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = &l[l.find("task arn:")?..];
        rest.contains(" is ready at ")
            .then(|| rest.split_whitespace().nth(1).map(str::to_owned))?
    })
}

/// The task's id (the ARN's last part).
fn short(task: &str) -> &str {
    task.rsplit('/').next().unwrap_or(task)
}

/// Which host claimed which task of the fleet's pool.
fn fleet_summary(hosts: &[Host], results: &[(JobResult, Duration)], pool: &[String]) {
    out("");
    out(&format!(
        "Fleet summary: {} hosts on DynamoDB table {FLEET_TABLE}, one warm pool",
        hosts.len()
    ));
    let filled: Vec<&str> = pool.iter().map(|t| short(t)).collect();
    out(&format!(
        "  host-a filled the pool: {}",
        if filled.is_empty() {
            "nothing".to_owned()
        } else {
            format!("tasks {}", filled.join(", "))
        }
    ));
    for (host, (result, _)) in hosts.iter().zip(results) {
        let name = host.fleet_name().unwrap_or(&host.name);
        let how = match task_of(&result.log) {
            Some(task)
                if pool.contains(&task)
                    && result.log.contains("using a warm task from the pool") =>
            {
                format!("claimed warm task {} (filled by host-a)", short(&task))
            }
            Some(task) => format!("launched its own task {} (no idle task left)", short(&task)),
            None => "got no task".to_owned(),
        };
        let status = match &result.status {
            JobStatus::Success => "succeeded",
            JobStatus::ScriptFailure(_) => "failed (script)",
            JobStatus::SystemFailure(_) => "failed (system)",
            JobStatus::Canceled => "canceled",
        };
        out(&format!("  job {} on {name}: {how}; {status}", host.job_id));
    }
    out("");
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
