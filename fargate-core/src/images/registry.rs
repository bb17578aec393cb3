//! Which registry an image comes from, as the container runtime reads an image name, and
//! what to say when a pull fails.

use super::ImageRequest;
use crate::job::RegistryLogin;
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

/// The job's login that gitlab-runner would pull `image` with, from the payload's
/// registry logins `logins`, matched as gitlab-runner matches them
/// (`helpers/docker/auth`): the image's path (its registry host, lowercase, Docker Hub's
/// `docker.io` for names without one, then its repository, without tag or digest) and each
/// of its parents down to the host are looked up among the logins' paths (a login's URL
/// without `http(s)://`, path and port kept, tag and trailing `/` dropped, host lowercase;
/// with a scheme, its host only); the longest match wins, and among logins of one path
/// the last.
pub fn login_for<'a>(image: &str, logins: &'a [RegistryLogin]) -> Option<&'a RegistryLogin> {
    if logins.is_empty() {
        return None;
    }
    let paths: Vec<String> = logins.iter().map(|l| login_path(&l.url)).collect();
    let mut path = image_path(image);
    while !path.is_empty() {
        if let Some(i) = paths.iter().rposition(|p| *p == path) {
            return logins.get(i);
        }
        path = path.rfind('/').map_or("", |i| &path[..i]).to_owned();
    }
    None
}

/// The path gitlab-runner looks credentials up by for image `name`.
fn image_path(name: &str) -> String {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let (dir, last) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let last = last.split_once(':').map_or(last, |(n, _)| n);
    let path = format!("{dir}{last}");
    let path = match name.split_once('/') {
        Some((first, _)) if first.eq_ignore_ascii_case("index.docker.io") => {
            format!("{DOCKER_HUB}{}", &path[first.len()..])
        }
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => path,
        _ => format!("{DOCKER_HUB}/{path}"),
    };
    lowercase_host(&path)
}

/// The path of a login's registry URL, as gitlab-runner normalizes it.
fn login_path(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            let host = rest.split('/').next().unwrap_or_default();
            return if host == "index.docker.io" {
                DOCKER_HUB.to_owned()
            } else {
                host.to_owned()
            };
        }
    }
    let path = url.trim_end_matches('/');
    let path = match (path.rfind(':'), path.rfind('/')) {
        (Some(tag), Some(slash)) if tag > slash => &path[..tag],
        _ => path,
    };
    lowercase_host(path)
}

