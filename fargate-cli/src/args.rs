//! The command line, compatible with GitLab's Go driver: the same flags, subcommands and
//! aliases (the migration guide, `docs/migrating.md`, lists them).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `fargate [global flags] custom config|prepare|run <script> <stage>|cleanup`.
#[derive(Debug, Parser)]
#[command(
    name = "fargate",
    version,
    about = "Fargate driver for GitLab Runner's Custom Executor",
    long_about = "Fargate driver for GitLab Runner's Custom Executor: runs each CI job in its own \
                  AWS Fargate task and its stage scripts over SSH.\n\nConfigure the runner's \
                  [runners.custom] with config_exec/prepare_exec/run_exec/cleanup_exec = \"fargate\" \
                  and *_args = [\"--config\", \"/etc/gitlab-runner/fargate.toml\", \"custom\", \"<stage>\"]."
)]
pub struct Args {
    /// Path of the driver configuration (fargate.toml).
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    /// Log at debug level (beats --log-level and LogLevel).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Log level: error, warn, info, debug, trace (beats LogLevel).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json (beats LogFormat).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Append logs to this file instead of stderr (beats LogFile).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Task definition for every job of this runner (beats `[Fargate] TaskDefinition`).
    #[arg(
        help = "Task definition for every job of this runner (beats [Fargate] TaskDefinition)",
        long = "task-def",
        global = true,
        value_name = "TASK_DEFINITION",
        long_help = "Task definition for every job of this runner (beats [Fargate] TaskDefinition). \
                     Jobs ask for others with the FARGATE_TASK_DEFINITION variable, checked \
                     against [Fargate] AllowedTaskDefinitions."
    )]
    pub task_def: Option<String>,
    /// Platform version for every job of this runner (beats `[Fargate] PlatformVersion`).
    #[arg(
        long,
        global = true,
        value_name = "VERSION",
        help = "Platform version for every job of this runner (beats [Fargate] PlatformVersion)"
    )]
    pub platform_version: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Custom executor stages (run by gitlab-runner).
    #[command(alias = "c")]
    Custom {
        /// The stage.
        #[command(subcommand)]
        stage: Stage,
    },
    /// Stop this runner's tasks that no live job owns, and remove stale job records.
    #[command(
        long_about = "Stop this runner's tasks (its namespace) that no live job owns: no job \
                      record, a record whose cleanup died, a job older than --max-age, or a \
                      task past its fargate:deadline tag. A job that holds its lock (a \
                      prepare or cleanup runs) or is within its lifetime is never touched, so \
                      this is safe to run from cron or a systemd timer while jobs run. Also \
                      removes stale job records. Exit code 0 when all is clean or cleaned."
    )]
    Gc(GcArgs),
    /// Holds one job's SSH connection for its `run` stages (started by prepare).
    #[command(hide = true)]
    Keeper(KeeperArgs),
    /// Check the configuration against the AWS account before the first job.
    #[command(
        long_about = "Check fargate.toml against the AWS account before the first job: \
                      credentials and region, the cluster and its capacity providers, the task \
                      definition (awsvpc, the container, the SSH port, a Fargate size), the \
                      subnets and the security group rule for the SSH port, and the metadata \
                      directory. Prints a checklist with a \
                      fix for each failure; exit code 0 only when everything passes. With \
                      --job, also runs a one-job smoke test (launch, SSH, `true`, stop) and \
                      prints its summary."
    )]
    Doctor(DoctorArgs),
    /// Look after the warm pool of idle tasks ([Fargate.WarmPool]).
    #[command(
        long_about = "Look after the warm pool ([Fargate.WarmPool]): tasks started ahead of \
                      jobs, each claimed by one job, whose key is swapped for the job's before \
                      any script runs. `status` lists the pool's tasks as recorded; `fill` \
                      stops expired ones and starts tasks until Size are idle (--wait: until \
                      each answers SSH, so that claims do not wait); `drain` stops every idle \
                      task. Idle tasks are billed. Exit code 0 when all went well."
    )]
    Pool(PoolArgs),
    /// List the failed jobs' tasks kept for debugging (`[[Fargate.ProjectRule]] KeepFailedFor`).
    #[command(
        long_about = "List the tasks of failed jobs that this runner keeps for debugging                       ([[Fargate.ProjectRule]] KeepFailedFor), as their records say (no AWS                       call): job, project, task, the time left, and the commands to enter                       and stop each. `fargate gc` stops them once their time is up."
    )]
    Kept(KeptArgs),
    /// List who holds each limited project's slots (`[[Fargate.ProjectRule]] MaxConcurrentJobs`).
    #[command(
        long_about = "List the projects of this runner's namespace whose slots are held \
                      ([[Fargate.ProjectRule]] MaxConcurrentJobs), as the metadata store \
                      holds them (no AWS call besides a DynamoDB table's reads, no lock): per \
                      project its limit, how many slots are held and free, and each holder: \
                      its job, and why it counts (its time has not run out, or its job has a \
                      record) or that it no longer does. A job over the limit waits in \
                      prepare until a slot is free. Exit code 0 when the store could be read."
    )]
    Slots(SlotsArgs),
    /// Stop a failed job's task kept for debugging, before its time is up.
    #[command(
        long_about = "Stop the task of failed job JOB_ID that this runner keeps for debugging                       ([[Fargate.ProjectRule]] KeepFailedFor), and forget the job. A job that                       still runs is refused: its own cleanup stops its task. Exit code 0 when                       the task was stopped."
    )]
    Release(ReleaseArgs),
    /// Set up or check the fleet's DynamoDB table (`[TaskMetadata] DynamoDBTable`).
    #[command(
        long_about = "Set up or check the DynamoDB table that runner hosts of a fleet share \
                      ([TaskMetadata] DynamoDBTable, in the region of [Fargate] Region). `init` \
                      creates it when missing (on-demand capacity, encrypted with a KMS key, \
                      TTL on expires_at) and turns TTL on; `check` says what is wrong with it. \
                      Exit code 0 when the table is usable."
    )]
    Store(StoreArgs),
}

