//! End to end with job images: the real `fargate` binary against a local Fargate whose
//! tasks of a derived task definition have two SSH servers (helper and job container).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup step is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Rig, no_lag};
use fargate_testkit::runner::{Job, JobStatus, job_token};

const IMAGES: &str = "[Fargate.Images]\n  AllowedImages = [\"alpine:*\"]\n  AllowedServices = [\"redis:*\"]\n  JobSSHPort = 2223\n";

/// A rig whose `fargate.toml` ends with `extra`, and the builds directory its jobs use (kept
/// while the test runs).
async fn rig(extra: &str) -> (Rig, tempfile::TempDir) {
    // No visibility lag: the job log's service lines come from a describe, and these tests
    // check them (the lag has its own e2e tests).
    let mut rig = Rig::start(no_lag(), |config, _| format!("{config}{extra}")).await;
    // The builds directory of this test alone, writable by the task's login user.
    let builds = tempfile::Builder::new()
        .prefix("fargate-e2e-builds-")
        .tempdir()
        .expect("builds dir");
    std::fs::set_permissions(builds.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod builds dir");
    rig.emu.builds_dir = builds.path().display().to_string();
    (rig, builds)
}

/// A job of image `image` whose checkout and scripts say where they ran.
fn job(id: i64, image: &str) -> Job {
    let mut job = Job::new(
        id,
        &[
            "cat checkout.txt",
            "echo \"build_script ran in ${FARGATE_CONTAINER:-the task image}\"",
        ],
    );
    job.image = Some(serde_json::json!({"name": image, "entrypoint": [""]}));
    job.sources = vec![
        "echo \"sources checked out in ${FARGATE_CONTAINER:-the task image}\" > checkout.txt"
            .into(),
    ];
    job.after_script =
        vec!["echo \"after_script ran in ${FARGATE_CONTAINER:-the task image}\"".into()];
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_image_gets_sources_in_the_helper_and_runs_its_scripts_in_the_job_container() {
    fargate_testkit::require_fixture!(LocalFargate);
    let (rig, _builds) = rig(IMAGES).await;
    let mut job = job(21, "alpine:3.20");
    job.services = vec![serde_json::json!({"name": "redis:7", "alias": "cache"})];
    let result = rig.run(job).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    for expected in [
        "the job runs in image alpine:3.20",
        "service redis:7 runs as container service-1",
        "service redis:7 (service-1) is running",
        // get_sources ran in the helper, and the build (in the job container) sees its
        // checkout in the shared builds directory.
        "sources checked out in helper",
        "build_script ran in job",
        "after_script ran in job",
    ] {
        assert!(
            result.log.contains(expected),
            "missing {expected:?} in\n{}",
            result.log
        );
    }
    let events = rig.fargate.events();
    assert!(
        events
            .iter()
            .any(|e| e.contains(":2223") && e.ends_with("in the job container")),
        "{events:?}"
    );
    // The task ran from the derived definition, with the job's key for both containers.
    let request = &rig.fargate.moto().run_task_requests()[0]["request"];
    let td = request["taskDefinition"].as_str().unwrap();
    assert!(td.contains(":task-definition/ci-coordinator-"), "{td}");
    let overridden: Vec<&str> = request["overrides"]["containerOverrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(overridden, ["ci-coordinator", "job"]);
    assert!(
        rig.fargate.running_tasks().await.is_empty(),
        "{}",
        result.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_image_fails_the_build_before_any_task() {
    fargate_testkit::require_fixture!(LocalFargate);
    let (rig, _builds) = rig(IMAGES).await;
    let result = rig.run(job(22, "evil/miner:latest")).await;
    assert_eq!(result.status, JobStatus::ScriptFailure(1), "{}", result.log);
    assert!(
        result.log.contains("allowed images: alpine:*"),
        "{}",
        result.log
    );
    assert!(rig.fargate.moto().run_task_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_images_enabled_the_image_is_ignored_with_one_line() {
    fargate_testkit::require_fixture!(LocalFargate);
    let (rig, _builds) = rig("").await;
    let result = rig.run(job(23, "alpine:3.20")).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert_eq!(
        result
            .log
            .matches("the job's image \"alpine:3.20\" is ignored")
            .count(),
        1,
        "{}",
        result.log
    );
    assert!(
        result.log.contains("build_script ran in the task image"),
        "{}",
        result.log
    );
    let request = &rig.fargate.moto().run_task_requests()[0]["request"];
    assert_eq!(
        request["taskDefinition"],
        rig.fargate.ecs.task_definition.as_str()
    );
}

/// With host keys from the task's log, both SSH servers (the helper's and the job
/// container's) must present the key their container announced in its own log stream.
#[tokio::test(flavor = "multi_thread")]
async fn both_containers_host_keys_come_from_their_log_streams() {
    fargate_testkit::require_fixture!(LocalFargate);
    let (rig, _builds) = rig(&format!("  HostKeySource = \"task-log\"\n{IMAGES}")).await;
    let result = rig.run(job(24, "alpine:3.20")).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(
        result.log.contains("build_script ran in job"),
        "{}",
        result.log
    );
    assert_eq!(
        result
            .log
            .matches("the SSH server's host key is one the task announced")
            .count(),
        2,
        "{}",
        result.log
    );
}

/// An image of a private registry the runner has no credentials for: the local Fargate's
/// ECS refuses the pull (TaskFailedToStart, CannotPullContainerError), and the job fails at
/// prepare with ECS's reason and a hint naming the registry and the missing configuration,
/// not with an SSH timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_private_image_without_credentials_fails_with_ecss_pull_error_and_a_hint() {
    fargate_testkit::require_fixture!(LocalFargate);
    let (rig, _builds) = rig(
        "[Fargate.Images]\n  AllowedImages = [\"registry.gitlab.example.com/*\"]\n  JobSSHPort = 2223\n",
    )
    .await;
    rig.fargate.moto().set_private_registries(&[(
        "registry.gitlab.example.com",
        "deploy-token-1",
        "gldt-secret-of-the-deploy-token",
    )]);
    let result = rig
        .run(job(31, "registry.gitlab.example.com/group/app/builder:1"))
        .await;
    assert!(
        matches!(result.status, JobStatus::SystemFailure(_)),
        "{:?}\n{}",
        result.status,
        result.log
    );
    for expected in [
        "the task could not pull an image: CannotPullContainerError:",
        "stop code TaskFailedToStart",
        "comes from registry registry.gitlab.example.com, for which this runner has no credentials",
        "[[Fargate.Images.Registry]] Host = \"registry.gitlab.example.com\"",
    ] {
        assert!(result.log.contains(expected), "{expected}\n{}", result.log);
    }
    assert!(
        !result.log.contains("did not become reachable"),
        "{}",
        result.log
    );
}

/// With `JobRegistryCredentials`, a job whose image is on the private registry its payload
/// has a login for starts (the local Fargate's ECS pulls only with a secret holding the
/// job's token), runs its scripts in that image, and leaves neither the per-job secret nor
/// the per-job task definition behind; the job token appears in no log.
#[tokio::test(flavor = "multi_thread")]
async fn a_private_image_pulls_with_the_jobs_own_login_and_cleanup_removes_it() {
    fargate_testkit::require_fixture!(LocalFargate);
    let host = "registry.gitlab.example.com";
    let (rig, _builds) = rig(&format!(
        "[Fargate.Images]\n  AllowedImages = [\"{host}/*\"]\n  JobSSHPort = 2223\n  JobRegistryCredentials = [\"{host}\"]\n"
    ))
    .await;
    // The base needs an execution role (ECS reads the registry login with it).
    let moto = rig.fargate.moto();
    let base = moto
        .register_task_definition_with(
            "ci-coordinator",
            Some("arn:aws:iam::123456789012:role/fargate-ci-task-execution"),
        )
        .await;
    let config = rig.config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&rig.fargate.ecs.task_definition, &base),
    )
    .unwrap();
    let token = job_token(33);
    moto.set_private_registries(&[(host, "gitlab-ci-token", token.as_str())]);
    let mut first = job(33, &format!("{host}/group/app/builder:1"));
    first.registries = vec![host.to_owned()];
    let result = rig.run(first).await;
    assert_eq!(result.status, JobStatus::Success, "{}", result.log);
    assert!(
        result.log.contains("build_script ran in job"),
        "{}",
        result.log
    );
    assert!(!result.log.contains(&token), "{}", result.log);
    assert!(
        result.log.contains(&format!(
            "the images of job are pulled from {host} with the job's own registry login (gitlab-ci-token)"
        )),
        "{}",
        result.log
    );
    // The task ran from the job's own revision, whose job container pulled with a secret
    // of the job; cleanup removed both.
    let request = &moto.run_task_requests()[0]["request"];
    assert!(!request.to_string().contains(&token), "{request}");
    let td = request["taskDefinition"].as_str().unwrap();
    assert!(td.contains(":task-definition/ci-coordinator-job-"), "{td}");
    let secrets = moto.aws_json(
        "secretsmanager",
        "secretsmanager",
        "ListSecrets",
        &serde_json::json!({}),
    );
    assert_eq!(secrets["SecretList"], serde_json::json!([]), "{secrets}");
    let described = moto
        .ecs_client()
        .describe_task_definition()
        .task_definition(td)
        .send()
        .await;
    assert!(
        described.is_err()
            || described
                .unwrap()
                .task_definition()
                .and_then(|t| t.status())
                .is_some_and(|s| s.as_str() != "ACTIVE"),
        "the job's revision is deregistered"
    );
    assert!(rig.fargate.running_tasks().await.is_empty());

    // A runner that dies after prepare leaves the job's secret; `fargate gc` looks at the
    // jobs' secrets with this setting and keeps it while the job may still run (the
    // removal of a dead job's, past its deadline, is in fargate-aws/tests/derived.rs).
    let token = job_token(34);
    moto.set_private_registries(&[(host, "gitlab-ci-token", token.as_str())]);
    let mut dead = job(34, &format!("{host}/group/app/builder:1"));
    dead.registries = vec![host.to_owned()];
    let dir = rig.dir.path().join("job-34");
    std::fs::create_dir_all(&dir).unwrap();
    let out = rig
        .emu
        .stage_command(&dead, &dir, &["custom", "prepare"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |moto: &fargate_testkit::moto::Moto| -> Vec<String> {
        moto.aws_json(
            "secretsmanager",
            "secretsmanager",
            "ListSecrets",
            &serde_json::json!({}),
        )["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let left = names(moto);
    assert!(
        left.len() == 1 && left[0].ends_with("-34/registry-1"),
        "{left:?}"
    );
    let (_, shown, err) = rig.fargate(&["gc"]);
    assert!(
        shown.contains("job secrets: removed 0, kept 1"),
        "{shown}\n{err}"
    );
    assert_eq!(names(moto), left);
}
