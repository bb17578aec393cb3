//! End to end: the warm pool ([Fargate.WarmPool]) through the real `fargate` binary, against
//! a local Fargate (moto plus one real sshd per task, on loopback). A pool task's sshd lets
//! its login user replace the authorized keys (as a task image's `~/.ssh` does), so the key
//! swap and its verification run for real.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Rig, no_lag, pool_json, run_fargate, slots_of, task_of};
use fargate_testkit::local_fargate::LocalFargate;
use fargate_testkit::runner::{Job, JobStatus, KillPoint, RunnerEmu};

const WARM: &str = "using a warm task from the pool";
const UNUSABLE: &str = "cannot serve the job";

/// A local Fargate without visibility lag (the lag has its own tests) and a pool of `size`.
async fn rig(size: usize, extra: &str) -> Rig {
    Rig::start(no_lag(), |config, dir| {
        let metrics = dir.join("metrics.prom");
        format!(
            "{config}[Metrics]\n  File = {:?}\n[Fargate.WarmPool]\n  Size = {size}\n{extra}",
            metrics.display().to_string()
        )
    })
    .await
}

impl Rig {
    /// The value of metric line `series` (`name{labels}`) in the metrics file, 0 if absent.
    fn metric(&self, series: &str) -> u64 {
        let text =
            std::fs::read_to_string(self.dir.path().join("metrics.prom")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `fargate pool <action> --json`, which must succeed.
    fn pool(&self, action: &[&str]) -> serde_json::Value {
        pool_json(&self.config(), &self.fargate.driver_env(), action)
    }

    /// The pool's slots: (task, state) of each.
    fn slots(&self) -> Vec<(String, String)> {
        slots_of(&self.pool(&["status"]))
    }

    /// Waits for the detached refill a prepare started: a `pool fill` of our own takes
    /// the fill lock after it (and tops the pool up if it has not started yet).
    fn settle_refills(&self) {
        self.pool(&["fill"]);
    }

    /// What runs is exactly the pool's idle tasks: no job's task is left, no slot is left
    /// claimed, no idle task is unrecorded.
    async fn assert_only_idle_pool_tasks(&self, log: &str) {
        self.settle_refills();
        let slots = self.slots();
        assert!(
            slots.iter().all(|(_, state)| state != "claimed"),
            "{slots:?}\n{log}"
        );
        let idle: BTreeSet<String> = slots.into_iter().map(|(task, _)| task).collect();
        let running: BTreeSet<String> = self.fargate.running_tasks().await.into_iter().collect();
        assert_eq!(running, idle, "running tasks vs idle slots\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_on_a_warm_task_with_its_own_key_and_the_pool_refills() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig(1, "").await;
    let filled = rig.pool(&["fill", "--wait"]);
    let warm = filled["started"][0].as_str().unwrap().to_owned();
    assert_eq!(rig.slots(), [(warm.clone(), "ready".to_owned())]);
    assert_eq!(
        rig.fargate.running_tasks().await,
        std::slice::from_ref(&warm)
    );

    let result = rig.run(Job::new(301, &["echo on-the-warm-task"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains(WARM), "{}", result.log);
    assert!(!result.log.contains(UNUSABLE), "{}", result.log);
    assert!(result.log.contains("on-the-warm-task"), "{}", result.log);
    assert!(
        result
            .log
            .contains("summary: warm task from the pool (idle "),
        "{}",
        result.log
    );
    assert_eq!(task_of(&result.log), warm, "{}", result.log);
    // The claimed task ran one job and was stopped at its cleanup; its replacement waits.
    rig.settle_refills();
    let running = rig.fargate.running_tasks().await;
    assert!(!running.contains(&warm), "{running:?}");
    assert_eq!(running.len(), 1, "{running:?}");
    rig.assert_only_idle_pool_tasks(&result.log).await;

    assert_eq!(
        rig.metric("fargate_warm_pool_prepares_total{outcome=\"taken\"}"),
        1
    );
    assert_eq!(
        rig.metric("fargate_warm_pool_prepares_total{outcome=\"empty\"}"),
        0
    );
    let drained = rig.pool(&["drain"]);
    assert_eq!(drained["stopped"].as_array().unwrap().len(), 1, "{drained}");
    assert_eq!(rig.metric("fargate_tasks_stopped_total{cause=\"pool\"}"), 1);
    assert!(rig.fargate.running_tasks().await.is_empty());
    assert!(rig.slots().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_pool_launches_for_the_job_and_refills() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig(1, "").await;
    let result = rig.run(Job::new(302, &["echo cold"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(!result.log.contains(WARM), "{}", result.log);
    assert_eq!(
        rig.metric("fargate_warm_pool_prepares_total{outcome=\"empty\"}"),
        1
    );
    // The job's own task is gone; the task its prepare's refill started waits.
    rig.settle_refills();
    let slots = rig.slots();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_ne!(slots[0].0, task_of(&result.log));
    rig.assert_only_idle_pool_tasks(&result.log).await;
    // The next job takes it.
    let result = rig.run(Job::new(303, &["echo warm"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains(WARM), "{}", result.log);
    assert_eq!(task_of(&result.log), slots[0].0);
    rig.assert_only_idle_pool_tasks(&result.log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_jobs_never_share_a_warm_task() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = Arc::new(rig(2, "").await);
    rig.pool(&["fill", "--wait"]);
    let jobs: Vec<_> = (0..5)
        .map(|i| {
            let rig = rig.clone();
            tokio::spawn(async move { rig.run(Job::new(310 + i, &["echo shared?"])).await })
        })
        .collect();
    let mut tasks = BTreeSet::new();
    let mut warm = 0;
    let mut logs = String::new();
    for job in jobs {
        let result = job.await.unwrap();
        assert_eq!(result.status, JobStatus::Success, "{}", result.log);
        warm += usize::from(result.log.contains(WARM));
        assert!(
            tasks.insert(task_of(&result.log)),
            "two jobs ran on one task:\n{}",
            result.log
        );
        logs.push_str(&result.log);
    }
    assert!(warm >= 1, "no job took a warm task\n{logs}");
    rig.assert_only_idle_pool_tasks(&logs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_task_that_died_while_idle_is_replaced_and_the_job_gets_its_own() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig(1, "").await;
    let filled = rig.pool(&["fill", "--wait"]);
    let dead = filled["started"][0].as_str().unwrap().to_owned();
    rig.fargate
        .stop_task(&dead, "Essential container in task exited")
        .await;
    let result = rig.run(Job::new(320, &["echo survived"])).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(result.log.contains(UNUSABLE), "{}", result.log);
    assert!(result.log.contains("survived"), "{}", result.log);
    assert_eq!(
        rig.metric("fargate_warm_pool_prepares_total{outcome=\"unusable\"}"),
        1
    );
    assert_ne!(task_of(&result.log), dead);
    rig.assert_only_idle_pool_tasks(&result.log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepare_killed_at_any_step_of_a_claim_leaves_only_idle_pool_tasks() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig(1, "").await;
    let mut killed = 0;
    for (i, point) in [
        KillPoint::RecordText("claimed_by".into()),
        KillPoint::After(Duration::from_millis(30)),
        KillPoint::After(Duration::from_millis(60)),
        KillPoint::After(Duration::from_millis(100)),
        KillPoint::After(Duration::from_millis(150)),
        KillPoint::After(Duration::from_millis(250)),
        KillPoint::After(Duration::from_millis(400)),
    ]
    .into_iter()
    .enumerate()
    {
        rig.pool(&["fill", "--wait"]);
        let mut job = Job::new(330 + i as i64, &["echo second-attempt-ran"]);
        job.kill_prepare = Some(point.clone());
        let result = rig.run(job).await;
        assert_eq!(
            result.status,
            JobStatus::Success,
            "{point:?}: {}",
            result.log
        );
        // A claim takes milliseconds: a kill point may come after the whole prepare (the
        // driver's unit tests drop prepare at every step of a claim deterministically).
        killed += usize::from(result.stage("prepare")[0].exit_code.is_none());
        // A prepare killed while it started a replacement leaves a slot whose launch was
        // not answered: the next refill stops what that launch started.
        rig.pool(&["fill"]);
        rig.assert_only_idle_pool_tasks(&format!("{point:?}\n{}", result.log))
            .await;
    }
    assert!(killed >= 3, "only {killed} prepares were killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_a_warm_jobs_task_and_stops_idle_tasks_past_their_maximum_idle_time() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = rig(1, "  MaxIdleTime = \"2s\"\n").await;
    let warm = rig.pool(&["fill", "--wait"])["started"][0]
        .as_str()
        .unwrap()
        .to_owned();
    // A runner that dies right after prepare: its job's task is the warm one, whose tags
    // still name the pool slot.
    let job = Job::new(340, &["echo never"]);
    let dir = rig.dir.path().join("job-340");
    std::fs::create_dir_all(&dir).unwrap();
    let out = rig
        .emu
        .stage_command(&job, &dir, &["custom", "prepare"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains(WARM), "{log}");
    let (code, out, err) = rig.fargate(&["gc"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("kept task {warm} (local-340)")),
        "{out}"
    );
    // The replacement prepare started idles past its 2 s (whole seconds, hence 3 s).
    rig.settle_refills();
    let replacement = rig.slots()[0].0.clone();
    std::thread::sleep(Duration::from_secs(3));
    let (code, out, err) = rig.fargate(&["gc"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("stopped task {replacement}")),
        "{out}"
    );
    assert!(out.contains("maximum idle time"), "{out}");
    assert!(out.contains(&format!("kept task {warm}")), "{out}");
}

/// Two runner entries (namespaces `alpha` and `beta`, each with a pool of 1) share one
/// metadata directory and one cluster: neither's pool, gc nor jobs touch the other's.
#[tokio::test(flavor = "multi_thread")]
async fn two_runner_entries_share_one_directory_without_touching_each_other() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let dir = tempfile::tempdir().expect("temp dir");
    let metadata = dir.path().join("metadata");
    let config = |ns: &str| {
        let path = dir.path().join(format!("{ns}.toml"));
        let toml = fargate.fargate_toml(&metadata).replace(
            &format!(
                "Namespace = \"{}\"",
                fargate_testkit::local_fargate::NAMESPACE
            ),
            &format!("Namespace = \"{ns}\""),
        );
        std::fs::write(&path, format!("{toml}[Fargate.WarmPool]\n  Size = 1\n")).unwrap();
        path
    };
    let (alpha, beta) = (config("alpha"), config("beta"));
    let fargate_cmd = |config: &PathBuf, args: &[&str]| {
        let (code, out, err) = run_fargate(config, &fargate.driver_env(), args);
        let text = format!("{out}{err}");
        assert_eq!(code, 0, "{args:?}: {text}");
        text
    };
    fargate_cmd(&alpha, &["pool", "fill", "--wait"]);
    fargate_cmd(&beta, &["pool", "fill", "--wait"]);
    assert_eq!(fargate.running_tasks().await.len(), 2);

    // Beta's job takes beta's warm task and is between its stages (prepare done).
    let emu = RunnerEmu::new(
        &PathBuf::from(env!("CARGO_BIN_EXE_fargate")),
        &beta,
        fargate.driver_env(),
    );
    let job = Job::new(350, &["echo beta"]);
    let job_dir = dir.path().join("job-350");
    std::fs::create_dir_all(&job_dir).unwrap();
    let prepared = emu
        .stage_command(&job, &job_dir, &["custom", "prepare"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&prepared.stderr).into_owned();
    assert!(prepared.status.success() && log.contains(WARM), "{log}");
    let beta_task = task_of(&log);

    // Alpha's gc, refill and drain never look at beta's records, slots or tasks.
    let gc = fargate_cmd(&alpha, &["gc"]);
    assert!(!gc.contains("beta"), "{gc}");
    fargate_cmd(&alpha, &["pool", "fill"]);
    let drained = fargate_cmd(&alpha, &["pool", "drain"]);
    assert!(!drained.contains("beta"), "{drained}");
    assert!(metadata.join("beta-350.json").exists(), "beta's job record");
    let running = fargate.running_tasks().await;
    assert!(
        running.contains(&beta_task),
        "beta's job's task: {running:?}"
    );

    // Beta's cleanup, then beta's drain, leave nothing of either runner running.
    let cleaned = emu
        .stage_command(&job, &job_dir, &["custom", "cleanup"])
        .output()
        .unwrap();
    assert!(
        cleaned.status.success(),
        "{}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    fargate_cmd(&beta, &["pool", "fill"]); // after prepare's detached refill
    fargate_cmd(&beta, &["pool", "drain"]);
    fargate_cmd(&alpha, &["pool", "drain"]);
    assert!(fargate.running_tasks().await.is_empty());
    let mut left: Vec<String> = std::fs::read_dir(&metadata)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // The entries' namespace claims and API budgets stay.
        .filter(|n| !n.ends_with(".namespace") && !n.ends_with(".budget"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "left in the directory: {left:?}");
}
