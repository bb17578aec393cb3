//! The `fargate.toml` key of each [`Setting`] an error's hint may name.

use fargate_core::Setting;

/// The key of `setting` in `fargate.toml`, as the configuration reference writes it.
pub(crate) fn file_key(setting: Setting) -> &'static str {
    match setting {
        Setting::MetadataDirectory => "[TaskMetadata] Directory",
        Setting::Namespace => "Namespace",
        Setting::ReadyTimeout => "[Fargate] ReadyTimeout",
        Setting::ConsistencyWindow => "[Fargate] ConsistencyWindow",
        Setting::AllowedTaskDefinitions => "[Fargate] AllowedTaskDefinitions",
        Setting::AllowPlatformVersionOverride => "[Fargate] AllowPlatformVersionOverride",
        Setting::PoolSize => "[Fargate.WarmPool] Size",
        Setting::AllowedImages => "[Fargate.Images] AllowedImages",
        Setting::AllowedServices => "[Fargate.Images] AllowedServices",
        Setting::MaxServices => "[Fargate.Images] MaxServices",
        Setting::CapacityProfiles => "[[Fargate.CapacityProfile]] Name",
        Setting::ProjectTaskRoles => "[[Fargate.ProjectRule]] TaskRoles",
        Setting::MaxCpu => "[Fargate.TaskShape] MaxCPU",
        Setting::MaxMemory => "[Fargate.TaskShape] MaxMemory",
        Setting::MaxEphemeralStorage => "[Fargate.TaskShape] MaxEphemeralStorage",
        Setting::Registries => "[[Fargate.Images.Registry]] CredentialsArn",
        Setting::CpuArchitectures => "[Fargate.TaskShape] AllowedCPUArchitectures",
        // A setting added to the core after this table: its words are the best we have.
        other => other.describe(),
    }
}

/// `hint`, followed by the `fargate.toml` keys of `settings` (`... (fargate.toml: [Fargate]
/// ReadyTimeout)`), when there are any.
pub(crate) fn hint_with_keys(hint: &str, settings: &[Setting]) -> String {
    if settings.is_empty() {
        return hint.to_owned();
    }
    let keys: Vec<&str> = settings.iter().map(|s| file_key(*s)).collect();
    format!("{hint} (fargate.toml: {})", keys.join(", "))
}
