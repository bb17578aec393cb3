//! The ECS launcher and the fleet's DynamoDB store, built on first use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use fargate_aws::dynamo_store::DynamoCallBudget;
use fargate_aws::{DynamoStore, EcsConfig, EcsLauncher, SdkConfig, SdkTransport};
use fargate_core::budget::{CallBudget, CallClass, CallRates, Reservation};
use fargate_core::metadata::{InterruptionMemory, InterruptionNote};
use fargate_core::{
    DebugCommands, HostKey, JobKey, JobLock, JobRecord, Launched, LaunchedBatch, ListedTask,
    MetadataStore, Namespace, Result, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskStatus,
};
use tokio::sync::OnceCell;

type MakeLauncher = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<dyn TaskLauncher>>> + Send>> + Send + Sync,
>;

/// The AWS configuration of this process (credentials chain, region, HTTP client), loaded
/// on first use and shared by the ECS launcher and the fleet's table: a stage process
/// loads it once, not once per client.
#[derive(Debug)]
pub(crate) struct AwsSdk {
    cell: OnceCell<SdkConfig>,
    ecs: EcsConfig,
}

impl AwsSdk {
    /// The configuration for `ecs`'s region, not loaded yet.
    pub(crate) fn new(ecs: &EcsConfig) -> Arc<Self> {
        Arc::new(AwsSdk {
            cell: OnceCell::new(),
            ecs: ecs.clone(),
        })
    }

    /// The configuration, loaded by the first caller.
    pub(crate) async fn get(&self) -> &SdkConfig {
        self.cell
            .get_or_init(|| EcsLauncher::sdk_config(&self.ecs))
            .await
    }
}

/// A launcher built on first use: the run stage needs ECS only to explain a failure, so it
/// does not pay for loading AWS credentials when all goes well.
pub(crate) struct LazyLauncher {
    cell: OnceCell<Arc<dyn TaskLauncher>>,
    make: MakeLauncher,
    /// The launcher's [`TaskLauncher::settings_fingerprint`], known without building it.
    fingerprint: String,
    /// Its configuration, for [`TaskLauncher::debug_commands`] (no AWS call either).
    config: EcsConfig,
}

impl std::fmt::Debug for LazyLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyLauncher")
            .field("built", &self.cell.initialized())
            .finish()
    }
}