fn lowercase_host(path: &str) -> String {
    match path.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", host.to_ascii_lowercase()),
        None => path.to_ascii_lowercase(),
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
        let job_login = request.and_then(|r| r.pull_login_of_image(image));
        let line = match (policy.credentials_for(image), job_login) {
            (None, Some(login)) => format!(
                "the image {image:?} comes from registry {host}, pulled with the job's own registry login for {} (user {}, the job token, kept in a secret of the job): check that the job's project may read that image (the job token reaches the projects whose CI/CD job token allowlist admits it) and that the base task definition's execution role may read the job's secret",
                login.registry, login.username
            ),
            (Some(r), _) => format!(
                "the image {image:?} comes from registry {host}, pulled with the credentials {}: check that they hold a valid username and password for {host} and that the base task definition's execution role may read them",
                r.credentials
            ),
            (None, None) if policy.uses_job_login(image) => format!(
                "the image {image:?} comes from registry {host}, for which this runner has no credentials and the job's payload no registry login: check the image's name, or, if {host} is private, ask the runner's administrator to add it ([[Fargate.Images.Registry]] Host = {host:?} with the credentials' reference)"
            ),
            (None, None) => format!(
                "the image {image:?} comes from registry {host}, for which this runner has no credentials: check the image's name, or, if {host} is private, ask the runner's administrator to add it ([[Fargate.Images.Registry]] Host = {host:?} with the credentials' reference, or [Fargate.Images] JobRegistryCredentials = [{host:?}] to pull with each job's own registry login; a registry the backend authenticates itself, such as ECR, needs the execution role's pull permissions instead)"
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

    fn logins(urls: &[&str]) -> Vec<RegistryLogin> {
        urls.iter()
            .enumerate()
            .map(|(i, u)| RegistryLogin::new(*u, format!("user{i}"), "job-token"))
            .collect()
    }

    fn matched(image: &str, urls: &[&str]) -> Option<String> {
        let logins = logins(urls);
        login_for(image, &logins).map(|l| l.username.clone())
    }

    #[test]
    fn job_logins_match_images_as_gitlab_runner_matches_them() {
        let gitlab = ["registry.gitlab.example.com", "gitlab.example.com:443"];
        for (image, want) in [
            ("registry.gitlab.example.com/g/app/builder:1", Some("user0")),
            ("Registry.GitLab.example.com/g/app", Some("user0")),
            ("registry.gitlab.example.com/g/app@sha256:ab", Some("user0")),
            (
                "gitlab.example.com:443/g/dependency_proxy/containers/alpine:3",
                Some("user1"),
            ),
            ("gitlab.example.com/g/app", None),
            ("registry.gitlab.example.com.evil.example/g/app", None),
            ("evil.example/registry.gitlab.example.com/app", None),
            ("alpine:3", None),
        ] {
            assert_eq!(matched(image, &gitlab).as_deref(), want, "{image}");
        }
        // Schemes, trailing slashes and Docker Hub's names.
        for (image, url) in [
            ("alpine:3", "https://index.docker.io/v1/"),
            ("library/alpine:3", "docker.io"),
            ("index.docker.io/library/alpine", "docker.io"),
            ("reg.example.com:5050/a/b:2", "http://reg.example.com:5050/"),
            ("reg.example.com/a/b:2", "reg.example.com/"),
        ] {
            assert_eq!(
                matched(image, &[url]).as_deref(),
                Some("user0"),
                "{image} {url}"
            );
        }
        // The longest path wins, then the last login of a path.
        let paths = [
            "reg.example.com",
            "reg.example.com/team",
            "reg.example.com/team/",
        ];
        assert_eq!(
            matched("reg.example.com/team/app:1", &paths).as_deref(),
            Some("user2")
        );
        assert_eq!(
            matched("reg.example.com/other/app", &paths).as_deref(),
            Some("user0")
        );
        assert_eq!(
            matched("reg.example.com/team", &paths[..1]).as_deref(),
            Some("user0")
        );
        assert_eq!(matched("reg.example.com/a", &[]), None);
    }

    /// The hint names what the runner has for the image's registry: the job's login, the
    /// opt-in without a login in the payload, or both keys when it has nothing.
    #[test]
    fn the_pull_hint_names_the_jobs_login_or_the_missing_configuration() {
        use crate::images::{ImageDecision, decide};
        use crate::job::{JobImage, JobResponse};
        use crate::options::DriverOptions;
        let image = "registry.gitlab.example.com/g/app:1";
        let mut payload = JobResponse::new(3);
        payload.image = Some(JobImage::new(image));
        payload.registry_logins = vec![RegistryLogin::new(
            "registry.gitlab.example.com",
            "gitlab-ci-token",
            "glcbt-64-token",
        )];
        let hint = |hosts: &[&str], payload: &JobResponse| {
            let options = DriverOptions::builder()
                .task_definition("td")
                .images(ImagePolicy {
                    job_registry_credentials: hosts.iter().map(|h| (*h).to_owned()).collect(),
                    ..ImagePolicy::allowing(["*"], ["*"])
                })
                .build()
                .unwrap();
            let ImageDecision::Derived(req) = decide(&options, Some(payload)).unwrap() else {
                panic!("not derived")
            };
            pull_failure_hint(&options.images, Some(&req), &[])
        };
        let with_login = hint(&["registry.gitlab.example.com"], &payload);
        assert!(
            with_login.contains("pulled with the job's own registry login for registry.gitlab.example.com (user gitlab-ci-token")
                && !with_login.contains("glcbt"),
            "{with_login}"
        );
        let nothing = hint(&[], &payload);
        assert!(
            nothing.contains(
                "[Fargate.Images] JobRegistryCredentials = [\"registry.gitlab.example.com\"]"
            ),
            "{nothing}"
        );
        payload.registry_logins.clear();
        let no_login = hint(&["*"], &payload);
        assert!(
            no_login.contains("the job's payload no registry login")
                && !no_login.contains("JobRegistryCredentials"),
            "{no_login}"
        );
    }
}
