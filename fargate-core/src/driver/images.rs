//! Prepare and run with the job's own image ([`crate::images`]): the allowlist check before
//! any backend call, the job container's SSH server at prepare, and each stage's container.

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::images::{self, ImageDecision, ImageRequest, StageContainer};
use crate::job::JobContext;
use crate::launcher::{Endpoint, TaskStatus};
use crate::metadata::{ContainerLogin, JobRecord};
use crate::shell::HostKey;

use super::Driver;

/// Bound on the one describe that reports the services' status.
const SERVICE_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Driver {
    /// The job's checked image request, before any backend call: `None` when the job runs
    /// in the task image (with one job-log line when it asked for an image this runner
    /// ignores); an [`ErrorKind::NotAllowed`] error when it asked for one it refuses.
    pub(super) fn job_images(&self, job: &JobContext) -> Result<Option<Box<ImageRequest>>> {
        match images::decide(&self.options, job.response.as_ref())? {
            ImageDecision::Ignored(line) => {
                tracing::warn!("{line}");
                Ok(None)
            }
            ImageDecision::Derived(request) => {
                tracing::info!(
                    "the job runs in image {} (the runner's own stages run in the task image)",
                    request.job_image.as_deref().unwrap_or("of the task")
                );
                for (container, image) in &request.services {
                    tracing::info!("service {image} runs as container {container}");
                }
                for login in &request.pull_logins {
                    tracing::info!(
                        "the images of {} are pulled from {} with the job's own registry login ({}), kept in a secret of the job until its cleanup",
                        login.containers.join(", "),
                        login.registry,
                        login.username
                    );
                }
                Ok(Some(request))
            }
            _ => Ok(None),
        }
    }

    /// With a job image: waits (until `deadline`) for the job container's SSH server at the
    /// task's address, pins its host key, logs in once, and records it. Nothing without.
    pub(super) async fn ready_job_container(
        &self,
        record: &mut JobRecord,
        deadline: Instant,
    ) -> Result<()> {
        let Some(request) = record.spec.as_ref().and_then(|s| s.images.as_ref()) else {
            return Ok(());
        };
        let Some(helper) = record.endpoint else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "the task has no address for the job container",
            ));
        };
        let endpoint = Endpoint {
            ip: helper.ip,
            port: request.plan.job_ssh_port,
        };
        let host_key = self.probe_until(endpoint, deadline).await?;
        if let Some(task) = &record.task {
            self.check_announced(task, images::JOB_CONTAINER, endpoint, &host_key, deadline)
                .await?;
        }
        let mut login = record.clone();
        login.endpoint = Some(endpoint);
        login.host_key = Some(host_key.clone());
        self.check_login(&login, deadline)
            .await
            .map_err(|e| e.with_context("container", images::JOB_CONTAINER))?;
        tracing::info!(%endpoint, host_key = %host_key, "the job container is ready");
        record.job_container = Some(ContainerLogin::new(endpoint, host_key));
        self.report_services(record).await;
        Ok(())
    }

    /// Logs each service with its image and status (one describe); a service that stopped
    /// is a warning with the backend's reason and exit code. Never fails prepare: the job
    /// decides whether it needs the service.
    async fn report_services(&self, record: &JobRecord) {
        let (Some(task), Some(request)) = (
            record.task.as_ref(),
            record.spec.as_ref().and_then(|s| s.images.as_ref()),
        ) else {
            return;
        };
        if request.services.is_empty() {
            return;
        }
        let status = match tokio::time::timeout(
            SERVICE_STATUS_TIMEOUT,
            self.launcher.describe(task),
        )
        .await
        {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "could not describe the task for its services' status");
                return;
            }
            Err(_) => return,
        };
        for (warn, line) in Driver::service_lines(request, &status) {
            if warn {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
    }

    /// Probes `endpoint` at the SSH probe interval until it answers with its host key.
    async fn probe_until(&self, endpoint: Endpoint, deadline: Instant) -> Result<HostKey> {
        loop {
            let started = Instant::now();
            let last = match tokio::time::timeout_at(deadline, self.shell.probe(endpoint)).await {
                Ok(Ok(host_key)) => return Ok(host_key),
                Ok(Err(err)) if err.kind() == ErrorKind::Unreachable => err,
                Ok(Err(err)) => return Err(err),
                Err(_) => Error::timeout("probing the job container"),
            };
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("the job container's SSH server on {endpoint} never answered ({})", last.message()),
                )
                .with_hint("the job container starts the bundle's SSH server from the task image's bundle; check the task's stopped containers and the bundle container's log"));
            }
            tokio::time::sleep_until((started + self.options.ssh.probe_interval).min(deadline))
                .await;
        }
    }

    /// The job-log line of each service (`true`: a warning): its image, container and
    /// status, and for a stopped one the backend's reason and exit code.
    pub(super) fn service_lines(
        request: &ImageRequest,
        status: &TaskStatus,
    ) -> Vec<(bool, String)> {
        request
            .services
            .iter()
            .map(|(container, image)| {
                match status.containers.iter().find(|c| &c.name == container) {
                    Some(c) if c.status.as_deref() == Some("STOPPED") => {
                        let exit = c
                            .exit_code
                            .map(|code| format!(" with exit code {code}"))
                            .unwrap_or_default();
                        let reason = c.reason.as_deref().unwrap_or("no reason given");
                        (
                            true,
                            format!("service {image} ({container}) stopped{exit}: {reason}"),
                        )
                    }
                    Some(c) => (
                        false,
                        format!(
                            "service {image} ({container}) is {}",
                            c.status
                                .as_deref()
                                .unwrap_or("in an unknown state")
                                .to_ascii_lowercase()
                        ),
                    ),
                    None => (
                        false,
                        format!("service {image} ({container}): no status reported"),
                    ),
                }
            })
            .collect()
    }

    /// Where `stage` runs: the job container's server for the job's scripts when the job
    /// has its own image, else `endpoint` with `host_key` (the task image).
    pub(super) fn stage_login(
        record: &JobRecord,
        stage: &str,
        endpoint: Endpoint,
        host_key: Option<HostKey>,
    ) -> (Endpoint, Option<HostKey>) {
        match (&record.job_container, images::stage_container(stage)) {
            (Some(job), StageContainer::Job) => (job.endpoint, Some(job.host_key.clone())),
            _ => (endpoint, host_key),
        }
    }
}
