use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use super::faults::{Fault, Faults, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::launcher::{
    ContainerStatus, DebugCommands, Launched, LaunchedBatch, ListedTask, StopDetails, StopOutcome,
    TaskLauncher, TaskRef, TaskSpec, TaskState, TaskStatus,
};
use crate::shell::HostKey;
use crate::task_details::TaskDetails;

/// How a fake task boots, counted in `describe` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// Describes before the task reports its address (0: at once).
    pub describes_until_address: u32,
    /// Describes before the task is `Running` (it is `Provisioning`, then `Pending` once the
    /// address is known).
    pub describes_until_running: u32,
    /// First task address; later tasks count up from it.
    pub first_address: Ipv4Addr,
    /// For this long after its launch (tokio time), a task is invisible as on an eventually
    /// consistent API: `describe` says [`TaskState::Missing`], `find` leaves it out and
    /// `stop` answers [`StopOutcome::NotFound`] without stopping it.
    pub invisible_for: Duration,
    /// Whether the launch answer carries the address (as some backends' answers do), so
    /// that [`TaskLauncher::launch_observed`] reports it.
    pub address_in_launch_answer: bool,
    /// The most tasks one call starts ([`TaskLauncher::launch_batch`]; 1: one a call).
    pub max_launch_batch: u32,
}

impl Default for BootPlan {
    fn default() -> Self {
        BootPlan {
            describes_until_address: 0,
            describes_until_running: 0,
            first_address: Ipv4Addr::new(127, 0, 0, 1),
            invisible_for: Duration::ZERO,
            address_in_launch_answer: false,
            max_launch_batch: 1,
        }
    }
}

/// A task of the [`MemoryLauncher`].
#[derive(Clone, Debug)]
pub struct FakeTask {
    /// What it was launched with.
    pub spec: TaskSpec,
    /// Its state (changed by describes, `stop` and [`MemoryLauncher::kill`]).
    pub state: TaskState,
    /// Its address.
    pub address: IpAddr,
    /// Describes so far.
    pub describes: u32,
    /// The stop reason, once stopped.
    pub stop_reason: Option<String>,
    /// Whether the platform took its capacity back ([`MemoryLauncher::reclaim`]).
    pub reclaimed: bool,
    /// When it was launched.
    pub launched_at: Instant,
    /// When a describe first saw it running (wall clock).
    pub started_at: Option<std::time::SystemTime>,
    /// Its deadline, as a deadline tag would say ([`MemoryLauncher::set_deadline`]).
    pub deadline: Option<SystemTime>,
    /// Its last liveness mark ([`TaskLauncher::mark_alive`]).
    pub alive_at: Option<SystemTime>,
    /// Its containers, as `describe` reports them ([`MemoryLauncher::set_containers`]).
    pub containers: Vec<ContainerStatus>,
}

impl FakeTask {
    fn visible(&self, plan: &BootPlan) -> bool {
        self.launched_at.elapsed() >= plan.invisible_for
    }
}

/// An in-memory [`TaskLauncher`] with fault injection.
#[derive(Debug, Default)]
pub struct MemoryLauncher {
    state: Mutex<LauncherState>,
    plan: BootPlan,
    settings: Mutex<String>,
    definitions: Mutex<HashMap<String, String>>,
    /// Container name -> the host keys its tasks announce, and after how many asks.
    announced: Mutex<HashMap<String, (Vec<HostKey>, u32)>>,
    asks: Mutex<u32>,
    /// Faults to inject; also counts calls.
    pub faults: Faults,
}

#[derive(Debug, Default)]
struct LauncherState {
    tasks: BTreeMap<String, FakeTask>,
    /// Client token -> (the tasks it started, the spec and count it launched).
    tokens: HashMap<String, (Vec<String>, TaskSpec, u32)>,
}

impl MemoryLauncher {
    /// A launcher whose tasks boot at once on 127.0.0.1.
    pub fn new() -> Self {
        Self::default()
    }

