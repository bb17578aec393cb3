//! Call budgets: token buckets that every process of a runner takes its API calls from, so
//! that a burst of jobs (a matrix of 200 jobs whose prepares all start within a second)
//! is spread at the rate the backend accepts instead of turning into a retry storm.
//!
//! A [`CallBudget`] hands out *reservations*: [`CallBudget::reserve`] takes a token at
//! once (the bucket may go below zero, which queues the caller) and says how long the
//! caller must wait before its call. Nothing is held while waiting, so a process killed
//! at any point leaks nothing: its reserved token is simply spent, and the bucket keeps
//! refilling at its rate. When the backend throttles anyway (another tool in the account
//! used the same limit), [`CallBudget::throttled`] halves the shared rate (at most once
//! per second, never below a tenth), empties the bucket and voids the queue: every caller
//! still waiting for its turn finds out when it wakes ([`CallBudget::confirm`]) and queues
//! again at the slower rate, so only the calls already under way meet the throttle. The
//! rate then recovers linearly, to the full rate within [`RECOVERY`] (or the rate's own
//! [`recovery`](Rate::recovery)). Every process
//! sharing the budget slows down together, instead of each retrying on its own.
//!
//! Budgets: [`MemoryCallBudget`] (one process), the file store's
//! [`FileCallBudget`](crate::metadata::FileCallBudget) (the processes of one host, under a
//! file lock in the metadata directory). [`BudgetedLauncher`] applies one to a
//! [`TaskLauncher`](crate::TaskLauncher).

mod bucket;
mod launcher;
mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub use bucket::Bucket;
pub use launcher::BudgetedLauncher;
pub use memory::MemoryCallBudget;

/// How long a halved rate takes to recover to the full rate without further throttling.
pub const RECOVERY: Duration = Duration::from_secs(20);

/// What a call is, as far as budgets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallClass {
    /// A launch (for ECS: `RunTask`, which has a bucket of its own).
    Launch,
    /// Another call that changes something: a stop, a relabelling.
    Change,
    /// A task a batch launch starts (a call starting several takes one token each; a
    /// single launch takes none, the launch rate bounds it). With the launch rate, what
    /// the backend's task limit must allow (for ECS: Fargate's task-launch bucket).
    Task,
}

impl CallClass {
    /// Every class.
    pub const ALL: [CallClass; 3] = [CallClass::Launch, CallClass::Change, CallClass::Task];

    /// The class's name in messages (`"launch"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Launch => "launch",
            CallClass::Change => "change",
            CallClass::Task => "task",
        }
    }
}

impl fmt::Display for CallClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token bucket's rate: tokens added per second, how many it holds at most, and how
/// fast it recovers from throttling.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Tokens added per second (more than 0).
    pub per_second: f64,
    /// The bucket's size: the most calls that may go at once after a quiet time (at
    /// least 1).
    pub burst: f64,
    /// How long a rate slowed to its floor by throttling takes to recover to the full
    /// rate (linearly; a halved rate takes a little over half of it). Default
    /// [`RECOVERY`].
    #[serde(default = "default_recovery")]
    pub recovery: Duration,
}

fn default_recovery() -> Duration {
    RECOVERY
}

impl Rate {
    /// `per_second` tokens a second, `burst` at most, recovering within [`RECOVERY`].
    pub fn new(per_second: f64, burst: f64) -> Self {
        Rate {
            per_second,
            burst,
            recovery: RECOVERY,
        }
    }

    /// The same rate, recovering from throttling within `recovery` (more than zero):
    /// longer when other tools in the account take a varying share of the backend's limit.
    pub fn with_recovery(self, recovery: Duration) -> Self {
        Rate { recovery, ..self }
    }

    /// Whether the rate can hand out tokens at all (finite, `per_second > 0`, `burst >= 1`,
    /// a recovery longer than zero).
    pub fn is_valid(self) -> bool {
        self.per_second.is_finite()
            && self.per_second > 0.0
            && self.burst.is_finite()
            && self.burst >= 1.0
            && !self.recovery.is_zero()
    }
}

/// The rates of a budget, one per [`CallClass`]. The backend's crate knows its API's limits
/// and offers defaults below them (for ECS: `fargate_aws::default_call_rates`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallRates {
    /// Launches.
    pub launch: Rate,
    /// Other calls that change something.
    pub change: Rate,
    /// The tasks launches start.
    pub task: Rate,
}

impl CallRates {
    /// `launch`, `change` and `task` rates.
    pub fn new(launch: Rate, change: Rate, task: Rate) -> Self {
        CallRates {
            launch,
            change,
            task,
        }
    }

    /// The same rates, each recovering from throttling within `recovery`
    /// ([`Rate::with_recovery`]).
    pub fn with_recovery(self, recovery: Duration) -> Self {
        CallRates {
            launch: self.launch.with_recovery(recovery),
            change: self.change.with_recovery(recovery),
            task: self.task.with_recovery(recovery),
        }
    }

    /// The rate of `class`.
    pub fn of(&self, class: CallClass) -> Rate {
        match class {
            CallClass::Launch => self.launch,
            CallClass::Change => self.change,
            CallClass::Task => self.task,
        }
    }
}

/// Tokens taken ahead: when their call may go, how many, and the bucket's
/// [`epoch`](Bucket::epoch) they were taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// How long the caller waits before its call (zero: at once).
    pub wait: Duration,
    /// The bucket's epoch when they were taken.
    pub epoch: u64,
    /// How many tokens (at least 1).
    pub tokens: u32,
}

/// A budget of API calls, shared by whoever holds it (see the module documentation).
///
/// Object safe; implementations are cheap to share behind an `Arc`.
#[async_trait]
pub trait CallBudget: fmt::Debug + Send + Sync {
    /// Takes `tokens` tokens of `class` (at least 1: one call, or for
    /// [`CallClass::Task`] the tasks a call starts): how long the caller must wait before
    /// its call (zero when the bucket had them).
    ///
    /// # Cancel safety
    /// Safe to drop: a dropped reservation is spent tokens, which the bucket's refill
    /// makes up for.
    async fn reserve(&self, class: CallClass, tokens: u32) -> Result<Reservation>;

    /// After waiting for `reservation`: `None` when the call may go, or a new reservation
    /// of as many tokens when the backend throttled a call since it was taken (the queue
    /// it was in is void: wait again, at the slower rate).
    ///
    /// # Cancel safety
    /// Safe to drop, as [`reserve`](CallBudget::reserve).
    async fn confirm(
        &self,
        class: CallClass,
        reservation: Reservation,
    ) -> Result<Option<Reservation>>;

    /// Tells the budget that the backend throttled a call of `class`: its rate halves (at
    /// most once a second, never below a tenth of the full rate), the bucket empties and
    /// the reservations taken so far are void ([`confirm`](CallBudget::confirm)).
    ///
    /// # Cancel safety
    /// Safe to drop: the report may or may not have been recorded.
    async fn throttled(&self, class: CallClass) -> Result<()>;
}
