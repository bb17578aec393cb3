//! Retrying temporary failures with jittered exponential backoff, bounded by attempts and
//! elapsed time ([`RetryPolicy`](crate::config::RetryPolicy)).
//!
//! The [`Driver`](crate::Driver) is the one owner of retries: it retries the launcher's
//! calls itself (a launch with the rules of its client tokens, stop and find with
//! [`with_retries`]), so backends should retry at most transport-level hiccups, and
//! embedders should not wrap the launcher in another retry layer: the attempts would
//! multiply. Only errors marked temporary ([`crate::Error::is_temporary`]: throttling,
//! capacity, unreachable) are retried.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::Result;

/// Runs `op` until it succeeds, fails permanently, or `policy` is exhausted.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut backoff = policy.initial_backoff;
    let mut attempt = 1u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                let elapsed = start.elapsed();
                if !err.is_temporary()
                    || attempt >= policy.max_attempts
                    || elapsed + backoff > policy.max_elapsed
                {
                    if attempt > 1 {
                        return Err(
                            err.context(format!("{what} (gave up after {attempt} attempts)"))
                        );
                    }
                    return Err(err);
                }
                let delay = jittered(backoff);
                tracing::warn!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = %err,
                    "{what} failed, retrying"
                );
                tokio::time::sleep(delay).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
        }
    }
}

/// A delay between half of `d` and `d` ("equal jitter"), so that concurrent drivers spread out.
pub(crate) fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u32::from_ne_bytes(b) as f64 / u32::MAX as f64,
        Err(_) => 0.5,
    };
    d.mul_f64(0.5 + r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
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
        let out: Result<u32> = with_retries(&policy(), "op", || async {
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
        let err = with_retries(&policy(), "op", || async {
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
        let err = with_retries(&policy(), "starting the task", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(ErrorKind::CapacityUnavailable, "no capacity"))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(err.kind(), ErrorKind::CapacityUnavailable);
        assert!(
            err.message()
                .starts_with("starting the task (gave up after 4 attempts)"),
            "{err}"
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
        let _ = with_retries(&p, "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(ErrorKind::Throttled, "x"))
        })
        .await;
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(calls.load(Ordering::SeqCst) < 10);
    }
}