impl LazyLauncher {
    /// The ECS launcher for `config` on `sdk`, built when first needed.
    pub(crate) fn ecs(config: EcsConfig, sdk: Arc<AwsSdk>) -> Self {
        LazyLauncher {
            cell: OnceCell::new(),
            fingerprint: config.settings_fingerprint(),
            config: config.clone(),
            make: Box::new(move || {
                let config = config.clone();
                let sdk = sdk.clone();
                Box::pin(async move {
                    let launcher: Arc<dyn TaskLauncher> =
                        Arc::new(EcsLauncher::new(config, sdk.get().await)?);
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
    // The ECS launcher's, known without building it.
    fn max_launch_batch(&self) -> u32 {
        fargate_aws::MAX_RUN_TASK_COUNT
    }
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        self.get().await?.launch_batch(spec, count).await
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
    async fn mark_alive(&self, task: &TaskRef, at: std::time::SystemTime) -> Result<()> {
        self.get().await?.mark_alive(task, at).await
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
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        Some(fargate_aws::exec::debug_commands(
            &self.config,
            task,
            container,
        ))
    }
}

/// The fleet's DynamoDB store, built on first use (loading the AWS configuration as the ECS
/// launcher does, in the same region).
pub(crate) struct LazyDynamo {
    cell: OnceCell<DynamoStore>,
    table: String,
    host: Option<String>,
    region: Option<String>,
    transport: SdkTransport,
    sdk: Arc<AwsSdk>,
    /// Where this host keeps its copy of the ready records it writes.
    copy_dir: std::path::PathBuf,
}

impl std::fmt::Debug for LazyDynamo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyDynamo")
            .field("table", &self.table)
            .field("host", &self.host)
            .field("built", &self.cell.initialized())
            .finish()
    }
}

impl LazyDynamo {
    /// The store on `table`, with the ECS settings' region and transport on `sdk`, naming
    /// this host `host` (`[TaskMetadata] HostName`; `None`: the system's host name) and
    /// keeping this host's copy of the records it writes in `metadata_dir` (see
    /// [`DynamoStore::with_local_copy`]).
    pub(crate) fn new(
        table: String,
        host: Option<String>,
        ecs: &EcsConfig,
        sdk: Arc<AwsSdk>,
        metadata_dir: &std::path::Path,
    ) -> Self {
        LazyDynamo {
            cell: OnceCell::new(),
            table,
            host,
            region: ecs.region.clone(),
            transport: ecs.transport.clone(),
            sdk,
            copy_dir: metadata_dir.join(fargate_aws::dynamo_store::COPY_DIR),
        }
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The store, built now if it was not.
    pub(crate) async fn get(&self) -> Result<&DynamoStore> {
        self.cell
            .get_or_try_init(|| async {
                let store = DynamoStore::new(
                    self.table.clone(),
                    self.sdk.get().await,
                    self.region.as_deref(),
                    &self.transport,
                )?
                .with_local_copy(self.copy_dir.clone());
                Ok(match &self.host {
                    Some(host) => store.with_host(host.clone()),
                    None => store,
                })
            })
            .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MetadataStore for LazyDynamo {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        self.get().await?.put(record).await
    }
    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        MetadataStore::get(self.get().await?, key).await
    }
    async fn delete(&self, key: &JobKey) -> Result<()> {
        self.get().await?.delete(key).await
    }
    async fn list(&self) -> Result<Vec<JobKey>> {
        self.get().await?.list().await
    }
    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        self.get().await?.lock(key, wait).await
    }
    async fn unlock(&self, lock: JobLock) -> Result<()> {
        self.get().await?.unlock(lock).await
    }
    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        self.get().await?.put_locked(lock, record).await
    }
    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        self.get().await?.delete_locked(lock).await
    }
    async fn get_locked(&self, lock: &JobLock) -> Result<Option<JobRecord>> {
        self.get().await?.get_locked(lock).await
    }
    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.get().await?.get_cached(key).await
    }
    async fn delete_and_unlock(&self, lock: JobLock) -> Result<()> {
        self.get().await?.delete_and_unlock(lock).await
    }
    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        self.get().await?.records_with_prefix(prefix).await
    }
    fn may_hold_legacy_records(&self) -> bool {
        // A table: only this driver's current format (whether it is built yet or not).
        false
    }
    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        self.get().await?.heartbeat(key).await
    }
    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        self.get().await?.last_heartbeat(key).await
    }
    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<fargate_core::metadata::SlotGrant> {
        self.get()
            .await?
            .acquire_slot(counter, holder, limit, ttl)
            .await
    }
    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.get().await?.release_slot(counter, holder).await
    }
    async fn slot_holders(&self, counter: &str) -> Result<Vec<fargate_core::metadata::SlotHolder>> {
        self.get().await?.slot_holders(counter).await
    }
    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        self.get().await?.slot_counters(prefix).await
    }
}

#[async_trait]
impl InterruptionMemory for LazyDynamo {
    async fn remember(&self, key: &JobKey, note: &InterruptionNote) -> Result<()> {
        self.get().await?.remember(key, note).await
    }
    async fn recall(&self, key: &JobKey) -> Result<Option<InterruptionNote>> {
        self.get().await?.recall(key).await
    }
}

/// The fleet's API budget of a namespace in the table ([`DynamoCallBudget`]), the store
/// built on first use.
#[derive(Debug)]
pub(crate) struct LazyFleetBudget {
    dynamo: Arc<LazyDynamo>,
    namespace: Namespace,
    rates: CallRates,
    cell: OnceCell<DynamoCallBudget>,
}

impl LazyFleetBudget {
    /// `namespace`'s budget at `rates` (the whole fleet's) in `dynamo`'s table.
    pub(crate) fn new(dynamo: Arc<LazyDynamo>, namespace: Namespace, rates: CallRates) -> Self {
        LazyFleetBudget {
            dynamo,
            namespace,
            rates,
            cell: OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&DynamoCallBudget> {
        self.cell
            .get_or_try_init(|| async {
                let store = LazyDynamo::get(&self.dynamo).await?;
                Ok(store.call_budget(&self.namespace, self.rates))
            })
            .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CallBudget for LazyFleetBudget {
    async fn reserve(&self, class: CallClass, tokens: u32) -> Result<Reservation> {
        self.get().await?.reserve(class, tokens).await
    }
    async fn confirm(&self, class: CallClass, r: Reservation) -> Result<Option<Reservation>> {
        self.get().await?.confirm(class, r).await
    }
    async fn throttled(&self, class: CallClass) -> Result<()> {
        self.get().await?.throttled(class).await
    }
}
