//! [`ObservedLauncher`]: a launcher wrapper that reports every call as an
//! [`Event::ApiCall`].

use std::time::SystemTime;

use async_trait::async_trait;

use super::{ApiOperation, CallOutcome, DynObserver, Event};
use crate::error::{ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::launcher::{
    DebugCommands, DynTaskLauncher, Launched, LaunchedBatch, ListedTask, StopOutcome, TaskLauncher,
    TaskRef, TaskSpec, TaskStatus,
};
use crate::shell::HostKey;

/// Wraps a launcher and tells `observer` how each call ended.
/// [`Driver::with_observer`](crate::Driver::with_observer) installs it.
#[derive(Clone, Debug)]
pub struct ObservedLauncher {
    inner: DynTaskLauncher,
    observer: DynObserver,
}

impl ObservedLauncher {
    /// `inner`, observed by `observer`.
    pub fn new(inner: DynTaskLauncher, observer: DynObserver) -> Self {
        ObservedLauncher { inner, observer }
    }

    fn report<T>(&self, operation: ApiOperation, result: Result<T>) -> Result<T> {
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(e) if e.kind() == ErrorKind::Throttled => CallOutcome::Throttled,
            Err(_) => CallOutcome::Failed,
        };
        self.observer
            .observe(&Event::ApiCall { operation, outcome });
        result
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl TaskLauncher for ObservedLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        let r = self.inner.launch(spec).await;
        self.report(ApiOperation::Launch, r)
    }
    // Passed through, or the driver would lose the address of the launch answer and wait
    // for a describe (issue 15's "no idle wait").
    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        let r = self.inner.launch_observed(spec).await;
        self.report(ApiOperation::Launch, r)
    }
    fn max_launch_batch(&self) -> u32 {
        self.inner.max_launch_batch()
    }
    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        let r = self.inner.launch_batch(spec, count).await;
        self.report(ApiOperation::Launch, r)
    }
    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        let r = self.inner.describe(task).await;
        self.report(ApiOperation::Describe, r)
    }
    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        let r = self.inner.stop(task, reason).await;
        self.report(ApiOperation::Stop, r)
    }
    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        let r = self.inner.find(key).await;
        self.report(ApiOperation::Find, r)
    }
    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        let r = self.inner.list(namespace).await;
        self.report(ApiOperation::List, r)
    }
    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        let r = self.inner.adopt(task, spec).await;
        self.report(ApiOperation::Adopt, r)
    }
    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        let r = self.inner.mark_alive(task, at).await;
        self.report(ApiOperation::MarkAlive, r)
    }
    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        let r = self.inner.resolve_task_definition(task_definition).await;
        self.report(ApiOperation::ResolveDefinition, r)
    }
    async fn release(&self, spec: &TaskSpec) -> Result<()> {
        self.inner.release(spec).await
    }
    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        self.inner.announced_host_keys(task, container).await
    }
    fn settings_fingerprint(&self) -> String {
        self.inner.settings_fingerprint()
    }
    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        self.inner.debug_commands(task, container)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::job::{JobContext, JobResponse};
    use crate::launcher::TaskState;

    /// A launcher whose launch answer already carries the task's address.
    #[derive(Debug)]
    struct AnswersWithAddress;

    #[async_trait]
    impl TaskLauncher for AnswersWithAddress {
        async fn launch(&self, _: &TaskSpec) -> Result<TaskRef> {
            Ok(TaskRef::new("t-1"))
        }
        async fn launch_observed(&self, _: &TaskSpec) -> Result<Launched> {
            Ok(Launched::new(TaskRef::new("t-1")).with_status(Some(
                TaskStatus::new(TaskState::Provisioning)
                    .with_address(Some(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            )))
        }
        async fn describe(&self, _: &TaskRef) -> Result<TaskStatus> {
            Ok(TaskStatus::missing())
        }
        async fn stop(&self, _: &TaskRef, _: &str) -> Result<StopOutcome> {
            Ok(StopOutcome::NotFound)
        }
        async fn find(&self, _: &JobKey) -> Result<Vec<TaskRef>> {
            Ok(Vec::new())
        }
    }

    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<String>>);

    impl super::super::Observer for Calls {
        fn observe(&self, event: &Event) {
            if let Event::ApiCall { operation, outcome } = event {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", operation.as_str(), outcome.as_str()));
            }
        }
    }

    #[tokio::test]
    async fn the_launch_answer_s_address_is_passed_through_and_the_call_reported() {
        let calls = Arc::new(Calls::default());
        let observed = ObservedLauncher::new(Arc::new(AnswersWithAddress), calls.clone());
        let job = JobContext::new(JobResponse::new(7));
        let identity = job.identity(&Namespace::parse("ci").unwrap()).unwrap();
        let spec = TaskSpec::new(identity, "td:1");
        let launched = observed.launch_observed(&spec).await.unwrap();
        assert_eq!(
            launched.address(),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "the wrapper dropped the launch answer's status"
        );
        assert_eq!(*calls.0.lock().unwrap(), ["launch ok"]);
    }
}
