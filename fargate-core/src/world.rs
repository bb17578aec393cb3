//! What the driver reads from the world besides its backends: the wall clock and
//! randomness. Normally the system's; a deterministic test (feature `testing`, see
//! [`crate::testing::Determinism`]) replaces both on its thread, so that a run depends on
//! its seed alone.

use std::time::SystemTime;

/// The wall clock: [`SystemTime::now`], or the test's virtual clock.
pub(crate) fn now() -> SystemTime {
    #[cfg(any(test, feature = "testing"))]
    if let Some(now) = crate::testing::determinism::now() {
        return now;
    }
    SystemTime::now()
}

/// Fills `buf` with random bytes: the operating system's, or the test's seeded ones.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(any(test, feature = "testing"))]
    if crate::testing::determinism::fill(buf) {
        return Ok(());
    }
    getrandom::fill(buf)
}
