//! Part 3: a warm prepare across hosts, end to end (the real `fargate` binary, the runner
//! emulator, the local Fargate), with the DynamoDB store against the file store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fargate_benches::{median, timed};
use fargate_testkit::local_fargate::{LocalFargate, LocalFargateOptions};
use fargate_testkit::runner::{Job, RunnerEmu};

/// The fleet's table.
const TABLE: &str = "fleet-bench";
/// The namespace of the file store's pair (the DynamoDB pair keeps the fixture's).
const FILE_NAMESPACE: &str = "localfile";
/// What a prepare that took a warm task says.
const WARM: &str = "using a warm task from the pool";
const TARGET_RATIO: f64 = 1.5;

/// One runner host: its configuration and runner.
struct Host {
    config: PathBuf,
    emu: RunnerEmu,
}

/// Host A (fills the pool) and host B (prepares jobs) on one store.
struct Pair {
    name: &'static str,
    a: Host,
    b: Host,
}

/// The `fargate` binary next to this executable, if built.
fn fargate_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.join("fargate");
    bin.is_file().then_some(bin)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Host {
    /// `fargate --config <this host's> <args>`, which must succeed.
    fn fargate(&self, args: &[&str]) {
        let mut cmd = Command::new(&self.emu.driver);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.emu.env.iter().map(|(k, v)| (k, v)));
        timed(cmd, &format!("{} {args:?}", self.config.display()));
    }
}

impl Pair {
    /// Host A fills the pool (untimed), host B prepares job `id` (timed) and cleans up
    /// (untimed). The prepare must take the warm task. Its wall time and, from a debug
    /// log, when it reached its phases.
    fn warm_prepare(&self, id: i64) -> Timing {
        self.a.fargate(&["pool", "fill", "--wait"]);
        let dir = tempfile::tempdir().expect("job dir");
        let job = Job::new(id, &["true"]);
        let (wall, log) = timed(
            self.b
                .emu
                .stage_command(&job, dir.path(), &["custom", "prepare"]),
            &format!("{} prepare", self.name),
        );
        assert!(
            log.contains(WARM),
            "{}: not a warm prepare:\n{log}",
            self.name
        );
        if std::env::var_os("FLEET_BENCH_LOG").is_some() {
            println!("--- {} prepare of job {id}:\n{log}", self.name);
        }
        timed(
            self.b
                .emu
                .stage_command(&job, dir.path(), &["custom", "cleanup"]),
            &format!("{} cleanup", self.name),
        );
        Timing {
            wall: ms(wall),
            accepted: phase_ms(&log, "Accepted"),
            ssh_up: phase_ms(&log, "SshUp"),
        }
    }
}

/// A prepare's wall time and its phases (ms since the driver started; NaN when the log
/// does not say).
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    /// The task is the job's: the claim is done.
    accepted: f64,
    /// The job's key works on the task: the take-over is done.
    ssh_up: f64,
}

