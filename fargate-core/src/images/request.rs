//! [`ImageRequest`]: a job's checked `image:` and `services:`, ready to launch.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::plan::{JOB_CONTAINER, PlanInput, ServiceInput, TaskPlan};
use super::secrets;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobImage, JobResponse, SecretValue, is_host_name};
use crate::options::DriverOptions;
use crate::setting::Setting;

/// What the launcher needs to run a job in its own image: the derived definition's content,
/// the containers' plain variables (launch overrides) and their secret ones (the
/// backend's secret store).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageRequest {
    /// The derived task definition's content.
    pub plan: TaskPlan,
    /// Plain environment per added container (the image's and services' variables that are
    /// not secret): the launcher sends it as container overrides, which anyone who may
    /// describe the task can read. Never in a task definition. `Debug` shows the names only.
    #[serde(alias = "secrets")]
    pub environment: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret environment per added container ([`super::secrets`]), with
    /// [`SecretPolicy::Store`](crate::options::SecretPolicy::Store) only: the launcher puts
    /// the values in its secret store for this job and has the task read them from there.
    /// Their values are never serialized (a record keeps the names, with
    /// [`SecretValue::missing`] values) nor shown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub from_secrets: BTreeMap<String, BTreeMap<String, SecretValue>>,
    /// The job's own registry logins its containers pull with
    /// ([`ImagePolicy::job_registry_credentials`](crate::options::ImagePolicy::job_registry_credentials)):
    /// the launcher keeps each in its secret store for the job's life and has the task's
    /// backend pull with it. The passwords are never serialized (a record keeps the
    /// registry, user and containers) nor shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_logins: Vec<PullLogin>,
    /// `(container, image)` of each service, for the job log.
    pub services: Vec<(String, String)>,
    /// The job image (`None`: the task image), for the job log.
    pub job_image: Option<String>,
}

impl fmt::Debug for ImageRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn names<V>(m: &BTreeMap<String, BTreeMap<String, V>>) -> BTreeMap<&str, Vec<&str>> {
            m.iter()
                .map(|(c, vars)| (c.as_str(), vars.keys().map(String::as_str).collect()))
                .collect()
        }
        f.debug_struct("ImageRequest")
            .field("plan", &self.plan)
            .field("environment", &names(&self.environment))
            .field("from_secrets", &names(&self.from_secrets))
            .field("pull_logins", &self.pull_logins)
            .field("services", &self.services)
            .field("job_image", &self.job_image)
            .finish()
    }
}

impl ImageRequest {
    /// Whether the request has secret variables whose values this process does not know
    /// (read back from a record): a launch of it cannot be replayed.
    pub fn secrets_missing(&self) -> bool {
        self.from_secrets
            .values()
            .flat_map(BTreeMap::values)
            .chain(self.pull_logins.iter().map(|l| &l.password))
            .any(|v| v.expose().is_none())
    }

    /// Whether the launch needs secrets of its own job: secret variables or pull logins.
    pub fn has_job_secrets(&self) -> bool {
        !self.from_secrets.is_empty() || !self.pull_logins.is_empty()
    }

    /// The job's login that the container running `image` pulls with, if any.
    pub fn pull_login_of_image(&self, image: &str) -> Option<&PullLogin> {
        let names: Vec<&str> = self
            .plan
            .containers
            .iter()
            .filter(|c| c.image.as_deref() == Some(image))
            .map(|c| c.name.as_str())
            .collect();
        self.pull_logins
            .iter()
            .find(|l| l.containers.iter().any(|c| names.contains(&c.as_str())))
    }
}

/// One of the job's registry logins ([`RegistryLogin`](crate::job::RegistryLogin)) and
/// the containers of the plan that pull with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullLogin {
    /// The registry as the payload names it.
    pub registry: String,
    /// The username.
    pub username: String,
    /// The password (the job token): never serialized nor shown.
    pub password: SecretValue,
    /// The containers whose images it pulls.
    pub containers: Vec<String>,
}

