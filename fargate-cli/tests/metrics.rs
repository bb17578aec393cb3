//! The metrics file (`[Metrics] File`): many driver processes at once add up exactly, a
//! reader never sees a partial file, and a job's figures land under the documented names.
//! The text is read with a Prometheus text-format parser.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{no_lag, runner_emu};
use fargate_testkit::local_fargate::LocalFargate;
use fargate_testkit::runner::{Job, JobStatus};
use prometheus_parse::{Scrape, Value};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of `metric` with exactly `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && labels.len() == s.labels.iter().count()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

fn config_file(dir: &Path, metrics: &Path) -> PathBuf {
    let path = dir.join("fargate.toml");
    std::fs::write(
        &path,
        format!(
            "Namespace = \"metrics\"\n\
             [Fargate]\n  Cluster = \"ci\"\n  Subnet = \"subnet-1\"\n  SecurityGroup = \"sg-1\"\n  \
             TaskDefinition = \"ci:1\"\n\
             [TaskMetadata]\n  Directory = {:?}\n\
             [Metrics]\n  File = {:?}\n",
            dir.join("metadata").display().to_string(),
            metrics.display().to_string(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn concurrent_processes_add_up_and_readers_never_see_a_partial_file() {
    const WRITERS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("fargate.prom");
    let config = config_file(dir.path(), &metrics);
    let done = Arc::new(AtomicBool::new(false));
    // A reader (node_exporter) reads the file over and over while the processes write.
    let reader = {
        let (done, metrics) = (done.clone(), metrics.clone());
        std::thread::spawn(move || {
            let (mut reads, mut last) = (0u32, 0.0);
            while !done.load(Ordering::SeqCst) {
                let Ok(text) = std::fs::read_to_string(&metrics) else {
                    continue; // not written yet
                };
                assert!(
                    text.ends_with('\n') && text.contains("fargate_estimated_cost_dollars_total"),
                    "a partial file:\n{text}"
                );
                let seen = value(
                    &parse(&text),
                    "fargate_stages_total",
                    &[("stage", "config"), ("outcome", "success")],
                )
                .expect("the config stages");
                assert!(seen >= last, "the count went back from {last} to {seen}");
                last = seen;
                reads += 1;
            }
            reads
        })
    };
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_fargate"))
                .args(["--config".as_ref(), config.as_os_str()])
                .args(["custom", "config"])
                .env("CUSTOM_ENV_CI_JOB_ID", (100 + i).to_string())
                .env("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "tok")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start fargate")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader saw only whole files");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let scrape = parse(&text);
    assert_eq!(
        value(
            &scrape,
            "fargate_stages_total",
            &[("stage", "config"), ("outcome", "success")]
        ),
        Some(WRITERS as f64),
        "{text}"
    );
    assert!(reads > 0);
    // Only the output, its state and its lock remain: no temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("fargate.prom"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["fargate.prom", "fargate.prom.lock", "fargate.prom.state"]
    );
}

/// The config stage with `config`, extra arguments first; its output.
fn config_stage(config: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fargate"))
        .args(args)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["custom", "config"])
        .env("CUSTOM_ENV_CI_JOB_ID", "7")
        .output()
        .expect("run fargate")
}

/// In a directory others may write to (node_exporter's textfile directory often is), the
/// driver writes no metrics, and says why and how to fix it; the stage itself succeeds.
#[test]
fn a_metrics_directory_others_may_write_to_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).unwrap();
    std::fs::set_permissions(&textfile, std::fs::Permissions::from_mode(0o777)).unwrap();
    let metrics = textfile.join("fargate.prom");
    let out = config_stage(&config_file(dir.path(), &metrics), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is writable by group or others") && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&textfile).unwrap().count(), 0);
}

/// A link planted where the log file goes is not followed: the stage fails before doing
/// anything, and the link's target is neither created nor written.
#[test]
fn a_link_at_the_log_file_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &dir.path().join("fargate.prom"));
    let victim = dir.path().join("victim");
    let log = dir.path().join("fargate.log");
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let out = config_stage(&config, &["--log-file".as_ref(), log.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(!victim.exists(), "the log file's link was followed");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_count_by_outcome_with_their_phases_calls_and_stops() {
    fargate_testkit::require_fixture!(LocalFargate);
    let fargate = Arc::new(LocalFargate::start(no_lag()).await);
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata");
    let metrics = dir.path().join("fargate.prom");
    let config = dir.path().join("fargate.toml");
    std::fs::write(
        &config,
        format!(
            "{}[Metrics]\n  File = {:?}\n",
            fargate.fargate_toml(&metadata),
            metrics.display().to_string()
        ),
    )
    .unwrap();
    let emu = runner_emu(&fargate, &config, metadata);
    let results = tokio::task::spawn_blocking(move || {
        [
            emu.run(Job::new(1611, &["echo fine"])),
            emu.run(Job::new(1612, &["exit 4"])),
        ]
    })
    .await
    .unwrap();
    assert_eq!(results[0].status, JobStatus::Success, "{}", results[0].log);
    assert_eq!(
        results[1].status,
        JobStatus::ScriptFailure(4),
        "{}",
        results[1].log
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    let s = parse(&text);
    type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
    let want: [Want<'_>; 8] = [
        ("fargate_jobs_total", &[("outcome", "success")], 1.0),
        ("fargate_jobs_total", &[("outcome", "script_failure")], 1.0),
        (
            "fargate_stages_total",
            &[("stage", "prepare"), ("outcome", "success")],
            2.0,
        ),
        ("fargate_tasks_stopped_total", &[("cause", "cleanup")], 2.0),
        (
            "fargate_ecs_api_calls_total",
            &[("operation", "launch"), ("outcome", "ok")],
            2.0,
        ),
        ("fargate_prepare_seconds_count", &[("point", "ready")], 2.0),
        (
            "fargate_prepare_seconds_count",
            &[("point", "accepted")],
            2.0,
        ),
        (
            "fargate_task_phase_seconds_count",
            &[("phase", "image_pull")],
            2.0,
        ),
    ];
    for (metric, labels, n) in want {
        assert_eq!(
            value(&s, metric, labels),
            Some(n),
            "{metric}{labels:?}\n{text}"
        );
    }
    let cost = value(&s, "fargate_estimated_cost_dollars_total", &[]).unwrap();
    assert!(cost > 0.0 && cost < 0.01, "{cost}\n{text}");
}
