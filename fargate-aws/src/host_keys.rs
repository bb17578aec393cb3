//! [`TaskLauncher::announced_host_keys`](fargate_core::TaskLauncher::announced_host_keys)
//! on ECS: the host keys a task's container printed to its CloudWatch Logs stream.
//!
//! The task image's entry point prints each host key it made, before it starts its SSH
//! server, as one line `fargate-host-key: <algorithm> <base64 key>`
//! ([`ANNOUNCE_PREFIX`]; `examples/task-image/docker-entrypoint.sh`, and the bundle's
//! entry point for a job container). With the `awslogs` log driver, ECS writes a
//! container's output to the stream `<awslogs-stream-prefix>/<container>/<task id>` of
//! `awslogs-group` ([`log_stream`], from the task's definition). The driver reads that
//! stream with `GetLogEvents` from its start (through the crate's `AwsApi`, signed,
//! over TLS to CloudWatch Logs): what a host on the network path between the runner and the
//! task cannot forge. Only the first [`MAX_EVENTS`] events are read: the keys come first.

use std::collections::HashMap;

use aws_sdk_ecs::types::{LogDriver, TaskDefinition};
use fargate_core::{Error, ErrorKind, HostKey, Result, TaskRef};
use serde_json::json;

use crate::aws_api::{Protocol, Service};
use crate::errors;
use crate::launcher::EcsLauncher;

/// Amazon CloudWatch Logs (JSON 1.1).
pub(crate) const LOGS: Service = Service {
    prefix: "logs",
    id: "CloudWatch_Logs",
    protocol: Protocol::Json {
        version: "1.1",
        target_prefix: "Logs_20140328",
    },
};

/// What starts a line that announces a host key.
pub const ANNOUNCE_PREFIX: &str = "fargate-host-key:";

/// How many events from the start of the stream are read.
pub const MAX_EVENTS: u32 = 100;

/// Where a container of a task logs: a CloudWatch Logs group and stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStream {
    /// `awslogs-group`.
    pub group: String,
    /// `<awslogs-stream-prefix>/<container>/<task id>`.
    pub stream: String,
    /// `awslogs-region`, when the definition names one.
    pub region: Option<String>,
}

