#![doc = include_str!("../README.md")]
//!
//! # What it does with ECS
//!
//! * **launch**: one `RunTask` (count 1, `awsvpc` with the configured subnets and security
//!   groups, `assignPublicIp` as configured, launch type `FARGATE` or the configured capacity
//!   provider strategy, never neither), with the job's environment as an override of the
//!   job's container, the job's client token (a retried launch never starts a second task),
//!   `startedBy` = [`tags::started_by`] of the job key, and tags naming runner and job
//!   ([`tags`]). Capacity and ENI errors move on to the next subnet ([`failover`]).
//! * **describe**: one `DescribeTasks`; the address is the ENI's private IPv4 as soon as ECS
//!   reports it, or, with [`EcsConfig::use_public_ip`], the ENI's public IP from
//!   `ec2:DescribeNetworkInterfaces` once it is associated (EC2 is asked only while the task
//!   runs and until the IP is found).
//! * **stop**: `DescribeTasks`, then `StopTask` with a reason naming the job (nothing for a
//!   task already stopped, stopping or gone).
//! * **find**: `ListTasks` by `startedBy` and desired status `RUNNING`, confirmed by
//!   `DescribeTasks` with tags (the job-key tag) and status: tasks not stopping or stopped.
//!   A task whose desired status is `STOPPED` is already being stopped by ECS, so it is
//!   left out, as the trait's contract (and its conformance test) want.
//! * **adopt** (a job takes a warm pool task over): one `TagResource` on the task's ARN with
//!   the tags `RunTask` would have sent for the job, and one `UntagResource` of the driver's
//!   own tags the job does not set. `startedBy` cannot change, so **find** of the job does
//!   not return an adopted task, while **list** reports it under the job.
//! * **debug commands** ([`exec`]): no call; the `aws ecs execute-command` and `aws ecs
//!   stop-task` lines for a task launched with `enableExecuteCommand` (a task of a project
//!   that keeps failed jobs' tasks, [`TaskShape::debug_access`](fargate_core::TaskShape)).
//! * **list** (for `fargate gc`, [`fargate_core::gc`]): `ListTasks` on the cluster (no
//!   filter, desired status `RUNNING`), pages of 100 one after the other, each described by
//!   one `DescribeTasks` with tags; the tasks tagged with the namespace, with their job key
//!   and [`tags::DEADLINE`].
//!
//! Errors are [`fargate_core::Error`]s with backend `"ecs"`, a kind (`Throttled` and
//! `CapacityUnavailable` are temporary) and a hint for the known ECS failures.
//! [`EcsLauncher::api_calls`] counts the requests sent, by operation.
//!
//! # Retries: who retries what
//!
//! One policy owns retries: `fargate_core`'s [`RetryPolicy`](fargate_core::RetryPolicy),
//! carried out by the [`Driver`](fargate_core::Driver), which retries a failed launch, stop
//! or search as a whole when the error is temporary. Below it, the AWS SDK retries only
//! transport hiccups (throttling, 5xx, broken connections) within one call, as
//! [`SdkTransport`] says: by default **2** attempts. The layers multiply: a call that keeps
//! failing is sent at most `RetryPolicy::max_attempts` × `SdkTransport::max_attempts`
//! times (5 × 2 = 10 with both defaults). So do not raise `SdkTransport::max_attempts`
//! under a driver, and do not wrap the launcher in another retry layer. A launch's subnet
//! failover ([`failover`]) is not a retry: within one `launch` it tries each configured
//! subnet once more after a capacity error, so `RunTask` is sent at most
//! `max_attempts` × (subnets + 1) × `SdkTransport::max_attempts` times.
//!
//! # IAM permissions
//!
//! The driver's role needs:
//!
//! | Action | Why |
//! |---|---|
//! | `ecs:RunTask` | launch (on the task definitions it may run) |
//! | `ecs:TagResource` | `RunTask` with tags needs it (on `arn:aws:ecs:*:*:task/*`); adopting a warm task and relabelling a failed job's kept task (without the `ecs:CreateAction` condition); with job images, registering, marking and refreshing derived task definitions |
//! | `ecs:UntagResource` | adopting a warm task (only with a warm pool) and relabelling a kept task |
//! | `ecs:DescribeTasks` | describe, stop, find, list (gc) |
//! | `ecs:StopTask` | stop (cleanup, gc) |
//! | `ecs:ListTasks` | find (cleanup after a crash), list (gc) |
//! | `iam:PassRole` | for the task role and execution role of the task definition |
//! | `ec2:DescribeNetworkInterfaces` | only with `use_public_ip` |
//!
//! # Features
//!
//! * `public-ip`: no effect, kept so that builds that name it keep working. Connecting
//!   through the task's public IP is always built in: the few EC2 calls (the task's public
//!   IP, `doctor`'s network checks) go through the AWS SDK's runtime with a hand-written
//!   request and answer, not through `aws-sdk-ec2`, which took most of a cold build.
//!
//! # Testing
//!
//! The integration tests (`tests/`) run [`EcsLauncher`] against moto on loopback, with the
//! moto fixture and the fault proxy of the unpublished `fargate-testkit` crate; they run
//! only with `FARGATE_TEST_FIXTURES=1` (they say that they skipped otherwise). This crate
//! ships no test infrastructure.

mod aws_api;
mod catalog;
mod config;
pub mod derived;
pub mod derived_gc;
mod details;
pub mod doctor;
pub mod dynamo_store;
mod errors;
pub mod exec;
pub mod failover;
pub mod host_keys;
pub mod job_secrets;
mod launcher;
mod listing;
pub mod metrics;
mod overrides;
mod public_ip;
pub mod tags;
mod task;
mod task_launcher;
mod transport;
mod xml;

/// The AWS SDK's configuration (credentials chain, region, HTTP client) that
/// [`EcsLauncher::new`] and [`DynamoStore::new`] take, so that one process loads it once.
pub use aws_config::SdkConfig;
pub use catalog::{default_call_rates, fargate_prices, fargate_sizes};
pub use config::{Capacity, CapacityProviderItem, EcsConfig};
pub use dynamo_store::DynamoStore;
pub use launcher::EcsLauncher;
pub use listing::MAX_LIST_TASKS;
pub use metrics::ApiCalls;
pub use task::{
    MAX_DESCRIBE_TASKS, MAX_OVERRIDES_CHARS, MAX_STOP_REASON, SPOT_INTERRUPTED_REASON,
    is_spot_interruption, task_state,
};
pub use transport::SdkTransport;

/// The most tasks one `RunTask` call starts (its `count`, 1 to 10).
pub const MAX_RUN_TASK_COUNT: u32 = 10;
