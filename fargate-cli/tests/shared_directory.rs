//! Runner entries sharing one metadata directory: each gets its own namespace by default;
//! two that set the same `Namespace` must launch the same tasks, or the second is refused
//! at its first stage with a hint (see docs/ownership.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A configuration file `name` in `dir` with `cluster`, sharing `dir/metadata`.
fn config_file(dir: &Path, name: &str, namespace: Option<&str>, cluster: &str) -> PathBuf {
    let path = dir.join(name);
    let namespace = namespace.map_or(String::new(), |n| format!("Namespace = {n:?}\n"));
    std::fs::write(
        &path,
        format!(
            "{namespace}[Fargate]\n  Cluster = {cluster:?}\n  Subnet = \"subnet-1\"\n  \
             SecurityGroup = \"sg-1\"\n  TaskDefinition = \"ci:1\"\n\
             [TaskMetadata]\n  Directory = {:?}\n",
            dir.join("metadata").display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn config_stage(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fargate"))
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["custom", "config"])
        .env("CUSTOM_ENV_CI_JOB_ID", "7")
        .env("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "tok")
        .env("SYSTEM_FAILURE_EXIT_CODE", "3")
        .env("BUILD_FAILURE_EXIT_CODE", "4")
        .env_remove("JOB_RESPONSE_FILE")
        .output()
        .expect("start fargate")
}

fn namespace_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("metadata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".namespace"))
        .collect();
    names.sort();
    names
}

#[test]
fn entries_with_the_default_namespace_each_get_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let a = config_file(dir.path(), "a.toml", None, "ci");
    let b = config_file(dir.path(), "b.toml", None, "other");
    for config in [&a, &b, &a] {
        let out = config_stage(config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        namespace_files(dir.path()).len(),
        2,
        "one namespace per entry"
    );
}

#[test]
fn a_second_entry_with_the_same_namespace_and_other_settings_is_refused_at_its_first_stage() {
    let dir = tempfile::tempdir().unwrap();
    let a = config_file(dir.path(), "a.toml", Some("shared"), "ci");
    let twin = config_file(dir.path(), "twin.toml", Some("shared"), "ci");
    let b = config_file(dir.path(), "b.toml", Some("shared"), "other");
    for config in [&a, &twin] {
        let out = config_stage(config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = config_stage(&b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a system failure: {stderr}");
    assert!(
        stderr.contains("namespace shared is served by the runner entry configured by")
            && stderr.contains("a.toml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("own namespace")
            && stderr.contains("(fargate.toml: Namespace, [TaskMetadata] Directory)"),
        "the hint names the keys to change: {stderr}"
    );
    assert_eq!(namespace_files(dir.path()), ["shared.namespace"]);
    // The first entry is not disturbed.
    assert!(config_stage(&a).status.success());
}