/// Options of `fargate kept`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeptArgs {
    /// Print one JSON document instead of the human list.
    #[arg(long)]
    pub json: bool,
}

/// Options of `fargate slots`.
#[derive(Debug, Clone, clap::Args)]
pub struct SlotsArgs {
    /// Print one JSON document instead of the human list.
    #[arg(long)]
    pub json: bool,
}

/// Options of `fargate release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    /// GitLab's id of the failed job (the job log's `fargate release` line names it).
    #[arg(value_name = "JOB_ID")]
    pub job_id: u64,
}

/// Options of `fargate store`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StoreAction,
}

/// `fargate store` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum StoreAction {
    /// Create the table if it is missing, turn its TTL on, then check it.
    Init {
        /// The KMS key that encrypts a new table (id, ARN or alias/...); default: the AWS
        /// managed key aws/dynamodb.
        #[arg(long, value_name = "KEY")]
        kms_key: Option<String>,
    },
    /// Say what is wrong with the table, if anything.
    Check,
}

/// Options of `fargate pool`.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PoolAction,
    /// Print one JSON document instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `fargate pool` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum PoolAction {
    /// List the pool's tasks as recorded (no AWS call).
    Status,
    /// Stop expired tasks and start tasks until the pool is full.
    Fill {
        /// Also wait until every idle task answers SSH.
        #[arg(long)]
        wait: bool,
        /// Refill as prepare does after each job (it starts this detached): skip when
        /// another refill is running, stop at SIGTERM, never wait for tasks to boot.
        #[arg(long, conflicts_with = "wait")]
        background: bool,
    },
    /// Stop every idle task of the pool.
    Drain,
}

/// Options of the hidden `fargate keeper` (see `fargate_ssh::keeper`).
#[derive(Debug, Clone, clap::Args)]
pub struct KeeperArgs {
    /// The Unix socket to listen on.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// The job's record key.
    #[arg(long, value_name = "KEY")]
    pub job: String,
}

/// Options of `fargate doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Also run a real one-job smoke test: start a task, log in, run `true`, stop it.
    #[arg(long)]
    pub job: bool,
}

/// Options of `fargate gc`.
#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {
    /// Stop and delete nothing; report what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// The longest a job may run (from its record's creation), e.g. 24h, 90m; 0: no limit
    /// (only the tasks' deadline tags).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub max_age: String,
    /// With a fleet's DynamoDB table: a job that holds no lock and gave no sign of life
    /// (heartbeat, every 30 s while a script runs) for this long is dead (its host died),
    /// and its task is stopped, e.g. 10m; 0: never.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub dead_after: String,
}

/// The custom executor's stages.
#[derive(Debug, Subcommand)]
pub enum Stage {
    /// Print the driver's JSON configuration for the runner (config_exec).
    #[command(alias = "co")]
    Config,
    /// Start the job's Fargate task and wait until it answers on SSH (prepare_exec).
    #[command(alias = "p")]
    Prepare,
    /// Run one stage script in the job's task (run_exec).
    #[command(alias = "r")]
    Run {
        /// Path of the script gitlab-runner wrote.
        script: PathBuf,
        /// Name of the stage (build_script, after_script, ...).
        stage: String,
        /// Ignored, as the Go driver ignored them.
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<OsString>,
    },
    /// Stop the job's task and forget it (cleanup_exec).
    #[command(alias = "cl")]
    Cleanup,
}

