//! Which registry an image comes from, as the container runtime reads an image name, and
//! what to say when a pull fails.

use super::ImageRequest;
use crate::options::ImagePolicy;

/// Docker Hub's host, for names without one (`rust:1.85`, `bitnami/redis`).
pub const DOCKER_HUB: &str = "docker.io";

/// The registry host of image `name`, as Docker and containerd read a reference: the part
/// before the first `/` when it has a `.` or a `:` or is `localhost`
/// (`registry.gitlab.example.com/group/app:1`, `localhost:5000/x`), otherwise Docker Hub
/// ([`DOCKER_HUB`]; `index.docker.io` is Docker Hub too).
pub fn registry_host(name: &str) -> &str {
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            if first.eq_ignore_ascii_case("index.docker.io") {
                DOCKER_HUB
            } else {
                first
            }
        }
        _ => DOCKER_HUB,
    }
}

/// The hint of a task that could not pull an image: for each image of `containers` (of
/// `request`'s plan; every image of the plan when `containers` names none), its registry
/// and what the administrator configured for it, or the configuration it lacks.
pub fn pull_failure_hint(
    policy: &ImagePolicy,
    request: Option<&ImageRequest>,
    containers: &[String],
) -> String {
    let images: Vec<&str> = request
        .map(|r| {
            r.plan
                .containers
                .iter()
                .filter(|c| containers.is_empty() || containers.contains(&c.name))
                .filter_map(|c| c.image.as_deref())
                .collect()
        })
        .unwrap_or_default();
    if images.is_empty() {
        return "the task image could not be pulled: check the task definition's image and that the task's execution role may pull it".to_owned();
    }
    let mut hosts: Vec<String> = Vec::new();
    for image in images {
        let host = registry_host(image);
        let line = match policy.credentials_for(image) {
            Some(r) => format!(
                "the image {image:?} comes from registry {host}, pulled with the credentials {}: check that they hold a valid username and password for {host} and that the base task definition's execution role may read them",
                r.credentials
            ),
            None => format!(
                "the image {image:?} comes from registry {host}, for which this runner has no credentials: check the image's name, or, if {host} is private, ask the runner's administrator to add it ([[Fargate.Images.Registry]] Host = {host:?} with the credentials' reference; a registry the backend authenticates itself, such as ECR, needs the execution role's pull permissions instead)"
            ),
        };
        if !hosts.contains(&line) {
            hosts.push(line);
        }
    }
    hosts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_the_runtime_reads_them() {
        for (image, host) in [
            ("rust:1.85", "docker.io"),
            ("bitnami/redis:7", "docker.io"),
            ("index.docker.io/library/alpine", "docker.io"),
            (
                "registry.gitlab.example.com/g/app:1",
                "registry.gitlab.example.com",
            ),
            ("registry.example.com:5050/app", "registry.example.com:5050"),
            ("localhost/app", "localhost"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:ab",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            ),
            ("gcr.io/kaniko-project/executor:debug", "gcr.io"),
        ] {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }
}
