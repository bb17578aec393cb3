//! The login check: the job's key logs in and a script runs, before prepare reports ready.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::metadata::JobRecord;
use crate::shell::{CapturedOutput, RunOutcome, RunRequest};

use super::super::Driver;

/// The script prepare runs once to check that the task can run the job's scripts.
pub const LOGIN_CHECK_SCRIPT: &[u8] = b"true\n";

/// How long prepare keeps trying when the task's SSH server refuses the job's key (the
/// entrypoint may install it a moment after sshd starts).
const LOGIN_GRACE: Duration = Duration::from_secs(3);

impl Driver {
    /// Logs in once with the job's key and runs [`LOGIN_CHECK_SCRIPT`], so that a task that will
    /// never run the job's scripts (its sshd refuses the key, its image has no bash) fails
    /// prepare in seconds, as a system failure with a hint.
    pub(in crate::driver) async fn check_login(
        &self,
        record: &JobRecord,
        deadline: Instant,
    ) -> Result<()> {
        let (Some(endpoint), Some(host_key)) = (record.endpoint, record.host_key.clone()) else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "the task has no endpoint to log in to",
            ));
        };
        let request = RunRequest {
            endpoint,
            username: self.options.ssh.username.clone(),
            private_key: record.private_key.clone(),
            host_key: Some(host_key),
            script: Arc::from(LOGIN_CHECK_SCRIPT),
        };
        let first = Instant::now();
        loop {
            let mut out = CapturedOutput::default();
            let result = tokio::time::timeout_at(
                deadline,
                self.shell
                    .run(&request, &mut out, &CancellationToken::new()),
            )
            .await
            .unwrap_or_else(|_| Err(Error::timeout("logging in to the task")));
            match result {
                Ok(RunOutcome::Exited(0)) => return Ok(()),
                Ok(outcome) => {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "the task's SSH server cannot run scripts: `true` ended with {outcome:?} ({})",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    )
                    .with_hint("check the SSH user's login shell and the task image"));
                }
                Err(err)
                    if err.kind() == ErrorKind::AuthenticationFailed
                        && first.elapsed() < LOGIN_GRACE =>
                {
                    tracing::debug!(error = %err, "the task refused the job's key; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) if err.kind() == ErrorKind::AuthenticationFailed => {
                    return Err(err.set_temporary(false));
                }
                Err(err) => return Err(err),
            }
        }
    }
}
