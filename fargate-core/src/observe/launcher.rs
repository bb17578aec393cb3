//! [`ObservedLauncher`]: a launcher wrapper that reports every call as an
//! [`Event::ApiCall`].

use async_trait::async_trait;

use super::{ApiOperation, CallOutcome, DynObserver, Event};
use crate::error::{ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::launcher::{
    DynTaskLauncher, ListedTask, StopOutcome, TaskLauncher, TaskRef, TaskSpec, TaskStatus,
};

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
impl TaskLauncher for ObservedLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        let r = self.inner.launch(spec).await;
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
}
