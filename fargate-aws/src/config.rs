//! [`EcsConfig`]: where and how the backend starts tasks.

use std::collections::BTreeMap;

use fargate_core::{Error, ErrorKind, Result};

use crate::retry::RetryPolicy;
use crate::tags;

pub use fargate_core::config::{Capacity, CapacityProviderItem};

/// Configuration of [`crate::EcsLauncher`].
///
/// The job-specific parts (task definition, platform version, container, environment) come
/// from each [`fargate_core::TaskSpec`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EcsConfig {
    /// Cluster name or ARN.
    pub cluster: String,
    /// AWS region; `None` uses the SDK's region chain (only [`crate::EcsLauncher::from_env`]).
    pub region: Option<String>,
    /// Subnets of the task ENI (at least one; several in different AZs is best).
    pub subnets: Vec<String>,
    /// Security groups of the task ENI (at least one).
    pub security_groups: Vec<String>,
    /// `assignPublicIp = ENABLED` (needed in public subnets without a NAT gateway).
    pub assign_public_ip: bool,
    /// Connect to the task's public IP instead of its private one (needs the `public-ip`
    /// feature and `ec2:DescribeNetworkInterfaces`).
    pub use_public_ip: bool,
    /// Launch type or capacity provider strategy.
    pub capacity: Capacity,
    /// Tags the administrator wants on every task (at most 44; see [`crate::tags`]).
    pub tags: BTreeMap<String, String>,
    /// `enableExecuteCommand` (ECS Exec into the task, for debugging).
    pub enable_execute_command: bool,
    /// Retries and timeouts.
    pub retry: RetryPolicy,
}

impl EcsConfig {
    /// A configuration for `cluster` with these subnets and security groups, launch type
    /// `FARGATE`, private IP, no extra tags, default retry policy.
    pub fn new(
        cluster: impl Into<String>,
        subnets: impl IntoIterator<Item = impl Into<String>>,
        security_groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        EcsConfig {
            cluster: cluster.into(),
            subnets: subnets.into_iter().map(Into::into).collect(),
            security_groups: security_groups.into_iter().map(Into::into).collect(),
            ..EcsConfig::default()
        }
    }

    /// Checks the configuration; every problem is an [`ErrorKind::InvalidConfig`] error.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Error::new(ErrorKind::InvalidConfig, msg).with_backend("ecs");
        if self.cluster.trim().is_empty() {
            return Err(invalid("the ECS cluster is not set".into()));
        }
        if self.subnets.iter().all(|s| s.trim().is_empty()) {
            return Err(invalid("no subnet is configured for the task".into())
                .with_hint("set at least one subnet, ideally one per availability zone"));
        }
        if self.security_groups.iter().all(|s| s.trim().is_empty()) {
            return Err(
                invalid("no security group is configured for the task".into())
                    .with_hint("set a security group that lets the runner reach port 22"),
            );
        }
        if self.use_public_ip && !cfg!(feature = "public-ip") {
            return Err(invalid(
                "use_public_ip is set but this build has no public-IP support".into(),
            )
            .with_hint(
                "rebuild with the `public-ip` feature of fargate-aws, or connect privately",
            ));
        }
        if let Capacity::Strategy(items) = &self.capacity {
            if items.is_empty() {
                return Err(invalid("the capacity provider strategy is empty".into())
                    .with_hint("name at least one provider, e.g. FARGATE"));
            }
            for item in items {
                if item.provider.trim().is_empty() {
                    return Err(invalid("a capacity provider name is empty".into()));
                }
                if !(0..=1000).contains(&item.weight) || !(0..=100_000).contains(&item.base) {
                    return Err(invalid(format!(
                        "capacity provider {}: weight must be 0-1000 and base 0-100000",
                        item.provider
                    )));
                }
            }
        }
        tags::validate_admin_tags(&self.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = EcsConfig::new("ci", ["subnet-1"], ["sg-1"]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.subnets.clear();
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        let mut c = ok.clone();
        c.security_groups = vec![String::new()];
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .contains("security group")
        );
        let mut c = ok.clone();
        c.capacity = Capacity::Strategy(vec![]);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.capacity = Capacity::Strategy(vec![CapacityProviderItem::new("FARGATE", 2000, 0)]);
        assert!(c.validate().is_err());
        let mut c = ok;
        c.cluster = " ".into();
        assert!(c.validate().is_err());
    }
}
