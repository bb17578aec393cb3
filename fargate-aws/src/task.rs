//! What ECS says of a task: its limits, and a described [`Task`] read as the core's types
//! (state, address, stop details, containers, tags). Shared by the launcher, the listing and
//! the overrides, which depend on it and not on each other.

use aws_sdk_ecs::types::{Tag, Task};
use fargate_core::{ContainerStatus, ContainerStop, StopDetails, TaskState, TaskStatus};

/// Longest `StopTask` reason ECS accepts.
pub const MAX_STOP_REASON: usize = 255;
/// Longest `RunTask` `overrides`, as JSON, that ECS accepts.
pub const MAX_OVERRIDES_CHARS: usize = 8192;
/// Most tasks one `DescribeTasks` call may name.
pub const MAX_DESCRIBE_TASKS: usize = 100;

/// ECS's `lastStatus` and `desiredStatus` as a [`TaskState`].
pub fn task_state(last_status: &str, desired_status: &str) -> TaskState {
    let state = match last_status {
        "PROVISIONING" => TaskState::Provisioning,
        "PENDING" | "ACTIVATING" => TaskState::Pending,
        "RUNNING" => TaskState::Running,
        "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskState::Stopping,
        "STOPPED" | "DELETED" => TaskState::Stopped,
        _ => TaskState::Provisioning,
    };
    if desired_status == "STOPPED" && !state.is_terminal() {
        TaskState::Stopping
    } else {
        state
    }
}

/// A detail of the task's ENI attachment (`privateIPv4Address`, `networkInterfaceId`...).
pub(crate) fn eni_detail<'a>(task: &'a Task, name: &str) -> Option<&'a str> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type().is_none_or(|t| t == "ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some(name))
        .and_then(|d| d.value())
        .filter(|v| !v.is_empty())
}

/// `stoppedReason` of a task Fargate Spot interrupted (the developer guide's "Handling
/// Fargate Spot termination notices").
pub const SPOT_INTERRUPTED_REASON: &str = "Your Spot Task was interrupted.";

/// Whether a stopped task's code and reason say Fargate Spot took it back: stop code
/// `SpotInterruption` (or `TerminationNotice`, sent with the two-minute warning), or the
/// reason [`SPOT_INTERRUPTED_REASON`].
pub fn is_spot_interruption(stop_code: Option<&str>, reason: Option<&str>) -> bool {
    matches!(stop_code, Some("SpotInterruption" | "TerminationNotice"))
        || reason.is_some_and(|r| r.starts_with(SPOT_INTERRUPTED_REASON.trim_end_matches('.')))
}

fn stop_details(task: &Task) -> StopDetails {
    let reclaimed =
        is_spot_interruption(task.stop_code().map(|c| c.as_str()), task.stopped_reason());
    StopDetails::new(
        task.stop_code().map(|c| c.as_str().to_owned()),
        task.stopped_reason()
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        task.containers()
            .iter()
            .filter_map(|c| {
                Some(ContainerStop::new(
                    c.name()?,
                    c.reason().filter(|r| !r.is_empty()).map(str::to_owned),
                    c.exit_code(),
                ))
            })
            .collect(),
    )
    .with_reclaimed(reclaimed)
    .with_pull_failed(pull_failed(task))
}

/// Prefix of ECS's reason when the agent could not pull a container's image.
pub(crate) const PULL_ERROR: &str = "CannotPullContainerError";

/// Prefix of ECS's reason when the agent could not read a container's registry
/// credentials (or secrets) with the execution role, e.g. a secret that does not exist:
/// the pull did not happen.
pub(crate) const REGISTRY_AUTH_ERROR: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth";

/// The containers of `task` whose image pull failed, when ECS says one did (task or
/// container reason `CannotPullContainerError: ...`, or the task's
/// `ResourceInitializationError: unable to pull secrets or registry auth: ...`).
fn pull_failed(task: &Task) -> Option<Vec<String>> {
    let failed: Vec<String> = task
        .containers()
        .iter()
        .filter(|c| c.reason().is_some_and(|r| r.starts_with(PULL_ERROR)))
        .filter_map(|c| c.name().map(str::to_owned))
        .collect();
    let task_level = task
        .stopped_reason()
        .is_some_and(|r| r.starts_with(PULL_ERROR) || r.starts_with(REGISTRY_AUTH_ERROR));
    (task_level || !failed.is_empty()).then_some(failed)
}

/// `(key, value)` pairs as ECS tags.
pub(crate) fn ecs_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub(crate) fn tag_value<'a>(task: &'a Task, key: &str) -> Option<&'a str> {
    task.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The state, private address and stop details of `task`.
pub(crate) fn status_with_private_address(task: &Task) -> TaskStatus {
    let state = task_state(
        task.last_status().unwrap_or_default(),
        task.desired_status().unwrap_or_default(),
    );
    let stop = state.is_terminal().then(|| stop_details(task));
    TaskStatus::new(state)
        .with_address(eni_detail(task, "privateIPv4Address").and_then(|ip| ip.parse().ok()))
        .with_stop(stop)
        .with_details(crate::details::task_details(task))
        .with_containers(container_statuses(task))
}

/// The task's containers as ECS reports them.
fn container_statuses(task: &Task) -> Vec<ContainerStatus> {
    task.containers()
        .iter()
        .filter_map(|c| {
            Some(
                ContainerStatus::new(c.name()?, c.last_status().map(str::to_owned)).with_exit(
                    c.reason().filter(|r| !r.is_empty()).map(str::to_owned),
                    c.exit_code(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_statuses_map_to_states() {
        let cases = [
            ("PROVISIONING", "RUNNING", TaskState::Provisioning),
            ("PENDING", "RUNNING", TaskState::Pending),
            ("ACTIVATING", "RUNNING", TaskState::Pending),
            ("RUNNING", "RUNNING", TaskState::Running),
            ("DEACTIVATING", "RUNNING", TaskState::Stopping),
            ("STOPPING", "RUNNING", TaskState::Stopping),
            ("DEPROVISIONING", "STOPPED", TaskState::Stopping),
            ("STOPPED", "STOPPED", TaskState::Stopped),
            ("RUNNING", "STOPPED", TaskState::Stopping),
            ("PENDING", "STOPPED", TaskState::Stopping),
        ];
        for (last, desired, state) in cases {
            assert_eq!(task_state(last, desired), state, "{last}/{desired}");
        }
    }

    #[test]
    fn address_comes_from_the_eni_attachment() {
        use aws_sdk_ecs::types::{Attachment, Container, KeyValuePair};
        let task = Task::builder()
            .containers(Container::builder().name("ci-coordinator").build())
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .details(
                        KeyValuePair::builder()
                            .name("networkInterfaceId")
                            .value("eni-1")
                            .build(),
                    )
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv4Address")
                            .value("10.0.0.7")
                            .build(),
                    )
                    .build(),
            )
            .stopped_reason("Essential container in task exited")
            .containers(
                Container::builder()
                    .name("sidecar")
                    .exit_code(137)
                    .reason("OutOfMemoryError")
                    .build(),
            )
            .build();
        assert_eq!(eni_detail(&task, "privateIPv4Address"), Some("10.0.0.7"));
        assert_eq!(eni_detail(&task, "networkInterfaceId"), Some("eni-1"));
        assert_eq!(eni_detail(&task, "macAddress"), None);
        let d = stop_details(&task);
        assert_eq!(
            d.reason.as_deref(),
            Some("Essential container in task exited")
        );
        assert_eq!(
            d.containers[1],
            ContainerStop::new("sidecar", Some("OutOfMemoryError".to_owned()), Some(137))
        );
    }
}
