//! `RunTask` subnet failover: which subnets each attempt of a launch gets, and its client
//! token.
//!
//! Capacity and ENI errors of `RunTask` move on to the next subnet: the first attempt gives
//! ECS every configured subnet, each later one a single subnet, in the configured order
//! ([`subnet_attempts`], on unless [`EcsConfig::subnet_failover`](crate::EcsConfig) is
//! off). Each attempt has its own client token, derived from the job's
//! ([`attempt_token`]), since the same token would replay the failure. This is part of one
//! launch, not a retry: retrying a whole launch later (when every subnet had no capacity)
//! is the driver's, under `fargate_core`'s [`RetryPolicy`](fargate_core::RetryPolicy).

use sha2::{Digest, Sha256};

/// The subnet lists of successive `RunTask` attempts: all subnets first (ECS picks one),
/// then, with `failover` and several subnets, each subnet alone in the configured order.
pub fn subnet_attempts(subnets: &[String], failover: bool) -> Vec<Vec<String>> {
    let mut attempts = vec![subnets.to_vec()];
    if failover && subnets.len() > 1 {
        attempts.extend(subnets.iter().map(|s| vec![s.clone()]));
    }
    attempts
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
    let hex = hex::encode(digest);
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
        assert_eq!(
            subnet_attempts(&subnets, true),
            vec![subnets.clone(), vec!["a".to_owned()], vec!["b".to_owned()]]
        );
        assert_eq!(
            subnet_attempts(&subnets[..1], true),
            vec![vec!["a".to_owned()]]
        );
        assert_eq!(subnet_attempts(&subnets, false), vec![subnets]);
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
}
