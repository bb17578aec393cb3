//! What the driver reads from the world besides its backends: the wall clock and
//! randomness, and the one place that turns them into times and tokens. Normally the
//! system's; a deterministic test (feature `testing`, see `testing::Determinism`) replaces
//! both on its thread, so that a run depends on its seed alone.
//!
//! Backends that compare times across processes or hosts (a store's lock leases) take a
//! [`Clock`], so that a test can move time without waiting: [`SystemClock`] reads the
//! driver's wall clock, and the `testing` feature has a manual one
//! (`testing::ManualClock`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock a backend reads (for leases and their expiry).
pub trait Clock: Send + Sync + fmt::Debug {
    /// The time now.
    fn now(&self) -> SystemTime;
}

/// The driver's wall clock: the system's (or a deterministic test's virtual one).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        now()
    }
}

/// The wall clock: [`SystemTime::now`], or the test's virtual clock.
pub(crate) fn now() -> SystemTime {
    #[cfg(any(test, feature = "testing"))]
    if let Some(now) = seeded::now() {
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

/// `d` for people, in whole units: `45 s`, `30 min`, `2 h`, `1 h 30 min`.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "min"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    if parts.is_empty() {
        "0 s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Fills `buf` with random bytes: the operating system's, or the test's seeded ones.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(any(test, feature = "testing"))]
    if seeded::fill(buf) {
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

/// 16 random lowercase hex digits (the operating system's randomness, or a deterministic
/// test's; time and pid without randomness):
/// for names that must differ per process and call, such as a lock holder's.
pub fn random_hex() -> String {
    let token = client_token();
    token[..16].to_owned()
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

/// The seeded random source and virtual wall clock of a deterministic test, on one thread
/// ([`crate::testing::Determinism`] installs and removes them).
#[cfg(any(test, feature = "testing"))]
pub(crate) mod seeded {
    use std::cell::RefCell;
    use std::time::SystemTime;

    use tokio::time::Instant;

    struct State {
        rng: u64,
        /// The virtual wall clock's time at `start`.
        base: SystemTime,
        start: Instant,
    }

    thread_local! {
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    }

    /// Installs the generator seeded with `seed` and a wall clock at `base` now, on this
    /// thread.
    pub(crate) fn install(seed: u64, base: SystemTime) {
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                rng: seed,
                base,
                start: Instant::now(),
            })
        });
    }

    /// Restores the system's clock and randomness on this thread.
    pub(crate) fn uninstall() {
        STATE.with(|s| *s.borrow_mut() = None);
    }

    /// The virtual wall clock, when installed.
    pub(crate) fn now() -> Option<SystemTime> {
        STATE.with(|s| {
            s.borrow()
                .as_ref()
                .map(|st| st.base + Instant::now().duration_since(st.start))
        })
    }

    /// Fills `buf` from the seeded generator, when installed; `false` otherwise.
    pub(crate) fn fill(buf: &mut [u8]) -> bool {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else {
                return false;
            };
            for chunk in buf.chunks_mut(8) {
                let n = splitmix64(&mut st.rng).to_le_bytes();
                chunk.copy_from_slice(&n[..chunk.len()]);
            }
            true
        })
    }

    /// One step of splitmix64.
    pub(crate) fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
