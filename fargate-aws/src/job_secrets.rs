//! Secrets of one job on ECS: the secret variables of a job's image and services, with
//! `[Fargate.Images] ServiceSecrets = "secrets-manager"`
//! ([`SecretPolicy::Store`](fargate_core::options::SecretPolicy::Store)), and the job's
//! own registry logins its images pull with, with `[Fargate.Images]
//! JobRegistryCredentials` ([`ImageRequest::pull_logins`]).
//!
//! `RunTask`'s container overrides are readable by anyone allowed `ecs:DescribeTasks` (and
//! in the console, and in CloudTrail's record of the call), and ECS overrides cannot
//! reference secrets nor set a container's `repositoryCredentials`. So for a job whose
//! [`ImageRequest::has_job_secrets`], the launcher, before `RunTask`:
//!
//! 1. writes the variables' values to one Secrets Manager secret of the job,
//!    [`secret_name`] (`fargate/<job key>`), a JSON object keyed `<container>.<variable>`,
//!    and each pull login to a secret of its own, [`pull_login_secret_name`]
//!    (`fargate/<job key>/registry-<n>`), `{"username": ..., "password": ...}` as ECS's
//!    private registry authentication reads it; each tagged with the job's key, its
//!    deadline and its task definition family;
//! 2. registers a revision of the job's own family [`job_family`]
//!    (`<base family>-job-<job key>`) with the derived definition's content, each secret
//!    variable a container `secrets` entry whose `valueFrom` is
//!    `<secret ARN>:<container>.<variable>::`, and each container that pulls with a
//!    login carrying `repositoryCredentials.credentialsParameter = <its secret's ARN>`
//!    (ECS's agent reads them with the task's execution role when the task starts; the
//!    values are in no task definition, override or tag);
//! 3. runs the task from that revision.
//!
//! The job's own family, not a revision of the shared derived family: a per-job revision
//! there would become that family's latest and stop other jobs from reusing it.
//!
//! At cleanup ([`TaskLauncher::release`](fargate_core::TaskLauncher::release)) the
//! family's revisions are deregistered and deleted and the secrets are deleted without
//! recovery; `fargate gc` does the same for the secrets of its namespace whose job's
//! deadline passed [`GC_GRACE`] ago ([`EcsLauncher::prune_job_secrets`]). Every call to
//! Secrets Manager goes through the crate's own signed calls (`aws_api::AwsApi`).
//!
//! The launch cannot be replayed from a job record (which keeps the variables' names and
//! the logins' registries and users, never the values or passwords): a replay is refused,
//! and cleanup finds the task by its tags instead.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{Secret, TaskDefinitionStatus};
use fargate_core::images::{ImageRequest, PullLogin};
use fargate_core::{Error, ErrorKind, JobKey, Namespace, Result, TaskSpec};
use serde_json::{Value, json};
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::aws_api::{Protocol, Service};
use crate::derived::{MARKER_TAGS, repository_credentials};
use crate::derived_gc::family_of;
use crate::errors;
use crate::launcher::EcsLauncher;
use crate::tags::{DEADLINE, JOB_KEY, format_deadline, parse_deadline};

/// AWS Secrets Manager (JSON 1.1).
pub(crate) const SECRETS_MANAGER: Service = Service {
    prefix: "secretsmanager",
    id: "Secrets_Manager",
    protocol: Protocol::Json {
        version: "1.1",
        target_prefix: "secretsmanager",
    },
};

/// Prefix of the name of every job's secret.
pub const SECRET_PREFIX: &str = "fargate/";
/// Tag of a job's secret: the job's own task definition family ([`job_family`]).
pub const JOB_FAMILY: &str = "fargate:job-family";
/// How long after a job's deadline `fargate gc` removes its secret and family.
pub const GC_GRACE: Duration = Duration::from_secs(10 * 60);
/// How long after its creation gc removes a job's secret without a deadline tag.
pub const GC_WITHOUT_DEADLINE: Duration = Duration::from_secs(48 * 3600);
/// Longest task definition family ECS accepts.
const MAX_FAMILY: usize = 255;

/// The name of job `key`'s secret: `fargate/<job key>`.
pub fn secret_name(key: &JobKey) -> String {
    format!("{SECRET_PREFIX}{key}")
}

/// The name of the secret of job `key`'s `n`th pull login (from 1):
/// `fargate/<job key>/registry-<n>`.
pub fn pull_login_secret_name(key: &JobKey, n: usize) -> String {
    format!("{SECRET_PREFIX}{key}/registry-{n}")
}

