//! [`TaskShape`]: the size, capacity, role and extra network of one job's task, as the
//! driver decided it under the administrator's [`ShapePolicy`](crate::options::ShapePolicy).
//!
//! It is part of the launch request ([`TaskSpec::shape`](crate::TaskSpec::shape)), in
//! backend-neutral terms: every launcher receives it and maps what it can (the ECS launcher
//! to `RunTask` `overrides`, `capacityProviderStrategy` and `networkConfiguration`). An
//! empty shape ([`TaskShape::is_empty`]) means "as the task definition and the backend's
//! configuration say", and a launcher then sends nothing for it.
//!
//! [`FARGATE_SIZES`] is the table of the CPU and memory combinations Fargate offers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The task-level CPU and memory combinations Fargate offers: for each CPU value (in CPU
/// units, 1024 = 1 vCPU), the smallest and largest memory (MiB) and the step between
/// memory sizes. 256 units also take 512 MiB (below its step's start); see
/// [`fargate_memory_sizes`].
///
/// Source: the ECS API reference, `RegisterTaskDefinition` `cpu` and `memory`
/// (also in `docs/ecs-api-rules.md`, rule 16).
pub const FARGATE_SIZES: [(u32, u32, u32, u32); 7] = [
    // (cpu, smallest memory, largest memory, step)
    (256, 512, 2048, 1024),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Smallest ephemeral storage (GiB) a task may be given; below it, tasks get Fargate's
/// default of 20 GiB.
pub const MIN_EPHEMERAL_STORAGE_GIB: u32 = 21;
/// Largest ephemeral storage (GiB) Fargate offers.
pub const MAX_EPHEMERAL_STORAGE_GIB: u32 = 200;

/// The memory sizes (MiB) Fargate offers with `cpu` units, smallest first; empty when
/// Fargate offers no such CPU value.
pub fn fargate_memory_sizes(cpu: u32) -> Vec<u32> {
    let Some(&(_, low, high, step)) = FARGATE_SIZES.iter().find(|s| s.0 == cpu) else {
        return Vec::new();
    };
    let mut sizes: Vec<u32> = (low..=high).step_by(step as usize).collect();
    if cpu == 256 {
        // 256 units: 512 MiB, 1 GB and 2 GB.
        sizes = vec![512, 1024, 2048];
    }
    sizes
}

/// Whether Fargate offers `cpu` units with `memory` MiB.
pub fn is_fargate_size(cpu: u32, memory: u32) -> bool {
    fargate_memory_sizes(cpu).contains(&memory)
}

/// One provider of a capacity provider strategy (for ECS: `FARGATE`, `FARGATE_SPOT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CapacityProvider {
    /// The provider's name.
    pub name: String,
    /// Relative weight (ECS: 0-1000).
    pub weight: u32,
    /// Tasks placed on this provider first (ECS: 0-100000).
    pub base: u32,
}

impl CapacityProvider {
    /// Provider `name` with weight 1 and base 0.
    pub fn new(name: impl Into<String>) -> Self {
        CapacityProvider {
            name: name.into(),
            weight: 1,
            base: 0,
        }
    }

    /// The same provider with `weight` and `base`.
    pub fn with_weight(mut self, weight: u32, base: u32) -> Self {
        self.weight = weight;
        self.base = base;
        self
    }
}

/// The capacity a task is launched on: a named profile of the administrator's and the
/// capacity provider strategy it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CapacityChoice {
    /// The profile's name (`spot`, `on-demand`), for logs.
    pub profile: String,
    /// The providers, in order (never empty in a choice the driver makes).
    pub providers: Vec<CapacityProvider>,
}

impl CapacityChoice {
    /// Profile `profile` standing for `providers`.
    pub fn new(profile: impl Into<String>, providers: Vec<CapacityProvider>) -> Self {
        CapacityChoice {
            profile: profile.into(),
            providers,
        }
    }
}

impl fmt::Display for CapacityChoice {
    /// `spot (FARGATE_SPOT)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        write!(f, "{} ({})", self.profile, names.join(", "))
    }
}

