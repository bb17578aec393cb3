//! [`Bucket`]: one token bucket's state and arithmetic, shared by every budget.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Rate, Reservation};

/// The lowest share of its rate a throttled bucket slows down to.
const MIN_FACTOR: f64 = 0.1;
/// Throttling reports closer together than this halve the rate once.
const THROTTLE_WINDOW_MS: u64 = 1000;

/// A token bucket: its tokens (below zero: reserved ahead), when they were counted, and
/// the share of the full rate it refills at (below 1 after throttling).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Tokens at `at_ms`; negative when callers have reserved ahead of the refill.
    pub tokens: f64,
    /// When `tokens` was counted, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The share of the full rate the bucket refills at (0.1 to 1).
    pub factor: f64,
    /// When the rate was last halved (milliseconds since the Unix epoch), if ever.
    pub throttled_at_ms: Option<u64>,
    /// How many times the rate was halved: a reservation made before the last halving is
    /// void (its caller reserves again, at the slower rate).
    #[serde(default)]
    pub epoch: u64,
}

impl Bucket {
    /// A full bucket of `rate` at `now_ms`.
    pub fn full(rate: Rate, now_ms: u64) -> Self {
        Bucket {
            tokens: rate.burst,
            at_ms: now_ms,
            factor: 1.0,
            throttled_at_ms: None,
            epoch: 0,
        }
    }

    /// Brings the bucket to `now_ms`: refilled at its current share of `rate` (capped at
    /// the burst) and that share recovered linearly toward 1. A clock that went back
    /// changes nothing.
    pub fn advance(&mut self, rate: Rate, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        if dt <= 0.0 {
            return;
        }
        // The share rises by (1 - MIN_FACTOR) over the rate's recovery; refill at the mean
        // share.
        let gain = (1.0 - MIN_FACTOR) * dt / rate.recovery.as_secs_f64().max(0.001);
        let next = (self.factor + gain).min(1.0);
        let mean = (self.factor + next) / 2.0;
        self.tokens = (self.tokens + rate.per_second * mean * dt).min(rate.burst);
        self.factor = next;
        self.at_ms = now_ms;
    }

    /// Takes `tokens` tokens at `now_ms` (at least 1): how long until they are the
    /// caller's.
    pub fn reserve(&mut self, rate: Rate, now_ms: u64, tokens: u32) -> Duration {
        self.advance(rate, now_ms);
        self.tokens -= f64::from(tokens.max(1));
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let refill = rate.per_second * self.factor.max(MIN_FACTOR);
        Duration::from_secs_f64((-self.tokens / refill).min(3600.0))
    }

    /// [`reserve`](Bucket::reserve), as a [`Reservation`] of the current epoch.
    pub fn take(&mut self, rate: Rate, now_ms: u64, tokens: u32) -> Reservation {
        let tokens = tokens.max(1);
        let wait = self.reserve(rate, now_ms, tokens);
        Reservation {
            wait,
            epoch: self.epoch,
            tokens,
        }
    }

    /// `None` when `r` still holds (no throttle since it was taken), else a new
    /// reservation at `now_ms`.
    pub fn confirm(&mut self, rate: Rate, now_ms: u64, r: Reservation) -> Option<Reservation> {
        (r.epoch != self.epoch).then(|| self.take(rate, now_ms, r.tokens))
    }

    /// Records a throttled call at `now_ms`: the share halves (once per second at most,
    /// not below its floor), the bucket empties and its queue is void (a new
    /// [`epoch`](Bucket::epoch): the callers waiting for their turn reserve again).
    /// Whether it halved.
    pub fn throttled(&mut self, rate: Rate, now_ms: u64) -> bool {
        self.advance(rate, now_ms);
        if self
            .throttled_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < THROTTLE_WINDOW_MS)
        {
            return false;
        }
        self.factor = (self.factor / 2.0).max(MIN_FACTOR);
        self.throttled_at_ms = Some(now_ms);
        self.tokens = 0.0;
        self.epoch += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::RECOVERY;
    use super::*;

    const R: Rate = Rate {
        per_second: 10.0,
        burst: 5.0,
        recovery: RECOVERY,
    };

