//! `fargate doctor`: checks a configuration against the account before the first job, and
//! with `--job` runs a one-job smoke test.

use std::path::Path;
use std::sync::Arc;

use fargate_aws::EcsLauncher;
use fargate_aws::doctor::{Check, CheckStatus, TaskExpectations, doctor};
use fargate_core::driver::AdminOverrides;
use fargate_core::metadata::permission_warnings;
use fargate_core::shell::CapturedOutput;
use fargate_core::{JobContext, JobResponse};
use tokio_util::sync::CancellationToken;

use crate::args::DoctorArgs;
use crate::config::FileConfig;
use crate::context::Context;
use crate::driver;
use crate::exit_codes;
use crate::job_log::JobLog;
use crate::shared_files;

/// Runs the checks (and the smoke test), prints the checklist; returns
/// [`exit_codes::SUCCESS`] when everything passed, [`exit_codes::CHECKS_FAILED`] otherwise.
pub(super) async fn run(doctor_args: &DoctorArgs, context: Context) -> i32 {
    let task_definition = context.task_definition();
    let Context {
        config_path,
        config,
        overrides,
        ..
    } = context;
    // Projects that keep failed jobs' tasks get ECS Exec: check what it needs too.
    let ecs_exec = config
        .options
        .shape
        .project_rules
        .iter()
        .any(|r| r.keep_failed_for.is_some());
    let platform_version = overrides
        .platform_version
        .clone()
        .or_else(|| config.options.task.platform_version.clone());
    let expect = TaskExpectations::new(
        task_definition,
        config.options.task.container_name.clone(),
        config.options.ssh.port,
    )
    .with_ecs_exec(ecs_exec, platform_version)
    .with_host_keys_from_log(
        config.options.ssh.host_key_source == fargate_core::options::HostKeySource::Announced,
    )
    .with_image_pulls(
        config
            .options
            .images
            .registries
            .iter()
            .filter(|_| config.options.images.enabled())
            .map(|r| r.credentials.clone())
            .collect(),
        config.options.images.enabled()
            && config
                .options
                .images
                .allowed_images
                .iter()
                .chain(&config.options.images.allowed_services)
                .any(|p| fargate_aws::doctor::is_ecr_image(p)),
    )
    .with_job_secrets(
        config.options.images.enabled()
            && (!config.options.images.job_registry_credentials.is_empty()
                || config.options.images.secrets == fargate_core::options::SecretPolicy::Store),
    );
    let sdk = EcsLauncher::sdk_config(&config.ecs).await;
    let mut checks = doctor(config.ecs.clone(), &sdk, &expect).await;
    checks.push(metadata_check(&config.metadata_dir));
    if let Some(file) = &config.metrics_file {
        checks.push(metrics_check(file));
    }
    if let Some(table) = driver::stores(&config).table {
        checks.extend(table_checks(&table).await);
    }
    checks.extend(slot_checks(&config, &overrides).await);
    let passed = checks.iter().all(|c| c.status != CheckStatus::Fail);
    if doctor_args.job && passed {
        checks.push(smoke_test(config, overrides).await);
    }
    println!("fargate doctor: {}", config_path.display());
    for check in &checks {
        println!("  {}", check.to_string().replace('\n', "\n  "));
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        exit_codes::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        exit_codes::CHECKS_FAILED
    }
}

/// A line per limited project (`MaxConcurrentJobs`) at its limit: its next job waits. Not
/// a failure; nothing when no rule limits a project.
async fn slot_checks(config: &FileConfig, overrides: &AdminOverrides) -> Vec<Check> {
    let rules = &config.options.shape.project_rules;
    if rules.iter().all(|r| r.max_concurrent_jobs.is_none()) {
        return Vec::new();
    }
    let name = "project slots";
    let driver = driver::build(
        config.clone(),
        overrides.clone(),
        Arc::new(fargate_core::observe::NoopObserver),
        None,
    );
    let report = match driver.project_slots().await {
        Ok(report) => report,
        Err(err) => return vec![Check::not_checked(name, err.to_string())],
    };
    let full: Vec<Check> = report
        .projects
        .iter()
        .filter(|p| p.at_limit())
        .map(|p| {
            Check::pass(
                format!("project {} slots", p.project),
                format!(
                    "at its limit ({} of {} held, rule {:?}): its next job waits; `fargate slots` lists who holds them",
                    p.counted,
                    p.limit.unwrap_or_default(),
                    p.rule.as_deref().unwrap_or_default()
                ),
            )
        })
        .collect();
    if full.is_empty() {
        let detail = format!(
            "no limited project is at its limit ({} project(s) hold slots)",
            report.projects.len()
        );
        return vec![Check::pass(name, detail)];
    }
    full
}

