//! [`JobSummary`]: where a job's start time went, what its task looks like, what it cost.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::cost::CostEstimate;
use crate::launcher::TaskRef;
use crate::task_details::TaskDetails;

/// When a summary is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SummaryPoint {
    /// At the end of prepare: the task is ready.
    Prepared,
    /// At cleanup, before the task is stopped.
    Cleanup,
}

/// A job's task at the end of prepare or at cleanup: its timeline from the backend's
/// timestamps and the driver's own clock, its shape, its run time and its estimated cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobSummary {
    /// When the summary was made.
    pub point: SummaryPoint,
    /// The task.
    pub task: TaskRef,
    /// What the backend reported.
    pub details: TaskDetails,
    /// Prepare's start until the backend accepted the task (driver's clock; prepare only).
    pub accepted: Option<Duration>,
    /// Wall-clock time at which the job's key logged in (prepare only).
    pub ready_at: Option<SystemTime>,
    /// Wall-clock time of the summary.
    pub at: SystemTime,
    /// The estimated cost so far, when the price table knows the task's region.
    pub cost: Option<CostEstimate>,
    /// For a task from the warm pool (prepare only): prepare's start until the job's key
    /// logged in. The backend's timeline is then the pool's, not the job's: the summary
    /// says how long the task waited in the pool instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_claim: Option<Duration>,
    /// At cleanup of a failed job whose task is kept for debugging: for how long at most
    /// (the task may be released earlier). [`JobSummary::cost`] includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_for: Option<Duration>,
}

/// An image pull longer than this that takes more than half of the start gets a hint in
/// the summary ([`JobSummary::slow_pull`]).
pub const SLOW_PULL: Duration = Duration::from_secs(20);

/// The phases of a task's start and life, from [`JobSummary::phases`]; `None` where a
/// timestamp is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Phases {
    /// Prepare's start until the backend accepted the task.
    pub accepted: Option<Duration>,
    /// Created until the image pull began (capacity, network interface).
    pub provisioning: Option<Duration>,
    /// The image pull.
    pub image_pull: Option<Duration>,
    /// Pulled until the containers ran (pending).
    pub container_start: Option<Duration>,
    /// Containers running until the job's key logged in over SSH.
    pub ssh_ready: Option<Duration>,
    /// Containers running until the summary (or until the task began to stop).
    pub running: Option<Duration>,
}

impl JobSummary {
    /// A summary of `task` with what the backend reported, made now.
    pub fn new(point: SummaryPoint, task: TaskRef, details: TaskDetails) -> Self {
        JobSummary {
            point,
            task,
            details,
            accepted: None,
            ready_at: None,
            at: crate::world::now(),
            cost: None,
            warm_claim: None,
            kept_for: None,
        }
    }

    /// The phases, from the backend's timestamps and the driver's clock.
    pub fn phases(&self) -> Phases {
        let d = &self.details;
        let end = d.stopping_at.or(d.stopped_at).unwrap_or(self.at);
        Phases {
            accepted: self.accepted,
            provisioning: TaskDetails::between(d.created_at, d.pull_started_at),
            image_pull: TaskDetails::between(d.pull_started_at, d.pull_stopped_at),
            container_start: TaskDetails::between(d.pull_stopped_at, d.started_at),
            ssh_ready: TaskDetails::between(d.started_at, self.ready_at),
            running: TaskDetails::between(d.started_at, Some(end)),
        }
    }

    /// When pulling the images took most of the task's start: `(pull, start)` when the
    /// pull took more than [`SLOW_PULL`] and more than half of the start (the backend's
    /// creation of the task until the job's key logged in, plus the launch call). Prepare
    /// only, not for a warm task.
    pub fn slow_pull(&self) -> Option<(Duration, Duration)> {
        if self.point != SummaryPoint::Prepared || self.warm_claim.is_some() {
            return None;
        }
        let p = self.phases();
        let pull = p.image_pull?;
        let start = TaskDetails::between(self.details.created_at, self.ready_at)?
            + self.accepted.unwrap_or_default();
        (pull > SLOW_PULL && pull * 2 > start).then_some((pull, start))
    }

    /// The billed run time so far: from the start of the image pull (or the task's creation)
    /// until it stopped, or until the summary.
    pub fn run_time(&self) -> Option<Duration> {
        let d = &self.details;
        let start = d.pull_started_at.or(d.created_at);
        TaskDetails::between(start, Some(d.stopped_at.unwrap_or(self.at)))
    }
}

