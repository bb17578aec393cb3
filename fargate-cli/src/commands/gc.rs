//! `fargate gc`: stops this runner's tasks that no live job owns and removes stale records
//! ([`fargate_core::gc`]), with job images also the derived task definitions unused for
//! `[Fargate.Images] UnusedAfter` or beyond `MaxDerivedFamilies`
//! ([`fargate_aws::derived_gc`]), then prints what it did.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use fargate_aws::EcsLauncher;
use std::sync::Arc;

use fargate_core::gc::{Action, GcOptions, collect};
use fargate_core::observe::{
    DynObserver, Event, ObservedLauncher, Observer, StageOutcome, StopCause,
};
use fargate_core::options::SecretPolicy;
use fargate_core::{Error, ErrorKind, FileMetadataStore, Namespace, TaskRef};
use fargate_ssh::keeper;
use serde::Serialize;

use crate::args::GcArgs;
use crate::config::FileConfig;
use crate::config::duration::parse_duration;
use crate::context::Context;
use crate::errors::print_plain;
use crate::exit_codes;
use crate::metrics::Metrics;

/// Runs `fargate gc`; returns the exit code: [`exit_codes::SUCCESS`] when all is clean or
/// cleaned, [`exit_codes::COMMAND_FAILED`] when something could not be stopped or removed,
/// or gc could not run.
pub(super) async fn run(args: &GcArgs, context: Context) -> i32 {
    let config = context.config;
    let metrics = Metrics::new(config.metrics_file.clone().filter(|_| !args.dry_run));
    let (code, outcome) = match collect_with(args, config, &metrics).await {
        Ok(false) => (exit_codes::SUCCESS, StageOutcome::Success),
        Ok(true) => (exit_codes::COMMAND_FAILED, StageOutcome::SystemFailure),
        Err(err) => {
            print_plain(&err);
            (exit_codes::COMMAND_FAILED, StageOutcome::SystemFailure)
        }
    };
    metrics.finish("gc", None, outcome.as_str(), None);
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
    let dead_after = dead_after(&args.dead_after)?;
    let mut options = GcOptions::default();
    options.dry_run = args.dry_run;
    options.max_age = (max_age > Duration::ZERO).then_some(max_age);
    options.dead_after = dead_after;
    let namespace = config
        .options
        .namespace
        .clone()
        .unwrap_or_else(|| Namespace::default_for(&config.metadata_dir));
    let images = config.options.images.clone();
    let base = config.options.task.task_definition.clone();
    let observer: DynObserver = Arc::new(metrics.clone());
    let stores = crate::driver::stores(&config);
    let store = stores.store;
    let ecs = Arc::new(EcsLauncher::new(config.ecs, stores.sdk.get().await)?);
    let launcher = ObservedLauncher::new(ecs.clone(), observer.clone());
    let report = collect(&launcher, &*store, &namespace, &options).await?;
    // After the records gc removed: their locks and sockets have no owner left either (with
    // a DynamoDB table, the directory holds only the keepers' sockets).
    let directory = FileMetadataStore::new(config.metadata_dir);
    let leftovers = Leftovers::collect(directory, args.dry_run).await;
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
    // With secret variables of services or the jobs' own registry logins, the secrets (and
    // own task definitions) of jobs whose cleanup never ran.
    let secrets = if images.enabled()
        && (images.secrets == SecretPolicy::Store || !images.job_registry_credentials.is_empty())
    {
        Some(ecs.prune_job_secrets(&namespace, args.dry_run).await?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        // The JSON report keeps its shape; the derived definitions' summary goes to stderr.
        if let Some(derived) = &derived {
            eprint!("{derived}");
        }
        if let Some(secrets) = &secrets {
            eprint!("{secrets}");
        }
        json_report(&report, &leftovers)
            .and_then(|json| serde_json::to_writer_pretty(&mut out, &json))
            .map_err(std::io::Error::from)
    } else {
        write!(out, "{report}\n{leftovers}")
            .and_then(|()| match &derived {
                Some(derived) => write!(out, "\n{derived}"),
                None => Ok(()),
            })
            .and_then(|()| match &secrets {
                Some(secrets) => write!(out, "\n{secrets}"),
                None => Ok(()),
            })
    };
    written
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the gc report", e))?;
    Ok(report.has_failures()
        || leftovers.failed.is_some()
        || derived.is_some_and(|d| !d.failed.is_empty())
        || secrets.is_some_and(|s| !s.failed.is_empty()))
}

/// `--dead-after`: `None` for `0` (never). A limit shorter than three heartbeats is allowed
/// (a test, a fleet that must react fast) with a warning: a live job whose heartbeat is
/// late by that much would have its task stopped.
fn dead_after(text: &str) -> fargate_core::Result<Option<Duration>> {
    let limit = parse_duration(text).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("--dead-after {text:?} is not a duration (e.g. 10m, 90s; 0: never)"),
        )
    })?;
    let quick = 3 * fargate_core::driver::HEARTBEAT_EVERY;
    if limit > Duration::ZERO && limit < quick {
        eprintln!(
            "warning: --dead-after {text} is shorter than three heartbeats ({} s): a live job whose heartbeat is late may have its task stopped",
            quick.as_secs()
        );
    }
    Ok((limit > Duration::ZERO).then_some(limit))
}

