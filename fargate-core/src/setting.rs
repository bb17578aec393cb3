//! [`Setting`]: a setting of the driver that an error's hint refers to.
//!
//! The core names settings neutrally ("the ready timeout"); an embedder shows them in its own
//! configuration's words. The `fargate` CLI, for one, prints the `fargate.toml` key of each
//! setting in [`Error::settings`](crate::Error::settings) after the hint.

use std::fmt;

/// A setting an [`Error`](crate::Error)'s hint asks the reader (or the administrator) to
/// change. See [`Error::with_setting`](crate::Error::with_setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// Where job records and locks are kept ([`FileMetadataStore`](crate::FileMetadataStore)'s directory).
    MetadataDirectory,
    /// The namespace of this runner's jobs ([`DriverOptions::namespace`](crate::DriverOptions)).
    Namespace,
    /// How long prepare waits for a task to become ready.
    ReadyTimeout,
    /// How long a task the launcher accepted may stay invisible to its listing.
    ConsistencyWindow,
    /// The task definitions jobs may ask for.
    AllowedTaskDefinitions,
    /// Whether jobs may choose the platform version.
    AllowPlatformVersionOverride,
    /// The warm pool's size.
    PoolSize,
    /// The job images jobs may ask for.
    AllowedImages,
    /// The service images jobs may ask for.
    AllowedServices,
    /// How many services a job may ask for.
    MaxServices,
    /// The capacity profiles jobs may choose from.
    CapacityProfiles,
    /// The roles a project's jobs may ask for (project rules).
    ProjectTaskRoles,
    /// The most CPU a job may ask for.
    MaxCpu,
    /// The most memory a job may ask for.
    MaxMemory,
    /// The most ephemeral storage a job may ask for.
    MaxEphemeralStorage,
    /// The credentials of private registries.
    Registries,
    /// The CPU architectures jobs may ask for.
    CpuArchitectures,
}

impl Setting {
    /// Every setting, for embedders that check they name each one.
    pub const ALL: [Setting; 17] = [
        Setting::MetadataDirectory,
        Setting::Namespace,
        Setting::ReadyTimeout,
        Setting::ConsistencyWindow,
        Setting::AllowedTaskDefinitions,
        Setting::AllowPlatformVersionOverride,
        Setting::PoolSize,
        Setting::AllowedImages,
        Setting::AllowedServices,
        Setting::MaxServices,
        Setting::CapacityProfiles,
        Setting::ProjectTaskRoles,
        Setting::MaxCpu,
        Setting::MaxMemory,
        Setting::MaxEphemeralStorage,
        Setting::Registries,
        Setting::CpuArchitectures,
    ];

    /// The setting in words, as the core's hints name it (`"the ready timeout"`).
    pub fn describe(self) -> &'static str {
        match self {
            Setting::MetadataDirectory => "the metadata directory",
            Setting::Namespace => "the namespace",
            Setting::ReadyTimeout => "the ready timeout",
            Setting::ConsistencyWindow => "the consistency window",
            Setting::AllowedTaskDefinitions => "the allowed task definitions",
            Setting::AllowPlatformVersionOverride => "the platform version override",
            Setting::PoolSize => "the warm pool's size",
            Setting::AllowedImages => "the allowed job images",
            Setting::AllowedServices => "the allowed service images",
            Setting::MaxServices => "the most services per job",
            Setting::CapacityProfiles => "the capacity profiles",
            Setting::ProjectTaskRoles => "the project rules' task roles",
            Setting::MaxCpu => "the most CPU per job",
            Setting::MaxMemory => "the most memory per job",
            Setting::MaxEphemeralStorage => "the most ephemeral storage per job",
            Setting::Registries => "the private registries' credentials",
            Setting::CpuArchitectures => "the CPU architectures jobs may ask for",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}
