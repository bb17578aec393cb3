//! [`Determinism`]: a seeded random source and a virtual wall clock for the driver, on one
//! thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// While it lives, the driver's randomness (client tokens, pool slot ids, retry jitter) on
/// this thread comes from a generator seeded with `seed`, and its wall clock
/// ([`SystemTime`]: record times, deadlines, `gc`'s windows) is a fixed date plus the time
/// elapsed on tokio's clock since [`Determinism::install`]. With tokio's time paused
/// (`tokio::time::pause`) and one thread, a run then depends on nothing but its seed.
///
/// Only code of this crate follows it; key generation of a real shell does not.
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
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                rng: seed,
                base: UNIX_EPOCH + Self::EPOCH,
                start: Instant::now(),
            })
        });
        Determinism {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Determinism {
    fn drop(&mut self) {
        STATE.with(|s| *s.borrow_mut() = None);
    }
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
