//! The [`Driver`] of a command, from the configuration: the ECS launcher (built on first
//! use, [`LazyLauncher`]) within the namespace's API budget, the SSH shell, the store and
//! interruption memory ([`stores`]: the metadata directory, or the fleet's DynamoDB table),
//! the administrator's overrides, the price table and an observer.

use std::path::Path;
use std::sync::Arc;

use fargate_core::budget::{BudgetedLauncher, CallBudget};
use fargate_core::driver::AdminOverrides;
use fargate_core::metadata::{DynMetadataStore, InterruptionMemory, permission_warnings};
use fargate_core::observe::DynObserver;
use fargate_core::{Driver, FileMetadataStore, TaskLauncher};
use fargate_ssh::Ssh2Shell;

use crate::backends::{AwsSdk, LazyDynamo, LazyFleetBudget, LazyLauncher};
use crate::config::FileConfig;

/// Where a configuration keeps its records.
pub(crate) struct Stores {
    /// The job records, slots and locks: the table's, else the directory's.
    pub(crate) store: DynMetadataStore,
    /// The interruption notes, in the same place.
    pub(crate) memory: Arc<dyn InterruptionMemory>,
    /// The fleet's table, when the configuration names one.
    pub(crate) table: Option<Arc<LazyDynamo>>,
    /// The AWS configuration, loaded once for the table and ECS.
    pub(crate) sdk: Arc<AwsSdk>,
}

/// The store of `config`: `[TaskMetadata] DynamoDBTable` when set (fleet mode), else the
/// metadata directory.
pub(crate) fn stores(config: &FileConfig) -> Stores {
    let sdk = AwsSdk::new(&config.ecs);
    match &config.dynamodb_table {
        Some(table) => {
            let dynamo = Arc::new(LazyDynamo::new(
                table.clone(),
                config.host_name.clone(),
                &config.ecs,
                sdk.clone(),
                &config.metadata_dir,
            ));
            Stores {
                store: dynamo.clone(),
                memory: dynamo.clone(),
                table: Some(dynamo),
                sdk,
            }
        }
        None => {
            let file = Arc::new(FileMetadataStore::new(config.metadata_dir.clone()));
            Stores {
                store: file.clone(),
                memory: file,
                table: None,
                sdk,
            }
        }
    }
}

/// The driver for `config` and `overrides`, reporting to `observer`; `keeper`: the job's
/// keeper socket, for a `run` stage.
pub(crate) fn build(
    config: FileConfig,
    overrides: AdminOverrides,
    observer: DynObserver,
    keeper: Option<&Path>,
) -> Driver {
    let Stores {
        store,
        memory,
        table,
        sdk,
    } = stores(&config);
    let FileConfig {
        options,
        ecs,
        ssh,
        metadata_dir,
        prices,
        call_rates,
        ..
    } = config;
    for w in permission_warnings(&metadata_dir) {
        tracing::warn!("{w}");
    }
    // The driver retries ([Retry]); the ECS backend only retries transport hiccups.
    // Launches, stops and relabellings take their turn from the namespace's budget
    // ([RateLimit]): in fleet mode one bucket in the table shared by every host, else one
    // in the metadata directory shared by every process of this runner entry on this host.
    let mut launcher: Arc<dyn TaskLauncher> = Arc::new(LazyLauncher::ecs(ecs, sdk));
    if let Some(namespace) = &options.namespace {
        let budget: Arc<dyn CallBudget> = match table {
            Some(dynamo) => Arc::new(LazyFleetBudget::new(dynamo, namespace.clone(), call_rates)),
            None => {
                Arc::new(FileMetadataStore::new(metadata_dir).call_budget(namespace, call_rates))
            }
        };
        launcher = Arc::new(BudgetedLauncher::new(launcher, budget));
    }
    Driver::new(
        options,
        launcher,
        Arc::new(match keeper {
            Some(socket) => Ssh2Shell::with_config(ssh).with_keeper(socket),
            None => Ssh2Shell::with_config(ssh),
        }),
        store,
    )
    .with_interruption_memory(memory)
    .with_admin_overrides(overrides)
    .with_price_table(prices)
    .with_observer(observer)
}
