//! Carries out one stage: load configuration, set up logging and signals, build the
//! backends, run the stage, and turn its outcome into the exit code.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fargate_core::driver::{AdminOverrides, config_output};
use fargate_core::metadata::permission_warnings;
use fargate_core::observe::{DynObserver, Observers, StageOutcome};
use fargate_core::{
    Driver, DriverOptions, Error, ErrorKind, Failure, FileMetadataStore, JobContext, Namespace,
    NamespaceClaim, StdioSink,
};
use fargate_ssh::Ssh2Shell;
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Command, Stage, normalize};
use crate::config::{FileConfig, LoadedConfig};
use crate::job_log::JobLog;
use crate::metrics::Metrics;
use crate::{backends, config, logging, signals};

/// The driver's version, as shown by the runner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the `fargate` command with `args` (including the program name).
pub fn main_impl(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let system_failure = std::env::var("SYSTEM_FAILURE_EXIT_CODE")
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|c| *c != 0)
        .unwrap_or(2);
    let args = match Args::try_parse_from(normalize(args)) {
        Ok(args) => args,
        Err(err) => {
            // Help and version go to stdout on request; errors to stderr, never stdout
            // (the config stage's stdout is JSON for the runner).
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(system_failure)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: fargate: cannot start the async runtime: {e}");
            return ExitCode::from(system_failure);
        }
    };
    let code = runtime.block_on(execute(args));
    // Do not wait for blocking threads (an SSH session being torn down) at exit.
    runtime.shutdown_background();
    ExitCode::from(u8::try_from(code).unwrap_or(system_failure))
}

async fn execute(args: Args) -> i32 {
    if let Command::Doctor(doctor) = &args.command {
        return match setup(&args) {
            Ok(config) => crate::doctor::run(&args, doctor, config).await,
            Err(err) => {
                print_plain(&err);
                2
            }
        };
    }
    if let Command::Keeper(command) = &args.command {
        return match setup(&args) {
            Ok(config) => match crate::keeper::run(command, config).await {
                Ok(()) => 0,
                Err(err) => {
                    tracing::debug!("connection keeper: {}", err.chain());
                    2
                }
            },
            Err(_) => 2,
        };
    }
    if let Command::Pool(pool) = &args.command {
        return match setup(&args) {
            Ok(config) => crate::pool::run(&args, pool, config).await,
            Err(err) => {
                print_plain(&err);
                2
            }
        };
    }
    if let Command::Gc(gc) = &args.command {
        return match setup(&args) {
            Ok(config) => crate::gc::run(gc, config).await,
            Err(err) => {
                print_plain(&err);
                2
            }
        };
    }
    let job = match JobContext::from_env() {
        Ok(job) => job,
        Err(err) => {
            print_plain(&err);
            return 2;
        }
    };
    let codes = job.exit_codes;
    let Command::Custom { stage } = &args.command else {
        return 2;
    };
    let mut metrics = Metrics::new(None);
    let mut job_key = None;
    let result = match setup(&args) {
        Ok(config) => {
            metrics = Metrics::new(config.metrics_file.clone());
            job_key = config
                .options
                .namespace
                .as_ref()
                .and_then(|ns| job.identity(ns).ok())
                .map(|id| id.key().to_string());
            run_stage(&args, stage, config, &job, &metrics).await
        }
        Err(err) => {
            print_plain(&err);
            Err(err.into())
        }
    };
    let (name, step) = match stage {
        Stage::Config => ("config", None),
        Stage::Prepare => ("prepare", None),
        Stage::Run { stage, .. } => ("run", Some(stage.as_str())),
        Stage::Cleanup => ("cleanup", None),
    };
    metrics.finish(name, step, outcome(&result), job_key.as_deref());
    let Err(failure) = result else { return 0 };
    report(&failure);
    let decision = failure.exit(&codes);
    if let (Some(code), Some(path)) = (decision.build_exit_code, &job.build_exit_code_file)
        && let Err(e) = std::fs::write(path, format!("{code}\n"))
    {
        tracing::error!(
            "cannot write the script's exit code to {}: {e}",
            path.display()
        );
    }
    decision.exit_code
}

/// Loads the configuration and sets up logging; before logging exists, errors are printed.
///
/// The metadata directory and namespace are resolved here, once: a missing directory is
/// [`FileMetadataStore::default_dir`], a relative one is relative to the configuration
/// file (never to the working directory, which the runner changes and deletes), and the
/// default namespace derives from the resolved directory.
fn setup(args: &Args) -> fargate_core::Result<FileConfig> {
    let LoadedConfig {
        mut config,
        warnings,
    } = config::load(&args.config)?;
    let log = &config.log;
    let level = logging::level(args.debug, args.log_level.as_deref(), log.level.as_deref())?;
    let sdk_level = logging::level(false, log.aws_sdk_level.as_deref(), Some("warn"))?;
    let format = logging::format(args.log_format.as_deref(), log.format)?;
    let file = args.log_file.as_deref().or(log.file.as_deref());
    logging::init(level, sdk_level, format, file)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    config.metadata_dir = metadata_dir(&args.config, &config.metadata_dir);
    let config_file = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let namespace = config
        .options
        .namespace
        .get_or_insert_with(|| Namespace::default_for_runner(&config.metadata_dir, &config_file))
        .clone();
    // The keeper is started by a prepare that checked this already; `doctor` must report
    // on a directory it could not write.
    if !matches!(args.command, Command::Keeper(_) | Command::Doctor(_)) {
        FileMetadataStore::new(config.metadata_dir.clone()).claim_namespace(
            &namespace,
            &NamespaceClaim::new(config_file, launch_settings(args, &config)),
        )?;
    }
    Ok(config)
}