/// The family of job `key`'s own task definition: `<base family>-job-<job key>`, the base
/// family cut so that the name fits ECS's 255 characters. It starts like the derived
/// families of the base (so the same IAM patterns cover it) but never ends in the 16 hex
/// digits of a derived family (gc's pruning of those leaves it alone).
pub fn job_family(base: &str, key: &JobKey) -> String {
    let suffix = format!("-job-{key}");
    let base: String = family_of(base)
        .chars()
        .take(MAX_FAMILY - suffix.len())
        .collect();
    format!("{base}{suffix}")
}

/// The key of `variable` of `container` in the secret's JSON object.
fn json_key(container: &str, variable: &str) -> String {
    format!("{container}.{variable}")
}

impl EcsLauncher {
    /// The task definition to run `spec` from when its `request` has secrets of the job
    /// (secret variables, pull logins): the job's secrets written and a revision of its
    /// own family registered from the derived definition `derived` (see the
    /// [module docs](self)).
    pub(crate) async fn job_definition(
        &self,
        spec: &TaskSpec,
        request: &ImageRequest,
        derived: &str,
    ) -> Result<String> {
        let (definition, tags) = self.describe_definition(derived).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the derived task definition {derived} is gone"),
            )
            .with_backend("ecs")
        })?;
        if definition.execution_role_arn.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "the job's {}, and the task definition {} has no execution role to read them with",
                    if request.from_secrets.is_empty() {
                        "images pull with the job's registry login"
                    } else {
                        "services have secret variables"
                    },
                    spec.task_definition
                ),
            )
            .with_backend("ecs")
            .with_hint(format!(
                "give the base task definition an execution role allowed secretsmanager:GetSecretValue on secrets named {SECRET_PREFIX}* (docs/images.md), or set [Fargate.Images] ServiceSecrets = \"refuse\" and JobRegistryCredentials = []"
            )));
        }
        let family = job_family(&spec.task_definition, &spec.key);
        let secret = if request.from_secrets.is_empty() {
            None
        } else {
            Some(self.put_job_secret(spec, request, &family).await?)
        };
        let mut pulls: Vec<(&PullLogin, String)> = Vec::new();
        for (i, login) in request.pull_logins.iter().enumerate() {
            let arn = self.put_pull_login(spec, login, i + 1, &family).await?;
            pulls.push((login, arn));
        }
        let mut containers = definition.container_definitions.clone().unwrap_or_default();
        for container in &mut containers {
            let Some(name) = container.name.clone() else {
                continue;
            };
            if let Some((_, arn)) = pulls.iter().find(|(l, _)| l.containers.contains(&name)) {
                container.repository_credentials = Some(repository_credentials(arn)?);
            }
            let (Some(secret), Some(vars)) = (&secret, request.from_secrets.get(&name)) else {
                continue;
            };
            let secrets = vars
                .keys()
                .map(|v| {
                    Secret::builder()
                        .name(v)
                        .value_from(format!("{secret}:{}::", json_key(&name, v)))
                        .build()
                        .map_err(|e| {
                            Error::new(ErrorKind::Unexpected, format!("container secret: {e}"))
                                .with_backend("ecs")
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            container
                .secrets
                .get_or_insert_with(Vec::new)
                .extend(secrets);
        }
        let mut job_tags: Vec<(String, String)> = tags
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .filter(|(k, _)| !MARKER_TAGS.contains(&k.as_str()) && k != JOB_KEY && k != DEADLINE)
            .collect();
        job_tags.push((JOB_KEY.to_owned(), spec.key.to_string()));
        if let Some(deadline) = spec.deadline {
            job_tags.push((DEADLINE.to_owned(), format_deadline(deadline)));
        }
        let volumes = definition.volumes.clone().unwrap_or_default();
        let arn = self
            .register_like(&family, &definition, containers, volumes, &job_tags)
            .await?;
        info!(task_definition = %arn, "registered the job's own task definition, its secrets read from Secrets Manager");
        Ok(arn)
    }

    /// Writes the values of `request`'s secret variables to job `spec.key`'s secret
    /// (created, or given a new value when a prepare of the same job made it before);
    /// its ARN.
    async fn put_job_secret(
        &self,
        spec: &TaskSpec,
        request: &ImageRequest,
        family: &str,
    ) -> Result<String> {
        let mut values = serde_json::Map::new();
        for (container, vars) in &request.from_secrets {
            for (name, value) in vars {
                let value = value.expose().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unsupported,
                        "the values of the job's secret variables are not kept: this launch cannot be replayed",
                    )
                    .with_backend("ecs")
                })?;
                values.insert(json_key(container, name), Value::from(value));
            }
        }
        let text = Zeroizing::new(Value::Object(values).to_string());
        self.put_secret(
            spec,
            &secret_name(&spec.key),
            &text,
            "Secret variables of one CI job's services (fargate driver); deleted at the job's cleanup",
            family,
        )
        .await
    }

    /// Writes `login` (the job's `n`th pull login) to its secret, as ECS's private registry
    /// authentication reads it; its ARN.
    async fn put_pull_login(
        &self,
        spec: &TaskSpec,
        login: &PullLogin,
        n: usize,
        family: &str,
    ) -> Result<String> {
        let password = login.password.expose().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "the job's registry login is not kept: this launch cannot be replayed",
            )
            .with_backend("ecs")
        })?;
        let text =
            Zeroizing::new(json!({"username": login.username, "password": password}).to_string());
        self.put_secret(
            spec,
            &pull_login_secret_name(&spec.key, n),
            &text,
            "One CI job's registry login, valid for the job's life (fargate driver); deleted at the job's cleanup",
            family,
        )
        .await
    }

    /// Creates secret `name` of job `spec.key` holding `text`, tagged with the job's key,
    /// deadline and `family` (or gives it the new value and tags when a prepare of the same
    /// job made it before); its ARN.
    async fn put_secret(
        &self,
        spec: &TaskSpec,
        name: &str,
        text: &str,
        description: &str,
        family: &str,
    ) -> Result<String> {
        let mut tags = vec![
            json!({"Key": JOB_KEY, "Value": spec.key.as_str()}),
            json!({"Key": JOB_FAMILY, "Value": family}),
        ];
        if let Some(deadline) = spec.deadline {
            tags.push(json!({"Key": DEADLINE, "Value": format_deadline(deadline)}));
        }
        let create = json!({
            "Name": name,
            "Description": description,
            "SecretString": text,
            "Tags": tags,
        });
        let answer = match self
            .api
            .json(SECRETS_MANAGER, "CreateSecret", &create)
            .await
        {
            Ok(answer) => answer,
            Err(e) if e_code(&e) == Some("ResourceExistsException") => {
                debug!(secret = %name, "the job's secret exists (an earlier prepare); replacing its value");
                let put = json!({"SecretId": name, "SecretString": text});
                let answer = self
                    .api
                    .json(SECRETS_MANAGER, "PutSecretValue", &put)
                    .await
                    .map_err(|e| Error::from(errors::sdk(e, "PutSecretValue")))?;
                let retag = json!({"SecretId": name, "Tags": tags});
                self.api
                    .json(SECRETS_MANAGER, "TagResource", &retag)
                    .await
                    .map_err(|e| Error::from(errors::sdk(e, "TagResource")))?;
                answer
            }
            Err(e) => return Err(errors::sdk(e, "CreateSecret").error),
        };
        answer["ARN"].as_str().map(str::to_owned).ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "Secrets Manager answered without the secret's ARN",
            )
            .with_backend("secretsmanager")
        })
    }

    /// Removes what a launch of `spec` made for its secrets: the job family's revisions
    /// (deregistered, then deleted) and the job's secrets (deleted without recovery).
    /// Nothing for a spec without secrets of the job; what is already gone is fine.
    pub(crate) async fn release_job_secrets(&self, spec: &TaskSpec) -> Result<()> {
        let Some(request) = spec.images.as_deref().filter(|r| r.has_job_secrets()) else {
            return Ok(());
        };
        let family = job_family(&spec.task_definition, &spec.key);
        self.remove_family(&family).await?;
        if !request.from_secrets.is_empty() {
            self.delete_secret(&secret_name(&spec.key)).await?;
        }
        for n in 1..=request.pull_logins.len() {
            self.delete_secret(&pull_login_secret_name(&spec.key, n))
                .await?;
        }
        Ok(())
    }

    /// Deregisters and deletes every revision of `family`.
    async fn remove_family(&self, family: &str) -> Result<()> {
        for arn in self.revisions(family, TaskDefinitionStatus::Active).await? {
            self.ecs_client()
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(|e| {
                    Error::from(errors::sdk(e, "DeregisterTaskDefinition"))
                        .with_context("task definition", &arn)
                })?;
        }
        let inactive = self
            .revisions(family, TaskDefinitionStatus::Inactive)
            .await?;
        self.delete_definitions(&inactive).await
    }

    /// Deletes secret `id` (name or ARN) without recovery; `false` when it did not exist.
    async fn delete_secret(&self, id: &str) -> Result<bool> {
        let input = json!({"SecretId": id, "ForceDeleteWithoutRecovery": true});
        match self.api.json(SECRETS_MANAGER, "DeleteSecret", &input).await {
            Ok(_) => {
                debug!(secret = %id, "deleted the job's secret");
                Ok(true)
            }
            Err(e) if e_code(&e) == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(errors::sdk(e, "DeleteSecret").error),
        }
    }

    /// `fargate gc`: removes the secrets of `namespace`'s jobs (and their own families)
    /// whose deadline passed [`GC_GRACE`] ago (or, without a deadline tag, created
    /// [`GC_WITHOUT_DEADLINE`] ago): what a cleanup that never ran left. A dry run reads
    /// only.
    pub async fn prune_job_secrets(
        &self,
        namespace: &Namespace,
        dry_run: bool,
    ) -> Result<JobSecretsReport> {
        let prefix = format!("{SECRET_PREFIX}{namespace}-");
        let now = SystemTime::now();
        let mut report = JobSecretsReport {
            dry_run,
            ..JobSecretsReport::default()
        };
        let mut next: Option<String> = None;
        loop {
            let mut input = json!({
                "MaxResults": 100,
                "Filters": [{"Key": "name", "Values": [prefix]}],
            });
            if let Some(token) = &next {
                input["NextToken"] = Value::from(token.as_str());
            }
            let page = self
                .api
                .json(SECRETS_MANAGER, "ListSecrets", &input)
                .await
                .map_err(|e| Error::from(errors::sdk(e, "ListSecrets")))?;
            for secret in page["SecretList"].as_array().into_iter().flatten() {
                let Some(name) = secret["Name"].as_str().filter(|n| n.starts_with(&prefix)) else {
                    continue;
                };
                let tag = |key: &str| {
                    secret["Tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|t| {
                            (t["Key"].as_str() == Some(key)).then(|| t["Value"].as_str())?
                        })
                };
                let expires = match tag(DEADLINE).and_then(parse_deadline) {
                    Some(deadline) => deadline + GC_GRACE,
                    None => {
                        let created = secret["CreatedDate"].as_f64().unwrap_or(0.0);
                        UNIX_EPOCH + Duration::from_secs_f64(created.max(0.0)) + GC_WITHOUT_DEADLINE
                    }
                };
                if now < expires {
                    report.kept += 1;
                    continue;
                }
                if dry_run {
                    report.removed.push(name.to_owned());
                    continue;
                }
                let removed = async {
                    if let Some(family) = tag(JOB_FAMILY) {
                        self.remove_family(family).await?;
                    }
                    self.delete_secret(name).await
                }
                .await;
                match removed {
                    Ok(_) => {
                        info!(secret = %name, "removed the secret of a job past its deadline");
                        report.removed.push(name.to_owned());
                    }
                    Err(err) => report.failed.push((name.to_owned(), err.chain())),
                }
            }
            next = page["NextToken"].as_str().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(report)
    }
}

