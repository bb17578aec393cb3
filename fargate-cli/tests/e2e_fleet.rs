//! End to end (issue 23): a fleet of two runner "hosts" on one DynamoDB table, through the
//! real `fargate` binary and the runner emulator, against the local Fargate (moto's ECS and
//! DynamoDB plus one sshd per task, on loopback). Each host has its own `fargate.toml`
//! (same `Namespace` and `DynamoDBTable`, its own metadata directory and
//! `[TaskMetadata] HostName`). Shown: one warm pool serves both hosts; a host killed
//! mid-job has its task stopped by the other host's `fargate gc` once the job's heartbeat
//! is older than `--dead-after` (and not before); a host cut off from the table (not from
//! ECS) keeps its job's task through the other host's gc by marking it alive; a project
//! limit holds across both hosts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{keeper_pids, no_lag, pool_json, run_fargate, run_job, runner_emu, slots_of, task_of};
use fargate_testkit::local_fargate::{LocalFargate, NAMESPACE};
use fargate_testkit::runner::{Job, JobResult, JobStatus, OnOutput, RunnerEmu, runner_script};

/// The fleet's table.
const TABLE: &str = "fleet-e2e";
const WARM: &str = "using a warm task from the pool";

/// One runner host: its configuration, metadata directory and runner.
struct Host {
    config: PathBuf,
    metadata: PathBuf,
    emu: RunnerEmu,
    env: Vec<(String, String)>,
}

/// Two hosts on one local Fargate and one table.
struct Fleet {
    fargate: Arc<LocalFargate>,
    dir: tempfile::TempDir,
    a: Host,
    b: Host,
}

/// A fleet whose hosts' `fargate.toml` end with `extra` (sections of their own).
async fn fleet(extra: &str) -> Fleet {
    // No visibility lag: gc's listing must show a task at once.
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let dir = tempfile::tempdir().expect("temp dir");
    // The job's login user (not root) looks for files the test creates in here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let host = |name: &'static str| {
        let metadata = dir.path().join(format!("metadata-{name}"));
        let config = dir.path().join(format!("{name}.toml"));
        let toml = fargate.fargate_toml(&metadata).replace(
            "[TaskMetadata]\n",
            &format!("[TaskMetadata]\n  DynamoDBTable = \"{TABLE}\"\n  HostName = \"{name}\"\n"),
        );
        assert!(toml.contains("HostName"), "{toml}");
        std::fs::write(&config, format!("{toml}{extra}")).expect("write fargate.toml");
        let emu = runner_emu(&fargate, &config, metadata.clone());
        Host {
            config,
            metadata,
            emu,
            env: fargate.driver_env(),
        }
    };
    let (a, b) = (host("host-a"), host("host-b"));
    let (code, out, err) = a.fargate(&["store", "init"]);
    assert_eq!(code, 0, "store init: {out}\n{err}");
    Fleet { fargate, dir, a, b }
}

impl Host {
    /// `fargate --config <this host's> <args>`: exit code, stdout and stderr.
    fn fargate(&self, args: &[&str]) -> (i32, String, String) {
        run_fargate(&self.config, &self.env, args)
    }

    /// `fargate pool <action> --json`, which must succeed.
    fn pool(&self, action: &[&str]) -> serde_json::Value {
        pool_json(&self.config, &self.env, action)
    }

    /// The pool's tasks as this host sees them (task, state).
    fn slots(&self) -> Vec<(String, String)> {
        slots_of(&self.pool(&["status"]))
    }

    async fn run(&self, job: Job) -> JobResult {
        run_job(&self.emu, job).await
    }

    /// The pids of this host's connection keepers (`fargate ... keeper --socket <this
    /// host's metadata dir>/...`).
    fn keepers(&self) -> Vec<u32> {
        keeper_pids(&self.metadata)
    }
}

impl Fleet {
    /// The job record item of job `job_id` in the table, if any.
    fn item(&self, job_id: i64) -> Option<serde_json::Value> {
        let (status, answer) = self.fargate.moto().dynamodb(
            "GetItem",
            &serde_json::json!({
                "TableName": TABLE,
                "Key": { "pk": { "S": format!("{NAMESPACE}-{job_id}") } },
                "ConsistentRead": true,
            }),
        );
        assert_eq!(status, 200, "{answer}");
        answer.get("Item").cloned()
    }

