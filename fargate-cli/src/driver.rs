//! The [`Driver`] of a command, from the configuration: the ECS launcher (built on first
//! use, [`LazyLauncher`]) within the namespace's API budget, the SSH shell, the metadata directory as store and interruption
//! memory, the administrator's overrides, the price table and an observer.

use std::path::Path;
use std::sync::Arc;

use fargate_core::budget::BudgetedLauncher;
use fargate_core::driver::AdminOverrides;
use fargate_core::metadata::permission_warnings;
use fargate_core::observe::DynObserver;
use fargate_core::{Driver, FileMetadataStore, TaskLauncher};
use fargate_ssh::Ssh2Shell;

use crate::backends::LazyLauncher;
use crate::config::FileConfig;

/// The driver for `config` and `overrides`, reporting to `observer`; `keeper`: the job's
/// keeper socket, for a `run` stage.
pub(crate) fn build(
    config: FileConfig,
    overrides: AdminOverrides,
    observer: DynObserver,
    keeper: Option<&Path>,
) -> Driver {
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
    let store = Arc::new(FileMetadataStore::new(metadata_dir));
    // Launches, stops and relabellings take their turn from the namespace's budget, shared
    // by every process of this runner entry on the host ([RateLimit]).
    let mut launcher: Arc<dyn TaskLauncher> = Arc::new(LazyLauncher::ecs(ecs));
    if let Some(namespace) = &options.namespace {
        let budget = Arc::new(store.call_budget(namespace, call_rates));
        launcher = Arc::new(BudgetedLauncher::new(launcher, budget));
    }
    Driver::new(
        options,
        launcher,
        Arc::new(match keeper {
            Some(socket) => Ssh2Shell::with_config(ssh).with_keeper(socket),
            None => Ssh2Shell::with_config(ssh),
        }),
        store.clone(),
    )
    .with_interruption_memory(store)
    .with_admin_overrides(overrides)
    .with_price_table(prices)
    .with_observer(observer)
}
