//! [`Driver::project_slots`]: who holds the slots of each project counter of the driver's
//! namespace (`[[Fargate.ProjectRule]] MaxConcurrentJobs`), for an admin whose jobs wait
//! (`fargate slots`, `fargate doctor`). Read only: it decides nothing and forgets no holder.

use std::fmt;

use serde::Serialize;

use super::Driver;
use super::project_slot::counter_project;
use crate::error::Result;
use crate::job::{JobKey, Namespace};
use crate::metadata::{Phase, SlotHolder, SlotStanding};
use crate::world::{from_unix_seconds, human_duration};

/// The counters of a namespace and their holders ([`Driver::project_slots`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SlotReport {
    /// The namespace whose counters these are.
    pub namespace: String,
    /// One per counter that has holders (a counter whose slots were all given back is
    /// left out: all its slots are free), in counter order.
    pub projects: Vec<ProjectSlots>,
}

/// One project's counter: its limit and who holds its slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProjectSlots {
    /// The counter's name in the store (`<namespace>.project-<id>`).
    pub counter: String,
    /// The project for people: its path, else `id <id>`, else the counter.
    pub project: String,
    /// The project's id, when known (the counter's name or a holder's record).
    pub project_id: Option<u64>,
    /// The project's path, when known (the counter's name or a holder's record).
    pub project_path: Option<String>,
    /// Its limit by the configuration now; `None`: no rule limits the project any more,
    /// or the limit depends on the project's path, which nothing read names (see
    /// [`ProjectSlots::limit_known`]).
    pub limit: Option<u32>,
    /// Whether the limit could be told: `false` when the counter names the project by id,
    /// no holder's record names its path, and a rule matches paths.
    pub limit_known: bool,
    /// The rule that sets the limit.
    pub rule: Option<String>,
    /// How many holders count against the limit.
    pub counted: usize,
    /// How many jobs could take a slot now without waiting (`limit - counted`, at least
    /// 0); `None` without a limit.
    pub free: Option<u32>,
    /// Every holder, counted or not, in key order.
    pub holders: Vec<SlotHolding>,
}

impl ProjectSlots {
    /// Whether a job of the project would wait now.
    pub fn at_limit(&self) -> bool {
        self.free == Some(0)
    }
}

/// A holder of a project's slot: the counter's entry and what its job's record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SlotHolding {
    /// The job's key.
    pub job: JobKey,
    /// GitLab's job id (from the record, else the key).
    pub job_id: Option<u64>,
    /// The job's name, when its record says.
    pub job_name: Option<String>,
    /// Whether it counts, and why.
    pub standing: SlotStanding,
    /// Whether it counts against the limit.
    pub counts: bool,
    /// Until when it counts without a record (Unix seconds).
    pub until: u64,
    /// When its job's record was written first (Unix seconds), if it has one.
    pub record_since: Option<u64>,
    /// The job's phase, if it has a record.
    pub phase: Option<Phase>,
}

impl Driver {
    /// The project counters of this driver's namespace, each with its limit by the
    /// configuration and every holder: whether it counts (by the rule the store's
    /// `acquire_slot` applies) and what its job's record says. Reads the store only
    /// (one listing of the counters, one read per counter and per holder): no lock, no
    /// backend call. A project that no job holds a slot of now is not listed: all its
    /// slots are free.
    pub async fn project_slots(&self) -> Result<SlotReport> {
        let prefix = format!("{}.", self.namespace);
        let mut projects = Vec::new();
        for counter in self.store.slot_counters(&prefix).await? {
            let holders = self.store.slot_holders(&counter).await?;
            if !holders.is_empty() {
                projects.push(self.project_of(&counter, holders).await?);
            }
        }
        Ok(SlotReport {
            namespace: self.namespace.to_string(),
            projects,
        })
    }

    /// The counter `counter`'s project, limit and holders.
    async fn project_of(&self, counter: &str, holders: Vec<SlotHolder>) -> Result<ProjectSlots> {
        let (mut project_id, mut project_path) = counter_project(&self.namespace, counter);
        let mut listed = Vec::new();
        for holder in holders {
            let record = self.store.get(&holder.key).await.unwrap_or_else(|err| {
                tracing::warn!(job = %holder.key, error = %err, "cannot read the record of a slot holder");
                None
            });
            let identity = record.as_ref().and_then(|r| r.identity.as_ref());
            // The record's project is JOB_RESPONSE_FILE's, as the counter's name was.
            if let Some(identity) = identity {
                project_id = project_id.or(identity.project_id);
                project_path = project_path.or_else(|| identity.project_path.clone());
            }
            listed.push(SlotHolding {
                job_id: identity
                    .map(|i| i.job_id)
                    .or_else(|| job_id_of(&self.namespace, &holder.key)),
                job_name: identity.and_then(|i| i.job_name.clone()),
                standing: holder.standing,
                counts: holder.standing.counts(),
                until: holder.until,
                record_since: record.as_ref().map(|r| r.created_at),
                phase: record.as_ref().map(|r| r.phase),
                job: holder.key,
            });
        }
        let rules = &self.options.shape;
        // Without the path, a rule that matches paths may set a lower limit than the ids'.
        let limit_known = project_path.is_some()
            || !rules
                .project_rules
                .iter()
                .any(|r| r.max_concurrent_jobs.is_some() && !r.projects.is_empty());
        let limit = rules
            .concurrency_limit(project_path.as_deref(), project_id)
            .filter(|_| limit_known);
        let counted = listed.iter().filter(|h| h.counts).count();
        let free = limit.as_ref().map(|l| {
            l.limit
                .saturating_sub(u32::try_from(counted).unwrap_or(u32::MAX))
        });
        Ok(ProjectSlots {
            counter: counter.to_owned(),
            project: match (&project_path, project_id) {
                (Some(p), _) => p.clone(),
                (None, Some(id)) => format!("id {id}"),
                (None, None) => counter.to_owned(),
            },
            project_id,
            project_path,
            limit: limit.as_ref().map(|l| l.limit),
            limit_known,
            rule: limit.map(|l| l.rule),
            counted,
            free,
            holders: listed,
        })
    }
}

