//! The [`Driver`] of a command, from the configuration: the ECS launcher (built on first
//! use, [`LazyLauncher`]), the SSH shell, the metadata directory as store and interruption
//! memory, the administrator's overrides, the price table and an observer.

use std::path::Path;
use std::sync::Arc;

use fargate_core::driver::AdminOverrides;
use fargate_core::metadata::permission_warnings;
use fargate_core::observe::DynObserver;
use fargate_core::{Driver, FileMetadataStore};
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
        ..
    } = config;
    for w in permission_warnings(&metadata_dir) {
        tracing::warn!("{w}");
    }
    // The driver retries ([Retry]); the ECS backend only retries transport hiccups.
    let store = Arc::new(FileMetadataStore::new(metadata_dir));
    Driver::new(
        options,
        Arc::new(LazyLauncher::ecs(ecs)),
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