/// The JSON report: gc's report with a `leftovers` member added.
fn json_report(
    report: &fargate_core::gc::GcReport,
    leftovers: &Leftovers,
) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(report)?;
    if let Some(object) = json.as_object_mut() {
        object.insert("leftovers".into(), serde_json::to_value(leftovers)?);
    }
    Ok(json)
}

/// What gc removed (or, in a dry run, would remove) from the metadata directory because no
/// live process owns it: keeper sockets nobody listens on
/// ([`fargate_ssh::keeper::remove_dead_sockets`]), lock files nobody holds whose job has no
/// record and temporary files of writers that are gone
/// ([`FileMetadataStore::remove_leftovers`]).
#[derive(Debug, Serialize)]
struct Leftovers {
    /// Whether nothing was removed on purpose.
    dry_run: bool,
    /// The files removed, or that would be.
    removed: Vec<PathBuf>,
    /// Why some could not be removed (or looked for), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

impl Leftovers {
    async fn collect(store: FileMetadataStore, dry_run: bool) -> Self {
        let found = tokio::task::spawn_blocking(move || {
            // The store checks the directory (owner, mode, not a link) before anything.
            let mut removed = if dry_run {
                store.leftovers()?
            } else {
                store.remove_leftovers()?
            };
            let sockets = if dry_run {
                keeper::dead_sockets(store.dir())?
            } else {
                keeper::remove_dead_sockets(store.dir())?
            };
            removed.extend(sockets);
            removed.sort();
            Ok::<_, Error>(removed)
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::new(
                ErrorKind::Unexpected,
                format!("the leftover sweep failed: {e}"),
            ))
        });
        match found {
            Ok(removed) => Leftovers {
                dry_run,
                removed,
                failed: None,
            },
            Err(err) => Leftovers {
                dry_run,
                removed: Vec::new(),
                failed: Some(err.to_string()),
            },
        }
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for path in &self.removed {
            writeln!(f, "{verb} leftover {}", path.display())?;
        }
        if let Some(why) = &self.failed {
            writeln!(f, "FAILED to remove leftovers: {why}")?;
        }
        write!(
            f,
            "metadata directory: {verb} {} leftovers (dead keeper sockets, unheld locks of jobs without a record, temporary files of dead writers)",
            self.removed.len()
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dead_after_is_a_duration_and_zero_is_never() {
        assert_eq!(dead_after("10m").unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(dead_after("3s").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(dead_after("0").unwrap(), None);
        let err = dead_after("soon").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("--dead-after \"soon\""), "{err}");
    }
}