/// What to do with a job's `image:` and `services:`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageDecision {
    /// The job runs in the task image, as without images (it asked for none).
    TaskImage,
    /// Images are disabled and the job asked for some: it runs in the task image, and the
    /// job log says so with this line.
    Ignored(String),
    /// The job runs in a derived task definition.
    Derived(Box<ImageRequest>),
}

/// Checks `response`'s `image:` and `services:` against `options.images` and derives the
/// task plan, with no backend call: a refused image or service is an
/// [`ErrorKind::NotAllowed`] error (the job's fault, a build failure) naming the allowed
/// patterns.
pub fn decide(options: &DriverOptions, response: Option<&JobResponse>) -> Result<ImageDecision> {
    let policy = &options.images;
    let (image, services) = match response {
        Some(r) => expand_names(r)?,
        None => (None, Vec::new()),
    };
    let (image, services) = (image.as_ref(), &services[..]);
    if image.is_none() && services.is_empty() {
        return Ok(ImageDecision::TaskImage);
    }
    if !policy.enabled() {
        let mut asked: Vec<String> = image
            .iter()
            .map(|i| format!("image {:?}", i.name))
            .collect();
        asked.extend(services.iter().map(|s| format!("service {:?}", s.name)));
        return Ok(ImageDecision::Ignored(format!(
            "the job's {} ignored: this runner runs every job in its task image (job images are not enabled on this runner)",
            match asked.len() {
                1 => format!("{} is", asked[0]),
                _ => format!("{} are", asked.join(", ")),
            }
        )));
    }
    if let Some(image) = image
        && !policy.allows_image(&image.name)
    {
        return Err(refused(
            "image",
            &image.name,
            &policy.allowed_images,
            Setting::AllowedImages,
        ));
    }
    if services.len() > policy.max_services {
        return Err(Error::new(
            ErrorKind::NotAllowed,
            format!(
                "the job has {} services; this runner allows at most {}",
                services.len(),
                policy.max_services
            ),
        )
        .with_hint(
            "remove services, or ask the runner's administrator to allow more services per job",
        )
        .with_setting(Setting::MaxServices));
    }
    for service in services {
        if !policy.allows_service(&service.name) {
            return Err(refused(
                "service",
                &service.name,
                &policy.allowed_services,
                Setting::AllowedServices,
            ));
        }
        if let Some(bad) = service.aliases.iter().find(|a| !is_host_name(a)) {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "the service {:?} has alias {bad:?}, which is not a host name",
                    service.name
                ),
            )
            .with_hint("use letters, digits, '.', '-' and '_' in service aliases"));
        }
    }
    let builds_dir = options
        .builds_dir
        .as_deref()
        .unwrap_or(&policy.default_builds_dir);
    let plan = TaskPlan::derive(&PlanInput {
        helper: &options.task.container_name,
        builds_dir,
        bundle_source: &policy.bundle_source,
        job_ssh_port: policy.job_ssh_port,
        job_image: image.map(|i| i.name.as_str()),
        services: services
            .iter()
            .map(|s| ServiceInput {
                image: &s.name,
                entrypoint: s.entrypoint.as_deref(),
                command: s.command.as_deref(),
                hosts: s.host_names(),
            })
            .collect(),
    });
    let mut plan = plan;
    for c in &mut plan.containers {
        if let Some(image) = &c.image {
            c.credentials = policy.credentials_for(image).map(|r| r.credentials.clone());
        }
    }
    let pull_logins = pull_logins(policy, &plan, response);
    let sensitive = response.map_or(&[][..], |r| &r.sensitive[..]);
    let names: Vec<String> = plan.services().map(|c| c.name.clone()).collect();
    let mut containers: Vec<(String, String, &JobImage)> = Vec::new();
    if let Some(image) = image {
        containers.push((
            JOB_CONTAINER.to_owned(),
            format!("image {:?}", image.name),
            image,
        ));
    }
    for (name, service) in names.iter().zip(services) {
        containers.push((name.clone(), format!("service {:?}", service.name), service));
    }
    let mut environment = BTreeMap::new();
    let mut from_secrets = BTreeMap::new();
    for (container, what, image) in containers {
        if let Some(name) = image
            .variables
            .keys()
            .find(|n| is_driver_variable(&plan, &container, n))
        {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "the job sets variable {name} for container {container}, which the driver sets itself"
                ),
            )
            .with_hint(format!(
                "remove {name} from the job's image:/services: variables: SSH_PUBLIC_KEY and FARGATE_* variables belong to the driver"
            )));
        }
        let (plain, secret) = secrets::split(
            &what,
            &image.variables,
            &image.sensitive,
            sensitive,
            policy.secrets,
        )?;
        if !plain.is_empty() {
            environment.insert(container.clone(), plain);
        }
        if !secret.is_empty() {
            from_secrets.insert(container, secret);
        }
    }
    Ok(ImageDecision::Derived(Box::new(ImageRequest {
        services: names
            .into_iter()
            .zip(services.iter().map(|s: &JobImage| s.name.clone()))
            .collect(),
        job_image: image.map(|i| i.name.clone()),
        plan,
        environment,
        from_secrets,
        pull_logins,
    })))
}

