//! The retry policy of the ECS backend, as data.
//!
//! Two mechanisms, one policy:
//!
//! * **Throttling and transient errors** (`ThrottlingException`, 5xx, broken connections) are
//!   retried by the AWS SDK itself, in its *standard* mode: up to
//!   [`RetryPolicy::max_attempts`] attempts with full-jitter exponential backoff from
//!   [`RetryPolicy::initial_backoff`] up to [`RetryPolicy::max_backoff`], all of it bounded
//!   by [`RetryPolicy::operation_timeout`].
//! * **Capacity and ENI errors** of `RunTask` move on to the next subnet
//!   ([`RetryPolicy::subnet_attempts`]): the first attempt gives ECS every configured subnet,
//!   each later one a single subnet, in the configured order. Each attempt has its own client
//!   token, derived from the job's ([`attempt_token`]), since the same token would replay the
//!   failure.
//!
//! Anything else fails at once. Retrying a whole launch later (for capacity errors that every
//! subnet had) is the job of `fargate_core`'s retrying wrapper, which sees
//! [`fargate_core::Error::is_temporary`].

use std::time::Duration;

use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::timeout::TimeoutConfig;
use sha2::{Digest, Sha256};

/// How hard the backend tries before giving up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per API call, the first included (SDK standard retry; 1 disables retries).
    /// Default 5.
    pub max_attempts: u32,
    /// Backoff before the first retry (jittered: a random delay up to this). Default 200 ms.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff. Default 5 s.
    pub max_backoff: Duration,
    /// Bound on one API call, retries and backoff included. Default 60 s.
    pub operation_timeout: Duration,
    /// Bound on one attempt of an API call. Default 20 s.
    pub attempt_timeout: Duration,
    /// Bound on connecting to the endpoint. Default 3.1 s (the SDK's).
    pub connect_timeout: Duration,
    /// On capacity or ENI errors of `RunTask`, try the configured subnets one by one.
    /// Default `true`.
    pub rotate_subnets: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_millis(3100),
            rotate_subnets: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (one attempt per call, no subnet rotation). For tests.
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            rotate_subnets: false,
            ..RetryPolicy::default()
        }
    }

    /// The SDK retry configuration for this policy.
    pub fn sdk_retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// The SDK timeout configuration for this policy.
    pub fn sdk_timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }

    /// The subnet lists of successive `RunTask` attempts: all subnets first (ECS picks one),
    /// then, when rotating and there are several, each subnet alone in the configured order.
    pub fn subnet_attempts(&self, subnets: &[String]) -> Vec<Vec<String>> {
        let mut attempts = vec![subnets.to_vec()];
        if self.rotate_subnets && subnets.len() > 1 {
            attempts.extend(subnets.iter().map(|s| vec![s.clone()]));
        }
        attempts
    }
}

/// Longest client token ECS accepts.
pub const MAX_CLIENT_TOKEN_LEN: usize = 64;

/// The client token of `RunTask` attempt `attempt` (0-based) for a job token `base`.
///
/// Attempt 0 uses `base` itself when ECS accepts it (1-64 ASCII graphic characters), so a
/// retried launch of the same job never starts a second task; later attempts (another
/// subnet) and unusable tokens get a stable token derived from a hash of `base`.
pub fn attempt_token(base: &str, attempt: usize) -> String {
    let usable = !base.is_empty()
        && base.len() <= MAX_CLIENT_TOKEN_LEN
        && base.bytes().all(|b| b.is_ascii_graphic());
    if attempt == 0 && usable {
        return base.to_owned();
    }
    let digest = Sha256::digest(base.as_bytes());
    let hex = crate::hex(&digest);
    if attempt == 0 {
        format!("fgt-{}", &hex[..56])
    } else {
        format!("fgt-{}-s{attempt}", &hex[..48])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_attempts_try_all_then_each() {
        let subnets = vec!["a".to_owned(), "b".to_owned()];
        let p = RetryPolicy::default();
        assert_eq!(
            p.subnet_attempts(&subnets),
            vec![subnets.clone(), vec!["a".to_owned()], vec!["b".to_owned()]]
        );
        assert_eq!(p.subnet_attempts(&subnets[..1]), vec![vec!["a".to_owned()]]);
        assert_eq!(
            RetryPolicy::no_retries().subnet_attempts(&subnets),
            vec![subnets]
        );
    }

    #[test]
    fn attempt_tokens_are_stable_distinct_and_short() {
        assert_eq!(attempt_token("tok-1", 0), "tok-1");
        let t1 = attempt_token("tok-1", 1);
        assert_eq!(t1, attempt_token("tok-1", 1));
        assert_ne!(t1, attempt_token("tok-1", 2));
        assert_ne!(t1, attempt_token("tok-2", 1));
        let long = "x".repeat(200);
        for token in [attempt_token(&long, 0), attempt_token(&long, 7), t1] {
            assert!(token.len() <= MAX_CLIENT_TOKEN_LEN, "{token}");
            assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        }
        assert_ne!(attempt_token("a b", 0), "a b");
    }

    #[test]
    fn sdk_configs_follow_policy() {
        let p = RetryPolicy::default();
        let r = p.sdk_retry_config();
        assert_eq!(r.max_attempts(), 5);
        assert_eq!(r.initial_backoff(), Duration::from_millis(200));
        let t = p.sdk_timeout_config();
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(60)));
    }
}