    /// A launcher whose tasks boot following `plan`.
    pub fn with_plan(plan: BootPlan) -> Self {
        MemoryLauncher {
            plan,
            ..Self::default()
        }
    }

    /// All tasks ever launched.
    pub fn tasks(&self) -> Vec<(TaskRef, FakeTask)> {
        self.lock()
            .tasks
            .iter()
            .map(|(id, t)| (TaskRef::new(id.clone()), t.clone()))
            .collect()
    }

    /// Tasks not stopped.
    pub fn running(&self) -> Vec<TaskRef> {
        self.tasks()
            .into_iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(r, _)| r)
            .collect()
    }

    /// Stops a task as the platform would (out of memory, spot reclaim...).
    pub fn kill(&self, task: &TaskRef, reason: &str) {
        if let Some(t) = self.lock().tasks.get_mut(&task.id) {
            t.state = TaskState::Stopped;
            t.stop_reason = Some(reason.to_owned());
        }
    }

    /// Stops a task as a Spot-like capacity reclaim would: with `reason`, and its
    /// [`StopDetails::reclaimed`] set.
    pub fn reclaim(&self, task: &TaskRef, reason: &str) {
        self.kill(task, reason);
        if let Some(t) = self.lock().tasks.get_mut(&task.id) {
            t.reclaimed = true;
        }
    }

    /// Sets the deadline of `task` (what [`TaskLauncher::list`] reports).
    pub fn set_deadline(&self, task: &TaskRef, deadline: SystemTime) {
        if let Some(t) = self.lock().tasks.get_mut(&task.id) {
            t.deadline = Some(deadline);
        }
    }

    /// Sets what [`TaskLauncher::settings_fingerprint`] says (as when the administrator
    /// changes the cluster or the network).
    pub fn set_settings_fingerprint(&self, fingerprint: &str) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint.to_owned();
    }

    /// Makes [`TaskLauncher::resolve_task_definition`] of `name` answer `resolved` (as when
    /// a new revision of a family is registered); other names resolve to themselves.
    pub fn set_definition(&self, name: &str, resolved: &str) {
        self.definitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), resolved.to_owned());
    }

    /// Makes every task's `container` announce `keys` ([`TaskLauncher::announced_host_keys`])
    /// from the `after`-th ask on (the first asks see none, as logs arriving late).
    pub fn announce(&self, container: &str, keys: Vec<HostKey>, after: u32) {
        self.announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container.to_owned(), (keys, after));
    }

    /// Sets the containers `describe` reports for `task` (e.g. a service that stopped).
    pub fn set_containers(&self, task: &TaskRef, containers: Vec<ContainerStatus>) {
        if let Some(t) = self.lock().tasks.get_mut(&task.id) {
            t.containers = containers;
        }
    }

    /// Starts `count` tasks of `spec` in one call, or answers the tasks its client token
    /// started before (the same spec and count), as the launch calls do.
    async fn start(&self, spec: &TaskSpec, count: u32) -> Result<Vec<TaskRef>> {
        let fault = self.fault(Op::Launch).await?;
        let tasks = {
            let mut s = self.lock();
            if let Some((ids, first, first_count)) = s.tokens.get(&spec.client_token) {
                if first != spec || *first_count != count {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "the client token was used before with other parameters",
                    )
                    .with_backend("fake"));
                }
                ids.iter().cloned().map(TaskRef::new).collect()
            } else {
                let mut ids = Vec::new();
                for _ in 0..count {
                    let n = s.tasks.len() as u32;
                    let id = format!("arn:fake:ecs:task/{}/{n}", spec.key);
                    let address =
                        IpAddr::V4(Ipv4Addr::from(u32::from(self.plan.first_address) + n));
                    s.tasks.insert(
                        id.clone(),
                        FakeTask {
                            spec: spec.clone(),
                            state: TaskState::Provisioning,
                            address,
                            describes: 0,
                            stop_reason: None,
                            reclaimed: false,
                            launched_at: Instant::now(),
                            started_at: None,
                            deadline: None,
                            alive_at: None,
                            containers: Vec::new(),
                        },
                    );
                    ids.push(id);
                }
                s.tokens.insert(
                    spec.client_token.clone(),
                    (ids.clone(), spec.clone(), count),
                );
                ids.into_iter().map(TaskRef::new).collect()
            }
        };
        match fault {
            Some(f @ Fault::LoseResponse(_)) => Err(f.error(Op::Launch)),
            _ => Ok(tasks),
        }
    }

    /// A task's launch answer: with its address when the plan says the answer carries it.
    fn observed(&self, task: TaskRef) -> Launched {
        if !self.plan.address_in_launch_answer {
            return Launched::new(task);
        }
        let address = self.lock().tasks.get(&task.id).map(|t| t.address);
        let status = TaskStatus::new(TaskState::Provisioning).with_address(address);
        Launched::new(task).with_status(Some(status))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LauncherState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fault(&self, op: Op) -> Result<Option<Fault>> {
        match self.faults.on_call(op) {
            Some(Fault::Fail(k)) => Err(Fault::Fail(k).error(op)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

#[async_trait]
impl TaskLauncher for MemoryLauncher {
    async fn launch(&self, spec: &TaskSpec) -> Result<TaskRef> {
        let mut tasks = self.start(spec, 1).await?;
        tasks.pop().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "the launch started no task").with_backend("fake")
        })
    }

    async fn launch_observed(&self, spec: &TaskSpec) -> Result<Launched> {
        let task = self.launch(spec).await?;
        Ok(self.observed(task))
    }

    fn max_launch_batch(&self) -> u32 {
        self.plan.max_launch_batch.max(1)
    }

    async fn launch_batch(&self, spec: &TaskSpec, count: u32) -> Result<LaunchedBatch> {
        if count == 0 || count > self.max_launch_batch() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{count} tasks in one call: this launcher starts 1 to {}",
                    self.max_launch_batch()
                ),
            )
            .with_backend("fake"));
        }
        let tasks = self.start(spec, count).await?;
        Ok(LaunchedBatch::new(
            tasks.into_iter().map(|t| self.observed(t)).collect(),
        ))
    }

    async fn describe(&self, task: &TaskRef) -> Result<TaskStatus> {
        self.fault(Op::Describe).await?;
        let mut s = self.lock();
        let Some(t) = s.tasks.get_mut(&task.id).filter(|t| t.visible(&self.plan)) else {
            return Ok(TaskStatus::missing());
        };
        t.describes += 1;
        if !t.state.is_terminal() {
            t.state = if t.describes > self.plan.describes_until_running {
                TaskState::Running
            } else if t.describes > self.plan.describes_until_address {
                TaskState::Pending
            } else {
                TaskState::Provisioning
            };
        }
        let known = t.describes > self.plan.describes_until_address;
        if t.state == TaskState::Running && t.started_at.is_none() {
            t.started_at = Some(crate::world::now());
        }
        let details = TaskDetails {
            capacity_provider: Some("FARGATE".into()),
            cpu_units: Some(256),
            memory_mib: Some(512),
            started_at: t.started_at,
            ..TaskDetails::default()
        };
        Ok(TaskStatus::new(t.state)
            .with_address(known.then_some(t.address))
            .with_stop(t.stop_reason.as_ref().map(|r| StopDetails {
                reason: Some(r.clone()),
                reclaimed: t.reclaimed,
                ..StopDetails::default()
            }))
            .with_details(details)
            .with_containers(t.containers.clone()))
    }

    async fn stop(&self, task: &TaskRef, reason: &str) -> Result<StopOutcome> {
        let fault = self.fault(Op::Stop).await?;
        let outcome = match self
            .lock()
            .tasks
            .get_mut(&task.id)
            .filter(|t| t.visible(&self.plan))
        {
            Some(t) => {
                if !t.state.is_terminal() {
                    t.state = TaskState::Stopped;
                    t.stop_reason = Some(reason.to_owned());
                }
                StopOutcome::Stopping
            }
            None => StopOutcome::NotFound,
        };
        match fault {
            Some(f @ Fault::LoseResponse(_)) => Err(f.error(Op::Stop)),
            _ => Ok(outcome),
        }
    }

    async fn resolve_task_definition(&self, task_definition: &str) -> Result<String> {
        self.fault(Op::ResolveDefinition).await?;
        Ok(self
            .definitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_definition)
            .cloned()
            .unwrap_or_else(|| task_definition.to_owned()))
    }

    fn settings_fingerprint(&self) -> String {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn debug_commands(&self, task: &TaskRef, container: &str) -> Option<DebugCommands> {
        Some(DebugCommands::new(
            format!("fake-exec --task {task} --container {container} /bin/sh"),
            format!("fake-stop --task {task}"),
        ))
    }

    async fn announced_host_keys(&self, task: &TaskRef, container: &str) -> Result<Vec<HostKey>> {
        if !self.lock().tasks.contains_key(&task.id) {
            return Err(Error::new(ErrorKind::NotFound, format!("no task {task}")));
        }
        let asks = {
            let mut asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
            *asks += 1;
            *asks
        };
        Ok(self
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(container)
            .filter(|(_, after)| asks >= *after)
            .map(|(keys, _)| keys.clone())
            .unwrap_or_default())
    }

    async fn adopt(&self, task: &TaskRef, spec: &TaskSpec) -> Result<()> {
        let fault = self.fault(Op::Adopt).await?;
        {
            let mut s = self.lock();
            let plan = self.plan;
            let Some(t) = s.tasks.get_mut(&task.id).filter(|t| t.visible(&plan)) else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no task {task} to hand to job {}", spec.key),
                )
                .with_backend("fake"));
            };
            // The labels a launch of `spec` would have set; the rest of the task stays.
            t.spec.job = spec.job.clone();
            t.spec.key = spec.key.clone();
            t.spec.deadline = spec.deadline;
            t.deadline = spec.deadline;
        }
        match fault {
            Some(f @ Fault::LoseResponse(_)) => Err(f.error(Op::Adopt)),
            _ => Ok(()),
        }
    }

    async fn mark_alive(&self, task: &TaskRef, at: SystemTime) -> Result<()> {
        let fault = self.fault(Op::MarkAlive).await?;
        {
            let mut s = self.lock();
            let plan = self.plan;
            let Some(t) = s.tasks.get_mut(&task.id).filter(|t| t.visible(&plan)) else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no task {task} to mark alive"),
                )
                .with_backend("fake"));
            };
            t.alive_at = Some(at);
        }
        match fault {
            Some(f @ Fault::LoseResponse(_)) => Err(f.error(Op::MarkAlive)),
            _ => Ok(()),
        }
    }

    async fn find(&self, key: &JobKey) -> Result<Vec<TaskRef>> {
        self.fault(Op::Find).await?;
        Ok(self
            .lock()
            .tasks
            .iter()
            .filter(|(_, t)| &t.spec.key == key && !t.state.is_terminal() && t.visible(&self.plan))
            .map(|(id, _)| TaskRef::new(id.clone()))
            .collect())
    }

    async fn list(&self, namespace: &Namespace) -> Result<Vec<ListedTask>> {
        self.fault(Op::Find).await?;
        Ok(self
            .lock()
            .tasks
            .iter()
            .filter(|(_, t)| {
                &t.spec.job.namespace == namespace
                    && !t.state.is_terminal()
                    && t.visible(&self.plan)
            })
            .map(|(id, t)| {
                ListedTask::new(TaskRef::new(id.clone()), Some(t.spec.key.clone()), t.state)
                    .with_deadline(t.deadline)
                    .with_alive_at(t.alive_at)
                    .with_started_at(crate::world::now().checked_sub(t.launched_at.elapsed()))
            })
            .collect())
    }
}
