//! Behaviour every backend must have, as `async fn`s that panic on a violation.
//!
//! Call them from a backend's tests: the in-memory backends run them in this crate, the real
//! ones in `fargate-aws` (against moto) and `fargate-ssh` (against OpenSSH). They are test
//! code: they assert with panics and may leave tasks stopped but not deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ErrorKind;
use crate::launcher::{Endpoint, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskState};
use crate::metadata::{JobRecord, MetadataStore, Phase};
use crate::shell::{CapturedOutput, HostKey, PrivateKey, RemoteShell, RunOutcome, RunRequest};

/// What a launcher backend may legitimately do differently, for [`launcher`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LauncherCaps {
    /// How long after its launch a task may still be unknown to `describe`, `find` and
    /// `stop` (eventual consistency; zero for a backend that sees its tasks at once).
    pub visibility_window: Duration,
}

impl LauncherCaps {
    /// A backend whose tasks become visible within `window` of their launch.
    pub fn eventually_consistent(window: Duration) -> Self {
        LauncherCaps {
            visibility_window: window,
        }
    }
}

/// [`TaskLauncher`]: every launcher check below, in order. `spec` must be launchable (with
/// a fresh client token); `missing` must name a task that does not exist.
///
/// Not a stable API: checks are added as the trait's contract is sharpened.
pub async fn launcher(
    launcher: &dyn TaskLauncher,
    spec: &TaskSpec,
    missing: &TaskRef,
    caps: LauncherCaps,
) {
    let task = launch_is_idempotent(launcher, spec).await;
    launched_task_becomes_visible(launcher, spec, &task, caps).await;
    stop_is_idempotent(launcher, spec, &task).await;
    unknown_tasks_are_missing(launcher, missing).await;
}

/// Two launches with the same token and spec start one task; the same token with another
/// spec is refused (definitely: `outcome_unknown` is false).
pub async fn launch_is_idempotent(launcher: &dyn TaskLauncher, spec: &TaskSpec) -> TaskRef {
    let task = launcher.launch(spec).await.expect("launch");
    let again = launcher
        .launch(spec)
        .await
        .expect("second launch with the same token");
    assert_eq!(
        task, again,
        "the same client token must not start a second task"
    );
    let mut other = spec.clone();
    other.task_definition.push_str("-other");
    if let Ok(t) = launcher.launch(&other).await {
        assert_eq!(
            t, task,
            "a reused client token with another spec must be refused or replay the first task"
        );
    }
    task
}