/// The job id of a job key of `namespace` (`<namespace>-<id>`).
fn job_id_of(namespace: &Namespace, key: &JobKey) -> Option<u64> {
    key.as_str()
        .strip_prefix(namespace.as_str())?
        .strip_prefix('-')?
        .parse()
        .ok()
}

impl fmt::Display for SlotReport {
    /// A block per project, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.projects {
            writeln!(f, "{p}")?;
        }
        let full = self.projects.iter().filter(|p| p.at_limit()).count();
        write!(
            f,
            "{} project(s) of namespace {} hold slots, {full} at its limit",
            self.projects.len(),
            self.namespace
        )
    }
}

impl fmt::Display for ProjectSlots {
    /// `project group/app (id 42): 4 of 4 slots held, 0 free (rule "heavy")`, then a line
    /// per holder.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "project {}", self.project)?;
        if let (Some(_), Some(id)) = (&self.project_path, self.project_id) {
            write!(f, " (id {id})")?;
        }
        match (self.limit, self.free, &self.rule) {
            (Some(limit), Some(free), Some(rule)) => {
                write!(
                    f,
                    ": {} of {limit} slots held, {free} free (rule {rule:?})",
                    self.counted
                )?;
                if free == 0 {
                    write!(f, ": its next job waits")?;
                }
            }
            _ if !self.limit_known => write!(
                f,
                ": {} slots held, limit not known (no holder's record names the project's path)",
                self.counted
            )?,
            _ => write!(f, ": {} slots held, no rule limits it now", self.counted)?,
        }
        let now = crate::world::now();
        for h in &self.holders {
            write!(f, "\n  {}", h.line(now))?;
        }
        Ok(())
    }
}

impl SlotHolding {
    /// The holder as one line, at `now`.
    fn line(&self, now: std::time::SystemTime) -> String {
        let job = match self.job_id {
            Some(id) => format!("job {id} ({})", self.job),
            None => format!("job {}", self.job),
        };
        let name = self
            .job_name
            .as_ref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let until = from_unix_seconds(self.until);
        let record = match (self.record_since, self.phase) {
            (Some(since), Some(phase)) => {
                let age = now
                    .duration_since(from_unix_seconds(since))
                    .unwrap_or_default();
                format!("record {phase:?} since {} ago", human_duration(age))
            }
            _ => "no record".to_owned(),
        };
        let why = match self.standing {
            SlotStanding::Time => format!(
                "counts: its time has {} left ({record})",
                human_duration(until.duration_since(now).unwrap_or_default())
            ),
            SlotStanding::Record => format!("counts: its job has a {record}; its time is up"),
            SlotStanding::Gone => "does not count: its time is up and it has no record (forgotten at the next acquire)".to_owned(),
        };
        format!("{job}{name}: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_comes_from_a_key_of_the_namespace_only() {
        let ns = Namespace::parse("ci").unwrap();
        let key = |k: &str| JobKey::parse(k).unwrap();
        assert_eq!(job_id_of(&ns, &key("ci-42")), Some(42));
        assert_eq!(job_id_of(&ns, &key("cix-42")), None);
        assert_eq!(job_id_of(&ns, &key("ci-x-42")), None);
    }

    #[test]
    fn each_holder_says_why_it_counts_or_that_it_does_not() {
        let now = crate::world::now();
        let at = |ago: u64| crate::world::unix_seconds(now) - ago;
        let holding = |id: u64, standing, until, record: Option<u64>| SlotHolding {
            job: JobKey::parse(&format!("ci-{id}")).unwrap(),
            job_id: Some(id),
            job_name: record.map(|_| "build".to_owned()),
            standing,
            counts: standing.counts(),
            until,
            record_since: record,
            phase: record.map(|_| Phase::Ready),
        };
        let project = ProjectSlots {
            counter: "ci.project-42".into(),
            project: "group/app".into(),
            project_id: Some(42),
            project_path: Some("group/app".into()),
            limit: Some(2),
            limit_known: true,
            rule: Some("heavy".into()),
            counted: 2,
            free: Some(0),
            holders: vec![
                holding(1, SlotStanding::Record, at(300), Some(at(720))),
                holding(2, SlotStanding::Time, at(0) + 150, None),
                holding(3, SlotStanding::Gone, at(60), None),
            ],
        };
        let text = SlotReport {
            namespace: "ci".into(),
            projects: vec![project],
        }
        .to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "project group/app (id 42): 2 of 2 slots held, 0 free (rule \"heavy\"): its next job waits",
                "  job 1 (ci-1) \"build\": counts: its job has a record Ready since 12 min ago; its time is up",
                lines[2],
                "  job 3 (ci-3): does not count: its time is up and it has no record (forgotten at the next acquire)",
                "1 project(s) of namespace ci hold slots, 1 at its limit",
            ]
        );
        // The time left is at most what was given, by the second the test takes.
        assert!(
            lines[2].starts_with("  job 2 (ci-2): counts: its time has 2 min")
                && lines[2].ends_with(" left (no record)"),
            "{text}"
        );
    }
}
