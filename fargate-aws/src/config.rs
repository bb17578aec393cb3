//! [`EcsConfig`]: where and how the backend starts tasks, and its validation.

use std::collections::BTreeMap;

use fargate_core::{ConfigError, ConfigProblem};

use crate::tags;
use crate::transport::SdkTransport;

/// How `RunTask` gets capacity: never neither, so a cluster without a default capacity
/// provider strategy works.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Capacity {
    /// Launch type `FARGATE` (the default).
    #[default]
    Fargate,
    /// A capacity provider strategy, in order (e.g. `FARGATE_SPOT`, then `FARGATE`).
    Strategy(Vec<CapacityProviderItem>),
}

/// One item of a capacity provider strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapacityProviderItem {
    /// Provider name, e.g. `FARGATE_SPOT`.
    pub provider: String,
    /// Relative weight (0-1000).
    pub weight: i32,
    /// Tasks placed on this provider first (0-100000).
    pub base: i32,
}

impl CapacityProviderItem {
    /// An item for `provider` with `weight` and `base`.
    pub fn new(provider: impl Into<String>, weight: i32, base: i32) -> Self {
        CapacityProviderItem {
            provider: provider.into(),
            weight,
            base,
        }
    }
}

/// Configuration of [`crate::EcsLauncher`].
///
/// The job-specific parts (task definition, platform version, container, environment) come
/// from each [`fargate_core::TaskSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Connect to the task's public IP instead of its private one (needs
    /// `assign_public_ip` and `ec2:DescribeNetworkInterfaces`).
    pub use_public_ip: bool,
    /// Launch type or capacity provider strategy.
    pub capacity: Capacity,
    /// Tags the administrator wants on every task (at most 42; see [`crate::tags`]).
    pub tags: BTreeMap<String, String>,
    /// `enableExecuteCommand` (ECS Exec into the task, for debugging).
    pub enable_execute_command: bool,
    /// `propagateTags = TASK_DEFINITION`: the task definition's tags (cost allocation tags,
    /// say) are copied to every task. They count against ECS's 50 tags per task with the
    /// driver's and [`EcsConfig::tags`]. Default `false` (ECS's `NONE`).
    pub propagate_task_definition_tags: bool,
    /// `enableECSManagedTags`: ECS adds `aws:ecs:clusterName` (and, for services,
    /// `aws:ecs:serviceName`) to every task. Default `false`.
    pub enable_ecs_managed_tags: bool,
    /// On capacity or ENI errors of `RunTask`, try the configured subnets one by one
    /// ([`crate::failover`]). Default `true`.
    pub subnet_failover: bool,
    /// The SDK's attempts and timeouts per API call (default: one quick retry).
    pub transport: SdkTransport,
}

impl Default for EcsConfig {
    fn default() -> Self {
        EcsConfig {
            cluster: String::new(),
            region: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            assign_public_ip: false,
            use_public_ip: false,
            capacity: Capacity::default(),
            tags: BTreeMap::new(),
            enable_execute_command: false,
            propagate_task_definition_tags: false,
            enable_ecs_managed_tags: false,
            subnet_failover: true,
            transport: SdkTransport::default(),
        }
    }
}

