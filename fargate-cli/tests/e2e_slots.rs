//! End to end (issue 23 follow-up): while a project's jobs fill its `MaxConcurrentJobs`
//! and another of its jobs waits in prepare, `fargate slots` (and `--json`) names the
//! project, its limit, the jobs that hold its slots and why they count; once they ended,
//! the slots are free again. The real `fargate` binary through the runner emulator,
//! against the local Fargate (moto's ECS plus one sshd per task, on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Rig, joined, no_lag, run_fargate, run_job};
use fargate_testkit::local_fargate::NAMESPACE;
use fargate_testkit::runner::{Job, JobStatus, OnOutput};

/// Every project of `group/` (the emulator's default project is `group/project`, id 42)
/// runs at most two jobs at a time: the counter's project comes from the jobs' records.
const RULE: &str = "\n[[Fargate.ProjectRule]]\n  Name = \"two-at-a-time\"\n  Projects = [\"group/*\"]\n  MaxConcurrentJobs = 2\n";

/// `fargate slots --json`'s answer, which must succeed.
fn slots_json(out: (i32, String, String)) -> serde_json::Value {
    let (code, stdout, stderr) = out;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_lists_who_holds_a_full_projects_slots_while_a_job_waits() {
    fargate_testkit::require_fixture!(LocalFargate);
    let rig = Rig::start(no_lag(), |config, _| format!("{config}{RULE}")).await;
    // The job's login user (not root) looks for the release file in here.
    std::fs::set_permissions(
        rig.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();

    let (code, out) = joined(rig.fargate(&["slots"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "0 project(s) of namespace {NAMESPACE} hold slots, 0 at its limit"
        )),
        "{out}"
    );

    // Jobs 601 and 602 take both slots and run until the release file exists (at most 2
    // minutes, so that a listing that never comes fails the test, not hangs it).
    let release = rig.dir.path().join("release");
    let wait = format!(
        "i=0; until [ -e {} ] || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done",
        release.display()
    );
    let (running, started) = mpsc::channel();
    let mut holders = Vec::new();
    for id in [601, 602] {
        let mut job = Job::new(id, &["echo holder-is-running", &wait]);
        let running = running.clone();
        job.on_output.push((
            "holder-is-running".into(),
            OnOutput::Call(Box::new(move || {
                let _ = running.send(id);
            })),
        ));
        let emu = rig.emu.clone();
        holders.push(tokio::spawn(async move { run_job(&emu, job).await }));
    }
    let mut ids: Vec<i64> = tokio::task::spawn_blocking(move || {
        (0..2)
            .map(|_| {
                started
                    .recv_timeout(Duration::from_secs(120))
                    .expect("both holders run")
            })
            .collect()
    })
    .await
    .unwrap();
    ids.sort_unstable();
    assert_eq!(ids, [601, 602]);

    // Job 603 waits for a slot; when it says so, the admin lists the slots, then the
    // holders may end.
    let listed = Arc::new(Mutex::new(None));
    let mut waiter = Job::new(603, &["echo waiter-ran"]);
    let (config, env, into, file) = (
        rig.config(),
        rig.fargate.driver_env(),
        listed.clone(),
        release.clone(),
    );
    waiter.on_output.push((
        ": waiting".into(),
        OnOutput::Call(Box::new(move || {
            let text = run_fargate(&config, &env, &["slots"]);
            let json = run_fargate(&config, &env, &["slots", "--json"]);
            *into.lock().unwrap() = Some((text, json));
            std::fs::write(&file, "").unwrap();
        })),
    ));
    let waited = rig.run(waiter).await;
    for holder in holders {
        let result = holder.await.unwrap();
        assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    }
    assert_eq!(waited.status, JobStatus::Success, "{}", waited.log);
    assert!(
        waited.log.contains("has 2 jobs running (limit 2): waiting"),
        "{}",
        waited.log
    );

    let (text, json) = listed
        .lock()
        .unwrap()
        .take()
        .expect("the waiter listed the slots");
    let (code, out) = joined(text);
    assert_eq!(code, 0, "{out}");
    for line in [
        "project group/project (id 42): 2 of 2 slots held, 0 free (rule \"two-at-a-time\"): its next job waits".to_owned(),
        format!("job 601 ({NAMESPACE}-601) \"test\": counts: its time has "),
        format!("job 602 ({NAMESPACE}-602) \"test\": counts: its time has "),
        "record Ready since".to_owned(),
        format!("1 project(s) of namespace {NAMESPACE} hold slots, 1 at its limit"),
    ] {
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }
    assert!(
        !out.contains("job 603"),
        "the waiting job holds no slot:\n{out}"
    );
    let json = slots_json(json);
    assert_eq!(json["namespace"], NAMESPACE, "{json}");
    let project = &json["projects"][0];
    assert_eq!(json["projects"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(
        project["counter"],
        format!("{NAMESPACE}.project-42"),
        "{json}"
    );
    assert_eq!(project["project_path"], "group/project", "{json}");
    assert_eq!(project["project_id"], 42, "{json}");
    assert_eq!(project["rule"], "two-at-a-time", "{json}");
    assert_eq!(project["limit_known"], true, "{json}");
    assert_eq!(
        (&project["limit"], &project["counted"], &project["free"]),
        (&2.into(), &2.into(), &0.into()),
        "{json}"
    );
    let holders: Vec<(u64, &str, bool, &str)> = project["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["job_id"].as_u64().unwrap(),
                h["standing"].as_str().unwrap(),
                h["counts"].as_bool().unwrap(),
                h["phase"].as_str().unwrap_or("none"),
            )
        })
        .collect();
    assert_eq!(
        holders,
        [(601, "time", true, "ready"), (602, "time", true, "ready")],
        "{json}"
    );

    // Every job ended and gave its slot back: no project holds any.
    let json = slots_json(rig.fargate(&["slots", "--json"]));
    assert_eq!(json["projects"], serde_json::json!([]), "{json}");
    assert!(rig.fargate.running_tasks().await.is_empty());
}