/// The job's registry logins the plan's containers pull with: for each container whose
/// image's host the administrator lets pull with the job's login
/// ([`ImagePolicy::uses_job_login`](crate::options::ImagePolicy::uses_job_login)), the
/// login gitlab-runner would use ([`super::login_for`]); containers of one login together.
fn pull_logins(
    policy: &crate::options::ImagePolicy,
    plan: &TaskPlan,
    response: Option<&JobResponse>,
) -> Vec<PullLogin> {
    let logins = response.map_or(&[][..], |r| &r.registry_logins[..]);
    let mut out: Vec<PullLogin> = Vec::new();
    for c in &plan.containers {
        let Some(image) = c.image.as_deref() else {
            continue;
        };
        if c.credentials.is_some() || !policy.uses_job_login(image) {
            continue;
        }
        let Some(login) = super::login_for(image, logins) else {
            continue;
        };
        match out.iter_mut().find(|p| {
            p.registry == login.url && p.username == login.username && p.password == login.password
        }) {
            Some(p) => p.containers.push(c.name.clone()),
            None => out.push(PullLogin {
                registry: login.url.clone(),
                username: login.username.clone(),
                password: login.password.clone(),
                containers: vec![c.name.clone()],
            }),
        }
    }
    out
}

/// The job's image and services with their names expanded from the job's variables as
/// gitlab-runner expands them ([`JobVariables::expand`](crate::job::JobVariables::expand)),
/// before any check: the allowlist sees what would be pulled. An image whose name expands
/// to nothing is no image (the runner's default image: here the task image); a service's
/// is refused. A name that takes a masked or file-type variable's value is refused: it
/// would be readable in the task definition.
fn expand_names(response: &JobResponse) -> Result<(Option<JobImage>, Vec<JobImage>)> {
    let expand = |what: &str, image: &JobImage| -> Result<JobImage> {
        let expanded = response.variables.expand(&image.name);
        if let Some((name, why)) = expanded.secret {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "the job's {what} {:?} refers to the {why} variable {name}, whose value would be readable in the task definition",
                    image.name
                ),
            )
            .with_hint(format!(
                "name the {what} without {name} (a public variable or the name itself)"
            )));
        }
        Ok(JobImage {
            name: expanded.value.trim().to_owned(),
            ..image.clone()
        })
    };
    let image = match &response.image {
        Some(i) => Some(expand("image", i)?).filter(|i| !i.name.is_empty()),
        None => None,
    };
    let services = response
        .services
        .iter()
        .map(|s| {
            let expanded = expand("service", s)?;
            if expanded.name.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotAllowed,
                    format!("the job's service {:?} expands to an empty name", s.name),
                )
                .with_hint("define the variables the service's name uses"));
            }
            Ok(expanded)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((image, services))
}

/// Whether `name` is the driver's own in `container`: `SSH_PUBLIC_KEY`, any `FARGATE_*`
/// name (the driver's settings for the task: the SSH port, the deadline, the service host
/// names) and whatever the plan sets there. A job's variable must not replace them: a
/// container override wins over the task definition's environment.
fn is_driver_variable(plan: &TaskPlan, container: &str, name: &str) -> bool {
    name == "SSH_PUBLIC_KEY"
        || name.starts_with("FARGATE_")
        || plan
            .container(container)
            .is_some_and(|c| c.environment.contains_key(name))
}

