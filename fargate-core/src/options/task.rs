//! [`TaskPolicy`]: which task each job gets, and what a job may ask for.

use serde::{Deserialize, Serialize};

use super::glob::glob_match;

/// The task a job runs in, and which job variables may change it.
///
/// A job may ask for another task definition with `FARGATE_TASK_DEFINITION` (allowed when
/// it matches one of [`allowed_task_definitions`](Self::allowed_task_definitions)) and
/// another platform version with `FARGATE_PLATFORM_VERSION` (allowed unless
/// [`allow_platform_version_override`](Self::allow_platform_version_override) is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TaskPolicy {
    /// The default task definition (for ECS: `family`, `family:revision` or an ARN; other
    /// launchers give it their own meaning). Required.
    pub task_definition: String,
    /// The default platform version; `None` for the launcher's default.
    pub platform_version: Option<String>,
    /// The container that gets the job's public key (`SSH_PUBLIC_KEY`) and environment.
    /// Default `ci-coordinator`.
    pub container_name: String,
    /// Patterns of task definitions a job may ask for (`*` matches any run of characters).
    /// Default none.
    pub allowed_task_definitions: Vec<String>,
    /// Whether jobs may choose the platform version. Default `true`.
    pub allow_platform_version_override: bool,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        TaskPolicy {
            task_definition: String::new(),
            platform_version: None,
            container_name: "ci-coordinator".into(),
            allowed_task_definitions: Vec::new(),
            allow_platform_version_override: true,
        }
    }
}

impl TaskPolicy {
    /// Whether a job may ask for task definition `name`: it matches one of the allowed
    /// patterns.
    pub fn allows(&self, name: &str) -> bool {
        self.allowed_task_definitions
            .iter()
            .any(|p| glob_match(p, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_patterns() {
        let p = TaskPolicy {
            allowed_task_definitions: vec!["ci-*".to_owned(), "exact:3".to_owned()],
            ..TaskPolicy::default()
        };
        assert!(p.allows("ci-node:4"));
        assert!(p.allows("exact:3"));
        assert!(!p.allows("exact:4"));
        assert!(!p.allows("admin-role"));
        assert!(!p.allows("x-ci-1"));
        let any = TaskPolicy {
            allowed_task_definitions: vec!["*".to_owned()],
            ..TaskPolicy::default()
        };
        assert!(any.allows("anything"));
        assert!(!TaskPolicy::default().allows("anything"));
    }
}