impl EcsConfig {
    /// The [`TaskLauncher::settings_fingerprint`](fargate_core::TaskLauncher::settings_fingerprint)
    /// of a launcher with this configuration: 16 hex digits of a hash of everything here
    /// that shapes a task (cluster, region, network, public IP, capacity, tags, ECS Exec, tag
    /// propagation), not of how the SDK calls ECS. Stable for one version of this crate; a
    /// new version may change it, which only renews a warm pool.
    pub fn settings_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let text = format!(
            "cluster={:?}\nregion={:?}\nsubnets={:?}\nsecurity_groups={:?}\nassign_public_ip={}\n\
             use_public_ip={}\ncapacity={:?}\ntags={:?}\nexec={}\npropagate={}\nmanaged={}\n",
            self.cluster,
            self.region,
            self.subnets,
            self.security_groups,
            self.assign_public_ip,
            self.use_public_ip,
            self.capacity,
            self.tags,
            self.enable_execute_command,
            self.propagate_task_definition_tags,
            self.enable_ecs_managed_tags,
        );
        hash.update(text.as_bytes());
        hex::encode(&hash.finalize()[..8])
    }

    /// A configuration for `cluster` with these subnets and security groups, launch type
    /// `FARGATE`, private IP, no extra tags, subnet failover, default transport.
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

    /// Every problem of the configuration; keys are field names (`subnets`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.cluster.trim().is_empty() {
            p.push(ConfigProblem::new(
                "cluster",
                "is required (the ECS cluster name or ARN)",
            ));
        }
        if self.subnets.iter().all(|s| s.trim().is_empty()) {
            p.push(
                ConfigProblem::new("subnets", "is required (awsvpc tasks need a subnet)")
                    .with_hint("set at least one subnet, ideally one per availability zone"),
            );
        }
        if self.security_groups.iter().all(|s| s.trim().is_empty()) {
            p.push(
                ConfigProblem::new(
                    "security_groups",
                    "is required (one that lets this host reach the task's SSH port)",
                )
                .with_hint("set a security group that lets the runner reach port 22"),
            );
        }
        if self.use_public_ip && !self.assign_public_ip {
            p.push(ConfigProblem::new(
                "use_public_ip",
                "needs assign_public_ip (a task only gets a public IP when one is assigned)",
            ));
        }
        if let Capacity::Strategy(items) = &self.capacity {
            if items.is_empty() {
                p.push(
                    ConfigProblem::new("capacity", "is an empty capacity provider strategy")
                        .with_hint("name at least one provider, e.g. FARGATE"),
                );
            }
            for item in items {
                if item.provider.trim().is_empty() {
                    p.push(ConfigProblem::new("capacity", "names an empty provider"));
                } else if !(0..=1000).contains(&item.weight) || !(0..=100_000).contains(&item.base)
                {
                    p.push(ConfigProblem::new(
                        "capacity",
                        format!(
                            "provider {}: weight must be 0-1000 and base 0-100000",
                            item.provider
                        ),
                    ));
                }
            }
        }
        p.extend(tags::admin_tag_problems(&self.tags));
        p
    }

    /// Checks the configuration: every problem, or none. [`crate::EcsLauncher::new`] calls
    /// it and fails with [`fargate_core::ErrorKind::InvalidConfig`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(self.problems())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &EcsConfig) -> Vec<String> {
        c.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn validation_lists_every_problem_by_field() {
        let ok = EcsConfig::new("ci", ["subnet-1"], ["sg-1"]);
        assert!(ok.validate().is_ok());
        assert_eq!(
            keys(&EcsConfig::default()),
            ["cluster", "subnets", "security_groups"]
        );
        let mut c = ok.clone();
        c.security_groups = vec![String::new()];
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().contains("security_groups is required"),
            "{err}"
        );
        assert!(err.problems[0].hint.as_deref().unwrap().contains("port 22"));
        let mut c = ok.clone();
        c.capacity = Capacity::Strategy(vec![]);
        assert_eq!(keys(&c), ["capacity"]);
        c.capacity = Capacity::Strategy(vec![CapacityProviderItem::new("FARGATE", 2000, 0)]);
        assert_eq!(keys(&c), ["capacity"]);
        let mut c = ok.clone();
        c.use_public_ip = true;
        assert!(keys(&c).contains(&"use_public_ip".to_owned()));
        let mut c = ok;
        c.cluster = " ".into();
        c.tags.insert("aws:x".into(), "y".into());
        assert_eq!(keys(&c), ["cluster", "tags"]);
        let tags = &c.problems()[1];
        assert!(tags.message.contains("aws:"), "{tags:?}");
        assert!(tags.hint.is_some());
    }

    #[test]
    fn defaults_fail_over_subnets_and_retry_transport_once() {
        let c = EcsConfig::default();
        assert!(c.subnet_failover);
        assert_eq!(c.transport.max_attempts, 2);
    }
}
