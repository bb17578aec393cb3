//! [`WarmPoolOptions`]: the warm pool of idle tasks that jobs claim ([`crate::driver::pool`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::ConfigProblem;
use crate::shape::SizeCatalog;

/// Most idle tasks a pool may hold.
pub const MAX_POOL_SIZE: usize = 50;

/// The warm pool: tasks started ahead of jobs, each claimed by one job (see
/// [`crate::driver::pool`]). Off by default (`size` 0).
///
/// Idle tasks are billed like running jobs: a pool of `size` costs `size` tasks around the
/// clock while it is kept full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct WarmPoolOptions {
    /// How many idle tasks to keep (0: no pool).
    pub size: usize,
    /// How long a task may wait for a job; past it, the task is stopped (by the next
    /// prepare, `pool fill` or `gc`). Default 30 minutes.
    pub max_idle: Duration,
    /// Task CPU units of the pool's tasks; `None`: the size a job gets when it asks for none
    /// ([`ShapePolicy`](crate::options::ShapePolicy)'s default CPU, else the task definition's).
    pub cpu: Option<u32>,
    /// Task memory (MiB) of the pool's tasks; `None` as for `cpu`.
    pub memory: Option<u32>,
    /// How long prepare waits for a claimed task that was ready when it was last seen to
    /// answer SSH, before it gives it up (stops it) and launches a task for the job.
    /// Default 10 s.
    pub claim_timeout: Duration,
}

impl Default for WarmPoolOptions {
    fn default() -> Self {
        WarmPoolOptions {
            size: 0,
            max_idle: Duration::from_secs(30 * 60),
            cpu: None,
            memory: None,
            claim_timeout: Duration::from_secs(10),
        }
    }
}

impl WarmPoolOptions {
    /// Whether there is a pool.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }

    /// Every problem; the pool's size is checked against `sizes` when the backend's
    /// catalog is known.
    pub(crate) fn problems(&self, sizes: Option<&SizeCatalog>) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.size > MAX_POOL_SIZE {
            p.push(
                ConfigProblem::new("pool.size", format!("must be at most {MAX_POOL_SIZE}"))
                    .with_hint("every idle task is billed; a pool covers the jobs that start together, not all of them"),
            );
        }
        for (key, d) in [
            ("pool.max_idle", self.max_idle),
            ("pool.claim_timeout", self.claim_timeout),
        ] {
            if d.is_zero() {
                p.push(ConfigProblem::new(key, "must be positive"));
            }
        }
        match (self.cpu, self.memory) {
            (None, None) => {}
            (Some(cpu), Some(memory)) => match sizes {
                Some(catalog) if !catalog.offers(cpu, memory) => p.push(
                    ConfigProblem::new(
                        "pool.cpu",
                        format!(
                            "{cpu} CPU units with {memory} MiB is not a {} size",
                            catalog.backend
                        ),
                    )
                    .with_hint(match catalog.memory_sizes(cpu) {
                        [] => format!(
                            "CPU units {} offers: {}",
                            catalog.backend,
                            catalog
                                .cpus()
                                .map(|c| c.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        ms => format!(
                            "with {cpu} CPU units, {} offers {}-{} MiB",
                            catalog.backend,
                            ms[0],
                            ms[ms.len() - 1]
                        ),
                    }),
                ),
                _ => {}
            },
            _ => p.push(ConfigProblem::new(
                "pool.cpu",
                "CPU and memory must be set together",
            )),
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_problems_name_their_keys() {
        let o = WarmPoolOptions::default();
        assert!(!o.enabled() && o.problems(None).is_empty());
        let bad = WarmPoolOptions {
            size: MAX_POOL_SIZE + 1,
            max_idle: Duration::ZERO,
            cpu: Some(1024),
            memory: Some(512),
            ..WarmPoolOptions::default()
        };
        let catalog = SizeCatalog::new("Test", [(1024, vec![2048, 4096])]);
        let keys: Vec<String> = bad
            .problems(Some(&catalog))
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["pool.size", "pool.max_idle", "pool.cpu"]);
        let hint = bad.problems(Some(&catalog)).pop().unwrap().hint;
        assert_eq!(
            hint.as_deref(),
            Some("with 1024 CPU units, Test offers 2048-4096 MiB")
        );
        // Without the backend's catalog, the size is passed on as it is.
        assert_eq!(bad.problems(None).len(), 2);
        let half = WarmPoolOptions {
            cpu: Some(1024),
            ..WarmPoolOptions::default()
        };
        assert_eq!(half.problems(Some(&catalog)).len(), 1);
        let sized = WarmPoolOptions {
            size: 2,
            cpu: Some(1024),
            memory: Some(2048),
            ..WarmPoolOptions::default()
        };
        assert!(sized.enabled() && sized.problems(Some(&catalog)).is_empty());
    }
}
