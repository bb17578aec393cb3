//! Events for embedders: what the [`Driver`](crate::Driver) does, as data.
//!
//! Give the driver an [`Observer`] with [`Driver::with_observer`](crate::Driver::with_observer)
//! and it hears every [`Event`]: prepare's phases, the launch and stops of tasks, each
//! backend call and its outcome, retries, and the job's [`JobSummary`] at the end of prepare
//! and at cleanup. The `fargate` binary builds its job log and its metrics file on the same
//! events, so an orchestration service gets the same data without parsing logs.
//!
//! Observers are called synchronously, in the driver's task: keep them quick (count, queue,
//! format a line), never block on I/O for long. An observer cannot change what the driver
//! does.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use fargate_core::observe::{Event, Observer};
//!
//! #[derive(Debug, Default)]
//! struct Phases(Mutex<Vec<String>>);
//!
//! impl Observer for Phases {
//!     fn observe(&self, event: &Event) {
//!         if let Event::Phase { phase, .. } = event {
//!             self.0.lock().unwrap().push(format!("{phase:?}"));
//!         }
//!     }
//! }
//! let phases = Arc::new(Phases::default());
//! // Driver::new(options, launcher, shell, store).with_observer(phases.clone());
//! # phases.observe(&Event::Phase { phase: fargate_core::observe::PreparePhase::SshUp, elapsed: std::time::Duration::ZERO });
//! # assert_eq!(phases.0.lock().unwrap().as_slice(), ["SshUp"]);
//! ```

mod cost;
mod launcher;
mod outcome;
mod summary;

pub use cost::{CostEstimate, Price, PriceKey, PriceTable};
pub use launcher::ObservedLauncher;
pub use outcome::StageOutcome;
pub use summary::{JobSummary, Phases, SLOW_PULL, SummaryPoint};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::launcher::{Endpoint, TaskRef, TaskState};

/// Hears the driver's [`Event`]s. Object safe; see the [module docs](self).
pub trait Observer: Send + Sync + fmt::Debug {
    /// Called once per event, in the order they happen.
    fn observe(&self, event: &Event);
}

/// A shared observer.
pub type DynObserver = Arc<dyn Observer>;

/// The observer that ignores everything: the driver's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn observe(&self, _event: &Event) {}
}

/// Several observers, each hearing every event in turn.
#[derive(Clone, Debug, Default)]
pub struct Observers(pub Vec<DynObserver>);

#[deny(clippy::missing_trait_methods)]
impl Observer for Observers {
    fn observe(&self, event: &Event) {
        for o in &self.0 {
            o.observe(event);
        }
    }
}

#[deny(clippy::missing_trait_methods)]
impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn observe(&self, event: &Event) {
        (**self).observe(event);
    }
}

/// The steps of prepare, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PreparePhase {
    /// Asking the backend to start the task.
    Launching,
    /// The backend accepted the task.
    Accepted,
    /// The task's address is known.
    AddressKnown,
    /// The task's SSH server answered.
    SshUp,
}

/// The backend call an [`Event::ApiCall`] reports (the [`TaskLauncher`](crate::TaskLauncher)
/// method; a backend may make several calls for one, e.g. a listing and a describe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ApiOperation {
    /// [`TaskLauncher::launch`](crate::TaskLauncher::launch).
    Launch,
    /// [`TaskLauncher::describe`](crate::TaskLauncher::describe).
    Describe,
    /// [`TaskLauncher::stop`](crate::TaskLauncher::stop).
    Stop,
    /// [`TaskLauncher::find`](crate::TaskLauncher::find).
    Find,
    /// [`TaskLauncher::list`](crate::TaskLauncher::list).
    List,
    /// [`TaskLauncher::adopt`](crate::TaskLauncher::adopt).
    Adopt,
    /// [`TaskLauncher::mark_alive`](crate::TaskLauncher::mark_alive).
    MarkAlive,
    /// [`TaskLauncher::resolve_task_definition`](crate::TaskLauncher::resolve_task_definition).
    ResolveDefinition,
}

impl ApiOperation {
    /// A short lowercase name (`launch`, `describe`, ...), for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiOperation::Launch => "launch",
            ApiOperation::Describe => "describe",
            ApiOperation::Stop => "stop",
            ApiOperation::Find => "find",
            ApiOperation::List => "list",
            ApiOperation::Adopt => "adopt",
            ApiOperation::MarkAlive => "mark_alive",
            ApiOperation::ResolveDefinition => "resolve_definition",
        }
    }
}

