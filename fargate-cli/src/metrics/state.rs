//! [`State`]: the metrics of all the driver's processes so far, and their Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fargate_core::observe::StageOutcome;
use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the duration histograms' buckets.
pub(crate) const BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The label of a job without a failure.
const SUCCESS: &str = StageOutcome::Success.as_str();

/// How long a job's failure waits for its cleanup before it is forgotten.
const PENDING_TTL_SECS: u64 = 2 * 24 * 3600;

/// A histogram: counts per bucket (not cumulative), sum and count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, secs: f64) {
        self.buckets.resize(BUCKETS.len(), 0);
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        self.buckets.resize(BUCKETS.len(), 0);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// A job whose stage failed, waiting for its cleanup to be counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) outcome: String,
    pub(crate) since: u64,
}

/// Counters and histograms, by label values. One process's changes are a `State` too
/// (its delta), merged into the shared one under the lock.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct State {
    /// `stage outcome` → count.
    pub(crate) stages: BTreeMap<String, u64>,
    /// outcome → jobs, counted at cleanup.
    pub(crate) jobs: BTreeMap<String, u64>,
    /// `operation outcome` → launcher calls.
    pub(crate) api_calls: BTreeMap<String, u64>,
    /// operation → retries.
    pub(crate) retries: BTreeMap<String, u64>,
    /// cause → tasks stopped.
    pub(crate) stops: BTreeMap<String, u64>,
    /// outcome → prepares, with a warm pool.
    pub(crate) warm: BTreeMap<String, u64>,
    /// Failed jobs' tasks kept for debugging (their cleanup did not stop them).
    pub(crate) kept: u64,
    /// point (`accepted`, ..., `ready`) → time from prepare's start.
    pub(crate) prepare: BTreeMap<String, Histogram>,
    /// phase (`provisioning`, `image_pull`, ...) → its duration, from ECS's timestamps.
    pub(crate) task_phases: BTreeMap<String, Histogram>,
    /// Estimated cost of the tasks summarized at cleanup.
    pub(crate) cost: f64,
    /// job key → its first failure, until its cleanup.
    pub(crate) pending: BTreeMap<String, Pending>,
}

fn add(map: &mut BTreeMap<String, u64>, key: String, n: u64) {
    *map.entry(key).or_default() += n;
}

impl State {
    /// Adds `delta` (one process's changes).
    pub(crate) fn merge(&mut self, delta: &State) {
        for (mine, theirs) in [
            (&mut self.stages, &delta.stages),
            (&mut self.jobs, &delta.jobs),
            (&mut self.api_calls, &delta.api_calls),
            (&mut self.retries, &delta.retries),
            (&mut self.stops, &delta.stops),
            (&mut self.warm, &delta.warm),
        ] {
            for (k, n) in theirs {
                add(mine, k.clone(), *n);
            }
        }
        for (mine, theirs) in [
            (&mut self.prepare, &delta.prepare),
            (&mut self.task_phases, &delta.task_phases),
        ] {
            for (k, h) in theirs {
                mine.entry(k.clone()).or_default().merge(h);
            }
        }
        self.cost += delta.cost;
        self.kept += delta.kept;
    }

    /// Counts a stage's `outcome`, and a job's once its cleanup runs: the job's first
    /// failure (of prepare or a script other than `after_script`), or `success`.
    pub(crate) fn finish_stage(
        &mut self,
        stage: &str,
        step: Option<&str>,
        outcome: &str,
        job: Option<&str>,
        now: u64,
    ) {
        add(&mut self.stages, format!("{stage} {outcome}"), 1);
        self.pending
            .retain(|_, p| now.saturating_sub(p.since) < PENDING_TTL_SECS);
        let Some(job) = job else { return };
        match stage {
            "cleanup" => {
                let outcome = self
                    .pending
                    .remove(job)
                    .map_or_else(|| SUCCESS.to_owned(), |p| p.outcome);
                add(&mut self.jobs, outcome, 1);
            }
            "prepare" | "run" if outcome != SUCCESS && step != Some("after_script") => {
                self.pending.entry(job.to_owned()).or_insert(Pending {
                    outcome: outcome.to_owned(),
                    since: now,
                });
            }
            _ => {}
        }
    }