    /// The table's last heartbeat of job `job_id`, if any.
    fn beat(&self, job_id: i64) -> Option<SystemTime> {
        let item = self.item(job_id)?;
        let secs: u64 = item["beat"]["N"].as_str()?.parse().ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// When the driver last marked `task` alive (its `fargate:alive` tag), if it did.
    async fn alive_at(&self, task: &str) -> Option<SystemTime> {
        let cluster = task
            .split('/')
            .nth(1)
            .expect("a task ARN names its cluster");
        let described = self.fargate.moto().describe_task(cluster, task).await;
        let tag = described
            .tags()
            .iter()
            .find(|t| t.key() == Some(fargate_aws::tags::ALIVE))?;
        fargate_aws::tags::parse_deadline(tag.value()?)
    }

    /// Nothing runs in the local Fargate.
    async fn assert_nothing_runs(&self, log: &str) {
        let running = self.fargate.running_tasks().await;
        assert!(running.is_empty(), "tasks left: {running:?}\n{log}");
    }
}

/// SIGKILL to the process group `pgid`, or the process `pid` (a negative number: a group).
fn kill(target: i64) {
    let status = Command::new("kill")
        .args(["-KILL", "--", &target.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL {target}");
}

/// The first output line of `stage` in `result` containing `text`, with when it came.
fn line_at(result: &JobResult, stage: &str, text: &str) -> Instant {
    result
        .stages
        .iter()
        .filter(|s| s.name == stage)
        .flat_map(|s| &s.output)
        .find(|(_, line)| line.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in {stage}:\n{}", result.log))
        .0
}

/// `host`'s prepare stage of `job` in `job_dir`, which must succeed: the job's task and
/// the stage's log.
fn prepare_on(host: &Host, job: &Job, job_dir: &Path) -> (String, String) {
    std::fs::create_dir_all(job_dir).unwrap();
    let prepared = host
        .emu
        .stage_command(job, job_dir, &["custom", "prepare"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&prepared.stderr).into_owned();
    assert!(prepared.status.success(), "{log}");
    (task_of(&log), log)
}

/// Starts `host`'s run stage of `job`'s build script (as the runner runs it), with `env`
/// on top of the host's, and returns it once the script printed `started`.
fn start_build(
    host: &Host,
    job: &Job,
    job_dir: &Path,
    env: &[(&str, &str)],
    started: &str,
) -> Child {
    let script = job_dir.join("build_script");
    std::fs::write(&script, runner_script(&job.script.join("\n"))).unwrap();
    let mut stage = host
        .emu
        .stage_command(
            job,
            job_dir,
            &[
                "custom",
                "run",
                &script.display().to_string(),
                "build_script",
            ],
        )
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let (lines, seen) = mpsc::channel();
    for pipe in [
        Box::new(stage.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(stage.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    drop(lines);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut output = String::new();
    while !output.contains(started) {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => output.push_str(&format!("{line}\n")),
            Err(e) => panic!("the script did not start ({e}):\n{output}"),
        }
    }
    stage
}

/// Host `host` dies: its `stage` and its connection keepers are SIGKILLed, with no
/// cleanup.
fn kill_host(host: &Host, stage: &mut Child) {
    kill(-i64::from(stage.id()));
    let keepers = host.keepers();
    assert!(
        !keepers.is_empty(),
        "the host's job has a connection keeper"
    );
    for pid in &keepers {
        kill(i64::from(*pid));
    }
    let _ = stage.wait();
}

/// Runs host B's `fargate gc --dead-after <dead_after>` until it stops `task` (within a
/// minute), checking that it keeps the task until then; its last report.
fn gc_until_stopped(fleet: &Fleet, dead_after: &str, task: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = fleet.b.fargate(&["gc", "--dead-after", dead_after]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(err.contains("shorter than three heartbeats"), "{err}");
        if out.contains(&format!("stopped task {task}")) {
            return out;
        }
        assert!(out.contains(&format!("kept task {task}")), "{out}");
        assert!(Instant::now() < deadline, "gc never stopped {task}:\n{out}");
        // Polling gc: the signs of life age on the wall clock.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (a) A pool that host A filled serves a job that host B runs; the job's record in the
/// table names host B as the host of its heartbeats.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_filled_on_one_host_serves_a_job_on_the_other() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fleet = fleet("[Fargate.WarmPool]\n  Size = 1\n").await;
    let filled = fleet.a.pool(&["fill", "--wait"]);
    let warm = filled["started"][0].as_str().unwrap().to_owned();
    // Host B sees host A's slot: the pool is the table's.
    assert_eq!(fleet.b.slots(), [(warm.clone(), "ready".to_owned())]);

    let mut job = Job::new(501, &["echo on-host-b", "echo job-ran-here"]);
    let seen = Arc::new(Mutex::new(None));
    let (fargate, into) = (fleet.fargate.clone(), seen.clone());
    job.on_output.push((
        "job-ran-here".into(),
        OnOutput::Call(Box::new(move || {
            let (status, answer) = fargate.moto().dynamodb(
                "GetItem",
                &serde_json::json!({
                    "TableName": TABLE,
                    "Key": { "pk": { "S": format!("{NAMESPACE}-501") } },
                    "ConsistentRead": true,
                }),
            );
            assert_eq!(status, 200, "{answer}");
            *into.lock().unwrap() = Some(answer);
        })),
    ));
    let result = fleet.b.run(job).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains(WARM), "{}", result.log);
    assert_eq!(task_of(&result.log), warm, "{}", result.log);
    let item = seen.lock().unwrap().take().expect("the record was read");
    assert_eq!(
        item["Item"]["beat_host"]["S"], "host-b",
        "the record of a job run on host B: {item}"
    );
    // Cleanup (on host B) removed the record; host A's view of the pool no longer has the
    // claimed task.
    assert!(fleet.item(501).is_none());
    fleet.a.pool(&["fill"]);
    assert!(
        fleet.a.slots().iter().all(|(task, _)| *task != warm),
        "the claimed task left the pool"
    );
    // Either host drains the pool.
    fleet.b.pool(&["drain"]);
    fleet.assert_nothing_runs(&result.log).await;
}

/// (b) Host A is killed mid-job (its run stage and keeper SIGKILLed, no cleanup). Host B's
/// gc keeps the job's task while the job may be alive, and stops it (removing the record)
/// once its last heartbeat is older than `--dead-after`.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_a_killed_host_is_stopped_by_the_other_hosts_gc() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fleet = fleet("").await;
    let job = Job::new(502, &["echo host-a-is-running", "sleep 600"]);
    let job_dir = fleet.dir.path().join("job-502");
    let (task, log) = prepare_on(&fleet.a, &job, &job_dir);
    let mut stage = start_build(&fleet.a, &job, &job_dir, &[], "host-a-is-running");
    let item = fleet.item(502).expect("the job's record");
    assert_eq!(item["beat_host"]["S"], "host-a", "{item}");
    // Host A dies: its stage and its keepers, with no cleanup.
    kill_host(&fleet.a, &mut stage);

    // Host B's gc with the default limit (10 minutes): the job may be alive, its task stays.
    let (code, out, err) = fleet.b.fargate(&["gc"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("kept task {task}")), "{out}\n{err}");
    assert!(fleet.fargate.running_tasks().await.contains(&task));

    // With a limit of 3 s, it stops the task once the heartbeat is that old.
    let out = gc_until_stopped(&fleet, "3s", &task);
    assert!(out.contains("gave no sign of life"), "{out}");
    assert!(!fleet.fargate.running_tasks().await.contains(&task));
    assert!(
        fleet.item(502).is_none(),
        "gc removed the dead job's record"
    );
    fleet.assert_nothing_runs(&log).await;
    // A wrong limit is refused before anything is looked at.
    let (code, _, err) = fleet.b.fargate(&["gc", "--dead-after", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("--dead-after \"soon\""), "{err}");
}

/// (c) `MaxConcurrentJobs = 1` holds across hosts: while host A's job runs, host B's job of
/// the same project waits in prepare with the visible line, and runs once A's cleanup
/// stopped A's task.
#[tokio::test(flavor = "multi_thread")]
async fn a_project_limit_holds_across_both_hosts() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fleet = fleet(
        "[[Fargate.ProjectRule]]\n  Name = \"one-at-a-time\"\n  Projects = [\"group/project\"]\n  MaxConcurrentJobs = 1\n",
    )
    .await;
    let release = fleet.dir.path().join("release");
    // Bounded (2 minutes), so that a limit that does not hold fails the test, not hangs it.
    let wait = format!(
        "i=0; until [ -e {} ] || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done",
        release.display()
    );
    let mut a_job = Job::new(503, &["echo a-is-running", &wait, "echo a-is-done"]);
    let (running, a_runs) = mpsc::channel();
    a_job.on_output.push((
        "a-is-running".into(),
        OnOutput::Call(Box::new(move || {
            let _ = running.send(());
        })),
    ));
    let a = tokio::spawn({
        let emu = fleet.a.emu.clone();
        async move {
            tokio::task::spawn_blocking(move || emu.run(a_job))
                .await
                .unwrap()
        }
    });
    tokio::task::spawn_blocking(move || a_runs.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("host A's job started its script");

    // Host B's job of the same project waits; once it says so, host B lists the slots
    // (from the table: host A's job holds the one slot), then A's script may end.
    let mut b_job = Job::new(504, &["echo b-is-running"]);
    let file = release.clone();
    let listed = Arc::new(Mutex::new(None));
    let (b_config, b_env, into) = (fleet.b.config.clone(), fleet.b.env.clone(), listed.clone());
    b_job.on_output.push((
        ": waiting".into(),
        OnOutput::Call(Box::new(move || {
            *into.lock().unwrap() = Some(run_fargate(&b_config, &b_env, &["slots", "--json"]));
            std::fs::write(&file, "").unwrap();
        })),
    ));
    // What runs in ECS while B's script runs.
    let running_with_b = Arc::new(Mutex::new(None));
    let (fargate, into) = (fleet.fargate.clone(), running_with_b.clone());
    b_job.on_output.push((
        "b-is-running".into(),
        OnOutput::Call(Box::new(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            *into.lock().unwrap() = Some(runtime.block_on(fargate.running_tasks()));
        })),
    ));
    let b = fleet.b.run(b_job).await;
    let a = a.await.unwrap();
    assert_eq!(a.status, JobStatus::Success, "{}", a.log);
    assert_eq!(b.status, JobStatus::Success, "{}\n{}", b.log, a.log);
    assert!(
        b.log.contains("has 1 jobs running (limit 1): waiting"),
        "{}",
        b.log
    );
    assert!(release.exists(), "B's wait released A");
    let (code, out, err) = listed
        .lock()
        .unwrap()
        .take()
        .expect("host B listed the slots");
    assert_eq!(code, 0, "{out}\n{err}");
    let slots: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let project = &slots["projects"][0];
    assert_eq!(
        (
            &project["project_path"],
            &project["limit"],
            &project["free"]
        ),
        (&"group/project".into(), &1.into(), &0.into()),
        "{slots}"
    );
    assert_eq!(
        project["holders"][0]["job_id"], 503,
        "host A's job: {slots}"
    );
    assert_eq!(
        project["holders"].as_array().map(Vec::len),
        Some(1),
        "{slots}"
    );
    // B's prepare waited until A's cleanup gave the slot back: B's task was ready only
    // after A's script ended, and B's script ran after A's cleanup began.
    let b_waits = line_at(&b, "prepare", ": waiting");
    let a_done = line_at(&a, "build_script", "a-is-done");
    let b_ready = line_at(&b, "prepare", " is ready at ");
    assert!(b_waits < a_done, "B waited while A's job ran");
    assert!(a_done < b_ready, "B's task was ready before A's job ended");
    assert_ne!(task_of(&a.log), task_of(&b.log));
    // A's cleanup had stopped A's task before B's script ran.
    let running = running_with_b
        .lock()
        .unwrap()
        .take()
        .expect("B's script ran");
    assert!(
        running.contains(&task_of(&b.log)) && !running.contains(&task_of(&a.log)),
        "while B's script ran: {running:?}"
    );
    fleet
        .assert_nothing_runs(&format!("{}\n{}", a.log, b.log))
        .await;
}

/// (d) Host A is cut off from the table (not from ECS) mid-job: its run stage goes on from
/// its copy of the record, and its heartbeats, which the table does not get, go on the
/// job's task instead (its `fargate:alive` tag). Host B's gc keeps the task although the
/// table's last heartbeat is older than `--dead-after`, and stops it once host A is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_a_host_cut_off_from_the_table_is_kept_by_the_other_hosts_gc() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fleet = fleet("").await;
    let job = Job::new(504, &["echo host-a-is-running", "sleep 600"]);
    let job_dir = fleet.dir.path().join("job-504");
    let (task, log) = prepare_on(&fleet.a, &job, &job_dir);
    let table_beat = fleet.beat(504).expect("prepare's heartbeat");
    // Host A's run stage cannot reach DynamoDB: nothing listens on loopback's port 9.
    let cut_off = [("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")];
    let mut stage = start_build(&fleet.a, &job, &job_dir, &cut_off, "host-a-is-running");
    // A heartbeat every 30 s, each a mark on the task: wait for one more than 20 s after
    // the table's last heartbeat.
    let deadline = Instant::now() + Duration::from_secs(90);
    let limit = Duration::from_secs(20);
    loop {
        if let Some(marked) = fleet.alive_at(&task).await
            && marked > table_beat + limit
        {
            break;
        }
        assert!(Instant::now() < deadline, "{task} was not marked alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        fleet.beat(504),
        Some(table_beat),
        "the table got no heartbeat from host A"
    );
    // The table's heartbeat is older than 20 s, the task's mark is not: kept.
    let (code, out, err) = fleet.b.fargate(&["gc", "--dead-after", "20s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("kept task {task}")), "{out}\n{err}");
    assert!(fleet.fargate.running_tasks().await.contains(&task));

    // Host A dies: no more marks, and gc stops the task.
    kill_host(&fleet.a, &mut stage);
    let out = gc_until_stopped(&fleet, "20s", &task);
    assert!(out.contains("gave no sign of life"), "{out}");
    assert!(
        fleet.item(504).is_none(),
        "gc removed the dead job's record"
    );
    fleet.assert_nothing_runs(&log).await;
}