/// How a backend call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CallOutcome {
    /// It answered.
    Ok,
    /// The backend's rate limit refused it.
    Throttled,
    /// Any other error.
    Failed,
}

impl CallOutcome {
    /// `ok`, `throttled` or `error`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Throttled => "throttled",
            CallOutcome::Failed => "error",
        }
    }
}

/// Who stopped a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopCause {
    /// The job's cleanup stage.
    Cleanup,
    /// Prepare, after it failed or was cancelled (or an earlier attempt's leftover).
    Rollback,
    /// The garbage collector (`fargate gc`).
    Gc,
    /// The warm pool ([`crate::driver::pool`]): an idle task past its maximum idle time,
    /// drained, beyond the pool's size, or unusable when a job claimed it.
    Pool,
    /// Someone released a failed job's task kept for debugging
    /// ([`Driver::release_kept`](crate::Driver::release_kept)) before its time was up.
    Release,
}

impl StopCause {
    /// `cleanup`, `rollback`, `gc`, `pool` or `release`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Cleanup => "cleanup",
            StopCause::Rollback => "rollback",
            StopCause::Gc => "gc",
            StopCause::Pool => "pool",
            StopCause::Release => "release",
        }
    }
}

/// What the warm pool did for one prepare ([`Event::WarmPool`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarmOutcome {
    /// The job took a warm task.
    Taken,
    /// The job claimed a warm task that could not serve it (dead, another host key, the
    /// key swap failed); it was stopped and the job got a task of its own.
    Unusable,
    /// No idle warm task fit the job: the pool was empty.
    Empty,
    /// The job's task differs from the pool's (its own task definition, size, capacity,
    /// role, network or image): it never looks at the pool.
    Ineligible,
}

impl WarmOutcome {
    /// `taken`, `unusable`, `empty` or `ineligible`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            WarmOutcome::Taken => "taken",
            WarmOutcome::Unusable => "unusable",
            WarmOutcome::Empty => "empty",
            WarmOutcome::Ineligible => "ineligible",
        }
    }
}

/// Something the driver did or saw.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Prepare reached `phase`, `elapsed` after it began.
    Phase {
        /// The phase.
        phase: PreparePhase,
        /// Time since prepare began.
        elapsed: Duration,
    },
    /// Prepare asks the backend for a task of `task_definition`.
    Launching {
        /// Family, `family:revision` or ARN.
        task_definition: String,
    },
    /// The backend accepted `task`.
    Launched {
        /// The task.
        task: TaskRef,
    },
    /// The job's key logged in: the task can run the job's scripts. The end of prepare's
    /// phases.
    Ready {
        /// The task.
        task: TaskRef,
        /// Where its SSH server answers.
        endpoint: Endpoint,
        /// Time since prepare began.
        elapsed: Duration,
    },
    /// A describe saw the task in a new state.
    TaskState {
        /// The task.
        task: TaskRef,
        /// Its state now.
        state: TaskState,
    },
    /// With a warm pool: what it did for this prepare.
    WarmPool {
        /// What happened.
        outcome: WarmOutcome,
    },
    /// The driver asked the backend to stop `task`.
    Stopped {
        /// The task.
        task: TaskRef,
        /// Who stopped it.
        cause: StopCause,
    },
    /// A failed job's cleanup left its task running for debugging, until `until`
    /// ([`ProjectRule::keep_failed_for`](crate::options::ProjectRule::keep_failed_for)).
    Kept {
        /// The task.
        task: TaskRef,
        /// When it is stopped at the latest.
        until: SystemTime,
    },
    /// A backend call ended (one per [`TaskLauncher`](crate::TaskLauncher) call).
    ApiCall {
        /// Which call.
        operation: ApiOperation,
        /// How it ended.
        outcome: CallOutcome,
    },
    /// An operation failed with a temporary error and will be tried again after `delay`.
    Retry {
        /// What failed (`starting the task`, `stopping the task`, ...).
        operation: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// How long the driver waits before the next attempt.
        delay: Duration,
        /// The error, as a sentence.
        error: String,
    },
    /// The job's summary: at the end of prepare and at cleanup.
    Summary(Box<JobSummary>),
}
