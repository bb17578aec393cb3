//! The one retry engine ([`Retry`]) under a [`RetryPolicy`], and [`with_retries`], its plain
//! rule: the driver is the one owner of retries (see [`crate::retry`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::observe::{Event, Observer};
use crate::retry::RetryPolicy;

/// How one attempt of a [`Retry`] failed, and so what the engine does next.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The failure may pass: retried if the policy allows, else returned (with the
    /// operation and the attempts when there were several).
    Retry(Error),
    /// The failure will not pass: returned at once (with the operation and the attempts
    /// when there were several).
    GiveUp(Error),
    /// Returned at once and as it is (a cancel, a failure outside the operation itself).
    Return(Error),
}

/// The one retry engine: the caller runs attempts in its own loop and hands each failure
/// to [`Retry::failed`], which decides: give up (the error to return), or retry after a
/// jittered, doubling backoff, which it waits. Each retry is an [`Event::Retry`] for the
/// observer and a warning; a cancel token, when given, ends a wait at once with
/// [`Error::cancelled`].
///
/// The caller's loop keeps whatever it needs between attempts (the launch: which client
/// token to send, the same after an unknown outcome, a new one, recorded before the call,
/// after a refusal) and tells the engine with [`Failed`] what a failure calls for. The
/// loop is the caller's own code, not a closure the engine calls, so the futures of the
/// stages stay `Send` (an async closure's future borrowing its captures is not, to the
/// compiler, `Send` for every lifetime).
pub(crate) struct Retry<'a> {
    policy: &'a RetryPolicy,
    what: &'a str,
    observer: &'a dyn Observer,
    cancel: Option<&'a CancellationToken>,
    start: Instant,
    backoff: Duration,
    attempt: u32,
}

impl<'a> Retry<'a> {
    /// Retries of the operation `what` under `policy`, reported to `observer`; the time
    /// budget counts from now.
    pub(crate) fn new(policy: &'a RetryPolicy, what: &'a str, observer: &'a dyn Observer) -> Self {
        Retry {
            policy,
            what,
            observer,
            cancel: None,
            start: Instant::now(),
            backoff: policy.initial_backoff,
            attempt: 1,
        }
    }

    /// Ends a wait between attempts when `cancel` fires.
    pub(crate) fn cancelled_by(mut self, cancel: &'a CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// After the attempt under way failed with `failed`: `Ok(())` once the backoff before
    /// the next attempt has passed, or the error to return (the operation given up).
    /// `on_retry(error, attempt, delay)` runs when a retry is decided, after the observer
    /// heard of it and before the wait.
    pub(crate) async fn failed(
        &mut self,
        failed: Failed,
        on_retry: impl FnOnce(&Error, u32, Duration),
    ) -> Result<()> {
        let (policy, what, n) = (self.policy, self.what, self.attempt);
        let err = match failed {
            Failed::Return(err) => return Err(err),
            Failed::GiveUp(err) => return Err(annotated(err, what, n)),
            Failed::Retry(err) => err,
        };
        if n >= policy.max_attempts || self.start.elapsed() + self.backoff > policy.max_elapsed {
            return Err(annotated(err, what, n));
        }
        let delay = jittered(self.backoff);
        self.observer.observe(&Event::Retry {
            operation: what.to_owned(),
            attempt: n,
            delay,
            error: err.to_string(),
        });
        on_retry(&err, n, delay);
        match self.cancel {
            Some(cancel) => tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::cancelled(what)),
                _ = tokio::time::sleep(delay) => {}
            },
            None => tokio::time::sleep(delay).await,
        }
        self.backoff = (self.backoff * 2).min(policy.max_backoff);
        self.attempt += 1;
        Ok(())
    }
}

/// `err` of the operation `what` after `attempts` attempts: as it is after one.
fn annotated(err: Error, what: &str, attempts: u32) -> Error {
    if attempts > 1 {
        err.with_operation(what).with_context("attempts", attempts)
    } else {
        err
    }
}

/// Runs `op` until it succeeds, fails permanently (not [`Error::is_temporary`]), or
/// `policy` is exhausted: [`Retry`] with the plain rule.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    observer: &dyn Observer,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retry = Retry::new(policy, what, observer);
    loop {
        let failed = match op().await {
            Ok(v) => return Ok(v),
            Err(err) if err.is_temporary() => Failed::Retry(err),
            Err(err) => Failed::GiveUp(err),
        };
        retry
            .failed(failed, |err, attempt, delay| {
                tracing::warn!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = %err,
                    "{what} failed, retrying"
                );
            })
            .await?;
    }
}

/// A delay between half of `d` and `d` ("equal jitter"), so that concurrent drivers spread out.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = match crate::world::fill_random(&mut b) {
        Ok(()) => u32::from_ne_bytes(b) as f64 / u32::MAX as f64,
        Err(_) => 0.5,
    };
    d.mul_f64(0.5 + r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_temporary_errors_with_growing_bounded_backoff() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let out: Result<u32> =
            with_retries(&policy(), "op", &crate::observe::NoopObserver, || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 4 {
                    Err(Error::new(ErrorKind::Throttled, "slow down"))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 4);
        // Backoffs 1, 2, 3 s, each jittered into [50 %, 100 %].
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited <= Duration::from_secs(6),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let err = with_retries(&policy(), "op", &crate::observe::NoopObserver, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(ErrorKind::NotFound, "no such task definition"))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.message(), "no such task definition");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_says_so() {
        let calls = AtomicU32::new(0);
        let err = with_retries(
            &policy(),
            "starting the task",
            &crate::observe::NoopObserver,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::new(ErrorKind::CapacityUnavailable, "no capacity"))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(err.kind(), ErrorKind::CapacityUnavailable);
        assert_eq!(err.operation(), Some("starting the task"));
        assert_eq!(err.context_value("attempts"), Some("4"));
        assert_eq!(err.message(), "no capacity");
        assert_eq!(
            err.to_string(),
            "starting the task: no capacity (attempts: 4)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_time_budget_is_spent() {
        let calls = AtomicU32::new(0);
        let p = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(10),
            ..policy()
        };
        let start = Instant::now();
        let _ = with_retries(&p, "op", &crate::observe::NoopObserver, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(ErrorKind::Throttled, "x"))
        })
        .await;
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(calls.load(Ordering::SeqCst) < 10);
    }
}
