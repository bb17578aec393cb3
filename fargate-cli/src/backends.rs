//! Builds the real backends from the driver configuration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use fargate_aws::{EcsConfig, EcsLauncher};
use fargate_core::config::DriverConfig;
use fargate_core::{JobKey, Result, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskStatus};
use fargate_ssh::{Ssh2Config, Ssh2Shell};
use tokio::sync::OnceCell;

/// The ECS backend's configuration, from `[Fargate]`.
pub(crate) fn ecs_config(config: &DriverConfig) -> EcsConfig {
    let f = &config.fargate;
    let mut ecs = EcsConfig::new(&f.cluster, &f.subnets, &f.security_groups);
    ecs.region = f.region.clone();
    ecs.assign_public_ip = f.assign_public_ip;
    ecs.use_public_ip = f.use_public_ip;
    ecs.capacity = f.capacity.clone();
    ecs.tags = f.tags.clone();
    // `[Retry]` is carried out by the driver itself; the SDK only gets one quick retry per
    // call for transient network errors, so that the two layers do not multiply.
    ecs.retry.max_attempts = 2;
    ecs.enable_execute_command = f.enable_execute_command;
    ecs
}

/// The SSH backend, from `[SSH]`.
pub(crate) fn shell(config: &DriverConfig) -> Ssh2Shell {
    let s = &config.ssh;
    Ssh2Shell::with_config(
        Ssh2Config::builder()
            .connect_timeout(s.connect_timeout)
            .handshake_timeout(s.connect_timeout)
            .keepalive_interval(s.keepalive_interval)
            .build(),
    )
}

type MakeLauncher = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<dyn TaskLauncher>>> + Send>> + Send + Sync,
>;

/// A launcher built on first use: the run stage needs ECS only to explain a failure, so it
/// does not pay for loading AWS credentials when all goes well.
pub(crate) struct LazyLauncher {
    cell: OnceCell<Arc<dyn TaskLauncher>>,
    make: MakeLauncher,
}

impl std::fmt::Debug for LazyLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyLauncher")
            .field("built", &self.cell.initialized())
            .finish()
    }
}

impl LazyLauncher {
    /// The ECS launcher for `config`, built when first needed.
    pub(crate) fn ecs(config: EcsConfig) -> Self {
        LazyLauncher {
            cell: OnceCell::new(),
            make: Box::new(move || {
                let config = config.clone();
                Box::pin(async move {
                    let launcher: Arc<dyn TaskLauncher> =
                        Arc::new(EcsLauncher::from_env(config).await?);
                    Ok(launcher)
                })
            }),
        }
    }

    async fn get(&self) -> Result<&Arc<dyn TaskLauncher>> {
        self.cell.get_or_try_init(|| (self.make)()).await
    }
}

#[async_trait]
impl TaskLauncher for LazyLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        self.get().await?.launch(spec).await
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        self.get().await?.describe(task).await
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        self.get().await?.stop(task, reason).await
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        self.get().await?.find(key).await
    }
}
