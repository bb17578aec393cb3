//! `RunTask` container overrides: the job's environment and, with job images, the plain
//! variables of the job's image and services (never a secret one: see
//! [`fargate_core::images::secrets`]), which never go into a task definition.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{ContainerOverride, EphemeralStorage, KeyValuePair, TaskOverride};
use fargate_core::images::JOB_CONTAINER;
use fargate_core::{Error, ErrorKind, Result, TaskSpec};

use crate::task::MAX_OVERRIDES_CHARS;

fn vars(m: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Environment per container that a launch of `spec` overrides: `spec.environment` for
/// the task's container, and with [`TaskSpec::images`] also for the job container (with
/// the job image's variables) and each service's variables for its container.
fn environments(spec: &TaskSpec) -> Vec<(&str, BTreeMap<&str, &str>)> {
    let mut out = vec![(spec.container_name.as_str(), vars(&spec.environment))];
    if let Some(images) = spec.images.as_deref() {
        let mut job = vars(&spec.environment);
        if let Some(secrets) = images.environment.get(JOB_CONTAINER) {
            // The driver's own variables (the job's key, the deadline, and the definition's
            // SSH port and service hosts, which an override would replace) win.
            let defined = images.plan.container(JOB_CONTAINER).map(|c| &c.environment);
            for (k, v) in secrets {
                if !defined.is_some_and(|d| d.contains_key(k)) {
                    job.entry(k.as_str()).or_insert(v.as_str());
                }
            }
        }
        out.push((JOB_CONTAINER, job));
        out.extend(
            images
                .environment
                .iter()
                .filter(|(name, _)| name.as_str() != JOB_CONTAINER)
                .map(|(name, secrets)| (name.as_str(), vars(secrets))),
        );
    }
    out
}

/// The overrides of a launch of `spec`; an error, before any call, when their JSON is
/// longer than ECS accepts ([`MAX_OVERRIDES_CHARS`]; the SDK writes it without spaces).
pub(crate) fn task_overrides(spec: &TaskSpec) -> Result<TaskOverride> {
    let environments = environments(spec);
    let json: Vec<serde_json::Value> = environments
        .iter()
        .map(|(name, env)| {
            let env: Vec<serde_json::Value> = env
                .iter()
                .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
                .collect();
            serde_json::json!({ "name": name, "environment": env })
        })
        .collect();
    let shape = &spec.shape;
    let mut task = serde_json::json!({ "containerOverrides": json });
    for (key, value) in [
        ("cpu", shape.cpu.map(|c| serde_json::json!(c.to_string()))),
        (
            "memory",
            shape.memory.map(|m| serde_json::json!(m.to_string())),
        ),
        (
            "ephemeralStorage",
            shape
                .ephemeral_storage
                .map(|g| serde_json::json!({ "sizeInGiB": g })),
        ),
        (
            "taskRoleArn",
            shape.task_role.clone().map(serde_json::Value::from),
        ),
    ] {
        if let Some(value) = value {
            task[key] = value;
        }
    }
    let size = task.to_string().chars().count();
    if size > MAX_OVERRIDES_CHARS {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("RunTask: the task overrides take {size} characters; ECS accepts at most {MAX_OVERRIDES_CHARS}"),
        )
        .with_backend("ecs")
        .with_hint(if spec.images.is_some() {
            "pass fewer or shorter environment values to the task (service variables count), or a shorter task role ARN"
        } else {
            "pass fewer or shorter environment values to the task, or a shorter task role ARN"
        }));
    }
    let overrides = TaskOverride::builder()
        .set_container_overrides(Some(
            environments
                .into_iter()
                .map(|(name, env)| {
                    ContainerOverride::builder()
                        .name(name)
                        .set_environment(Some(
                            env.into_iter()
                                .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                                .collect(),
                        ))
                        .build()
                })
                .collect(),
        ))
        .set_cpu(shape.cpu.map(|c| c.to_string()))
        .set_memory(shape.memory.map(|m| m.to_string()))
        .set_ephemeral_storage(
            shape
                .ephemeral_storage
                .map(|g| EphemeralStorage::builder().size_in_gib(g as i32).build()),
        )
        .set_task_role_arn(shape.task_role.clone())
        .build();
    Ok(overrides)
}