/// What one job's task gets beyond its task definition. `None` / empty fields leave the
/// task definition's (or the backend configuration's) setting alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TaskShape {
    /// Task CPU in CPU units (1024 = 1 vCPU). Set together with `memory` (a valid Fargate
    /// combination, see [`FARGATE_SIZES`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Task memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Ephemeral storage in GiB (21-200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<u32>,
    /// The capacity to launch on, instead of the backend's configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityChoice>,
    /// The task role (for ECS an IAM role ARN: `taskRoleArn`), instead of the task
    /// definition's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_role: Option<String>,
    /// Subnets to use instead of the backend's configured ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Security groups added to the backend's configured ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

impl TaskShape {
    /// Whether the shape changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == TaskShape::default()
    }

    /// The same shape on `capacity`.
    pub fn with_capacity(mut self, capacity: Option<CapacityChoice>) -> Self {
        self.capacity = capacity;
        self
    }

    /// The same shape with `cpu` units and `memory` MiB.
    pub fn with_size(mut self, cpu: u32, memory: u32) -> Self {
        self.cpu = Some(cpu);
        self.memory = Some(memory);
        self
    }

    /// The same shape with `gib` of ephemeral storage.
    pub fn with_ephemeral_storage(mut self, gib: u32) -> Self {
        self.ephemeral_storage = Some(gib);
        self
    }

    /// The same shape with task role `role`.
    pub fn with_task_role(mut self, role: impl Into<String>) -> Self {
        self.task_role = Some(role.into());
        self
    }

    /// The same shape in `subnets` (instead of the backend's) with `security_groups` added.
    pub fn with_network(mut self, subnets: Vec<String>, security_groups: Vec<String>) -> Self {
        self.subnets = subnets;
        self.security_groups = security_groups;
        self
    }
}

impl fmt::Display for TaskShape {
    /// One line for the job log: `CPU 1024 units, memory 2048 MiB, ...`, "as the task
    /// definition says" for what the shape leaves alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_td = |v: Option<String>| v.unwrap_or_else(|| "task definition's".to_owned());
        write!(
            f,
            "CPU {}, memory {}, disk {}, capacity {}, task role {}",
            or_td(self.cpu.map(|c| format!("{c} units"))),
            or_td(self.memory.map(|m| format!("{m} MiB"))),
            self.ephemeral_storage
                .map_or("Fargate's default".to_owned(), |g| format!("{g} GiB")),
            self.capacity
                .as_ref()
                .map_or("runner default".to_owned(), ToString::to_string),
            or_td(self.task_role.clone()),
        )?;
        if !self.subnets.is_empty() {
            write!(f, ", subnets {}", self.subnets.join(" "))?;
        }
        if !self.security_groups.is_empty() {
            write!(
                f,
                ", extra security groups {}",
                self.security_groups.join(" ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_sizes_match_the_api_reference() {
        assert_eq!(fargate_memory_sizes(256), [512, 1024, 2048]);
        assert_eq!(fargate_memory_sizes(512), [1024, 2048, 3072, 4096]);
        assert_eq!(fargate_memory_sizes(1024).len(), 7);
        assert_eq!(fargate_memory_sizes(2048).first(), Some(&4096));
        assert_eq!(fargate_memory_sizes(2048).last(), Some(&16384));
        assert_eq!(fargate_memory_sizes(4096).last(), Some(&30720));
        assert_eq!(fargate_memory_sizes(8192)[..2], [16384, 20480]);
        assert_eq!(fargate_memory_sizes(16384).last(), Some(&122880));
        assert!(fargate_memory_sizes(3000).is_empty());
        assert!(is_fargate_size(256, 512) && !is_fargate_size(256, 4096));
    }

    #[test]
    fn shapes_read_well_and_serialize_compactly() {
        let shape = TaskShape {
            cpu: Some(1024),
            memory: Some(2048),
            capacity: Some(CapacityChoice::new(
                "spot",
                vec![CapacityProvider::new("FARGATE_SPOT")],
            )),
            ..TaskShape::default()
        };
        assert_eq!(
            shape.to_string(),
            "CPU 1024 units, memory 2048 MiB, disk Fargate's default, capacity spot (FARGATE_SPOT), task role task definition's"
        );
        assert!(TaskShape::default().is_empty() && !shape.is_empty());
        assert_eq!(serde_json::to_string(&TaskShape::default()).unwrap(), "{}");
        let json = serde_json::to_string(&shape).unwrap();
        assert_eq!(serde_json::from_str::<TaskShape>(&json).unwrap(), shape);
    }
}
