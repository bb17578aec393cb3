//! `fargate gc`: stops this runner's tasks that no live job owns and removes stale records
//! ([`fargate_core::gc`]), with job images also the derived task definitions unused for
//! `[Fargate.Images] UnusedAfter` or beyond `MaxDerivedFamilies`
//! ([`fargate_aws::derived_gc`]), then prints what it did.

use std::io::Write;
use std::time::Duration;

use fargate_aws::EcsLauncher;
use std::sync::Arc;

use fargate_core::gc::{Action, GcOptions, collect};
use fargate_core::observe::{DynObserver, Event, ObservedLauncher, Observer, StopCause};
use fargate_core::{Error, ErrorKind, FileMetadataStore, Namespace, TaskRef};

use crate::args::GcArgs;
use crate::config::FileConfig;
use crate::config::duration::parse_duration;
use crate::metrics::Metrics;
use crate::stages::print_plain;

/// Runs `fargate gc` with the resolved configuration; returns the exit code: 0 when all is
/// clean or cleaned, 2 when something could not be stopped or removed, or gc could not run.
pub(crate) async fn run(args: &GcArgs, config: FileConfig) -> i32 {
    let metrics = Metrics::new(config.metrics_file.clone().filter(|_| !args.dry_run));
    let (code, outcome) = match collect_with(args, config, &metrics).await {
        Ok(false) => (0, "success"),
        Ok(true) => (2, "system_failure"),
        Err(err) => {
            print_plain(&err);
            (2, "system_failure")
        }
    };
    metrics.finish("gc", None, outcome, None);
    code
}

async fn collect_with(
    args: &GcArgs,
    config: FileConfig,
    metrics: &Metrics,
) -> fargate_core::Result<bool> {
    let max_age = parse_duration(&args.max_age).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--max-age {:?} is not a duration (e.g. 24h, 90m)",
                args.max_age
            ),
        )
    })?;
    let mut options = GcOptions::default();
    options.dry_run = args.dry_run;
    options.max_age = (max_age > Duration::ZERO).then_some(max_age);
    let namespace = config
        .options
        .namespace
        .clone()
        .unwrap_or_else(|| Namespace::default_for(&config.metadata_dir));
    let images = config.options.images.clone();
    let base = config.options.task.task_definition.clone();
    let observer: DynObserver = Arc::new(metrics.clone());
    let ecs = Arc::new(EcsLauncher::from_env(config.ecs).await?);
    let launcher = ObservedLauncher::new(ecs.clone(), observer.clone());
    let store = FileMetadataStore::new(config.metadata_dir);
    let report = collect(&launcher, &store, &namespace, &options).await?;
    for task in report.tasks_with(Action::Removed) {
        observer.observe(&Event::Stopped {
            task: TaskRef::new(task.task.clone()),
            cause: StopCause::Gc,
        });
    }
    // With job images, the derived task definitions of the base too.
    let derived = if images.enabled() {
        Some(
            ecs.prune_derived(
                &base,
                images.unused_after,
                images.max_derived_families,
                args.dry_run,
            )
            .await?,
        )
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        // The JSON report keeps its shape; the derived definitions' summary goes to stderr.
        if let Some(derived) = &derived {
            eprint!("{derived}");
        }
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)
    } else {
        write!(out, "{report}").and_then(|()| match &derived {
            Some(derived) => write!(out, "\n{derived}"),
            None => Ok(()),
        })
    };
    written
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the gc report", e))?;
    Ok(report.has_failures() || derived.is_some_and(|d| !d.failed.is_empty()))
}
