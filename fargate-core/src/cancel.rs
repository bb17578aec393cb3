//! [`CancelBudget`]: how long cancelling may take, shared by the driver and every backend.

use std::time::Duration;

/// The time budget of a cancellation, in one place for the driver and the backends.
///
/// gitlab-runner sends `SIGTERM` to a stage it cancels and `SIGKILL` a little later, so a
/// cancelled stage must be quick. The parts:
///
/// | | default | who uses it |
/// |---|---|---|
/// | [`run`](CancelBudget::run) | 2 s | a cancelled [`RemoteShell::run`](crate::RemoteShell::run) returns within it (the shell conformance suite checks it) |
/// | [`grace`](CancelBudget::grace) | 1 s | the remote script's time between `SIGTERM` and `SIGKILL` (the SSH backend's default, at most [`max_grace`](CancelBudget::max_grace)) |
/// | [`launch_settle`](CancelBudget::launch_settle) | 20 s | a cancelled [`Driver::prepare`](crate::Driver::prepare) waits this long for a launch call in flight, so that the task it may start is known and stopped |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CancelBudget {
    /// How long a cancelled script run may take to return.
    pub run: Duration,
    /// How long a cancelled script gets to end on `SIGTERM` before `SIGKILL`.
    pub grace: Duration,
    /// How long a cancelled prepare waits for a launch call in flight.
    pub launch_settle: Duration,
}

impl CancelBudget {
    /// The budget the driver and the backends of this workspace use.
    pub const DEFAULT: CancelBudget = CancelBudget {
        run: Duration::from_secs(2),
        grace: Duration::from_secs(1),
        launch_settle: Duration::from_secs(20),
    };

    /// What a shell keeps for itself out of [`run`](CancelBudget::run) after the grace:
    /// sending the kill and closing the connection.
    const SHELL_OVERHEAD: Duration = Duration::from_millis(500);

    /// The longest grace that still lets a cancelled run return within
    /// [`run`](CancelBudget::run): 1.5 s by default.
    pub const fn max_grace(&self) -> Duration {
        self.run.saturating_sub(Self::SHELL_OVERHEAD)
    }

    /// How long a shell waits, after a cancel, for its connection to stop the remote script
    /// before it returns anyway: just under [`run`](CancelBudget::run).
    pub const fn shell_wait(&self) -> Duration {
        self.run.saturating_sub(Duration::from_millis(100))
    }
}

impl Default for CancelBudget {
    fn default() -> Self {
        CancelBudget::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_fit_in_the_run_budget() {
        let b = CancelBudget::default();
        assert!(b.grace <= b.max_grace());
        assert!(b.max_grace() < b.shell_wait());
        assert!(b.shell_wait() < b.run);
        assert_eq!(b.max_grace(), Duration::from_millis(1500));
    }
}