/// `elapsed_ms` of the debug line "prepare phase `phase` reached", NaN without one.
fn phase_ms(log: &str, phase: &str) -> f64 {
    log.lines()
        .find(|l| l.contains(&format!("prepare phase {phase} reached")))
        .and_then(|l| {
            let at = l.find("elapsed_ms=")? + "elapsed_ms=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(f64::NAN)
}

/// A host whose `fargate.toml` is the fixture's as `edit` makes it, with a warm pool of 1
/// and records in `metadata`.
fn host(
    fargate: &LocalFargate,
    bin: &Path,
    dir: &Path,
    name: &str,
    metadata: &Path,
    edit: impl Fn(String) -> String,
) -> Host {
    let toml = edit(fargate.fargate_toml(metadata));
    // FLEET_BENCH_LOG: the prepares' logs, at debug level, are printed.
    let toml = if std::env::var_os("FLEET_BENCH_LOG").is_some() {
        toml.replace("LogLevel = \"info\"", "LogLevel = \"debug\"")
    } else {
        toml
    };
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, format!("{toml}[Fargate.WarmPool]\n  Size = 1\n"))
        .expect("write fargate.toml");
    // ECS through the local Fargate's fault proxy (as the e2e tests), DynamoDB straight to
    // moto, as a fleet reaches its table: the proxy takes each request on a connection of
    // its own, which would charge the table's many small requests for the rig's hop.
    let mut env = fargate.driver_env();
    env.push((
        "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
        fargate.moto().endpoint_url(),
    ));
    let mut emu = RunnerEmu::new(bin, &config, env);
    emu.metadata_dir = Some(metadata.to_owned());
    Host { config, emu }
}

/// Part 3, `rounds` timed rounds.
pub(crate) fn run(rounds: usize) {
    let Some(bin) = fargate_binary() else {
        println!(
            "part 3 skipped: no `fargate` binary next to this executable (cargo build [--release] -p fargate-cli)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = LocalFargateOptions {
        visibility_lag: Duration::ZERO,
        ..LocalFargateOptions::default()
    };
    let fargate = rt.block_on(LocalFargate::start(options));
    let dir = tempfile::tempdir().expect("temp dir");
    // The job's login user (not root) may look in here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let d = dir.path();
    let dynamo_host = |name: &'static str| {
        host(
            &fargate,
            &bin,
            d,
            name,
            &d.join(format!("metadata-{name}")),
            |t| {
                let t = t.replace(
                    "[TaskMetadata]\n",
                    &format!(
                        "[TaskMetadata]\n  DynamoDBTable = \"{TABLE}\"\n  HostName = \"{name}\"\n"
                    ),
                );
                assert!(t.contains("HostName"), "{t}");
                t
            },
        )
    };
    let shared = d.join("metadata-shared");
    let file_host = |name: &'static str| {
        host(&fargate, &bin, d, name, &shared, |t| {
            let t = t.replace(
                &format!(
                    "Namespace = \"{}\"",
                    fargate_testkit::local_fargate::NAMESPACE
                ),
                &format!("Namespace = \"{FILE_NAMESPACE}\""),
            );
            assert!(t.contains(FILE_NAMESPACE), "{t}");
            t
        })
    };
    let pairs = [
        Pair {
            name: "DynamoDB",
            a: dynamo_host("host-a"),
            b: dynamo_host("host-b"),
        },
        Pair {
            name: "file",
            a: file_host("file-a"),
            b: file_host("file-b"),
        },
    ];
    pairs[0].a.fargate(&["store", "init"]);
    println!(
        "== 3. warm prepare across hosts, end to end ({}), median of {rounds}, alternating",
        bin.display()
    );
    let (mut times, mut ratios) = ([Vec::new(), Vec::new()], Vec::new());
    let mut phases: [Vec<Timing>; 2] = [Vec::new(), Vec::new()];
    // Round 0 is untimed (moto's first requests, the page cache).
    for round in 0..=rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut walls = [0.0; 2];
        if round == 1 {
            phases = [Vec::new(), Vec::new()];
        }
        for which in order {
            let id = 30_000 + (round * 2 + which) as i64;
            let timing = pairs[which].warm_prepare(id);
            walls[which] = timing.wall;
            phases[which].push(timing);
        }
        println!(
            "  round {round}: DynamoDB {:.1} ms, file {:.1} ms{}",
            walls[0],
            walls[1],
            if round == 0 { " (untimed)" } else { "" }
        );
        if round > 0 {
            times[0].push(walls[0]);
            times[1].push(walls[1]);
            ratios.push(walls[0] / walls[1]);
        }
    }
    for pair in &pairs {
        pair.b.fargate(&["pool", "drain"]);
    }
    let (dy, fi) = (median(&times[0]), median(&times[1]));
    let ratio = median(&ratios);
    ratios.sort_by(f64::total_cmp);
    println!(
        "warm prepare across hosts: DynamoDB {dy:.1} ms, file store {fi:.1} ms (medians); ratio {:.2}x (median of per-round ratios {ratio:.2}x, range {:.2}-{:.2}x); target <= {TARGET_RATIO}x: {}",
        dy / fi,
        ratios.first().unwrap(),
        ratios.last().unwrap(),
        if ratio <= TARGET_RATIO {
            "met"
        } else {
            "missed"
        }
    );
    if phases[0]
        .iter()
        .all(|t| !t.accepted.is_nan() && !t.ssh_up.is_nan())
    {
        for (pair, timings) in pairs.iter().zip(&phases) {
            let of = |f: fn(&Timing) -> f64| median(&timings.iter().map(f).collect::<Vec<_>>());
            println!(
                "  {} phases (medians, debug log): claim done at {:.0} ms, take-over (key swap, verification) {:.0} ms, the rest (process start and exit, ready record, refill and keeper started) {:.0} ms",
                pair.name,
                of(|t| t.accepted),
                of(|t| t.ssh_up - t.accepted),
                of(|t| t.wall - t.ssh_up),
            );
        }
    }
    let running = rt.block_on(fargate.running_tasks());
    assert!(running.is_empty(), "tasks left running: {running:?}");
}
