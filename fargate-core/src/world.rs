//! What the driver reads from the world besides its backends: the wall clock and
//! randomness, and the one place that turns them into times and tokens. Normally the
//! system's; a deterministic test (feature `testing`, see [`crate::testing::Determinism`])
//! replaces both on its thread, so that a run depends on its seed alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock: [`SystemTime::now`], or the test's virtual clock.
pub(crate) fn now() -> SystemTime {
    #[cfg(any(test, feature = "testing"))]
    if let Some(now) = crate::testing::determinism::now() {
        return now;
    }
    SystemTime::now()
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    unix_seconds(now())
}

/// The time `unix_seconds` seconds after the Unix epoch.
pub(crate) fn from_unix_seconds(unix_seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds)
}

/// `now + lifetime`, cut to whole seconds (as a tag and a container see it).
pub(crate) fn whole_seconds_after(now: SystemTime, lifetime: Duration) -> SystemTime {
    from_unix_seconds(unix_seconds(now).saturating_add(lifetime.as_secs()))
}

/// Fills `buf` with random bytes: the operating system's, or the test's seeded ones.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(any(test, feature = "testing"))]
    if crate::testing::determinism::fill(buf) {
        return Ok(());
    }
    getrandom::fill(buf)
}

/// A random number (from [`fill_random`]).
pub(crate) fn random_u64() -> Result<u64, getrandom::Error> {
    let mut b = [0u8; 8];
    fill_random(&mut b)?;
    Ok(u64::from_be_bytes(b))
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
