//! [`RetryPolicy`]: retrying temporary failures with jittered exponential backoff, bounded
//! by attempts and elapsed time.
//!
//! The [`Driver`](crate::Driver) is the one owner of retries: it retries the launcher's
//! calls itself (a launch with the rules of its client tokens, stop and find under this
//! policy), so backends should retry at most transport-level hiccups, and embedders should
//! not wrap the launcher in another retry layer. The layers multiply: a call that keeps
//! failing is sent at most `max_attempts` × (the backend's transport attempts) times.
//! Only errors marked temporary ([`crate::Error::is_temporary`]: throttling, capacity,
//! unreachable) are retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::ConfigProblem;

/// How the driver retries temporary failures of the launcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 disables retries). Default 5.
    pub max_attempts: u32,
    /// Backoff before the first retry (then doubled, with jitter). Default 1 s.
    pub initial_backoff: Duration,
    /// Largest backoff. Default 20 s.
    pub max_backoff: Duration,
    /// No retry starts after this much time since the first attempt. Default 2 minutes.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy::default().with_max_attempts(1)
    }

    /// Sets the number of attempts, the first included.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the first and the largest backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the time after which no retry starts.
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = max_elapsed;
        self
    }

    /// Every problem of the policy; keys are field paths (`retry.max_attempts`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.max_attempts == 0 {
            p.push(
                ConfigProblem::new("retry.max_attempts", "must be at least 1")
                    .with_hint("1 disables retries"),
            );
        }
        p
    }
}
