//! [`EcsLauncher`]: the [`TaskLauncher`] on Amazon ECS: its
//! clients and settings (the trait's methods are in `task_launcher`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use fargate_core::{Error, ListedTask, Namespace, Result};
#[cfg(doc)]
use fargate_core::{ErrorKind, TaskLauncher};

use crate::aws_api::AwsApi;
use crate::config::EcsConfig;
use crate::metrics::ApiCalls;

/// Starts CI job tasks on ECS (Fargate), watches, stops and finds them.
///
/// Cheap to clone (clones share the SDK clients and the [`ApiCalls`] counter).
#[derive(Clone)]
pub struct EcsLauncher {
    pub(crate) config: Arc<EcsConfig>,
    pub(crate) ecs: aws_sdk_ecs::Client,
    /// Calls to other services (EC2), with the ECS client's settings.
    pub(crate) api: AwsApi,
    /// Public IPs found so far, by task id (EC2 is asked only until one is found).
    pub(crate) public_ips: Arc<Mutex<HashMap<String, IpAddr>>>,
    /// Where tasks' containers log, found so far ([`crate::host_keys`]).
    pub(crate) log_streams: Arc<Mutex<crate::host_keys::StreamCache>>,
    pub(crate) calls: ApiCalls,
}

impl fmt::Debug for EcsLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsLauncher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EcsLauncher {
    /// A launcher for `config`, with clients built from `sdk` (credentials, endpoint, HTTP
    /// client). `config.region`, when set, overrides `sdk`'s region; `config.transport`
    /// replaces its retry and timeout settings.
    ///
    /// Fails with [`ErrorKind::InvalidConfig`] when the configuration is invalid
    /// ([`EcsConfig::validate`]).
    pub fn new(config: EcsConfig, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let mut config = config;
        config.subnets.retain(|s| !s.trim().is_empty());
        config.security_groups.retain(|s| !s.trim().is_empty());
        config
            .validate()
            .map_err(|e| Error::from(e).with_backend("ecs"))?;
        let calls = ApiCalls::new();
        let mut ecs = aws_sdk_ecs::config::Builder::from(sdk)
            .retry_config(config.transport.sdk_retry_config())
            .timeout_config(config.transport.sdk_timeout_config())
            .interceptor(calls.clone());
        if let Some(region) = &config.region {
            ecs = ecs.region(aws_config::Region::new(region.clone()));
        }
        let api = AwsApi::new(
            sdk,
            config.region.as_deref(),
            config.transport.sdk_retry_config(),
            config.transport.sdk_timeout_config(),
            calls.clone(),
        );
        Ok(EcsLauncher {
            config: Arc::new(config),
            ecs: aws_sdk_ecs::Client::from_conf(ecs.build()),
            api,
            public_ips: Arc::default(),
            log_streams: Arc::default(),
            calls,
        })
    }

    /// A launcher with the default AWS configuration chain (environment, profile, IMDS...),
    /// with `config.region` as the region when it is set.
    pub async fn from_env(config: EcsConfig) -> Result<Self> {
        let sdk = EcsLauncher::sdk_config(&config).await;
        EcsLauncher::new(config, &sdk)
    }

    /// The SDK configuration [`EcsLauncher::from_env`] uses: the default chains, with
    /// `config`'s region when it has one.
    pub async fn sdk_config(config: &EcsConfig) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        loader.load().await
    }

    /// The configuration in use.
    pub fn config(&self) -> &EcsConfig {
        &self.config
    }

    /// The counter of API requests this launcher (and its clones) sent.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }

    /// The not-stopped tasks of the cluster tagged with `namespace`, `page_size` (1 to
    /// [`MAX_LIST_TASKS`](crate::MAX_LIST_TASKS)) per `ListTasks` page; what
    /// [`TaskLauncher::list`] does with pages of 100.
    pub async fn list_paged(
        &self,
        namespace: &Namespace,
        page_size: usize,
    ) -> Result<Vec<ListedTask>> {
        crate::listing::list_namespace(&self.ecs, &self.config.cluster, namespace, page_size).await
    }

    /// The ECS client, for callers that need more than the [`TaskLauncher`] methods.
    pub fn ecs_client(&self) -> &aws_sdk_ecs::Client {
        &self.ecs
    }
}
