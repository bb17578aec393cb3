//! [`SdkTransport`]: the AWS SDK's own attempts and timeouts for one API call.
//!
//! The SDK retries what goes wrong on the way (throttling, 5xx, broken connections) in its
//! *standard* mode, with full-jitter exponential backoff. Retrying a failed call as a
//! whole is the job of `fargate_core`'s [`RetryPolicy`](fargate_core::RetryPolicy), carried
//! out by the driver; the two layers multiply, so this one defaults to a single quick
//! second attempt (see the crate documentation).

use std::time::Duration;

use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::timeout::TimeoutConfig;

/// Attempts and timeouts of one API call inside the AWS SDK.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SdkTransport {
    /// Attempts per API call, the first included (1 disables the SDK's retries). Default 2:
    /// one quick retry of a transport hiccup, since the driver retries whole calls.
    pub max_attempts: u32,
    /// Backoff before the SDK's retry (jittered: a random delay up to this). Default 200 ms.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff. Default 5 s.
    pub max_backoff: Duration,
    /// Bound on one API call, its attempts and backoff included. Default 60 s.
    pub operation_timeout: Duration,
    /// Bound on one attempt of an API call. Default 20 s.
    pub attempt_timeout: Duration,
    /// Bound on connecting to the endpoint. Default 3.1 s (the SDK's).
    pub connect_timeout: Duration,
}

impl Default for SdkTransport {
    fn default() -> Self {
        SdkTransport {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_millis(3100),
        }
    }
}

impl SdkTransport {
    /// One attempt per call.
    pub fn single_attempt() -> Self {
        SdkTransport {
            max_attempts: 1,
            ..SdkTransport::default()
        }
    }

    /// The SDK retry configuration.
    pub fn sdk_retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// The SDK timeout configuration.
    pub fn sdk_timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_configs_follow_the_settings_and_default_to_one_quick_retry() {
        let t = SdkTransport::default();
        let r = t.sdk_retry_config();
        assert_eq!(r.max_attempts(), 2);
        assert_eq!(r.initial_backoff(), Duration::from_millis(200));
        assert_eq!(
            SdkTransport::single_attempt()
                .sdk_retry_config()
                .max_attempts(),
            1
        );
        let timeouts = t.sdk_timeout_config();
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(60)));
    }
}
