//! [`Context`]: what every command runs with, built once from the command line and the
//! configuration file; past it, the parsed [`Args`] go no further.

use std::path::{Path, PathBuf};

use fargate_core::driver::AdminOverrides;
use fargate_core::{FileMetadataStore, Namespace, NamespaceClaim, Result};

use crate::args::{Args, Command, Stage};
use crate::config::{self, FileConfig, LoadedConfig};
use crate::detached::Relaunch;
use crate::logging;

/// What a command runs with: the configuration, resolved, and what it keeps of the
/// command line.
#[derive(Debug)]
pub(crate) struct Context {
    /// The configuration file as given (`--config`), for messages.
    pub(crate) config_path: PathBuf,
    /// The configuration, with `[TaskMetadata] Directory` resolved (absolute) and the
    /// namespace set (the file's, or the default one for the directory and the file).
    pub(crate) config: FileConfig,
    /// `--task-def` and `--platform-version`, when given and not empty.
    pub(crate) overrides: AdminOverrides,
    /// How to start this binary again with the same configuration and logging, for the
    /// processes a stage leaves running.
    pub(crate) relaunch: Relaunch,
}

impl Context {
    /// Loads the configuration and sets up logging (before it exists, the caller prints the
    /// error); claims the configuration's namespace for the commands that start or judge
    /// work ([`claims_namespace`]).
    ///
    /// The metadata directory and namespace are resolved here, once: a missing directory is
    /// [`FileMetadataStore::default_dir`], a relative one is relative to the configuration
    /// file (never to the working directory, which the runner changes and deletes), and the
    /// default namespace derives from the resolved directory.
    pub(crate) fn new(args: &Args) -> Result<Context> {
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
        let config_file = absolute(&args.config);
        let namespace = config
            .options
            .namespace
            .get_or_insert_with(|| {
                Namespace::default_for_runner(&config.metadata_dir, &config_file)
            })
            .clone();
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let overrides = AdminOverrides {
            task_definition: nonempty(&args.task_def),
            platform_version: nonempty(&args.platform_version),
        };
        if claims_namespace(&args.command) {
            FileMetadataStore::new(config.metadata_dir.clone()).claim_namespace(
                &namespace,
                &NamespaceClaim::new(config_file.clone(), launch_settings(&config, &overrides)),
            )?;
        }
        Ok(Context {
            config_path: args.config.clone(),
            config,
            overrides: overrides.clone(),
            relaunch: Relaunch {
                config_file,
                log_file: args.log_file.as_deref().map(absolute),
                log_level: args.log_level.clone(),
                debug: args.debug,
                overrides,
            },
        })
    }

    /// The task definition of the jobs that ask for none: `--task-def`, else the file's.
    pub(crate) fn task_definition(&self) -> String {
        self.overrides
            .task_definition
            .clone()
            .unwrap_or_else(|| self.config.options.task.task_definition.clone())
    }
}

/// Whether `command` claims the namespace: the config and prepare stages (the first
/// stages of a job: a refused runner entry starts nothing), `gc` and `pool`. Not the run
/// stages (about ten per job, all after a prepare that claimed it), not cleanup (which
/// must stop what a job started, whatever), not the keeper (started by a prepare), not
/// `doctor` (which reports on a metadata directory it could not write).
fn claims_namespace(command: &Command) -> bool {
    match command {
        Command::Custom { stage } => matches!(stage, Stage::Config | Stage::Prepare),
        Command::Gc(_) | Command::Pool(_) => true,
        _ => false,
    }
}

/// What the tasks of this runner entry are made of, for its namespace's claim: the ECS
/// settings, the default task definition and platform version (the file's, or
/// `--task-def`/`--platform-version`), and the warm pool's.
fn launch_settings(config: &FileConfig, overrides: &AdminOverrides) -> String {
    let task = &config.options.task;
    format!(
        "ecs={}\ntask_definition={:?}\nplatform_version={:?}\npool={:?}",
        config.ecs.settings_fingerprint(),
        overrides
            .task_definition
            .clone()
            .unwrap_or_else(|| task.task_definition.clone()),
        overrides
            .platform_version
            .clone()
            .or_else(|| task.platform_version.clone()),
        config.options.pool
    )
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

/// `path` made absolute (against the working directory), or as it is when that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stages_that_start_or_judge_work_claim_the_namespace() {
        use clap::Parser;
        let claims = |argv: &[&str]| {
            let args =
                Args::try_parse_from(["fargate", "--config", "f.toml"].iter().chain(argv)).unwrap();
            claims_namespace(&args.command)
        };
        assert!(claims(&["custom", "config"]));
        assert!(claims(&["custom", "prepare"]));
        assert!(claims(&["gc"]));
        assert!(claims(&["pool", "status"]));
        assert!(!claims(&["custom", "run", "script", "build_script"]));
        assert!(
            !claims(&["custom", "cleanup"]),
            "a cleanup is never refused"
        );
        assert!(!claims(&["doctor"]));
        assert!(!claims(&["keeper", "--socket", "s", "--job", "ci-1"]));
    }

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
