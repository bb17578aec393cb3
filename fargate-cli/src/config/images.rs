//! `[Fargate.Images]`: which job `image:` and `services:` run ([`ImagePolicy`]).

use fargate_core::options::{ImagePolicy, RegistryCredentials, SecretPolicy};
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
        "images.registries.host" => "[[Fargate.Images.Registry]] Host",
        "images.registries.credentials" => "[[Fargate.Images.Registry]] CredentialsArn",
        "images.job_registry_credentials" => "[Fargate.Images] JobRegistryCredentials",
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
    if let Some(list) = r.string_list(&mut t, "JobRegistryCredentials") {
        policy.job_registry_credentials = list.iter().map(|h| h.to_ascii_lowercase()).collect();
    }
    if let Some(list) = r.take(&mut t, "Registry") {
        match list.get_ref().as_array() {
            None => r.type_error(
                &t,
                "Registry",
                list,
                "an array of tables ([[Fargate.Images.Registry]])",
            ),
            Some(items) => {
                for item in items {
                    let Some(table) = item.get_ref().as_table() else {
                        r.type_error(&t, "Registry", item, "a table");
                        continue;
                    };
                    let mut e = Table::new("Fargate.Images.Registry", table);
                    let host = r.nonempty(&mut e, "Host");
                    let arn = r.nonempty(&mut e, "CredentialsArn");
                    match (host, arn) {
                        (Some(host), Some(arn)) => policy
                            .registries
                            .push(RegistryCredentials::new(host.to_ascii_lowercase(), arn)),
                        _ => r.error(
                            item.span(),
                            "[[Fargate.Images.Registry]]".into(),
                            "needs Host and CredentialsArn".into(),
                        ),
                    }
                    r.finish(&e);
                }
            }
        }
    }
    r.finish(&t);
}