/// The error code of a failed call, if the service gave one.
fn e_code(e: &crate::aws_api::CallError) -> Option<&str> {
    use aws_smithy_types::error::metadata::ProvideErrorMetadata as _;
    e.code()
}

/// What [`EcsLauncher::prune_job_secrets`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobSecretsReport {
    /// Secrets (names) removed with their job's family.
    pub removed: Vec<String>,
    /// Secrets kept: their job's deadline has not passed long enough.
    pub kept: usize,
    /// Secrets whose removal failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

impl fmt::Display for JobSecretsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        writeln!(
            f,
            "job secrets: {verb} {}, kept {} (jobs not past their deadline)",
            self.removed.len(),
            self.kept
        )?;
        for name in &self.removed {
            writeln!(f, "  {verb} {name}")?;
        }
        for (name, err) in &self.failed {
            writeln!(f, "  failed {name}: {err}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_job_and_fit_ecs() {
        let key = JobKey::parse("ci-42").unwrap();
        assert_eq!(secret_name(&key), "fargate/ci-42");
        assert_eq!(pull_login_secret_name(&key, 2), "fargate/ci-42/registry-2");
        assert_eq!(
            job_family("arn:aws:ecs:eu-west-1:1:task-definition/fargate-ci:7", &key),
            "fargate-ci-job-ci-42"
        );
        let long = "f".repeat(255);
        let family = job_family(&long, &key);
        assert_eq!(family.len(), 255);
        assert!(family.ends_with("-job-ci-42"));
    }
}
