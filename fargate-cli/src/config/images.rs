//! `[Fargate.Images]`: which job `image:` and `services:` run ([`ImagePolicy`]).

use fargate_core::options::{ImagePolicy, SecretPolicy};
use toml::de::DeTable;

use super::reader::{Reader, Table};

/// The file keys of [`ImagePolicy`]'s fields, for problems found after reading.
pub(super) fn file_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "images.allowed_images" => "[Fargate.Images] AllowedImages",
        "images.allowed_services" => "[Fargate.Images] AllowedServices",
        "images.max_services" => "[Fargate.Images] MaxServices",
        "images.job_ssh_port" => "[Fargate.Images] JobSSHPort",
        "images.bundle_source" => "[Fargate.Images] BundlePath",
        "images.default_builds_dir" => "[Fargate.Images] DefaultBuildsDir",
        "images.unused_after" => "[Fargate.Images] UnusedAfter",
        "images.max_derived_families" => "[Fargate.Images] MaxDerivedFamilies",
        "images.secrets" => "[Fargate.Images] ServiceSecrets",
        _ => return None,
    })
}

/// Reads `[Fargate.Images]` into `policy`.
pub(super) fn read_images(r: &mut Reader<'_>, table: &DeTable<'_>, policy: &mut ImagePolicy) {
    let mut t = Table::new("Fargate.Images", table);
    if let Some(list) = r.string_list(&mut t, "AllowedImages") {
        policy.allowed_images = list;
    }
    if let Some(list) = r.string_list(&mut t, "AllowedServices") {
        policy.allowed_services = list;
    }
    if let Some(n) = r.integer(&mut t, "MaxServices", 0..=7) {
        policy.max_services = n as usize;
    }
    if let Some(n) = r.integer(&mut t, "JobSSHPort", 1..=65535) {
        policy.job_ssh_port = n as u16;
    }
    if let Some(path) = r.nonempty(&mut t, "BundlePath") {
        policy.bundle_source = path;
    }
    if let Some(path) = r.nonempty(&mut t, "DefaultBuildsDir") {
        policy.default_builds_dir = path;
    }
    if let Some(d) = r.duration(&mut t, "UnusedAfter", false) {
        policy.unused_after = d;
    }
    if let Some(n) = r.integer(&mut t, "MaxDerivedFamilies", 1..=10_000) {
        policy.max_derived_families = n as usize;
    }
    if let Some(v) = r.take(&mut t, "ServiceSecrets") {
        match v.get_ref().as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("refuse") => policy.secrets = SecretPolicy::Refuse,
            Some("secrets-manager") => policy.secrets = SecretPolicy::Store,
            _ => r.type_error(&t, "ServiceSecrets", v, "\"refuse\" or \"secrets-manager\""),
        }
    }
    r.finish(&t);
}
