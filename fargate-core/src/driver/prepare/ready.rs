//! Waiting until the task is ready: its address (from the launch answer or a describe),
//! then an SSH server that answers.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::launcher::{Endpoint, Launched, StopDetails, TaskState};
use crate::observe::Event;
use crate::setting::Setting;
use crate::shell::HostKey;
use crate::task_details::TaskDetails;

use super::super::Driver;

/// Context key of a [`wait_ready`](Driver::wait_ready) error when an image could not be
/// pulled: the containers whose pull failed, separated by commas (empty: not known).
pub(in crate::driver) const PULL_FAILED_CONTEXT: &str = "pull_failed";

/// The first retry of a refused SSH probe (then doubling up to the SSH probe interval).
const FIRST_PROBE_RETRY: Duration = Duration::from_millis(25);

pub(in crate::driver) struct Ready {
    pub(in crate::driver) endpoint: Endpoint,
    pub(in crate::driver) host_key: HostKey,
    pub(in crate::driver) address_known: Duration,
    pub(in crate::driver) describe_calls: u32,
    pub(in crate::driver) probes: u32,
    /// What the last describe reported.
    pub(in crate::driver) details: TaskDetails,
}

impl Driver {
    /// Polls the task until its address is known, then probes SSH until it answers.
    ///
    /// No idle wait: an address the launch answer carried is probed at once; otherwise the
    /// first describe is sent at once, and the later ones follow the sparse schedule
    /// (the options' first poll interval, growing 1.5x up to their longest) that a long
    /// boot needs. SSH is probed as soon as any answer carried the address.
    ///
    /// A task the launcher does not know yet is "not visible yet" until
    /// the consistency window ([`Timeouts`](crate::options::Timeouts)) after `launched`; after that it is gone.
    pub(in crate::driver) async fn wait_ready(
        &self,
        launch: &Launched,
        launched: Instant,
        deadline: Instant,
    ) -> Result<Ready> {
        let task = &launch.task;
        let started = Instant::now();
        let t = &self.options.timeouts;
        let port = self.options.ssh.port;
        let mut interval = t.poll_initial;
        let mut address: Option<(IpAddr, Duration)> = launch.address().map(|ip| {
            tracing::debug!(%ip, "task IP address known from the launch answer");
            (ip, Duration::ZERO)
        });
        // With the address known, describing only watches for an early stop.
        let mut next_describe = match address {
            Some(_) => started + t.poll_initial,
            None => started,
        };
        let mut describe_calls = 0u32;
        let mut probes = 0u32;
        // Refused probes are retried after 25 ms, doubling up to `[SSH] ProbeInterval`: an
        // sshd that starts right after the address is known is found without waiting a
        // whole interval; a long boot is probed at the configured pace.
        let mut probe_delay = self.options.ssh.probe_interval.min(FIRST_PROBE_RETRY);
        let mut last_probe_error: Option<Error> = None;
        // What the launch answer said of the task (ECS's RunTask answer describes it): the
        // summary has its shape even when the task is ready before ECS shows it.
        let mut details = launch
            .status
            .as_ref()
            .map(|s| s.details.clone())
            .unwrap_or_default();
        let mut last_state = None;
        // A launch answer that already says the task stopped (an image that could not be
        // pulled may stop it at once): no SSH probe of an address that no longer serves it.
        if let Some(status) = launch.status.as_ref().filter(|s| s.state.is_terminal()) {
            return Err(stopped_before_ready(
                task,
                status.stop.clone().unwrap_or_default(),
            ));
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                let mut err = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the task did not become reachable within {} s",
                        t.ready.as_secs()
                    ),
                )
                .with_context("task", task);
                err = match (&address, &last_probe_error) {
                    (None, _) => err.with_hint("the launcher never reported the task's address; check the capacity and the task's events on the backend, or raise the ready timeout").with_setting(Setting::ReadyTimeout),
                    (Some((ip, _)), Some(probe)) => err.with_hint(format!(
                        "the task got IP {ip} but SSH on port {port} never answered ({}); check that the container runs sshd on that port and that the security group allows it from this host",
                        probe.message()
                    )),
                    (Some(_), None) => err,
                };
                return Err(err);
            }
            if now >= next_describe {
                describe_calls += 1;
                let described =
                    match tokio::time::timeout_at(deadline, self.launcher.describe(task)).await {
                        Ok(r) => r,
                        Err(_) => continue, // the deadline passed: reported at the top of the loop
                    };
                match described {
                    Ok(status) if status.state.is_terminal() => {
                        return Err(stopped_before_ready(task, status.stop.unwrap_or_default()));
                    }
                    Ok(status) if status.state == TaskState::Missing => {
                        if launched.elapsed() >= t.consistency_window {
                            return Err(Error::new(
                                ErrorKind::TaskStopped,
                                format!(
                                    "the launcher still does not know the task {} s after accepting it",
                                    launched.elapsed().as_secs()
                                ),
                            )
                            .with_context("task", task)
                            .with_hint("the task may have been deleted; check the backend's events, or raise the consistency window if new tasks are slow to show")
                            .with_setting(Setting::ConsistencyWindow));
                        }
                        tracing::debug!(task = %task, "the launcher does not show the task yet (eventual consistency)");
                    }
                    Ok(status) => {
                        if last_state != Some(status.state) {
                            last_state = Some(status.state);
                            self.observe(Event::TaskState {
                                task: task.clone(),
                                state: status.state,
                            });
                        }
                        details = status.details;
                        if address.is_none()
                            && let Some(ip) = status.address
                        {
                            tracing::debug!(%ip, elapsed_ms = started.elapsed().as_millis() as u64, state = ?status.state, "task IP address known");
                            address = Some((ip, started.elapsed()));
                        }
                    }
                    Err(err) if err.is_temporary() || err.outcome_unknown() => {
                        tracing::warn!(error = %err, "describing the task failed; will try again");
                    }
                    Err(err) => return Err(err),
                }
                // Once the address is known, describing only watches for an early stop.
                if address.is_some() {
                    interval = t.poll_max;
                }
                next_describe = Instant::now() + interval;
                interval = interval.mul_f64(1.5).min(t.poll_max);
            }
            let Some((ip, address_known)) = address else {
                tokio::time::sleep_until(next_describe.min(deadline)).await;
                continue;
            };
            let endpoint = Endpoint { ip, port };
            probes += 1;
            let probe_started = Instant::now();
            match tokio::time::timeout_at(deadline, self.shell.probe(endpoint)).await {
                Ok(Ok(host_key)) => {
                    // Before the key is pinned and anything is sent (the probe sends the
                    // server nothing but the key exchange).
                    self.check_announced(
                        task,
                        &self.options.task.container_name,
                        endpoint,
                        &host_key,
                        deadline,
                    )
                    .await?;
                    return Ok(Ready {
                        endpoint,
                        host_key,
                        address_known,
                        describe_calls,
                        probes,
                        details,
                    });
                }
                Ok(Err(err)) if err.kind() == ErrorKind::Unreachable => {
                    last_probe_error = Some(err);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => continue, // the deadline passed: reported at the top of the loop
            }
            let next_probe = probe_started + probe_delay;
            probe_delay = (probe_delay * 2).min(self.options.ssh.probe_interval);
            tokio::time::sleep_until(next_probe.min(next_describe).min(deadline)).await;
        }
    }
}

/// The error of a task that stopped before it was ready: a failed image pull says so and
/// names the containers ([`PULL_FAILED_CONTEXT`]) for the caller's hint.
fn stopped_before_ready(task: &crate::launcher::TaskRef, details: StopDetails) -> Error {
    if let Some(containers) = &details.pull_failed {
        return Error::new(
            ErrorKind::TaskStopped,
            format!("the task could not pull an image: {details}"),
        )
        .with_context("task", task)
        .with_context(PULL_FAILED_CONTEXT, containers.join(","))
        .with_hint("the registry refused the pull or could not be reached; check the image's name and the registry's credentials");
    }
    Error::new(
        ErrorKind::TaskStopped,
        format!("the task stopped before it was ready: {details}"),
    )
    .with_context("task", task)
    .with_hint("the reason above comes from the launcher; check the image, the task definition and the container's logs")
}
