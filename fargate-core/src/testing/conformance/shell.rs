//! [`RemoteShell`]'s rules.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ErrorKind;
use crate::launcher::Endpoint;
use crate::shell::{CapturedOutput, HostKey, PrivateKey, RemoteShell, RunOutcome, RunRequest};

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

impl ShellTarget {
    /// A request to run `script` on the target, pinned to `host_key` (`None`: not pinned).
    fn request(&self, script: &str, host_key: Option<HostKey>) -> RunRequest {
        RunRequest {
            endpoint: self.endpoint,
            username: self.username.clone(),
            private_key: self.private_key.clone(),
            host_key,
            script: Arc::from(script.as_bytes()),
        }
    }
}

/// What a shell backend may legitimately do differently, for [`shell`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShellCaps {
    /// How long a cancelled `run` may take to return (the trait asks for about 2 s; a
    /// backend that must reach a remote host to stop the script needs some of it).
    pub cancel_within: Duration,
}

impl Default for ShellCaps {
    /// Cancel within 5 s: the trait's "about 2 s" with room for a loaded machine.
    fn default() -> Self {
        ShellCaps {
            cancel_within: Duration::from_secs(5),
        }
    }
}

impl ShellCaps {
    /// A backend whose cancelled runs return within `limit`.
    pub fn cancel_within(limit: Duration) -> Self {
        ShellCaps {
            cancel_within: limit,
        }
    }
}

/// [`RemoteShell`]: every shell check below, in order.
pub async fn shell(shell: &dyn RemoteShell, target: &ShellTarget, caps: ShellCaps) {
    probe_reports_the_host_key(shell, target).await;
    probe_of_a_closed_port_is_unreachable(shell, target).await;
    run_reports_exit_status_and_separate_streams(shell, target).await;
    run_without_a_pinned_key_runs(shell, target).await;
    wrong_host_key_is_refused_before_running(shell, target).await;
    cancel_stops_a_run(shell, target, caps).await;
}

/// `probe` answers with the server's host key.
pub async fn probe_reports_the_host_key(shell: &dyn RemoteShell, target: &ShellTarget) {
    let host_key = shell.probe(target.endpoint).await.expect("probe");
    assert_eq!(
        host_key, target.host_key,
        "probe must report the server's host key"
    );
}

/// `probe` of an address where nothing listens fails with `Unreachable`.
pub async fn probe_of_a_closed_port_is_unreachable(shell: &dyn RemoteShell, target: &ShellTarget) {
    let err = shell
        .probe(target.closed)
        .await
        .expect_err("probe of a closed port");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

/// `run` reports the script's exit status, and its stdout and stderr apart.
pub async fn run_reports_exit_status_and_separate_streams(
    shell: &dyn RemoteShell,
    target: &ShellTarget,
) {
    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(
            &target.request(
                "echo out\necho err >&2\nexit 3\n",
                Some(target.host_key.clone()),
            ),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .expect("run");
    assert_eq!(outcome, RunOutcome::Exited(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// `run` without a pinned host key runs the script.
pub async fn run_without_a_pinned_key_runs(shell: &dyn RemoteShell, target: &ShellTarget) {
    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(
            &target.request("echo fine\n", None),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .expect("run without pinned key");
    assert_eq!(outcome, RunOutcome::Exited(0));
}

/// A server whose host key is not the pinned one is refused with `HostKeyMismatch`, and
/// nothing runs there.
pub async fn wrong_host_key_is_refused_before_running(
    shell: &dyn RemoteShell,
    target: &ShellTarget,
) {
    let wrong = HostKey {
        algorithm: target.host_key.algorithm.clone(),
        fingerprint: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    };
    let mut out = CapturedOutput::default();
    let err = shell
        .run(
            &target.request("echo should-not-run\n", Some(wrong)),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .expect_err("a different host key must be refused");
    assert_eq!(err.kind(), ErrorKind::HostKeyMismatch, "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing may run on a host with the wrong key"
    );
}

/// Cancelling a running script makes `run` fail with `Cancelled` within
/// `caps.cancel_within`.
pub async fn cancel_stops_a_run(shell: &dyn RemoteShell, target: &ShellTarget, caps: ShellCaps) {
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
            &target.request("sleep 30\n", Some(target.host_key.clone())),
            &mut out,
            &cancel,
        )
        .await
        .expect_err("a cancelled run must fail");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        started.elapsed() < caps.cancel_within,
        "cancellation took {:?}",
        started.elapsed()
    );
}