/// The metadata directory: private to the runner's user and writable (or creatable).
fn metadata_check(dir: &Path) -> Check {
    let name = format!("metadata directory {}", dir.display());
    let shown = dir.display();
    if !dir.exists() {
        return match dir.parent() {
            Some(parent) if parent.is_dir() => {
                Check::pass(name, "missing; the first job creates it (0700)")
            }
            _ => Check::fail(
                name,
                "neither it nor its parent exists",
                format!("mkdir -p -m 700 {shown} && chown <runner user> {shown}"),
            ),
        };
    }
    if !dir.is_dir() {
        return Check::fail(
            name,
            "is not a directory",
            "point [TaskMetadata] Directory at a directory",
        );
    }
    let warnings = permission_warnings(dir);
    if let Some(w) = warnings.first() {
        return Check::fail(
            name,
            w.to_string(),
            format!("chown <runner user> {shown} && chmod 700 {shown}"),
        );
    }
    let probe = dir.join(format!(".fargate-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Check::pass(name, "private and writable")
        }
        Err(e) => Check::fail(
            name,
            format!("not writable: {e}"),
            format!("chown <runner user> {shown} && chmod 700 {shown}"),
        ),
    }
}

/// The fleet's DynamoDB table: usable (exists, keyed right, active), and this host may
/// read, write and lock in it (a probe item, removed again).
async fn table_checks(table: &crate::backends::LazyDynamo) -> Vec<Check> {
    use fargate_core::{JobKey, MetadataStore};
    let name = format!("DynamoDB table {}", table.table());
    let store = match table.get().await {
        Ok(store) => store,
        Err(err) => {
            return vec![Check::fail(
                name,
                err.to_string(),
                "check the AWS credentials and region",
            )];
        }
    };
    let check = match store.check_table().await {
        Ok(check) => check,
        Err(err) => {
            let fix = err
                .hint()
                .unwrap_or(
                    "check the IAM policy (dynamodb:DescribeTable, dynamodb:DescribeTimeToLive)",
                )
                .to_owned();
            return vec![Check::fail(name, err.to_string(), fix)];
        }
    };
    if !check.usable() {
        return vec![Check::fail(
            name,
            check.errors.join("; "),
            "run `fargate store init` (or point [TaskMetadata] DynamoDBTable at the fleet's table)",
        )];
    }
    let detail = match check.warnings.is_empty() {
        true => "on-demand, KMS-encrypted, TTL on".to_owned(),
        false => format!("usable; but {}", check.warnings.join("; ")),
    };
    let mut checks = vec![Check::pass(name, detail)];
    // Read, write, lock and list, as a job's stages do, on a key no job has.
    let probe = format!("doctor-probe-{}", std::process::id());
    let name = format!("DynamoDB table {}: lock, read, list, unlock", table.table());
    let round_trip = async {
        let key = JobKey::parse(&probe)?;
        let lock = store.lock(&key, std::time::Duration::from_secs(5)).await?;
        let read = async {
            MetadataStore::get(store, &key).await?;
            store.list().await.map(|keys| keys.len())
        };
        let listed = read.await;
        store.unlock(lock).await?;
        listed
    };
    checks.push(match round_trip.await {
        Ok(records) => Check::pass(name, format!("{records} records in the table")),
        Err(err) => Check::fail(
            name,
            err.to_string(),
            err.hint()
                .unwrap_or("the runner's role needs dynamodb:GetItem, UpdateItem, DeleteItem and Scan on the table (examples/iam-policy.json)")
                .to_owned(),
        ),
    });
    checks
}

/// `[Metrics] File`: its directory is one other users may not write to (else it is refused
/// at every stage), and nothing there is a link or another user's file where the driver
/// writes ([`crate::shared_files`]).
fn metrics_check(file: &Path) -> Check {
    let name = format!("metrics file {}", file.display());
    if let Err(err) = shared_files::check_dir(file, "[Metrics] File") {
        let fix = err.hint().unwrap_or_default().to_owned();
        return Check::fail(name, err.message().to_owned(), fix);
    }
    for suffix in ["", ".lock", ".state"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        if let Err(err) = shared_files::check_existing(&path, "metrics file") {
            let fix = err.hint().unwrap_or_default().to_owned();
            return Check::fail(name, err.message().to_owned(), fix);
        }
    }
    Check::pass(name, "its directory is not writable by other users")
}

/// A real job: launch, log in, run `true`, stop; its lines go to the log as a job's do.
async fn smoke_test(config: FileConfig, overrides: AdminOverrides) -> Check {
    let name = "smoke test (launch, SSH, `true`, stop)";
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let job = JobContext::new(JobResponse::new(id));
    let driver = driver::build(config, overrides, Arc::new(JobLog), None);
    let cancel = CancellationToken::new();
    let prepared = driver.prepare(&job, &cancel).await;
    let ran = match &prepared {
        Ok(_) => {
            let mut out = CapturedOutput::default();
            Some(
                driver
                    .run(&job, "doctor", Arc::from(&b"true\n"[..]), &mut out, &cancel)
                    .await,
            )
        }
        Err(_) => None,
    };
    let cleaned = driver.cleanup(&job).await;
    match (prepared, ran, cleaned) {
        (Ok(report), Some(Ok(())), Ok(_)) => Check::pass(
            name,
            format!(
                "task ready in {:.1} s, `true` ran, task stopped",
                report.ssh_ready.as_secs_f64()
            ),
        ),
        (Err(f), _, _) | (_, Some(Err(f)), _) | (_, _, Err(f)) => Check::fail(
            name,
            f.to_string(),
            "see the lines above; the checks before passed, so look at the task image and its logs",
        ),
        (Ok(_), None, Ok(_)) => Check::fail(name, "did not run", "report this"),
    }
}