/// `1.2 s`, `3 min 4 s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl fmt::Display for JobSummary {
    /// A few short lines for the job log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.details;
        let p = self.phases();
        let timeline: Vec<String> = [
            ("accepted", p.accepted),
            ("provisioning", p.provisioning),
            ("image pull", p.image_pull),
            ("container start", p.container_start),
            ("SSH ready", p.ssh_ready),
        ]
        .into_iter()
        .filter(|_| self.point == SummaryPoint::Prepared)
        .filter_map(|(name, d)| Some(format!("{name} {}", human(d?))))
        .collect();
        match self.point {
            SummaryPoint::Prepared if self.warm_claim.is_some() => {
                let idle = TaskDetails::between(d.started_at, self.ready_at)
                    .map_or(String::new(), |idle| format!(" (idle {})", human(idle)));
                let claim = self.warm_claim.map_or(String::new(), human);
                writeln!(
                    f,
                    "summary: warm task from the pool{idle}, taken over in {claim}"
                )?
            }
            SummaryPoint::Prepared if timeline.is_empty() => writeln!(f, "summary:")?,
            SummaryPoint::Prepared => writeln!(f, "summary: {}", timeline.join(", "))?,
            SummaryPoint::Cleanup => {}
        }
        if let Some((pull, start)) = self.slow_pull() {
            writeln!(
                f,
                "  hint: pulling the images took {} of the {} start (the task's backend caches no image between tasks): use a smaller image (a slim or distroless base, fewer layers), a registry in the task's region, or a pull-through cache in that region",
                human(pull),
                human(start)
            )?;
        }
        if self.point == SummaryPoint::Cleanup {
            match p.running {
                Some(running) => writeln!(f, "summary at cleanup: running {}", human(running))?,
                None => writeln!(f, "summary at cleanup:")?,
            }
        }
        let mut shape = Vec::new();
        if let Some(p) = &d.capacity_provider {
            shape.push(p.clone());
        }
        if let Some(cpu) = d.cpu_units {
            shape.push(format!("{} vCPU", f64::from(cpu) / 1024.0));
        }
        if let Some(mib) = d.memory_mib {
            shape.push(format!("{} GiB memory", f64::from(mib) / 1024.0));
        }
        if let Some(gib) = d.ephemeral_storage_gib {
            shape.push(format!("{gib} GiB storage"));
        }
        if let Some(a) = &d.cpu_architecture {
            shape.push(a.clone());
        }
        if let Some(v) = &d.platform_version {
            shape.push(format!("platform {v}"));
        }
        if let Some(az) = &d.availability_zone {
            shape.push(az.clone());
        }
        if !shape.is_empty() {
            writeln!(f, "  shape: {}", shape.join(", "))?;
        }
        let kept = self.kept_for.map_or(String::new(), |k| {
            format!(" + up to {} kept for debugging", human(k))
        });
        match (self.run_time(), &self.cost) {
            (Some(run), Some(c)) => write!(
                f,
                "  run time {}{kept}, estimated cost ${:.4}{} (list price, {} {}, billed {})",
                human(run),
                c.amount,
                if c.spot {
                    " with the Spot discount"
                } else {
                    ""
                },
                c.key.region,
                if c.key.arm { "ARM" } else { "x86" },
                human(c.billed),
            ),
            (Some(run), None) => write!(f, "  run time {}{kept}, no cost estimate", human(run)),
            (None, _) => write!(f, "  run time unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::PriceTable;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs))
    }

    fn summary() -> JobSummary {
        let details = TaskDetails {
            created_at: at(0),
            pull_started_at: at(12),
            pull_stopped_at: at(20),
            started_at: at(21),
            capacity_provider: Some("FARGATE_SPOT".into()),
            cpu_units: Some(1024),
            memory_mib: Some(2048),
            ephemeral_storage_gib: Some(20),
            cpu_architecture: Some("X86_64".into()),
            platform_version: Some("1.4.0".into()),
            availability_zone: Some("us-east-1a".into()),
            region: Some("us-east-1".into()),
            ..TaskDetails::default()
        };
        let mut s = JobSummary::new(SummaryPoint::Prepared, TaskRef::new("arn:task/1"), details);
        s.accepted = Some(Duration::from_millis(300));
        s.ready_at = at(22);
        s.at = at(22).unwrap();
        s
    }

    #[test]
    fn phases_come_from_the_timestamps() {
        let p = summary().phases();
        assert_eq!(p.provisioning, Some(Duration::from_secs(12)));
        assert_eq!(p.image_pull, Some(Duration::from_secs(8)));
        assert_eq!(p.container_start, Some(Duration::from_secs(1)));
        assert_eq!(p.ssh_ready, Some(Duration::from_secs(1)));
        assert_eq!(p.running, Some(Duration::from_secs(1)));
        assert_eq!(summary().run_time(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_stopped_task_is_billed_until_it_stopped() {
        let mut s = summary();
        s.point = SummaryPoint::Cleanup;
        s.details.stopping_at = at(100);
        s.details.stopped_at = at(130);
        s.at = at(500).unwrap();
        assert_eq!(s.run_time(), Some(Duration::from_secs(118)));
        assert_eq!(s.phases().running, Some(Duration::from_secs(79)));
        assert!(
            s.to_string()
                .starts_with("summary at cleanup: running 1 min 19 s\n  shape: FARGATE_SPOT"),
            "{s}"
        );
    }

    #[test]
    fn missing_timestamps_leave_phases_out() {
        let mut s = summary();
        s.details.pull_started_at = None;
        let p = s.phases();
        assert_eq!((p.provisioning, p.image_pull), (None, None));
        assert_eq!(s.run_time(), Some(Duration::from_secs(22)));
        assert!(!s.to_string().contains("image pull"), "{s}");
    }

    #[test]
    fn reads_as_a_few_lines() {
        let mut s = summary();
        let prices = PriceTable::empty()
            .with_price(
                crate::observe::PriceKey::new("us-east-1", false),
                crate::observe::Price::new(0.04048, 0.004445, 0.000111),
            )
            .with_spot_discount(0.7)
            .with_billing(20, std::time::Duration::from_secs(60));
        s.cost = prices.estimate(&s.details, s.run_time().unwrap());
        assert_eq!(
            s.to_string(),
            "summary: accepted 0.3 s, provisioning 12.0 s, image pull 8.0 s, container start 1.0 s, SSH ready 1.0 s\n  \
             shape: FARGATE_SPOT, 1 vCPU, 2 GiB memory, 20 GiB storage, X86_64, platform 1.4.0, us-east-1a\n  \
             run time 10.0 s, estimated cost $0.0002 with the Spot discount (list price, us-east-1 x86, billed 1 min 0 s)"
        );
    }

    #[test]
    fn a_kept_task_is_estimated_with_its_kept_time() {
        let mut s = summary();
        s.point = SummaryPoint::Cleanup;
        s.kept_for = Some(Duration::from_secs(1800));
        let prices = PriceTable::empty().with_price(
            crate::observe::PriceKey::new("us-east-1", false),
            crate::observe::Price::new(0.04048, 0.004445, 0.000111),
        );
        let run = s.run_time().unwrap() + s.kept_for.unwrap();
        s.cost = prices.estimate(&s.details, run);
        let cost = s.cost.as_ref().unwrap();
        assert_eq!(cost.billed, Duration::from_secs(1810));
        let text = s.to_string();
        assert!(
            text.contains(
                "run time 10.0 s + up to 30 min 0 s kept for debugging, estimated cost $"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_pull_that_dominates_the_start_gets_a_hint() {
        // The fixture's: an 8 s pull of a 22 s start, no hint.
        assert_eq!(summary().slow_pull(), None);
        assert!(!summary().to_string().contains("hint:"));
        // A 50 s pull of a 64 s start.
        let mut s = summary();
        s.details.pull_stopped_at = at(62);
        s.details.started_at = at(63);
        s.ready_at = at(64);
        assert_eq!(
            s.slow_pull(),
            Some((Duration::from_secs(50), Duration::from_millis(64_300)))
        );
        let text = s.to_string();
        let second = text.lines().nth(1).unwrap();
        assert!(
            second.starts_with("  hint: pulling the images took 50.0 s of the 1 min 4 s start")
                && second.contains("pull-through cache"),
            "{text}"
        );
        // Long, but not most of the start (a slow capacity), or at cleanup: no hint.
        s.details.created_at = at(0);
        s.details.pull_started_at = at(40);
        s.details.pull_stopped_at = at(65);
        s.details.started_at = at(66);
        s.ready_at = at(67);
        assert_eq!(s.slow_pull(), None);
        s.details.pull_started_at = at(12);
        s.point = SummaryPoint::Cleanup;
        assert_eq!(s.slow_pull(), None);
    }

    #[test]
    fn a_warm_task_says_how_long_it_idled_instead_of_the_pools_timeline() {
        let mut s = summary();
        s.warm_claim = Some(Duration::from_millis(270));
        s.ready_at = at(21 + 125);
        let text = s.to_string();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "summary: warm task from the pool (idle 2 min 5 s), taken over in 0.3 s"
        );
        assert!(text.contains("  shape: "), "{text}");
    }
}