fn refused(what: &str, name: &str, patterns: &[String], setting: Setting) -> Error {
    Error::new(
        ErrorKind::NotAllowed,
        format!(
            "the job's {what} {name:?} is not allowed on this runner; allowed {what}s: {}",
            if patterns.is_empty() {
                "none".to_owned()
            } else {
                patterns.join(", ")
            }
        ),
    )
    .with_hint(format!(
        "use an allowed {what}, or ask the runner's administrator to add a pattern to {setting}"
    ))
    .with_setting(setting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::plan::{BUNDLE_CONTAINER, SERVICE_HOSTS_ENV, SSH_PORT_ENV};
    use crate::options::ImagePolicy;

    fn options(images: &[&str], services: &[&str]) -> DriverOptions {
        DriverOptions::builder()
            .task_definition("td")
            .images(ImagePolicy {
                allowed_images: images.iter().map(|s| (*s).to_owned()).collect(),
                allowed_services: services.iter().map(|s| (*s).to_owned()).collect(),
                ..ImagePolicy::default()
            })
            .build()
            .unwrap()
    }

    fn job(image: Option<JobImage>, services: Vec<JobImage>) -> JobResponse {
        let mut r = JobResponse::new(1);
        r.image = image;
        r.services = services;
        r
    }

    #[test]
    fn no_image_no_services_is_the_task_image() {
        let o = options(&["*"], &["*"]);
        assert_eq!(decide(&o, None).unwrap(), ImageDecision::TaskImage);
        assert_eq!(
            decide(&o, Some(&job(None, vec![]))).unwrap(),
            ImageDecision::TaskImage
        );
    }

    #[test]
    fn disabled_images_are_ignored_with_one_line() {
        let o = options(&[], &[]);
        let r = job(
            Some(JobImage::new("rust:1.85")),
            vec![JobImage::new("redis:7")],
        );
        let ImageDecision::Ignored(line) = decide(&o, Some(&r)).unwrap() else {
            panic!("not ignored")
        };
        assert_eq!(
            line,
            "the job's image \"rust:1.85\", service \"redis:7\" are ignored: this runner runs every job in its task image (job images are not enabled on this runner)"
        );
        let ImageDecision::Ignored(line) =
            decide(&o, Some(&job(Some(JobImage::new("alpine")), vec![]))).unwrap()
        else {
            panic!("not ignored")
        };
        assert!(
            line.starts_with("the job's image \"alpine\" is ignored"),
            "{line}"
        );
    }

    #[test]
    fn a_refused_image_names_the_patterns() {
        let o = options(&["registry.example.com/ci/*", "alpine:*"], &["postgres:*"]);
        let err = decide(&o, Some(&job(Some(JobImage::new("evil/miner")), vec![]))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        assert!(
            err.to_string().contains(
                "image \"evil/miner\" is not allowed on this runner; allowed images: registry.example.com/ci/*, alpine:*"
            ),
            "{err}"
        );
        let err = decide(
            &o,
            Some(&job(
                Some(JobImage::new("alpine:3")),
                vec![JobImage::new("redis:7")],
            )),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("allowed services: postgres:*"),
            "{err}"
        );
        let o = options(&["*"], &[]);
        let err = decide(&o, Some(&job(None, vec![JobImage::new("redis:7")]))).unwrap_err();
        assert!(err.to_string().contains("allowed services: none"), "{err}");
    }

    #[test]
    fn too_many_services_or_bad_aliases_are_refused() {
        let o = options(&["*"], &["*"]);
        let five = vec![JobImage::new("redis"); 5];
        assert_eq!(
            decide(&o, Some(&job(None, five))).unwrap_err().kind(),
            ErrorKind::NotAllowed
        );
        let bad = JobImage::new("redis").with_alias("x;rm -rf /");
        assert_eq!(
            decide(&o, Some(&job(None, vec![bad]))).unwrap_err().kind(),
            ErrorKind::NotAllowed
        );
    }

    #[test]
    fn service_variables_stay_out_of_the_plan() {
        let o = options(&["*"], &["postgres:*"]);
        let r = job(
            Some(JobImage::new("rust:1.85").with_variable("JOB_VAR", "v")),
            vec![
                JobImage::new("postgres:16")
                    .with_alias("db")
                    .with_variable("POSTGRES_PASSWORD", "s3cret"),
            ],
        );
        let ImageDecision::Derived(req) = decide(&o, Some(&r)).unwrap() else {
            panic!("not derived")
        };
        assert_eq!(req.environment["service-1"]["POSTGRES_PASSWORD"], "s3cret");
        assert_eq!(req.environment[JOB_CONTAINER]["JOB_VAR"], "v");
        let plan = serde_json::to_string(&req.plan).unwrap();
        assert!(
            !plan.contains("s3cret") && !plan.contains("POSTGRES_PASSWORD"),
            "{plan}"
        );
        assert!(!format!("{req:?}").contains("s3cret"));
        assert_eq!(
            req.services,
            [("service-1".to_owned(), "postgres:16".to_owned())]
        );
        assert_eq!(req.job_image.as_deref(), Some("rust:1.85"));
        let job_container = req.plan.container(JOB_CONTAINER).unwrap();
        assert_eq!(job_container.environment[SERVICE_HOSTS_ENV], "db");
        assert!(req.plan.container(BUNDLE_CONTAINER).is_some());
        assert_eq!(req.plan.helper_mounts[0].path, "/builds");
    }

    /// A job image's or service's variables must not change the driver's settings in the
    /// task: the job container's SSH port (`FARGATE_SSH_PORT` is in the definition, and an
    /// override would win), its key, its deadline.
    #[test]
    fn job_variables_cannot_set_the_drivers_own() {
        let o = options(&["*"], &["*"]);
        for (image, service) in [
            (
                JobImage::new("rust").with_variable(SSH_PORT_ENV, "22"),
                None,
            ),
            (
                JobImage::new("rust").with_variable(SERVICE_HOSTS_ENV, "x"),
                None,
            ),
            (
                JobImage::new("rust").with_variable("SSH_PUBLIC_KEY", "k"),
                None,
            ),
            (
                JobImage::new("rust").with_variable("FARGATE_TASK_DEADLINE", "9999999999"),
                None,
            ),
            (
                JobImage::new("rust"),
                Some(JobImage::new("redis").with_variable("FARGATE_SSH_PORT", "22")),
            ),
        ] {
            let err =
                decide(&o, Some(&job(Some(image), service.into_iter().collect()))).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotAllowed);
            assert!(
                err.to_string().contains("which the driver sets itself"),
                "{err}"
            );
        }
        let fine = JobImage::new("rust").with_variable("RUST_LOG", "debug");
        assert!(decide(&o, Some(&job(Some(fine), vec![]))).is_ok());
    }

    /// A service variable that holds a secret job variable never goes into the overrides'
    /// environment: refused by default, naming it; with the secret store, passed apart,
    /// and its value is in no serialized form (the job record).
    #[test]
    fn secret_service_variables_are_refused_or_kept_apart() {
        use crate::job::{SensitiveVariable, Sensitivity};
        use crate::options::SecretPolicy;
        let mut r = job(
            Some(JobImage::new("rust:1.85")),
            vec![
                JobImage::new("postgres:16")
                    .with_variable("POSTGRES_PASSWORD", "$DB_PASSWORD")
                    .with_variable("POSTGRES_DB", "test"),
            ],
        );
        r.sensitive = vec![SensitiveVariable::new(
            "DB_PASSWORD",
            "hunter2-hunter2",
            Sensitivity::Masked,
        )];
        let mut o = options(&["*"], &["*"]);
        let err = decide(&o, Some(&r)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        assert!(
            err.to_string().contains(
                "service \"postgres:16\" has a secret variable: POSTGRES_PASSWORD refers to the masked variable DB_PASSWORD"
            ),
            "{err}"
        );
        // Marked by the payload itself.
        let marked = job(
            None,
            vec![JobImage::new("redis").with_secret_variable("TOKEN", "t", Sensitivity::File)],
        );
        assert!(
            decide(&o, Some(&marked))
                .unwrap_err()
                .to_string()
                .contains("TOKEN is a file-type variable")
        );

        o.images.secrets = SecretPolicy::Store;
        let ImageDecision::Derived(req) = decide(&o, Some(&r)).unwrap() else {
            panic!("not derived")
        };
        assert_eq!(
            req.environment["service-1"].keys().collect::<Vec<_>>(),
            ["POSTGRES_DB"]
        );
        assert_eq!(
            req.from_secrets["service-1"]["POSTGRES_PASSWORD"].expose(),
            Some("hunter2-hunter2")
        );
        assert!(!req.secrets_missing());
        let stored = serde_json::to_string(&req).unwrap();
        assert!(
            !stored.contains("hunter2") && stored.contains("POSTGRES_PASSWORD"),
            "{stored}"
        );
        assert!(!format!("{req:?}").contains("hunter2"));
        let back: ImageRequest = serde_json::from_str(&stored).unwrap();
        assert!(back.secrets_missing());
        assert_eq!(back.environment, req.environment);
    }

    /// Names are expanded from the job's variables as gitlab-runner does, and the
    /// allowlist checks the expanded name: a written name that matches a pattern cannot
    /// bring in another image through a variable.
    #[test]
    fn names_are_expanded_before_the_allowlist_check() {
        use crate::job::{JobVariables, Sensitivity};
        let o = options(
            &[
                "registry.gitlab.example.com/group/app/*",
                "$CI_REGISTRY_IMAGE/*",
            ],
            &["postgres:*"],
        );
        let mut r = job(
            Some(JobImage::new("$CI_REGISTRY_IMAGE/builder:${TAG}")),
            vec![JobImage::new("postgres:$PG")],
        );
        r.variables = JobVariables::new()
            .with("CI_REGISTRY_IMAGE", "registry.gitlab.example.com/group/app")
            .with("TAG", "1.2")
            .with("PG", "16");
        let ImageDecision::Derived(req) = decide(&o, Some(&r)).unwrap() else {
            panic!("not derived")
        };
        assert_eq!(
            req.job_image.as_deref(),
            Some("registry.gitlab.example.com/group/app/builder:1.2")
        );
        assert_eq!(
            req.plan.container(JOB_CONTAINER).unwrap().image.as_deref(),
            Some("registry.gitlab.example.com/group/app/builder:1.2")
        );
        assert_eq!(req.services[0].1, "postgres:16");

        // Smuggling: the written name matches the (literal) pattern "$CI_REGISTRY_IMAGE/*",
        // the pipeline points the variable elsewhere: the expanded name is refused.
        r.variables = JobVariables::new().with("CI_REGISTRY_IMAGE", "evil.example.com/miner");
        let err = decide(&o, Some(&r)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        assert!(
            err.to_string()
                .contains("image \"evil.example.com/miner/builder:\" is not allowed"),
            "{err}"
        );
        // A service through a variable, the same.
        r.image = None;
        r.services = vec![JobImage::new("$SVC")];
        r.variables = JobVariables::new().with("SVC", "evil/miner");
        let err = decide(&o, Some(&r)).unwrap_err();
        assert!(
            err.to_string()
                .contains("service \"evil/miner\" is not allowed"),
            "{err}"
        );
        // An empty expansion: the task image for `image:`, refused for a service.
        r.image = Some(JobImage::new("$NOTHING"));
        r.services = vec![];
        assert_eq!(decide(&o, Some(&r)).unwrap(), ImageDecision::TaskImage);
        r.services = vec![JobImage::new("${NOTHING}")];
        assert!(
            decide(&o, Some(&r))
                .unwrap_err()
                .to_string()
                .contains("expands to an empty name")
        );
        // A masked variable's value never goes into a task definition's image.
        r.services = vec![];
        r.image = Some(JobImage::new("registry.gitlab.example.com/group/app/$KEY"));
        r.variables = JobVariables::new().with_sensitive("KEY", "k3y-value", Sensitivity::Masked);
        let err = decide(&o, Some(&r)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        assert!(
            err.to_string()
                .contains("refers to the masked variable KEY")
                && !err.to_string().contains("k3y-value"),
            "{err}"
        );
    }

    /// Records written before the split name the plain variables `secrets`.
    #[test]
    fn an_older_record_reads_its_variables_as_plain_environment() {
        let o = options(&["*"], &["*"]);
        let ImageDecision::Derived(req) = decide(
            &o,
            Some(&job(
                None,
                vec![JobImage::new("redis").with_variable("A", "b")],
            )),
        )
        .unwrap() else {
            panic!("not derived")
        };
        let new = serde_json::to_string(&req).unwrap();
        // The request's own field comes after the plan's (whose containers have theirs).
        let at = new.rfind("\"environment\"").unwrap();
        let old = format!(
            "{}\"secrets\"{}",
            &new[..at],
            &new[at + "\"environment\"".len()..]
        );
        let back: ImageRequest = serde_json::from_str(&old).unwrap();
        assert_eq!(back.environment["service-1"]["A"], "b");
    }

    /// With the administrator's opt-in, the containers of a host the payload has a login
    /// for pull with it (one entry per login, the containers together), the admin's
    /// credentials win for their host, and the record's form has no password.
    #[test]
    fn job_logins_go_to_the_containers_of_their_registry_when_allowed() {
        let reg = "registry.gitlab.example.com";
        let mut payload = job(
            Some(JobImage::new(format!("{reg}/g/app/builder:1"))),
            vec![
                JobImage::new(format!("{reg}/g/app/db:2")),
                JobImage::new("redis:7"),
                JobImage::new("hub.example.com/x/y"),
            ],
        );
        payload.registry_logins = vec![
            crate::job::RegistryLogin::new(reg, "gitlab-ci-token", "glcbt-64-job-token"),
            crate::job::RegistryLogin::new(
                "hub.example.com",
                "gitlab-ci-token",
                "glcbt-64-job-token",
            ),
        ];
        let mut o = options(&["*"], &["*"]);
        let decided = |o: &DriverOptions| match decide(o, Some(&payload)).unwrap() {
            ImageDecision::Derived(req) => req,
            other => panic!("not derived: {other:?}"),
        };
        // Off by default.
        assert!(decided(&o).pull_logins.is_empty());
        o.images.job_registry_credentials = vec![reg.into()];
        let req = decided(&o);
        assert_eq!(req.pull_logins.len(), 1);
        let login = &req.pull_logins[0];
        assert_eq!(login.registry, reg);
        assert_eq!(login.username, "gitlab-ci-token");
        assert_eq!(login.password.expose(), Some("glcbt-64-job-token"));
        assert_eq!(login.containers, [JOB_CONTAINER, "service-1"]);
        assert!(req.has_job_secrets() && !req.secrets_missing());
        assert!(req.plan.containers.iter().all(|c| c.credentials.is_none()));
        assert_eq!(
            req.pull_login_of_image(&format!("{reg}/g/app/db:2"))
                .map(|l| &l.registry),
            Some(&reg.to_owned())
        );
        assert!(req.pull_login_of_image("redis:7").is_none());
        // The plan (the shared definition's content) does not depend on the logins.
        o.images.job_registry_credentials = vec!["*".into()];
        let all = decided(&o);
        assert_eq!(all.plan, req.plan);
        assert_eq!(all.pull_logins.len(), 2);
        assert_eq!(all.pull_logins[1].containers, ["service-3"]);
        // Records keep no password; a launch from one cannot be replayed.
        let stored = serde_json::to_string(&req).unwrap();
        assert!(
            !stored.contains("glcbt") && !format!("{req:?}").contains("glcbt"),
            "{stored}"
        );
        let back: ImageRequest = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.pull_logins[0].containers, login.containers);
        assert!(back.secrets_missing());
        // The administrator's credentials for the host win.
        o.images.registries = vec![crate::options::RegistryCredentials::new(reg, "arn:deploy")];
        let admin = decided(&o);
        assert_eq!(admin.pull_logins.len(), 1, "{:?}", admin.pull_logins);
        assert_eq!(admin.pull_logins[0].registry, "hub.example.com");
        assert_eq!(
            admin
                .plan
                .container(JOB_CONTAINER)
                .unwrap()
                .credentials
                .as_deref(),
            Some("arn:deploy")
        );
    }
}
