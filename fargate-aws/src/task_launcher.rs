//! [`TaskLauncher`] for [`EcsLauncher`]: `RunTask` (with subnet failover and derived task
//! definitions), `DescribeTasks`, `StopTask`, finding and listing a job's or a namespace's
//! tasks, adopting a pool task.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, LaunchType,
    NetworkConfiguration, PropagateTags, Task, TaskField, TaskOverride,
};
use fargate_core::{
    DebugCommands, Error, ErrorKind, HostKey, JobKey, Launched, LaunchedBatch, ListedTask,
    Namespace, Result, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskStatus,
};
use tracing::{debug, warn};

use crate::config::Capacity;
use crate::errors::{self, Classified};
use crate::failover::{attempt_token, subnet_attempts};
use crate::launcher::EcsLauncher;
use crate::tags;
use crate::task::{
    MAX_DESCRIBE_TASKS, MAX_STOP_REASON, ecs_tags, eni_detail, status_with_private_address,
    tag_value, task_state,
};

/// One subnet attempt of a launch: its subnets and its client token.
struct SubnetAttempt<'a> {
    subnets: &'a [String],
    token: &'a str,
}

impl EcsLauncher {
    fn cluster_of<'a>(&'a self, task: &'a TaskRef) -> &'a str {
        task.cluster
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.config.cluster)
    }

    async fn run_task(
        &self,
        spec: &TaskSpec,
        task_definition: &str,
        overrides: TaskOverride,
        attempt: SubnetAttempt<'_>,
        tags: &[(String, String)],
        count: u32,
    ) -> std::result::Result<LaunchedBatch, Classified> {
        let unexpected = |e: aws_sdk_ecs::error::BuildError| Classified {
            error: Error::new(ErrorKind::InvalidConfig, format!("RunTask request: {e}"))
                .with_backend("ecs"),
            try_next_subnet: false,
        };
        let mut security_groups = self.config.security_groups.clone();
        for g in &spec.shape.security_groups {
            if !security_groups.contains(g) {
                security_groups.push(g.clone());
            }
        }
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(attempt.subnets.to_vec()))
            .set_security_groups(Some(security_groups))
            .assign_public_ip(if self.config.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(unexpected)?;
        let mut req = self
            .ecs
            .run_task()
            .cluster(&self.config.cluster)
            .task_definition(task_definition)
            .count(count as i32)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .overrides(overrides)
            .client_token(attempt.token)
            .started_by(tags::started_by(&spec.key))
            .set_tags(Some(ecs_tags(tags)));
        if let Some(version) = spec.platform_version.as_deref().filter(|v| !v.is_empty()) {
            req = req.platform_version(version);
        }
        // A launch type and a capacity provider strategy exclude each other: the job's
        // capacity replaces the configured one, whichever it is.
        let strategy: Vec<(&str, i32, i32)> = match (&spec.shape.capacity, &self.config.capacity) {
            (Some(choice), _) => choice
                .providers
                .iter()
                .map(|p| (p.name.as_str(), p.weight as i32, p.base as i32))
                .collect(),
            (None, Capacity::Strategy(items)) => items
                .iter()
                .map(|i| (i.provider.as_str(), i.weight, i.base))
                .collect(),
            (None, Capacity::Fargate) => Vec::new(),
        };
        if strategy.is_empty() {
            req = req.launch_type(LaunchType::Fargate);
        }
        for (provider, weight, base) in strategy {
            req = req.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(weight)
                    .base(base)
                    .build()
                    .map_err(unexpected)?,
            );
        }
        // ECS Exec: for every task, or for the tasks of projects that keep failed jobs'
        // tasks for debugging.
        if self.config.enable_execute_command || spec.shape.debug_access {
            req = req.enable_execute_command(true);
        }
        if self.config.propagate_task_definition_tags {
            req = req.propagate_tags(PropagateTags::TaskDefinition);
        }
        if self.config.enable_ecs_managed_tags {
            req = req.enable_ecs_managed_tags(true);
        }
        let out = req.send().await.map_err(|e| errors::sdk(e, "RunTask"))?;
        let tasks: Vec<Launched> = out
            .tasks()
            .iter()
            .filter_map(|t| {
                let task = TaskRef {
                    id: t.task_arn()?.to_owned(),
                    cluster: Some(self.config.cluster.clone()),
                };
                // The answer describes the task as DescribeTasks would; a public IP is
                // never in it (that takes EC2), so only the private one is used.
                let status = (!self.config.use_public_ip).then(|| status_with_private_address(t));
                Some(Launched::new(task).with_status(status))
            })
            .collect();
        let mut failures = out.failures().iter().map(|f| {
            errors::classify(
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default(),
                "RunTask",
            )
        });
        if tasks.is_empty() {
            return Err(failures.next().unwrap_or_else(|| Classified {
                error: Error::new(
                    ErrorKind::Unexpected,
                    "RunTask: ECS returned neither a task nor a failure",
                )
                .with_backend("ecs"),
                try_next_subnet: false,
            }));
        }
        // Some of the call's tasks started: the others are not tried in another subnet
        // (the started ones would be left out of a second call's answer).
        Ok(LaunchedBatch::new(tasks).with_failures(failures.map(|c| c.error).collect()))
    }

    /// One DescribeTasks of `task`; `None` when ECS does not know it.
    pub(crate) async fn describe_task(
        &self,
        task: &TaskRef,
        with_tags: bool,
    ) -> Result<Option<Task>> {
        let mut req = self
            .ecs
            .describe_tasks()
            .cluster(self.cluster_of(task))
            .tasks(&task.id);
        if with_tags {
            req = req.include(TaskField::Tags);
        }
        let out = req
            .send()
            .await
            .map_err(|e| Error::from(errors::sdk(e, "DescribeTasks")))?;
        if let Some(t) = out.tasks().first() {
            return Ok(Some(t.clone()));
        }
        match out.failures().first() {
            Some(f) if f.reason() != Some("MISSING") => Err(errors::classify(
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default(),
                "DescribeTasks",
            )
            .error),
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl TaskLauncher for EcsLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        self.launch_observed(spec).await.map(|l| l.task)
    }

    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        let batch = self.launch_batch(spec, 1).await?;
        batch.tasks.into_iter().next().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "RunTask: ECS returned no task").with_backend("ecs")
        })
    }

    fn max_launch_batch(&self) -> u32 {
        crate::MAX_RUN_TASK_COUNT
    }

    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        if !(1..=crate::MAX_RUN_TASK_COUNT).contains(&count) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "RunTask starts 1 to {} tasks a call, not {count}",
                    crate::MAX_RUN_TASK_COUNT
                ),
            )
            .with_backend("ecs"));
        }
        let tags = tags::task_tags(&self.config.tags, &spec.job, spec.deadline);
        // The refusals come before any call: an oversized override, a replay of a launch
        // whose secret values are not kept, a base without helper.
        let overrides = crate::overrides::task_overrides(spec)?;
        let secrets = spec.images.as_deref().filter(|r| r.has_job_secrets());
        if secrets.is_some_and(|r| r.secrets_missing()) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the values of the job's secret variables or registry login are not kept: a launch with them cannot be replayed",
            )
            .with_backend("ecs"));
        }
        let mut task_definition = self.task_definition_for(spec).await?;
        if let Some(request) = secrets {
            // The job's own family: gc never marks it, so it needs no check again.
            task_definition = self.job_definition(spec, request, &task_definition).await?;
        }
        // A derived definition was checked usable just now; gc deregisters only what it
        // marked DEREGISTER_GRACE ago, so a RunTask sent within RECHECK_AFTER of the check
        // is safe (crate::derived_gc). A later subnet attempt checks again.
        let mut checked = Instant::now();
        // A project rule's subnets replace the configured ones.
        let subnets = if spec.shape.subnets.is_empty() {
            &self.config.subnets
        } else {
            &spec.shape.subnets
        };
        let attempts = subnet_attempts(subnets, self.config.subnet_failover);
        let mut failures = Vec::new();
        for (i, subnets) in attempts.iter().enumerate() {
            if spec.images.is_some()
                && secrets.is_none()
                && checked.elapsed() >= crate::derived::RECHECK_AFTER
            {
                task_definition = self.task_definition_for(spec).await?;
                checked = Instant::now();
            }
            let token = attempt_token(&spec.client_token, i);
            debug!(job = %spec.key, attempt = i, ?subnets, "RunTask");
            match self
                .run_task(
                    spec,
                    &task_definition,
                    overrides.clone(),
                    SubnetAttempt {
                        subnets,
                        token: &token,
                    },
                    &tags,
                    count,
                )
                .await
            {
                Ok(launched) => {
                    debug!(job = %spec.key, tasks = launched.tasks.len(), failures = launched.failures.len(), "tasks accepted");
                    return Ok(launched);
                }
                Err(c) if c.try_next_subnet && i + 1 < attempts.len() => {
                    warn!(job = %spec.key, ?subnets, error = %c.error.chain(), "RunTask failed in {}; trying the next subnet", subnets.join(", "));
                    failures.push(c.error.message().to_owned());
                }
                Err(c) => {
                    let mut error = c.error;
                    if !failures.is_empty() {
                        error = error
                            .with_context("other subnet attempts", failures.len())
                            .with_context("their errors", failures.join("; "));
                    }
                    return Err(error);
                }
            }
        }
        Err(
            Error::new(ErrorKind::InvalidConfig, "no subnet to launch the task in")
                .with_backend("ecs"),
        )
    }

    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.release_job_secrets(spec).await
    }

    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        self.host_keys_of(task, container).await
    }

    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        let Some(t) = self.describe_task(task, false).await? else {
            return Ok(TaskStatus::missing());
        };
        let status = status_with_private_address(&t);
        if !self.config.use_public_ip {
            return Ok(status);
        }
        let address = match eni_detail(&t, "networkInterfaceId") {
            Some(eni) if !status.state.is_terminal() => self.public_ip(&task.id, eni).await?,
            _ => self.cached_public_ip(&task.id),
        };
        Ok(status.with_address(address))
    }

    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        // Always StopTask, never gated on a describe: right after RunTask, DescribeTasks may
        // not know the task yet (eventual consistency), and a stopped task is stopped again
        // without harm.
        let reason = if reason.trim().is_empty() {
            "stopped by the fargate driver"
        } else {
            reason
        };
        let reason: String = reason.chars().take(MAX_STOP_REASON).collect();
        match self
            .ecs
            .stop_task()
            .cluster(self.cluster_of(task))
            .task(&task.id)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(StopOutcome::Stopping),
            Err(e) => {
                let c = errors::sdk(e, "StopTask");
                if errors::is_task_not_found(&c.error) {
                    Ok(StopOutcome::NotFound)
                } else {
                    Err(c.error)
                }
            }
        }
    }

    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        // ListTasks: `startedBy` must be the only filter (the API reference); the desired
        // status is then RUNNING by default, which includes tasks still provisioning.
        let started_by = tags::started_by(key);
        let mut arns = BTreeSet::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .ecs
                .list_tasks()
                .cluster(&self.config.cluster)
                .started_by(&started_by)
                .max_results(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "ListTasks")))?;
            arns.extend(out.task_arns().iter().cloned());
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        let arns: Vec<String> = arns.into_iter().collect();
        let mut found = Vec::new();
        for chunk in arns.chunks(MAX_DESCRIBE_TASKS) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "DescribeTasks")))?;
            for t in out.tasks() {
                // The job-key tag, when present, must name this job (startedBy is a hash).
                let ours = match tag_value(t, tags::JOB_KEY) {
                    Some(k) => k == key.as_str(),
                    None => t.started_by() == Some(started_by.as_str()),
                };
                let state = task_state(
                    t.last_status().unwrap_or_default(),
                    t.desired_status().unwrap_or_default(),
                );
                if ours
                    && !state.is_terminal()
                    && let Some(arn) = t.task_arn()
                {
                    found.push(TaskRef {
                        id: arn.to_owned(),
                        cluster: Some(self.config.cluster.clone()),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        self.list_paged(namespace, crate::MAX_LIST_TASKS).await
    }

    /// Relabels `task` (a warm pool slot's, or a failed job's kept for debugging with a
    /// later deadline) as a launch of `spec` would have labelled it:
    /// one `TagResource` on the task's ARN with exactly the tags `RunTask` would have sent
    /// for `spec` ([`tags::task_tags`]: the administrator's tags, the job key, the
    /// namespace, the `gitlab:*` tags and the deadline), overwriting the slot's values;
    /// then one `UntagResource` of the driver's own tags ([`tags::OWN_TAGS`]) that `spec`
    /// does not set (a slot's deadline when the job has none), so that no slot value
    /// survives. Needs `ecs:TagResource` and `ecs:UntagResource` on the cluster's tasks
    /// (`examples/iam-policy.json`).
    ///
    /// `startedBy` cannot change after `RunTask`: it keeps naming the slot. So
    /// [`find`](TaskLauncher::find)`(spec.key)`, which lists by `startedBy`, does **not**
    /// return an adopted task (the job's record names it), while
    /// [`list`](TaskLauncher::list)`(namespace)`, which reads the job-key tag, reports it
    /// under the job's key and deadline, as gc needs.
    ///
    /// `task.id` must be the task's ARN (what [`launch`](TaskLauncher::launch) returns):
    /// ECS tags resources by ARN only.
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        let with_context = |e: Error| {
            let e = if e.kind() == ErrorKind::PermissionDenied {
                e.with_hint(
                    "relabelling a task (a warm task a job takes over, a failed job's task kept \
                     for debugging) needs ecs:TagResource and ecs:UntagResource on the \
                     cluster's tasks, without the ecs:CreateAction condition of the statement \
                     that tags at RunTask (see examples/iam-policy.json)",
                )
            } else {
                e
            };
            e.with_context("task", &task.id)
                .with_context("job", &spec.key)
        };
        if !task.id.starts_with("arn:") {
            return Err(with_context(
                Error::new(
                    ErrorKind::InvalidInput,
                    "adopting a task needs its ARN (ECS tags resources by ARN only)",
                )
                .with_backend("ecs"),
            ));
        }
        let tags = tags::task_tags(&self.config.tags, &spec.job, spec.deadline);
        self.ecs
            .tag_resource()
            .resource_arn(&task.id)
            .set_tags(Some(ecs_tags(&tags)))
            .send()
            .await
            .map_err(|e| with_context(errors::sdk(e, "TagResource").error))?;
        // The liveness mark is left as it is: a slot has none, and a kept task's job is
        // judged by its kept time, not by signs of life.
        let stale: Vec<String> = tags::OWN_TAGS
            .iter()
            .filter(|k| **k != tags::ALIVE && !tags.iter().any(|(key, _)| key == *k))
            .map(|k| (*k).to_owned())
            .collect();
        if !stale.is_empty() {
            self.ecs
                .untag_resource()
                .resource_arn(&task.id)
                .set_tag_keys(Some(stale))
                .send()
                .await
                .map_err(|e| with_context(errors::sdk(e, "UntagResource").error))?;
        }
        debug!(job = %spec.key, task = %task, "task adopted: relabelled for the job");
        Ok(())
    }

    /// One `TagResource` on the task's ARN setting [`tags::ALIVE`] to `at` (RFC 3339,
    /// whole seconds), which [`list`](TaskLauncher::list) reads back as
    /// [`ListedTask::alive_at`](fargate_core::ListedTask::alive_at). Needs
    /// `ecs:TagResource` on the cluster's tasks, as [`adopt`](TaskLauncher::adopt) does.
    /// `task.id` must be the task's ARN.
    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        let with_context = |e: Error| {
            let e = if e.kind() == ErrorKind::PermissionDenied {
                e.with_hint(
                    "marking a task alive (when this host cannot reach the DynamoDB table) \
                     needs ecs:TagResource on the cluster's tasks, without the \
                     ecs:CreateAction condition of the statement that tags at RunTask (see \
                     examples/iam-policy.json)",
                )
            } else {
                e
            };
            e.with_context("task", &task.id)
        };
        if !task.id.starts_with("arn:") {
            return Err(with_context(
                Error::new(
                    ErrorKind::InvalidInput,
                    "marking a task alive needs its ARN (ECS tags resources by ARN only)",
                )
                .with_backend("ecs"),
            ));
        }
        let tag = vec![(tags::ALIVE.to_owned(), tags::format_deadline(at))];
        self.ecs
            .tag_resource()
            .resource_arn(&task.id)
            .set_tags(Some(ecs_tags(&tag)))
            .send()
            .await
            .map_err(|e| with_context(errors::sdk(e, "TagResource").error))?;
        debug!(task = %task, "task marked alive");
        Ok(())
    }

    /// A family (`ci-task`) resolves to the ARN of its latest `ACTIVE` revision
    /// (`DescribeTaskDefinition`); a name with its revision (`ci-task:7`, or an ARN ending
    /// in `:7`) always means the same revision and is returned as it is, without a call.
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        if has_revision(task_definition) {
            return Ok(task_definition.to_owned());
        }
        let out = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| {
                Error::from(errors::sdk(e, "DescribeTaskDefinition"))
                    .with_context("task_definition", task_definition)
            })?;
        out.task_definition()
            .and_then(|td| td.task_definition_arn())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unexpected,
                    "DescribeTaskDefinition answered without the definition's ARN",
                )
                .with_backend("ecs")
                .with_context("task_definition", task_definition)
            })
    }

    fn settings_fingerprint(&self) -> String {
        self.config.settings_fingerprint()
    }

    /// `aws ecs execute-command` into `container` and `aws ecs stop-task` of `task`
    /// ([`crate::exec`]).
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        Some(crate::exec::debug_commands(&self.config, task, container))
    }
}

/// Whether `task_definition` names one revision: `family:N` or an ARN ending in `:N`.
fn has_revision(task_definition: &str) -> bool {
    task_definition
        .rsplit_once(':')
        .is_some_and(|(_, rev)| !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_a_revision_need_no_resolution() {
        assert!(has_revision("ci-task:7"));
        assert!(has_revision(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/ci-task:12"
        ));
        assert!(!has_revision("ci-task"));
        assert!(!has_revision(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/ci-task"
        ));
        assert!(!has_revision("ci-task:"));
    }
}