    #[test]
    fn a_burst_goes_at_once_then_callers_queue_at_the_rate() {
        let mut b = Bucket::full(R, 0);
        for _ in 0..5 {
            assert_eq!(b.reserve(R, 0, 1), Duration::ZERO);
        }
        // The next ones are queued 100 ms apart: the 6th waits 100 ms, the 8th 300 ms.
        assert_eq!(b.reserve(R, 0, 1), Duration::from_millis(100));
        b.reserve(R, 0, 1);
        assert_eq!(b.reserve(R, 0, 1), Duration::from_millis(300));
        // Half a second later the queue has drained: 5 tokens came for 3 reserved ahead.
        b.advance(R, 500);
        assert!((b.tokens - 2.0).abs() < 1e-9, "{b:?}");
        // Never more than the burst.
        b.advance(R, 60_000);
        assert_eq!(b.tokens, 5.0);
    }

    #[test]
    fn a_call_of_several_tasks_takes_a_token_each_and_a_void_turn_takes_as_many_again() {
        let mut b = Bucket::full(R, 0);
        // 3 of the 5 at once, then 4 more: 2 are there, 2 come in 200 ms.
        assert_eq!(b.take(R, 0, 3).wait, Duration::ZERO);
        let r = b.take(R, 0, 4);
        assert_eq!((r.wait, r.tokens), (Duration::from_millis(200), 4));
        // Zero counts as one: a call is never free.
        assert_eq!(b.take(R, 0, 0).tokens, 1);
        // A throttle voids the turn: the caller takes its 4 again, at half the rate.
        b.throttled(R, 0);
        let again = b.confirm(R, 0, r).unwrap();
        assert_eq!(again.tokens, 4);
        assert_eq!(again.wait, Duration::from_millis(800));
    }

    #[test]
    fn throttling_halves_the_rate_once_per_second_and_it_recovers() {
        let mut b = Bucket::full(R, 0);
        b.throttled(R, 0);
        assert_eq!(b.factor, 0.5);
        assert_eq!(b.tokens, 0.0);
        assert_eq!(b.epoch, 1);
        // Reports within the same second (other processes seeing the same storm): once.
        assert!(!b.throttled(R, 500));
        assert_eq!(b.epoch, 1);
        assert!((b.factor - (0.5 + 0.9 * 0.5 / 20.0)).abs() < 1e-9, "{b:?}");
        b.throttled(R, 1000);
        assert!(b.factor < 0.3, "{b:?}");
        let mut t = 1000;
        for _ in 0..10 {
            t += 1000;
            b.throttled(R, t);
        }
        assert!(b.factor >= 0.1 - 1e-9, "never below the floor: {b:?}");
        // The next token comes at the slowed rate: 1 s at 1 token/s.
        let wait = b.reserve(R, t, 1);
        assert!(wait >= Duration::from_millis(900), "{wait:?}");
        // Without throttling, the full rate is back within RECOVERY.
        b.advance(R, t + RECOVERY.as_millis() as u64);
        assert_eq!(b.factor, 1.0);
    }

    #[test]
    fn a_rate_recovers_within_its_own_recovery() {
        let slow = R.with_recovery(Duration::from_secs(100));
        let (mut quick, mut patient) = (Bucket::full(R, 0), Bucket::full(slow, 0));
        quick.throttled(R, 0);
        patient.throttled(slow, 0);
        // 10 s on, the default recovery (20 s) has gained half of its span, a 100 s one a
        // tenth.
        quick.advance(R, 10_000);
        patient.advance(slow, 10_000);
        assert!(
            (quick.factor - (0.5 + 0.9 * 10.0 / 20.0)).abs() < 1e-9,
            "{quick:?}"
        );
        assert!(
            (patient.factor - (0.5 + 0.9 * 10.0 / 100.0)).abs() < 1e-9,
            "{patient:?}"
        );
        patient.advance(slow, 100_000);
        assert_eq!(patient.factor, 1.0);
        assert!(!Rate::new(1.0, 1.0).with_recovery(Duration::ZERO).is_valid());
    }

    #[test]
    fn a_clock_that_goes_back_changes_nothing() {
        let mut b = Bucket::full(R, 10_000);
        b.reserve(R, 10_000, 1);
        let before = b;
        b.advance(R, 5_000);
        assert_eq!(b, before);
    }
}
