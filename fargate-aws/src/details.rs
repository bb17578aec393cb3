//! A DescribeTasks task as [`TaskDetails`]: its timeline and shape, for the job summary.

use std::time::SystemTime;

use aws_sdk_ecs::types::Task;
use fargate_core::TaskDetails;

/// The task's timestamps, capacity provider, size, platform, zone and region.
pub(crate) fn task_details(task: &Task) -> TaskDetails {
    let time = |t: Option<&aws_sdk_ecs::primitives::DateTime>| {
        t.and_then(|t| SystemTime::try_from(*t).ok())
    };
    let mut d = TaskDetails::default();
    d.created_at = time(task.created_at());
    d.pull_started_at = time(task.pull_started_at());
    d.pull_stopped_at = time(task.pull_stopped_at());
    d.started_at = time(task.started_at());
    d.stopping_at = time(task.stopping_at());
    d.stopped_at = time(task.stopped_at());
    d.capacity_provider = task.capacity_provider_name().map(str::to_owned);
    d.cpu_units = task.cpu().and_then(|c| c.trim().parse().ok());
    d.memory_mib = task.memory().and_then(|m| m.trim().parse().ok());
    d.ephemeral_storage_gib = Some(
        task.ephemeral_storage()
            .and_then(|e| u32::try_from(e.size_in_gib()).ok())
            .unwrap_or(20),
    );
    d.cpu_architecture = task
        .attributes()
        .iter()
        .find(|a| a.name() == "ecs.cpu-architecture")
        .and_then(|a| a.value())
        .map(str::to_ascii_uppercase);
    d.platform_version = task.platform_version().map(str::to_owned);
    d.availability_zone = task.availability_zone().map(str::to_owned);
    d.region = task.task_arn().and_then(region_of_arn);
    d
}

/// `eu-west-1` of `arn:aws:ecs:eu-west-1:123456789012:task/...`.
fn region_of_arn(arn: &str) -> Option<String> {
    let region = arn.split(':').nth(3)?;
    (!region.is_empty()).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::primitives::DateTime;
    use aws_sdk_ecs::types::{Attribute, EphemeralStorage};
    use std::time::Duration;

    #[test]
    fn every_figure_comes_from_the_task() {
        let t = Task::builder()
            .task_arn("arn:aws:ecs:eu-central-1:123456789012:task/c/abc")
            .created_at(DateTime::from_secs(1000))
            .pull_started_at(DateTime::from_secs(1010))
            .pull_stopped_at(DateTime::from_secs(1030))
            .started_at(DateTime::from_secs(1032))
            .capacity_provider_name("FARGATE_SPOT")
            .cpu("2048")
            .memory("4096")
            .ephemeral_storage(EphemeralStorage::builder().size_in_gib(50).build())
            .attributes(
                Attribute::builder()
                    .name("ecs.cpu-architecture")
                    .value("arm64")
                    .build()
                    .unwrap(),
            )
            .platform_version("1.4.0")
            .availability_zone("eu-central-1b")
            .build();
        let d = task_details(&t);
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(d.created_at, at(1000));
        assert_eq!(d.pull_started_at, at(1010));
        assert_eq!(d.pull_stopped_at, at(1030));
        assert_eq!(d.started_at, at(1032));
        assert_eq!(d.stopped_at, None);
        assert!(d.is_spot() && d.is_arm());
        assert_eq!((d.cpu_units, d.memory_mib), (Some(2048), Some(4096)));
        assert_eq!(d.ephemeral_storage_gib, Some(50));
        assert_eq!(d.platform_version.as_deref(), Some("1.4.0"));
        assert_eq!(d.availability_zone.as_deref(), Some("eu-central-1b"));
        assert_eq!(d.region.as_deref(), Some("eu-central-1"));
        let bare = task_details(&Task::builder().build());
        assert_eq!(bare.ephemeral_storage_gib, Some(20));
        assert_eq!(bare.region, None);
    }
}
