//! [`ManualClock`]: a wall clock that moves only when a test says so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::world::Clock;

/// A [`Clock`] that stands still until [`ManualClock::advance`]: a test expires a lease
/// by moving this clock, never by waiting. Clones share the time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock at the system's time now.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock at `now`.
    pub fn at(now: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock to `now` (also backwards, as a skewed host's clock may be).
    pub fn set(&self, now: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
