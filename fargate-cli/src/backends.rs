//! The ECS launcher, built on first use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use fargate_aws::{EcsConfig, EcsLauncher};
use fargate_core::{
    HostKey, JobKey, Launched, ListedTask, Namespace, Result, StopOutcome, TaskLauncher, TaskRef,
    TaskSpec, TaskStatus,
};
use tokio::sync::OnceCell;

type MakeLauncher = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<dyn TaskLauncher>>> + Send>> + Send + Sync,
>;

/// A launcher built on first use: the run stage needs ECS only to explain a failure, so it
/// does not pay for loading AWS credentials when all goes well.
pub(crate) struct LazyLauncher {
    cell: OnceCell<Arc<dyn TaskLauncher>>,
    make: MakeLauncher,
    /// The launcher's [`TaskLauncher::settings_fingerprint`], known without building it.
    fingerprint: String,
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
            fingerprint: config.settings_fingerprint(),
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
#[deny(clippy::missing_trait_methods)]
impl TaskLauncher for LazyLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        self.get().await?.launch(spec).await
    }
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        self.get().await?.launch_observed(spec).await
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
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        self.get().await?.list(namespace).await
    }
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        self.get().await?.adopt(task, spec).await
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        self.get()
            .await?
            .resolve_task_definition(task_definition)
            .await
    }
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.get().await?.release(spec).await
    }
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        self.get().await?.announced_host_keys(task, container).await
    }
    fn settings_fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
