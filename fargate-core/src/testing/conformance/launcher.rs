//! [`TaskLauncher`]'s rules.

use std::time::{Duration, UNIX_EPOCH};

use crate::error::ErrorKind;
use crate::launcher::{StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskState};

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
    alive_marks_are_listed(launcher, spec, &task).await;
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

/// Where the backend marks tasks alive ([`TaskLauncher::mark_alive`]; else
/// [`ErrorKind::Unsupported`]) and lists them, a visible task's latest mark is its listed
/// `alive_at` (whole seconds), and the mark changes nothing else the listing says.
pub async fn alive_marks_are_listed(launcher: &dyn TaskLauncher, spec: &TaskSpec, task: &TaskRef) {
    let first = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    match launcher.mark_alive(task, first).await {
        Err(e) if e.kind() == ErrorKind::Unsupported => return,
        r => r.expect("mark_alive"),
    }
    let later = first + Duration::from_secs(30);
    launcher
        .mark_alive(task, later)
        .await
        .expect("a second mark");
    let listed = match launcher.list(&spec.job.namespace).await {
        Err(e) if e.kind() == ErrorKind::Unsupported => return,
        r => r.expect("list"),
    };
    let entry = listed
        .iter()
        .find(|t| t.task.id == task.id)
        .unwrap_or_else(|| panic!("the visible task {task} must be listed: {listed:?}"));
    assert_eq!(entry.alive_at, Some(later), "the latest mark: {entry:?}");
    assert_eq!(entry.key.as_ref(), Some(&spec.key), "{entry:?}");
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
