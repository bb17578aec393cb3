//! Listing a namespace's tasks ([`TaskLauncher::list`](fargate_core::TaskLauncher::list)):
//! what `fargate gc` looks at.
//!
//! `ListTasks` on the cluster with no filter but the default desired status `RUNNING`
//! (`startedBy` cannot be combined with other filters, and a namespace has many), one page
//! of at most [`MAX_LIST_TASKS`] after the other (`nextToken`), each page confirmed by one
//! `DescribeTasks` with its tags (at most [`MAX_DESCRIBE_TASKS`] tasks, the same bound).
//! Pages are fetched one at a time: a cluster of thousands of tasks costs a few requests a
//! second, well within ECS's rate limits. Only tasks tagged with the namespace
//! ([`tags::NAMESPACE`]) are returned, with their deadline ([`tags::DEADLINE`]) and last
//! liveness mark ([`tags::ALIVE`]) read from the same answer.

use std::time::SystemTime;

use aws_sdk_ecs::types::TaskField;
use fargate_core::{Error, JobKey, ListedTask, Namespace, Result, TaskRef};

use crate::errors;
use crate::tags;
use crate::task::{MAX_DESCRIBE_TASKS, tag_value, task_state};

/// Most tasks one `ListTasks` page may hold (`maxResults` 1-100).
pub const MAX_LIST_TASKS: usize = 100;

/// The not-stopped tasks of `cluster` tagged with `namespace`, listed `page_size` (1 to
/// [`MAX_LIST_TASKS`], clamped) at a time.
pub(crate) async fn list_namespace(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    namespace: &Namespace,
    page_size: usize,
) -> Result<Vec<ListedTask>> {
    let page_size = page_size.clamp(1, MAX_LIST_TASKS.min(MAX_DESCRIBE_TASKS));
    let mut found = Vec::new();
    let mut next = None;
    loop {
        let out = ecs
            .list_tasks()
            .cluster(cluster)
            .max_results(page_size as i32)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| Error::from(errors::sdk(e, "ListTasks")))?;
        if !out.task_arns().is_empty() {
            let described = ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(out.task_arns().to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "DescribeTasks")))?;
            found.extend(
                described
                    .tasks()
                    .iter()
                    .filter_map(|t| listed(t, cluster, namespace)),
            );
        }
        next = out
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next.is_none() {
            return Ok(found);
        }
    }
}

/// `task` as a [`ListedTask`], if it belongs to `namespace` and is not stopped.
fn listed(
    task: &aws_sdk_ecs::types::Task,
    cluster: &str,
    namespace: &Namespace,
) -> Option<ListedTask> {
    let tag = |key: &str| tag_value(task, key);
    if tag(tags::NAMESPACE) != Some(namespace.as_str()) {
        return None;
    }
    let state = task_state(
        task.last_status().unwrap_or_default(),
        task.desired_status().unwrap_or_default(),
    );
    if state.is_terminal() {
        return None;
    }
    let task_ref = TaskRef {
        id: task.task_arn()?.to_owned(),
        cluster: Some(cluster.to_owned()),
    };
    let key = tag(tags::JOB_KEY).and_then(|k| JobKey::parse(k).ok());
    let started = task
        .created_at()
        .and_then(|t| SystemTime::try_from(*t).ok());
    Some(
        ListedTask::new(task_ref, key, state)
            .with_deadline(tag(tags::DEADLINE).and_then(tags::parse_deadline))
            .with_alive_at(tag(tags::ALIVE).and_then(tags::parse_deadline))
            .with_started_at(started),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_rfc3339_utc() {
        let t = tags::parse_deadline("2026-12-01T05:00:00Z").unwrap();
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_796_101_200);
        assert_eq!(tags::parse_deadline("tomorrow"), None);
        assert_eq!(tags::parse_deadline(""), None);
    }
}
