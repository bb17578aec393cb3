//! What the driver reads from the world besides its backends: the wall clock and
//! randomness. Normally the system's; a deterministic test (feature `testing`, see
//! [`crate::testing::Determinism`]) replaces both on its thread, so that a run depends on
//! its seed alone.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// A fresh idempotency token: 32 lowercase hex characters.
pub(crate) fn client_token() -> String {
    let mut b = [0u8; 16];
    if fill_random(&mut b).is_err() {
        // No OS randomness: fall back to time and pid, still unique per attempt.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    hex::encode(b)
}