/// The log stream of `container` of task `task_id` run from `definition`: an
/// [`ErrorKind::InvalidConfig`] error, with the fix, when the container does not log to
/// CloudWatch Logs with a stream prefix.
pub fn log_stream(
    definition: &TaskDefinition,
    container: &str,
    task_id: &str,
) -> Result<LogStream> {
    let name = definition.task_definition_arn().unwrap_or_default();
    let invalid = |why: String| {
        Error::new(ErrorKind::InvalidConfig, why)
            .with_backend("ecs")
            .with_hint("give the container an awslogs log configuration with awslogs-group and awslogs-stream-prefix (examples/cloudformation), or set [SSH] HostKeySource = \"first-use\"")
    };
    let c = definition
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(container))
        .ok_or_else(|| {
            invalid(format!(
                "the task definition {name} has no container {container:?}"
            ))
        })?;
    c.log_configuration()
        .filter(|l| l.log_driver() == &LogDriver::Awslogs)
        .ok_or_else(|| {
            invalid(format!(
                "container {container:?} of the task definition {name} does not log to CloudWatch Logs (the awslogs log driver), where the task announces its host keys"
            ))
        })?;
    let option = |key: &str| {
        c.log_configuration()
            .and_then(|l| l.options())
            .and_then(|o| o.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let group = option("awslogs-group").ok_or_else(|| {
        invalid(format!(
            "container {container:?} of the task definition {name} has no awslogs-group"
        ))
    })?;
    let prefix = option("awslogs-stream-prefix").ok_or_else(|| {
        invalid(format!(
            "container {container:?} of the task definition {name} has no awslogs-stream-prefix: its stream's name cannot be known"
        ))
    })?;
    Ok(LogStream {
        group,
        stream: format!("{prefix}/{container}/{task_id}"),
        region: option("awslogs-region"),
    })
}

/// The host keys announced in `messages` (log events, each possibly several lines).
pub fn announced_keys<'a>(messages: impl IntoIterator<Item = &'a str>) -> Vec<HostKey> {
    let mut keys = Vec::new();
    for line in messages.into_iter().flat_map(str::lines) {
        let Some(rest) = line.trim().strip_prefix(ANNOUNCE_PREFIX) else {
            continue;
        };
        if let Some(key) = HostKey::from_openssh(rest)
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    keys
}

/// The task id of a task ARN (`arn:aws:ecs:<region>:<account>:task/<cluster>/<id>`).
fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Log streams found so far, by (task ARN, container).
pub(crate) type StreamCache = HashMap<(String, String), LogStream>;

impl EcsLauncher {
    /// The host keys `container` of `task` announced so far in its log stream (see the
    /// [module docs](self)); empty while the task or its stream is not there yet.
    pub(crate) async fn host_keys_of(
        &self,
        task: &TaskRef,
        container: &str,
    ) -> Result<Vec<HostKey>> {
        let Some(stream) = self.stream_of(task, container).await? else {
            return Ok(Vec::new());
        };
        let region = self.api.region().map(str::to_owned);
        if let Some(theirs) = stream.region.as_deref()
            && region.as_deref().is_some_and(|ours| ours != theirs)
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "the task logs to CloudWatch Logs in {theirs}, not in the launcher's region {}",
                    region.unwrap_or_default()
                ),
            )
            .with_backend("ecs")
            .with_hint("log to the cluster's region (awslogs-region), or set [SSH] HostKeySource = \"first-use\""));
        }
        let input = json!({
            "logGroupName": stream.group,
            "logStreamName": stream.stream,
            "startFromHead": true,
            "limit": MAX_EVENTS,
        });
        let answer = match self.api.json(LOGS, "GetLogEvents", &input).await {
            Ok(answer) => answer,
            Err(e) => {
                let err = errors::sdk(e, "GetLogEvents").error;
                // The stream appears with the container's first output.
                return if err.kind() == ErrorKind::NotFound {
                    Ok(Vec::new())
                } else {
                    Err(err
                        .with_context("log stream", format!("{} {}", stream.group, stream.stream)))
                };
            }
        };
        let messages: Vec<&str> = answer["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .collect();
        Ok(announced_keys(messages))
    }

    /// Where `container` of `task` logs (cached); `None` while ECS does not show the task.
    async fn stream_of(&self, task: &TaskRef, container: &str) -> Result<Option<LogStream>> {
        let key = (task.id.clone(), container.to_owned());
        if let Some(found) = self
            .log_streams
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(Some(found));
        }
        let Some(described) = self.describe_task(task, false).await? else {
            return Ok(None);
        };
        let Some(definition) = described.task_definition_arn() else {
            return Ok(None);
        };
        let (td, _) = self.describe_definition(definition).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the task's definition {definition} is gone"),
            )
            .with_backend("ecs")
        })?;
        let stream = log_stream(&td, container, task_id(&task.id))?;
        if let Ok(mut cache) = self.log_streams.lock() {
            cache.insert(key, stream.clone());
        }
        Ok(Some(stream))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_ecs::types::{ContainerDefinition, LogConfiguration};

    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcTo3S2Rlm8bAGGR/I9CfUqQ6xoA8H5sH4p0eZB0xHm";

    fn definition(options: &[(&str, &str)]) -> TaskDefinition {
        let log = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .set_options(Some(
                options
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<HashMap<_, _>>(),
            ))
            .build()
            .unwrap();
        TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:eu-west-1:1:task-definition/ci:3")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("ci-coordinator")
                    .log_configuration(log)
                    .build(),
            )
            .build()
    }

    #[test]
    fn the_stream_is_prefix_container_task_id() {
        let td = definition(&[
            ("awslogs-group", "/ecs/ci"),
            ("awslogs-stream-prefix", "job"),
            ("awslogs-region", "eu-west-1"),
        ]);
        let s = log_stream(&td, "ci-coordinator", "0123abcd").unwrap();
        assert_eq!(s.group, "/ecs/ci");
        assert_eq!(s.stream, "job/ci-coordinator/0123abcd");
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            task_id("arn:aws:ecs:eu-west-1:1:task/ci/0123abcd"),
            "0123abcd"
        );
    }

    #[test]
    fn a_container_without_awslogs_or_prefix_is_a_configuration_error() {
        let td = definition(&[("awslogs-group", "/ecs/ci")]);
        let err = log_stream(&td, "ci-coordinator", "t").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("awslogs-stream-prefix"), "{err}");
        let err = log_stream(&td, "job", "t").unwrap_err();
        assert!(err.to_string().contains("no container \"job\""), "{err}");
        let bare = TaskDefinition::builder()
            .container_definitions(
                ContainerDefinition::builder()
                    .name("ci-coordinator")
                    .build(),
            )
            .build();
        let err = log_stream(&bare, "ci-coordinator", "t").unwrap_err();
        assert!(
            err.to_string().contains("does not log to CloudWatch Logs"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_read_from_announce_lines_only() {
        let announced = format!("{ANNOUNCE_PREFIX} {ED25519}");
        let messages = [
            "docker-entrypoint: installed the job's public key",
            announced.as_str(),
            "fargate-host-key: ssh-rsa not-base64!",
            "Server listening on 0.0.0.0 port 22.",
            announced.as_str(),
            // Said by something else than the prefix: not an announcement.
            ED25519,
        ];
        let keys = announced_keys(messages);
        assert_eq!(keys, [HostKey::from_openssh(ED25519).unwrap()]);
        assert_eq!(keys[0].algorithm, "ssh-ed25519");
    }
}
