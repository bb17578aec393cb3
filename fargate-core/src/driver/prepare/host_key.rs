//! The check of the host key a task's SSH server presents against those the task announced
//! out of band ([`HostKeySource::Announced`]), before the key is pinned and before anything
//! is sent to the server.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::launcher::{Endpoint, TaskRef};
use crate::options::HostKeySource;
use crate::shell::HostKey;

use super::super::Driver;

/// The first wait for an announcement that is not there yet (then doubling up to
/// [`ANNOUNCE_POLL_MAX`]): logs arrive a few seconds after the task printed them.
const ANNOUNCE_POLL_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two looks for an announcement.
const ANNOUNCE_POLL_MAX: Duration = Duration::from_secs(2);

impl Driver {
    /// With [`HostKeySource::Announced`]: waits (until `deadline`) until `container` of
    /// `task` has announced its host keys, and fails unless `presented` (what the SSH
    /// server at `endpoint` showed a probe, which sends it nothing but the key exchange) is
    /// one of them. With [`HostKeySource::FirstUse`]: nothing.
    ///
    /// A key the task did not announce is an [`ErrorKind::HostKeyMismatch`] (a system
    /// failure: the job is not at fault): another host answered for the task's address.
    pub(in crate::driver) async fn check_announced(
        &self,
        task: &TaskRef,
        container: &str,
        endpoint: Endpoint,
        presented: &HostKey,
        deadline: Instant,
    ) -> Result<()> {
        if self.options.ssh.host_key_source != HostKeySource::Announced {
            return Ok(());
        }
        let mut delay = ANNOUNCE_POLL_FIRST;
        loop {
            let asked = tokio::time::timeout_at(
                deadline,
                self.launcher.announced_host_keys(task, container),
            )
            .await;
            let keys = match asked {
                Ok(Ok(keys)) => keys,
                Ok(Err(err)) if err.kind() == ErrorKind::Unsupported => {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!("[SSH] HostKeySource asks for the task's announced host keys: {}", err.message()),
                    )
                    .with_hint("set [SSH] HostKeySource = \"first-use\", or use a launcher that learns host keys out of band"));
                }
                Ok(Err(err)) if err.is_temporary() || err.outcome_unknown() => {
                    tracing::warn!(error = %err, "reading the task's announced host keys failed; will try again");
                    Vec::new()
                }
                Ok(Err(err)) => return Err(err.with_context("container", container)),
                Err(_) => Vec::new(),
            };
            if keys.contains(presented) {
                tracing::info!(
                    container,
                    host_key = %presented,
                    "the SSH server's host key is one the task announced"
                );
                return Ok(());
            }
            if !keys.is_empty() {
                let announced: Vec<String> = keys.iter().map(ToString::to_string).collect();
                return Err(Error::new(
                    ErrorKind::HostKeyMismatch,
                    format!(
                        "the SSH server at {endpoint} presented host key {presented}, which container {container} of the task did not announce ({}); nothing was sent to it",
                        announced.join(", ")
                    ),
                )
                .with_context("task", task)
                .with_hint("another host answered for the task's address (with a public IP, anyone on the network path can): check the network path; a task image that makes its host keys after printing them causes this too (see examples/task-image/docker-entrypoint.sh)"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "container {container} of the task announced no host key before the ready deadline"
                    ),
                )
                .with_context("task", task)
                .with_hint("the task image's entry point must print its host keys as `fargate-host-key: <algorithm> <key>` lines (examples/task-image/docker-entrypoint.sh) and the container must log to CloudWatch Logs (awslogs with a stream prefix); or set [SSH] HostKeySource = \"first-use\" on a private network"));
            }
            tokio::time::sleep_until((now + delay).min(deadline)).await;
            delay = (delay * 2).min(ANNOUNCE_POLL_MAX);
        }
    }
}
