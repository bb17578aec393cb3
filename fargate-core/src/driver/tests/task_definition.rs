//! Choosing the task definition (job variables, precedence) and the config stage's output.

use super::*;

#[tokio::test(start_paused = true)]
async fn job_variables_cannot_pick_unallowed_task_definitions() {
    let r = rig();
    let job = job(2).with_variable(TASK_DEFINITION_VARIABLE, "admin-role:1");
    let err = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let (exit_code, message) = script_failure(err);
    assert_eq!(exit_code, 1);
    assert!(message.contains("\"admin-role:1\""), "{message}");
    assert!(message.contains("allowed: ci-*"), "{message}");
    // The disallowed request keeps its kind and hint.
    let err = r
        .driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap_err();
    let cause = err.error().expect("the refusal is an error");
    assert_eq!(cause.kind(), ErrorKind::NotAllowed);
    assert_eq!(cause.hint(), Some("allowed: ci-*"));
    assert!(r.launcher.tasks().is_empty(), "nothing may be launched");

    let job = job
        .with_variable(TASK_DEFINITION_VARIABLE, "ci-node:3")
        .with_variable(PLATFORM_VERSION_VARIABLE, "1.4.0");
    r.driver
        .prepare(&job, &CancellationToken::new())
        .await
        .unwrap();
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.task_definition, "ci-node:3");
    assert_eq!(task.spec.platform_version.as_deref(), Some("1.4.0"));
}

#[test]
fn task_definition_precedence() {
    let mut c = config();
    c.task.allowed_task_definitions.clear();
    c.task.allow_platform_version_override = false;
    c.task.platform_version = Some("1.3.0".into());
    let j = job(1);
    let none = AdminOverrides::default();
    let choice = |td: &str, pv: &str| TaskDefinitionChoice {
        task_definition: td.into(),
        platform_version: Some(pv.into()),
        images: None,
    };
    assert_eq!(
        resolve_task_definition(&c, &none, &j).unwrap(),
        choice("ci-coordinator:1", "1.3.0")
    );
    let admin = AdminOverrides {
        task_definition: Some("admin-td".into()),
        platform_version: Some("1.4.0".into()),
    };
    assert_eq!(
        resolve_task_definition(&c, &admin, &j).unwrap(),
        choice("admin-td", "1.4.0")
    );
    // A job asking for the default is fine even with nothing allowed.
    let asks = |name: &str, value: &str| j.clone().with_variable(name, value);
    resolve_task_definition(
        &c,
        &none,
        &asks(TASK_DEFINITION_VARIABLE, "ci-coordinator:1"),
    )
    .unwrap();
    let err =
        resolve_task_definition(&c, &none, &asks(TASK_DEFINITION_VARIABLE, "other")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(err.settings(), [crate::Setting::AllowedTaskDefinitions]);
    let err =
        resolve_task_definition(&c, &none, &asks(PLATFORM_VERSION_VARIABLE, "LATEST")).unwrap_err();
    assert_eq!(
        err.settings(),
        [crate::Setting::AllowPlatformVersionOverride]
    );
}

#[test]
fn config_stage_output_matches_the_go_driver() {
    let mut c = config();
    let j = JobContext::from_vars([
        ("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "token"),
        ("CUSTOM_ENV_CI_PROJECT_URL", "project-URL"),
        ("CUSTOM_ENV_CI_PIPELINE_ID", "1"),
        ("CUSTOM_ENV_CI_JOB_ID", "1"),
    ])
    .unwrap();
    let out = serde_json::to_string(&config_output(&c, &j, "0.1.0")).unwrap();
    assert_eq!(
        out,
        r#"{"driver":{"name":"fargate","version":"0.1.0"},"hostname":"token-96688db3e5e6c32b47fe3d59f4384354c5509e27b0d48742809a8c35cca0e88d"}"#
    );
    c.builds_dir = Some("/builds".into());
    let out = serde_json::to_string(&config_output(&c, &j, "0.1.0")).unwrap();
    assert!(out.ends_with(r#","builds_dir":"/builds"}"#), "{out}");
}