/// A launched task is described as not stopped and found by its job's key, at once or
/// (eventually consistent backends) within `caps.visibility_window`.
pub async fn launched_task_becomes_visible(
    launcher: &dyn TaskLauncher,
    spec: &TaskSpec,
    task: &TaskRef,
    caps: LauncherCaps,
) {
    let deadline = tokio::time::Instant::now() + caps.visibility_window + Duration::from_secs(5);
    loop {
        let status = launcher.describe(task).await.expect("describe");
        assert!(
            !status.state.is_terminal(),
            "a fresh task must not be stopped: {status:?}"
        );
        let found = launcher.find(&spec.key).await.expect("find");
        if status.state != TaskState::Missing && found.iter().any(|t| t.id == task.id) {
            return;
        }
        assert!(
            caps.visibility_window > Duration::ZERO && tokio::time::Instant::now() < deadline,
            "the launched task {task} must be described and found (state {:?}, found {found:?})",
            status.state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stopping a visible task says `Stopping`, twice; it is then terminal and not found.
pub async fn stop_is_idempotent(launcher: &dyn TaskLauncher, spec: &TaskSpec, task: &TaskRef) {
    for attempt in ["stop", "stopping a stopped task"] {
        let outcome = launcher
            .stop(task, "conformance test")
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        assert_eq!(outcome, StopOutcome::Stopping, "{attempt}");
    }
    let status = launcher.describe(task).await.expect("describe stopped");
    assert!(
        status.state.is_terminal(),
        "a stopped task must be stopping or stopped: {status:?}"
    );
    let found = launcher.find(&spec.key).await.expect("find after stop");
    assert!(
        found.iter().all(|t| t.id != task.id),
        "find must not return a stopped task: {found:?}"
    );
}

/// A task the backend does not know is `Missing` to `describe` and `NotFound` to `stop`.
pub async fn unknown_tasks_are_missing(launcher: &dyn TaskLauncher, missing: &TaskRef) {
    let status = launcher.describe(missing).await.expect("describe missing");
    assert_eq!(status.state, TaskState::Missing, "{status:?}");
    let outcome = launcher
        .stop(missing, "conformance test")
        .await
        .expect("stopping a missing task must not fail");
    assert_eq!(outcome, StopOutcome::NotFound);
}

/// Where [`shell`] can log in: an SSH server whose authorized keys include `private_key`'s
/// public key, and an address where nothing listens.
#[derive(Clone, Debug)]
pub struct ShellTarget {
    /// The server.
    pub endpoint: Endpoint,
    /// Its host key.
    pub host_key: HostKey,
    /// Login user.
    pub username: String,
    /// An authorized private key.
    pub private_key: PrivateKey,
    /// An endpoint where nothing listens.
    pub closed: Endpoint,
}

/// [`RemoteShell`]: probe, exit statuses, separate streams, host-key pinning, cancellation.
pub async fn shell(shell: &dyn RemoteShell, target: &ShellTarget) {
    let host_key = shell.probe(target.endpoint).await.expect("probe");
    assert_eq!(
        host_key, target.host_key,
        "probe must report the server's host key"
    );
    let err = shell
        .probe(target.closed)
        .await
        .expect_err("probe of a closed port");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");

    let request = |script: &str, host_key: Option<HostKey>| RunRequest {
        endpoint: target.endpoint,
        username: target.username.clone(),
        private_key: target.private_key.clone(),
        host_key,
        script: Arc::from(script.as_bytes()),
    };
    let never = CancellationToken::new();

    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(
            &request(
                "echo out\necho err >&2\nexit 3\n",
                Some(target.host_key.clone()),
            ),
            &mut out,
            &never,
        )
        .await
        .expect("run");
    assert_eq!(outcome, RunOutcome::Exited(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(&request("echo fine\n", None), &mut out, &never)
        .await
        .expect("run without pinned key");
    assert_eq!(outcome, RunOutcome::Exited(0));

    let wrong = HostKey {
        algorithm: target.host_key.algorithm.clone(),
        fingerprint: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    };
    let mut out = CapturedOutput::default();
    let err = shell
        .run(
            &request("echo should-not-run\n", Some(wrong)),
            &mut out,
            &never,
        )
        .await
        .expect_err("a different host key must be refused");
    assert_eq!(err.kind(), ErrorKind::HostKeyMismatch, "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing may run on a host with the wrong key"
    );

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = tokio::time::Instant::now();
    let mut out = CapturedOutput::default();
    let err = shell
        .run(
            &request("sleep 30\n", Some(target.host_key.clone())),
            &mut out,
            &cancel,
        )
        .await
        .expect_err("a cancelled run must fail");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancellation took {:?}",
        started.elapsed()
    );
}

/// [`MetadataStore`]: put/get/replace/delete/list and the job lock. `record` is written
/// and removed again.
pub async fn store(store: &dyn MetadataStore, record: &JobRecord) {
    let key = &record.key;
    assert_eq!(store.get(key).await.expect("get missing"), None);
    store
        .delete(key)
        .await
        .expect("deleting a missing record must succeed");
    store.put(record).await.expect("put");
    assert_eq!(store.get(key).await.expect("get").as_ref(), Some(record));
    let mut updated = record.clone();
    updated.phase = Phase::Launched;
    updated.task = Some(TaskRef::new("task-1"));
    store.put(&updated).await.expect("replace");
    assert_eq!(store.get(key).await.expect("get").as_ref(), Some(&updated));
    assert!(store.list().await.expect("list").contains(key));
    store.delete(key).await.expect("delete");
    assert_eq!(store.get(key).await.expect("get deleted"), None);
    assert!(!store.list().await.expect("list").contains(key));

    let guard = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    let err = store
        .lock(key, Duration::from_millis(100))
        .await
        .expect_err("a held lock must not be given twice");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    drop(guard);
    drop(
        store
            .lock(key, Duration::from_secs(1))
            .await
            .expect("lock after release"),
    );
}