    /// The Prometheus text format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        counter(
            &mut out,
            "fargate_jobs_total",
            "Jobs by outcome (success, script_failure, system_failure, cancelled), counted at cleanup.",
            &self.jobs,
            &["outcome"],
        );
        counter(
            &mut out,
            "fargate_stages_total",
            "Driver processes (config, prepare, run, cleanup) by outcome.",
            &self.stages,
            &["stage", "outcome"],
        );
        counter(
            &mut out,
            "fargate_ecs_api_calls_total",
            "Calls to ECS by operation (launch, describe, stop, find, list) and outcome (ok, throttled, error).",
            &self.api_calls,
            &["operation", "outcome"],
        );
        counter(
            &mut out,
            "fargate_retries_total",
            "Operations tried again after a temporary error.",
            &self.retries,
            &["operation"],
        );
        counter(
            &mut out,
            "fargate_tasks_stopped_total",
            "Tasks stopped, by who stopped them (cleanup, rollback, gc, pool, release).",
            &self.stops,
            &["cause"],
        );
        counter(
            &mut out,
            "fargate_warm_pool_prepares_total",
            "Prepares with a warm pool, by what the pool did: taken, unusable (stopped, the job launched its own), empty, ineligible (the job's task differs from the pool's).",
            &self.warm,
            &["outcome"],
        );
        histogram(
            &mut out,
            "fargate_prepare_seconds",
            "Time from the start of prepare until each point (accepted, address_known, ssh_up, ready).",
            &self.prepare,
            "point",
        );
        histogram(
            &mut out,
            "fargate_task_phase_seconds",
            "Duration of the task's start phases from ECS's timestamps (provisioning, image_pull, container_start, ssh).",
            &self.task_phases,
            "phase",
        );
        let _ = writeln!(
            out,
            "# HELP fargate_tasks_kept_total Failed jobs' tasks kept running for debugging at their cleanup ([[Fargate.ProjectRule]] KeepFailedFor); fargate_tasks_stopped_total counts their stop (gc, release).\n\
             # TYPE fargate_tasks_kept_total counter\n\
             fargate_tasks_kept_total {}",
            self.kept
        );
        let _ = writeln!(
            out,
            "# HELP fargate_estimated_cost_dollars_total Estimated cost of the tasks at their cleanup, a kept task's with its time kept (list prices; an estimate).\n\
             # TYPE fargate_estimated_cost_dollars_total counter\n\
             fargate_estimated_cost_dollars_total {}",
            self.cost
        );
        out
    }
}

/// `a="x",b="y"` of the space-separated `values`.
fn labels(names: &[&str], values: &str) -> String {
    names
        .iter()
        .zip(values.split(' '))
        .map(|(n, v)| format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    values: &BTreeMap<String, u64>,
    names: &[&str],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, n) in values {
        let _ = writeln!(out, "{name}{{{}}} {n}", labels(names, k));
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    values: &BTreeMap<String, Histogram>,
    label: &str,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (k, h) in values {
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{k}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{k}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{k}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{k}\"}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_counts_its_first_failure_at_cleanup() {
        let mut s = State::default();
        s.finish_stage("prepare", None, "success", Some("ci-1"), 100);
        s.finish_stage(
            "run",
            Some("build_script"),
            "script_failure",
            Some("ci-1"),
            101,
        );
        s.finish_stage(
            "run",
            Some("after_script"),
            "system_failure",
            Some("ci-1"),
            102,
        );
        s.finish_stage("cleanup", None, "success", Some("ci-1"), 103);
        s.finish_stage("prepare", None, "success", Some("ci-2"), 104);
        s.finish_stage(
            "run",
            Some("after_script"),
            "script_failure",
            Some("ci-2"),
            105,
        );
        s.finish_stage("cleanup", None, "success", Some("ci-2"), 106);
        assert_eq!(s.jobs.get("script_failure"), Some(&1));
        assert_eq!(s.jobs.get("success"), Some(&1));
        assert!(s.pending.is_empty());
        assert_eq!(s.stages.get("run script_failure"), Some(&2));
    }

    #[test]
    fn kept_tasks_are_counted_across_processes() {
        let mut s = State::default();
        let delta = State {
            kept: 1,
            ..State::default()
        };
        s.merge(&delta);
        s.merge(&delta);
        assert!(
            s.render().contains("\nfargate_tasks_kept_total 2\n"),
            "{}",
            s.render()
        );
    }

    #[test]
    fn failures_without_cleanup_are_forgotten_after_two_days() {
        let mut s = State::default();
        s.finish_stage("prepare", None, "cancelled", Some("ci-1"), 0);
        s.finish_stage("config", None, "success", None, PENDING_TTL_SECS + 1);
        assert!(s.pending.is_empty());
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut s = State::default();
        let h = s.prepare.entry("ready".into()).or_default();
        h.observe(0.2);
        h.observe(3.0);
        h.observe(5000.0);
        let text = s.render();
        assert!(
            text.contains("fargate_prepare_seconds_bucket{point=\"ready\",le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fargate_prepare_seconds_bucket{point=\"ready\",le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fargate_prepare_seconds_bucket{point=\"ready\",le=\"1800\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fargate_prepare_seconds_bucket{point=\"ready\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("fargate_prepare_seconds_count{point=\"ready\"} 3\n"),
            "{text}"
        );
    }
}