/// What the tasks of this runner entry are made of, for its namespace's claim: the ECS
/// settings, the default task definition and platform version (the file's, or
/// `--task-def`/`--platform-version`), and the warm pool's.
fn launch_settings(args: &Args, config: &FileConfig) -> String {
    let task = &config.options.task;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    format!(
        "ecs={}\ntask_definition={:?}\nplatform_version={:?}\npool={:?}",
        config.ecs.settings_fingerprint(),
        nonempty(&args.task_def).unwrap_or_else(|| task.task_definition.clone()),
        nonempty(&args.platform_version).or_else(|| task.platform_version.clone()),
        config.options.pool
    )
}

/// The outcome label of a stage's result: `success`, `script_failure`, `system_failure` or
/// `cancelled`.
fn outcome(result: &Result<(), Failure>) -> &'static str {
    StageOutcome::of(result).as_str()
}

async fn run_stage(
    args: &Args,
    stage: &Stage,
    config: FileConfig,
    job: &JobContext,
    metrics: &Metrics,
) -> Result<(), Failure> {
    if let Stage::Config = stage {
        return print_config(&config.options, job);
    }
    let cancel = CancellationToken::new();
    if let Err(e) = signals::cancel_on_signals(cancel.clone()) {
        tracing::warn!("cannot listen for signals: {e}");
    }
    let keeper = crate::keeper::socket(&config, job);
    let pool = config.options.pool.enabled();
    let observer = Arc::new(Observers(vec![Arc::new(JobLog), Arc::new(metrics.clone())]));
    let driver = driver(
        args,
        config,
        observer,
        keeper.as_deref().filter(|_| is_run(stage)),
    );
    match stage {
        Stage::Config => Ok(()),
        Stage::Prepare => {
            // The job log's lines come from the driver's events (`JobLog`).
            let prepared = driver.prepare(job, &cancel).await;
            // The pool's refill runs in a process of its own, whatever became of the job.
            if pool {
                crate::keeper::start_refill(args);
            }
            prepared?;
            if let Some(socket) = &keeper {
                crate::keeper::start(args, socket, &driver.identity(job)?.key()).await;
            }
            Ok(())
        }
        Stage::Run { script, stage, .. } => {
            let bytes = tokio::fs::read(script).await.map_err(|e| {
                Error::io(
                    format!("cannot read the stage script {}", script.display()),
                    e,
                )
            })?;
            let mut sink = StdioSink;
            driver
                .run(job, stage, Arc::from(bytes), &mut sink, &cancel)
                .await
        }
        Stage::Cleanup => {
            if let Some(socket) = &keeper {
                crate::keeper::stop(socket);
            }
            // Cleanup is never cancelled: it finishes its stop under its own deadline.
            driver.cleanup(job).await.map(drop)
        }
    }
}

fn is_run(stage: &Stage) -> bool {
    matches!(stage, Stage::Run { .. })
}

/// The driver of a stage; `keeper`: the job's keeper socket, for a `run` stage.
pub(crate) fn driver(
    args: &Args,
    config: FileConfig,
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
        Arc::new(backends::LazyLauncher::ecs(ecs)),
        Arc::new(match keeper {
            Some(socket) => Ssh2Shell::with_config(ssh).with_keeper(socket),
            None => Ssh2Shell::with_config(ssh),
        }),
        store.clone(),
    )
    .with_interruption_memory(store)
    .with_admin_overrides(AdminOverrides {
        task_definition: args.task_def.clone().filter(|s| !s.is_empty()),
        platform_version: args.platform_version.clone().filter(|s| !s.is_empty()),
    })
    .with_price_table(prices)
    .with_observer(observer)
}

/// `[TaskMetadata] Directory`: unset is the default state directory; relative is relative to
/// the directory of the configuration file `config` (made absolute). The Go driver used the
/// working directory, which gitlab-runner makes anew for every prepare attempt and deletes
/// after the job, so its records were lost.
fn metadata_dir(config: &Path, dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        return FileMetadataStore::default_dir();
    }
    if dir.is_absolute() {
        return dir.to_owned();
    }
    let config = if config.is_absolute() {
        config.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(config))
            .unwrap_or_else(|_| config.to_owned())
    };
    config
        .parent()
        .map(|base| base.join(dir))
        .unwrap_or_else(|| dir.to_owned())
}

fn print_config(options: &DriverOptions, job: &JobContext) -> Result<(), Failure> {
    let out = config_output(options, job, VERSION);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing the configuration for the runner", e).into())
}

/// Logs a failure for the person reading the job log.
fn report(failure: &Failure) {
    match failure.as_system() {
        None => tracing::error!("{failure}"),
        Some(err) => {
            // The job log shows the hint on its own `hint:` line.
            match err.hint() {
                Some(hint) => tracing::error!(hint, "{}", err.chain()),
                None => tracing::error!("{}", err.chain()),
            }
            if err.kind() == ErrorKind::Cancelled {
                tracing::warn!("the stage was cancelled");
            }
        }
    }
}

pub(crate) fn print_plain(err: &Error) {
    eprintln!("ERROR: fargate: {}", err.chain());
    if let Some(hint) = err.hint() {
        eprintln!("hint: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_directories_never_depend_on_the_working_directory() {
        let cfg = Path::new("/etc/gitlab-runner/fargate.toml");
        assert_eq!(
            metadata_dir(cfg, Path::new("metadata")),
            PathBuf::from("/etc/gitlab-runner/metadata")
        );
        assert_eq!(
            metadata_dir(cfg, Path::new("/srv/meta")),
            PathBuf::from("/srv/meta")
        );
        let default = metadata_dir(cfg, Path::new(""));
        assert!(default.is_absolute(), "{}", default.display());
        assert_eq!(default, FileMetadataStore::default_dir());
    }
}
