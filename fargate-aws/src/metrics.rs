//! [`ApiCalls`]: how many requests the launcher sent, by operation.
//!
//! Every HTTP attempt counts, SDK retries included, so the numbers are what AWS rate limits
//! see. The counter is an SDK interceptor installed on the launcher's clients.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ecs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ecs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ecs::error::BoxError;

/// Counts of API requests by operation name (`RunTask`, `DescribeTasks`, ...). Cheap to
/// clone; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct ApiCalls {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ApiCalls {
    /// A new, zeroed counter.
    pub fn new() -> Self {
        ApiCalls::default()
    }

    /// The counts so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        match self.counts.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Requests sent for `operation` so far.
    pub fn get(&self, operation: &str) -> u64 {
        self.snapshot().get(operation).copied().unwrap_or(0)
    }

    /// Requests sent so far, all operations.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        match self.counts.lock() {
            Ok(mut c) => c.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    fn add(&self, operation: &str) {
        let mut counts = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *counts.entry(operation.to_owned()).or_default() += 1;
    }
}

/// The operation a request is for: the `X-Amz-Target` suffix (JSON protocols such as ECS)
/// or the `Action` form field (query protocols such as EC2).
fn operation_of(target: Option<&str>, body: Option<&[u8]>) -> String {
    if let Some(op) = target.and_then(|t| t.rsplit('.').next()) {
        return op.to_owned();
    }
    body.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.split('&').find_map(|kv| kv.strip_prefix("Action=")))
        .map(str::to_owned)
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "fargate-api-call-counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        self.add(&operation_of(
            request.headers().get("x-amz-target"),
            request.body().bytes(),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names() {
        assert_eq!(
            operation_of(Some("AmazonEC2ContainerServiceV20141113.RunTask"), None),
            "RunTask"
        );
        assert_eq!(
            operation_of(
                None,
                Some(b"Action=DescribeNetworkInterfaces&Version=2016-11-15")
            ),
            "DescribeNetworkInterfaces"
        );
        assert_eq!(operation_of(None, None), "unknown");
        let calls = ApiCalls::new();
        calls.add("RunTask");
        calls.add("RunTask");
        assert_eq!(calls.get("RunTask"), 2);
        assert_eq!(calls.total(), 2);
        calls.reset();
        assert_eq!(calls.total(), 0);
    }
}
