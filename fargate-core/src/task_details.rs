//! [`TaskDetails`]: what the backend reports of a task's timeline and shape, for the job
//! summary ([`crate::observe::JobSummary`]).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A task's timeline and shape as the backend reports them (for ECS: DescribeTasks). Every
/// field is optional: a backend fills what it knows, and a task that is still starting has
/// no `started_at` yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskDetails {
    /// When the backend created the task (ECS `createdAt`).
    pub created_at: Option<SystemTime>,
    /// When the image pull began (ECS `pullStartedAt`); billing may start here.
    pub pull_started_at: Option<SystemTime>,
    /// When the image pull ended (ECS `pullStoppedAt`).
    pub pull_stopped_at: Option<SystemTime>,
    /// When the task's containers were running (ECS `startedAt`).
    pub started_at: Option<SystemTime>,
    /// When the task began to stop (ECS `stoppingAt`).
    pub stopping_at: Option<SystemTime>,
    /// When the task stopped (ECS `stoppedAt`); billing may end here.
    pub stopped_at: Option<SystemTime>,
    /// The capacity provider that runs it (`FARGATE`, `FARGATE_SPOT`), if any.
    pub capacity_provider: Option<String>,
    /// Task CPU in CPU units (1024 = 1 vCPU).
    pub cpu_units: Option<u32>,
    /// Task memory in MiB.
    pub memory_mib: Option<u32>,
    /// Ephemeral storage in GiB.
    pub ephemeral_storage_gib: Option<u32>,
    /// CPU architecture (`X86_64`, `ARM64`).
    pub cpu_architecture: Option<String>,
    /// The backend's platform version (e.g. `1.4.0`).
    pub platform_version: Option<String>,
    /// Availability zone (`eu-west-1a`).
    pub availability_zone: Option<String>,
    /// Region (`eu-west-1`).
    pub region: Option<String>,
}

impl TaskDetails {
    /// `later - earlier`, when both are known and in that order.
    pub fn between(earlier: Option<SystemTime>, later: Option<SystemTime>) -> Option<Duration> {
        later?.duration_since(earlier?).ok()
    }

    /// Whether the task uses Spot capacity.
    pub fn is_spot(&self) -> bool {
        self.capacity_provider
            .as_deref()
            .is_some_and(|p| p.to_ascii_uppercase().contains("SPOT"))
    }

    /// Whether the task runs on ARM (Graviton).
    pub fn is_arm(&self) -> bool {
        self.cpu_architecture
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("ARM64"))
    }
}
