//! [`TaskShape`]: the size, capacity, role and extra network of one job's task, as the
//! driver decided it under the administrator's [`ShapePolicy`](crate::options::ShapePolicy).
//!
//! It is part of the launch request ([`TaskSpec::shape`](crate::TaskSpec::shape)), in
//! backend-neutral terms: every launcher receives it and maps what it can (the ECS launcher
//! to `RunTask` `overrides`, `capacityProviderStrategy` and `networkConfiguration`). An
//! empty shape ([`TaskShape::is_empty`]) means "as the task definition and the backend's
//! configuration say", and a launcher then sends nothing for it.
//!
//! [`SizeCatalog`] is what a backend offers: its CPU and memory combinations and its
//! range of ephemeral storage. The backend's crate provides it (the ECS launcher's:
//! `fargate_aws::fargate_sizes`); the driver rounds requests up to an offered size with it
//! and checks the administrator's limits against it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The task sizes a backend offers: for each CPU value (in CPU units, 1024 = 1 vCPU) the
/// memory sizes (MiB) it may have, and the ephemeral storage (GiB) a task may be given.
/// Provided by the backend's crate; the core only reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SizeCatalog {
    /// The backend's name, for messages ("Fargate has no task size of ...").
    pub backend: String,
    /// CPU units and their memory sizes, both ascending.
    sizes: Vec<(u32, Vec<u32>)>,
    /// The smallest and largest ephemeral storage (GiB) a task may be given; `None`: the
    /// backend offers no choice.
    pub storage: Option<(u32, u32)>,
    /// The storage a task has when given none (GiB), for messages.
    pub default_storage: Option<u32>,
}

impl SizeCatalog {
    /// The catalog of `backend` offering `sizes`: CPU units with their memory sizes (MiB),
    /// in any order (kept sorted); no storage choice.
    pub fn new(
        backend: impl Into<String>,
        sizes: impl IntoIterator<Item = (u32, Vec<u32>)>,
    ) -> Self {
        let mut sizes: Vec<(u32, Vec<u32>)> = sizes
            .into_iter()
            .map(|(cpu, mut memory)| {
                memory.sort_unstable();
                memory.dedup();
                (cpu, memory)
            })
            .filter(|(_, memory)| !memory.is_empty())
            .collect();
        sizes.sort_by_key(|(cpu, _)| *cpu);
        sizes.dedup_by_key(|(cpu, _)| *cpu);
        SizeCatalog {
            backend: backend.into(),
            sizes,
            storage: None,
            default_storage: None,
        }
    }

    /// The same catalog, offering `min..=max` GiB of ephemeral storage, `default` GiB when
    /// a task is given none.
    pub fn with_storage(mut self, min: u32, max: u32, default: u32) -> Self {
        self.storage = Some((min, max));
        self.default_storage = Some(default);
        self
    }

    /// The memory sizes (MiB) offered with `cpu` units, smallest first; empty when `cpu`
    /// is not offered.
    pub fn memory_sizes(&self, cpu: u32) -> &[u32] {
        self.sizes
            .iter()
            .find(|(c, _)| *c == cpu)
            .map_or(&[], |(_, m)| m.as_slice())
    }

    /// Whether `cpu` units with `memory` MiB are offered.
    pub fn offers(&self, cpu: u32, memory: u32) -> bool {
        self.memory_sizes(cpu).contains(&memory)
    }

    /// Every offered (CPU units, memory MiB), by CPU, then memory, ascending.
    pub fn sizes(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.sizes
            .iter()
            .flat_map(|(c, ms)| ms.iter().map(move |m| (*c, *m)))
    }

    /// The CPU units offered, ascending.
    pub fn cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.sizes.iter().map(|(c, _)| *c)
    }

    /// The smallest and largest CPU units offered; `None` for an empty catalog.
    pub fn cpu_range(&self) -> Option<(u32, u32)> {
        Some((self.sizes.first()?.0, self.sizes.last()?.0))
    }

    /// The smallest and largest memory (MiB) offered; `None` for an empty catalog.
    pub fn memory_range(&self) -> Option<(u32, u32)> {
        let low = self.sizes().map(|(_, m)| m).min()?;
        let high = self.sizes().map(|(_, m)| m).max()?;
        Some((low, high))
    }
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
    /// Task CPU in CPU units (1024 = 1 vCPU). Set together with `memory` (a combination
    /// the backend offers, see [`SizeCatalog`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Task memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Ephemeral storage in GiB (within the backend's [`SizeCatalog::storage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<u32>,
    /// The capacity to launch on, instead of the backend's configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityChoice>,
    /// The task role (a backend-specific name or identifier of the permissions the task's
    /// code gets), instead of the task definition's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_role: Option<String>,
    /// Subnets to use instead of the backend's configured ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Security groups added to the backend's configured ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Whether someone the backend authorizes may open a shell in the running task,
    /// without SSH, to debug it (for ECS: ECS Exec, `enableExecuteCommand`). Granted to the
    /// projects whose failed jobs' tasks are kept
    /// ([`ProjectRule::keep_failed_for`](crate::options::ProjectRule::keep_failed_for)).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub debug_access: bool,
    /// The CPU architecture the task runs on, instead of the task definition's (for ECS:
    /// `runtimePlatform.cpuArchitecture`, `X86_64` or `ARM64`, in upper case). A backend
    /// that cannot change it at launch runs the job's own task definition with it (ECS:
    /// only derived definitions, that is jobs with `image:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<String>,
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

    /// The same shape with shell access for debugging (see [`TaskShape::debug_access`]).
    pub fn with_debug_access(mut self) -> Self {
        self.debug_access = true;
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
                .map_or("default".to_owned(), |g| format!("{g} GiB")),
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
        if self.debug_access {
            write!(f, ", shell access for debugging")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_is_sorted_and_answers_what_it_offers() {
        let c = SizeCatalog::new(
            "Test",
            [(2048, vec![8192, 4096]), (1024, vec![2048]), (512, vec![])],
        )
        .with_storage(21, 200, 20);
        assert_eq!(
            c.sizes().collect::<Vec<_>>(),
            [(1024, 2048), (2048, 4096), (2048, 8192)]
        );
        assert!(c.offers(2048, 4096) && !c.offers(2048, 2048) && !c.offers(512, 1024));
        assert_eq!(c.memory_sizes(2048), [4096, 8192]);
        assert!(c.memory_sizes(3000).is_empty());
        assert_eq!(c.cpu_range(), Some((1024, 2048)));
        assert_eq!(c.memory_range(), Some((2048, 8192)));
        assert_eq!(c.storage, Some((21, 200)));
        assert_eq!(SizeCatalog::new("Empty", []).cpu_range(), None);
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
            "CPU 1024 units, memory 2048 MiB, disk default, capacity spot (FARGATE_SPOT), task role task definition's"
        );
        assert!(TaskShape::default().is_empty() && !shape.is_empty());
        assert_eq!(serde_json::to_string(&TaskShape::default()).unwrap(), "{}");
        let json = serde_json::to_string(&shape).unwrap();
        assert_eq!(serde_json::from_str::<TaskShape>(&json).unwrap(), shape);
    }
}