const LONG_FLAGS: &[&str] = &[
    "config",
    "debug",
    "log-level",
    "log-format",
    "log-file",
    "task-def",
    "platform-version",
    "help",
    "version",
];

/// Go's flag package also takes `-config x` and `-config=x`: rewrite those to `--config`.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 {
                return arg;
            }
            let Some(s) = arg.to_str() else { return arg };
            if let Some(rest) = s.strip_prefix('-').filter(|r| !r.starts_with('-')) {
                let name = rest.split('=').next().unwrap_or(rest);
                if LONG_FLAGS.contains(&name) {
                    return OsString::from(format!("-{s}"));
                }
            }
            arg
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(normalize(args.iter().map(OsString::from)))
    }

    #[test]
    fn go_driver_command_lines() {
        let a = parse(&[
            "fargate",
            "--config",
            "/etc/f.toml",
            "custom",
            "run",
            "/tmp/s",
            "build_script",
        ])
        .unwrap();
        assert_eq!(a.config, PathBuf::from("/etc/f.toml"));
        match a.command {
            Command::Custom {
                stage: Stage::Run { script, stage, .. },
            } => {
                assert_eq!(script, PathBuf::from("/tmp/s"));
                assert_eq!(stage, "build_script");
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&["fargate", "-config=/x.toml", "-debug", "c", "co"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert!(a.debug);
        assert!(matches!(
            a.command,
            Command::Custom {
                stage: Stage::Config
            }
        ));
        for (alias, want) in [
            ("p", "Prepare"),
            ("cl", "Cleanup"),
            ("prepare", "Prepare"),
            ("cleanup", "Cleanup"),
        ] {
            let a = parse(&["fargate", "custom", alias]).unwrap();
            assert!(format!("{:?}", a.command).contains(want), "{alias}");
        }
        let a = parse(&[
            "fargate",
            "--task-def",
            "td:3",
            "--platform-version",
            "1.4.0",
            "custom",
            "r",
            "s",
            "st",
            "extra",
        ])
        .unwrap();
        assert_eq!(a.task_def.as_deref(), Some("td:3"));
        assert_eq!(a.platform_version.as_deref(), Some("1.4.0"));
        assert_eq!(a.config, PathBuf::from("config.toml"));
    }

    #[test]
    fn pool_takes_its_actions() {
        for (argv, want, json) in [
            (
                &["fargate", "pool", "status"][..],
                PoolAction::Status,
                false,
            ),
            (
                &["fargate", "pool", "fill", "--wait", "--json"],
                PoolAction::Fill {
                    wait: true,
                    background: false,
                },
                true,
            ),
            (
                &["fargate", "pool", "--json", "drain"],
                PoolAction::Drain,
                true,
            ),
        ] {
            match parse(argv).unwrap().command {
                Command::Pool(p) => assert_eq!((p.action, p.json), (want, json), "{argv:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["fargate", "pool"]).is_err());
    }

    #[test]
    fn gc_takes_its_flags() {
        let a = parse(&["fargate", "-config", "/f.toml", "gc", "--dry-run", "--json"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/f.toml"));
        match a.command {
            Command::Gc(gc) => assert!(gc.dry_run && gc.json && gc.max_age == "24h"),
            other => panic!("{other:?}"),
        }
        let a = parse(&["fargate", "gc", "--max-age", "2h"]).unwrap();
        assert!(matches!(
            a.command,
            Command::Gc(GcArgs { dry_run: false, ref dead_after, .. }) if dead_after == "10m"
        ));
        let a = parse(&["fargate", "gc", "--dead-after", "90s"]).unwrap();
        assert!(matches!(
            a.command,
            Command::Gc(GcArgs { ref dead_after, .. }) if dead_after == "90s"
        ));
    }

    #[test]
    fn kept_and_release_take_their_arguments() {
        match parse(&["fargate", "release", "4242"]).unwrap().command {
            Command::Release(r) => assert_eq!(r.job_id, 4242),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["fargate", "release"]).is_err());
        assert!(parse(&["fargate", "release", "not-a-job"]).is_err());
        match parse(&["fargate", "kept", "--json"]).unwrap().command {
            Command::Kept(k) => assert!(k.json),
            other => panic!("{other:?}"),
        }
        match parse(&["fargate", "slots", "--json"]).unwrap().command {
            Command::Slots(s) => assert!(s.json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_needs_script_and_stage() {
        assert!(parse(&["fargate", "custom", "run", "/tmp/s"]).is_err());
        assert!(parse(&["fargate", "custom", "nosuch"]).is_err());
    }
}
