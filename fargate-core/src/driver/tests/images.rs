//! The driver with job images: allowlist before any backend call, both SSH servers pinned at
//! prepare, each stage in its container.

use super::*;
use crate::images::{JOB_CONTAINER, SERVICE_HOSTS_ENV};
use crate::job::JobImage;
use crate::options::ImagePolicy;
use crate::shell::RunOutcome;

fn images_config(images: &[&str], services: &[&str]) -> DriverOptions {
    let mut c = config();
    c.ssh.port = 22;
    c.images = ImagePolicy {
        allowed_images: images.iter().map(|s| (*s).to_owned()).collect(),
        allowed_services: services.iter().map(|s| (*s).to_owned()).collect(),
        job_ssh_port: 2222,
        ..ImagePolicy::default()
    };
    c
}

fn job_with_image(id: u64, image: &str, services: Vec<JobImage>) -> JobContext {
    let mut response = JobResponse::new(id);
    response.image = Some(JobImage::new(image));
    response.services = services;
    JobContext::new(response).with_variable("CI_JOB_ID", id.to_string())
}

async fn run_stage(r: &Rig, stage: &str) -> RunRequest {
    let mut out = CapturedOutput::default();
    r.driver
        .run(
            &r.job,
            stage,
            script("true"),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    r.script_runs().pop().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_job_image_runs_its_scripts_in_the_job_container_and_the_rest_in_the_helper() {
    let mut r = rig_with(
        images_config(&["rust:*"], &["postgres:*"]),
        BootPlan::default(),
    );
    r.job = job_with_image(
        1,
        "rust:1.85",
        vec![
            JobImage::new("postgres:16")
                .with_alias("db")
                .with_variable("POSTGRES_PASSWORD", "s3cret"),
        ],
    );
    r.prepare().await.unwrap();
    let (_, task) = &r.launcher.tasks()[0];
    let request = task
        .spec
        .images
        .as_ref()
        .expect("the launch carries the image request");
    assert_eq!(request.job_image.as_deref(), Some("rust:1.85"));
    assert_eq!(
        request.environment["service-1"]["POSTGRES_PASSWORD"],
        "s3cret"
    );
    assert_eq!(
        request.plan.container(JOB_CONTAINER).unwrap().environment[SERVICE_HOSTS_ENV],
        "db"
    );
    // Both servers were logged in to at prepare, and both host keys are pinned.
    let logins: Vec<u16> = r.shell.runs().iter().map(|run| run.endpoint.port).collect();
    assert_eq!(logins, [22, 2222]);
    let record = r.store.peek(&r.key()).unwrap();
    let job = record
        .job_container
        .clone()
        .expect("the job container is recorded");
    assert_eq!(job.endpoint.port, 2222);
    assert_eq!(job.endpoint.ip, record.endpoint.unwrap().ip);
    assert_eq!(job.host_key, r.shell.host_key());

    for (stage, port) in [
        ("prepare_script", 22),
        ("get_sources", 22),
        ("restore_cache", 22),
        ("download_artifacts", 22),
        ("step_script", 2222),
        ("build_script", 2222),
        ("after_script", 2222),
        ("archive_cache", 22),
        ("upload_artifacts_on_success", 22),
        ("cleanup_file_variables", 22),
    ] {
        let run = run_stage(&r, stage).await;
        assert_eq!(run.endpoint.port, port, "{stage}");
        assert_eq!(run.host_key, Some(r.shell.host_key()), "{stage}");
    }
    r.driver.cleanup(&r.job).await.unwrap();
    r.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_refused_image_fails_the_build_before_any_backend_call() {
    let mut r = rig_with(
        images_config(&["rust:*", "alpine:*"], &[]),
        BootPlan::default(),
    );
    r.job = job_with_image(1, "evil/miner:latest", vec![]);
    let (code, message) = script_failure(r.prepare().await.unwrap_err());
    assert_eq!(code, 1);
    assert!(
        message.contains("allowed images: rust:*, alpine:*"),
        "{message}"
    );
    assert_eq!(r.launcher.faults.calls(Op::Launch), 0);
    assert_eq!(r.launcher.faults.calls(Op::Find), 0);
    assert_eq!(r.launcher.faults.calls(Op::Stop), 0);
    assert!(r.store.peek(&r.key()).is_none());
}

#[tokio::test(start_paused = true)]
async fn without_images_enabled_the_job_runs_in_the_task_image() {
    let mut r = rig_with(images_config(&[], &[]), BootPlan::default());
    r.job = job_with_image(1, "rust:1.85", vec![]);
    r.prepare().await.unwrap();
    let (_, task) = &r.launcher.tasks()[0];
    assert!(task.spec.images.is_none());
    assert!(r.store.peek(&r.key()).unwrap().job_container.is_none());
    assert_eq!(run_stage(&r, "build_script").await.endpoint.port, 22);
}

#[tokio::test(start_paused = true)]
async fn a_job_container_that_cannot_run_scripts_fails_prepare_and_stops_the_task() {
    let mut c = images_config(&["*"], &[]);
    c.timeouts.ready = Duration::from_secs(20);
    let mut r = rig_with(c, BootPlan::default());
    r.job = job_with_image(1, "rust:1.85", vec![]);
    r.shell.set_handler(|req: &RunRequest| {
        let mut result = crate::testing::interpret("true");
        if req.endpoint.port == 2222 {
            result.outcome = RunOutcome::Exited(127);
        }
        result
    });
    let err = system_error(r.prepare().await.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("container"), "{err}");
    r.assert_clean();
}

#[test]
fn services_are_reported_with_status_and_a_stopped_one_with_its_reason() {
    use crate::launcher::{ContainerStatus, TaskStatus};
    let o = images_config(&["*"], &["*"]);
    let mut response = JobResponse::new(1);
    response.image = Some(JobImage::new("rust:1.85"));
    response.services = vec![
        JobImage::new("postgres:16"),
        JobImage::new("redis:7"),
        JobImage::new("mysql:8"),
    ];
    let crate::images::ImageDecision::Derived(request) =
        crate::images::decide(&o, Some(&response)).unwrap()
    else {
        panic!("not derived")
    };
    let status = TaskStatus::new(TaskState::Running).with_containers(vec![
        ContainerStatus::new("service-1", Some("RUNNING".into())),
        ContainerStatus::new("service-2", Some("STOPPED".into())).with_exit(
            Some("CannotPullContainerError: pull access denied for redis".into()),
            None,
        ),
    ]);
    assert_eq!(
        Driver::service_lines(&request, &status),
        [
            (false, "service postgres:16 (service-1) is running".to_owned()),
            (
                true,
                "service redis:7 (service-2) stopped: CannotPullContainerError: pull access denied for redis"
                    .to_owned()
            ),
            (false, "service mysql:8 (service-3): no status reported".to_owned()),
        ]
    );
}

/// An allowed architecture goes with the launch of a job image (its derived definition);
/// a job in the task image cannot change its definition's architecture: refused before
/// any backend call.
#[tokio::test]
async fn a_cpu_architecture_needs_a_job_image() {
    let mut config = images_config(&["rust:*"], &[]);
    config.shape.cpu_architectures = vec!["ARM64".into()];
    let r = rig_with(config.clone(), BootPlan::default());
    let job = job_with_image(51, "rust:1.85", vec![])
        .with_variable(crate::driver::CPU_ARCHITECTURE_VARIABLE, "arm64");
    r.driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.shape.cpu_architecture.as_deref(), Some("ARM64"));

    let r = rig_with(config, BootPlan::default());
    let job = JobContext::new(JobResponse::new(52))
        .with_variable(crate::driver::CPU_ARCHITECTURE_VARIABLE, "ARM64");
    let failure = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("only a job with image:"), "{err}");
    assert_eq!(r.launcher.faults.calls(Op::Launch), 0);
}
