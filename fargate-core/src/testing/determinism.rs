//! [`Determinism`]: a seeded random source and a virtual wall clock for the driver, on one
//! thread.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// While it lives, the driver's randomness (client tokens, pool slot ids, retry jitter) on
/// this thread comes from a generator seeded with `seed`, and its wall clock
/// ([`SystemTime`]: record times, deadlines, `gc`'s windows) is a fixed date plus the time
/// elapsed on tokio's clock since [`Determinism::install`]. With tokio's time paused
/// (`tokio::time::pause`) and one thread, a run then depends on nothing but its seed.
///
/// Only code of this crate follows it; key generation of a real shell does not.
///
#[derive(Debug)]
#[must_use = "dropping it restores the system's clock and randomness"]
pub struct Determinism {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Determinism {
    /// The virtual wall clock's start: 2030-01-01T00:00:00Z.
    pub const EPOCH: Duration = Duration::from_secs(1_893_456_000);

    /// Installs a seeded random source and the virtual wall clock on this thread (call it
    /// inside the tokio runtime, after pausing time).
    pub fn install(seed: u64) -> Self {
        Self::install_at(seed, UNIX_EPOCH + Self::EPOCH)
    }

    /// [`install`](Self::install)s with the virtual wall clock at `start` now: with
    /// `SystemTime::now() + 1 h`, the driver on this thread decides as it would an hour
    /// from now (e.g. `gc` against real backends, whose own clocks it does not read).
    pub fn install_at(seed: u64, start: SystemTime) -> Self {
        crate::world::seeded::install(seed, start);
        Determinism {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Determinism {
    fn drop(&mut self) {
        crate::world::seeded::uninstall();
    }
}
