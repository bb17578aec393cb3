//! ECS Exec: the commands a person runs to open a shell in a job's task and to stop it
//! ([`TaskLauncher::debug_commands`](fargate_core::TaskLauncher::debug_commands)), for a
//! task launched with `enableExecuteCommand` (a project that keeps failed jobs' tasks, or
//! [`EcsConfig::enable_execute_command`]).
//!
//! ECS Exec needs, besides `enableExecuteCommand` at `RunTask`: a task role that allows
//! `ssmmessages:CreateControlChannel`, `ssmmessages:CreateDataChannel`,
//! `ssmmessages:OpenControlChannel` and `ssmmessages:OpenDataChannel` (the SSM agent ECS
//! adds to every container uses it), platform version 1.4.0 or later, and, for the person
//! entering, `ecs:ExecuteCommand` on the task (and the Session Manager plugin of the AWS
//! CLI). `fargate doctor` checks what it can ([`crate::doctor`]).

use fargate_core::{DebugCommands, TaskRef};

use crate::config::EcsConfig;

/// The permissions of the task role ECS Exec needs.
pub const TASK_ROLE_ACTIONS: [&str; 4] = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

/// `aws ecs execute-command ... --interactive --command /bin/sh` into `container` of
/// `task`, and `aws ecs stop-task ...` of it, in `config`'s region and the task's cluster
/// (the configured one when the reference names none).
pub fn debug_commands(config: &EcsConfig, task: &TaskRef, container: &str) -> DebugCommands {
    let cluster = task
        .cluster
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or(&config.cluster);
    let region = config
        .region
        .as_deref()
        .map_or(String::new(), |r| format!(" --region {}", quote(r)));
    let (cluster, arn) = (quote(cluster), quote(&task.id));
    DebugCommands::new(
        format!(
            "aws ecs execute-command{region} --cluster {cluster} --task {arn} --container {} --interactive --command /bin/sh",
            quote(container)
        ),
        format!("aws ecs stop-task{region} --cluster {cluster} --task {arn}"),
    )
}

/// `value` as one shell word: as it is when it holds only characters no shell treats
/// specially (what ARNs, cluster, container and region names are made of), else in single
/// quotes.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=,".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_name_region_cluster_task_and_container() {
        let mut config = EcsConfig::new("ci", ["subnet-1"], ["sg-1"]);
        let task = TaskRef {
            id: "arn:aws:ecs:eu-west-1:111122223333:task/ci/0123456789abcdef".into(),
            cluster: Some("ci".into()),
        };
        let c = debug_commands(&config, &task, "ci-coordinator");
        assert_eq!(
            c.enter,
            "aws ecs execute-command --cluster ci --task arn:aws:ecs:eu-west-1:111122223333:task/ci/0123456789abcdef --container ci-coordinator --interactive --command /bin/sh"
        );
        assert_eq!(
            c.stop,
            "aws ecs stop-task --cluster ci --task arn:aws:ecs:eu-west-1:111122223333:task/ci/0123456789abcdef"
        );
        config.region = Some("eu-west-1".into());
        let c = debug_commands(&config, &TaskRef::new("arn:x"), "job");
        assert!(
            c.enter
                .starts_with("aws ecs execute-command --region eu-west-1 --cluster ci --task arn:x --container job "),
            "{}",
            c.enter
        );
        assert_eq!(quote("it's odd"), r"'it'\''s odd'");
        assert_eq!(quote(""), "''");
    }
}
