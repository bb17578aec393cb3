//! Batched warm pool launches against moto's ECS: a fill of N makes ceil(N/10) `RunTask`
//! calls (`count` up to 10), every slot gets its own task, a partial answer keeps what
//! started, a lead slot's stop leaves its batch-mates to their slots, and a batch whose
//! answer was lost is replayed (same token and `count`) and stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fargate_aws::{EcsLauncher, SdkTransport};
use fargate_core::options::WarmPoolOptions;
use fargate_core::testing::{MemoryShell, MemoryStore};
use fargate_core::{Driver, DriverOptions, MetadataStore, Namespace};
use fargate_testkit::fault_proxy::{Fault, FaultProxy};
use fargate_testkit::moto::{Moto, MotoEcs};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn driver(ecs: &MotoEcs, launcher: EcsLauncher, store: Arc<MemoryStore>, size: usize) -> Driver {
    let mut options = DriverOptions::builder()
        .namespace(Namespace::parse("fixture").unwrap())
        .task_definition(&ecs.task_definition)
        .build()
        .unwrap();
    let mut pool = WarmPoolOptions::default();
    pool.size = size;
    options.pool = pool;
    // One attempt per launch: an unanswered one stays recorded for the next refill.
    options.retry.max_attempts = 1;
    Driver::new(
        options,
        Arc::new(launcher),
        Arc::new(MemoryShell::new()),
        store,
    )
}

fn launcher(ecs: &MotoEcs, sdk: &aws_config::SdkConfig, transport: SdkTransport) -> EcsLauncher {
    let mut config = ecs.config();
    config.transport = transport;
    EcsLauncher::new(config, sdk).unwrap()
}

/// The `RunTask` calls that started tasks (not replays): their `count`s and tasks.
fn calls(moto: &Moto) -> Vec<(u64, Vec<String>)> {
    moto.run_task_requests()
        .into_iter()
        .filter(|r| r["replay"] == false)
        .map(|r| {
            let count = r["request"]["count"].as_u64().unwrap_or(1);
            let arns = r["taskArns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (count, arns)
        })
        .collect()
}

async fn desired_status(moto: &Moto, ecs: &MotoEcs, arn: &str) -> String {
    moto.describe_task(&ecs.cluster, arn)
        .await
        .desired_status()
        .unwrap_or_default()
        .to_owned()
}

/// The pool's slot records.
async fn slot_records(store: &MemoryStore) -> Vec<fargate_core::JobRecord> {
    let mut slots = Vec::new();
    for key in store.list().await.unwrap() {
        if let Some(r) = store.get(&key).await.unwrap()
            && r.pool.is_some()
        {
            slots.push(r);
        }
    }
    slots
}

#[tokio::test]
async fn a_fill_of_23_makes_three_calls_and_every_slot_gets_its_own_task() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let ecs = moto.setup().await;
    moto.set_throttling(&Moto::ECS_THROTTLING);
    let store = Arc::new(MemoryStore::new());
    let l = launcher(&ecs, &moto.sdk_config(), SdkTransport::single_attempt());
    let d = driver(&ecs, l, store.clone(), 23);
    let report = d.pool_fill(false).await.unwrap();
    assert_eq!(report.failures, Vec::<String>::new());

    // ceil(23 / 10) calls: 10, 10 and 3 tasks.
    let made = calls(&moto);
    let mut counts: Vec<u64> = made.iter().map(|(c, _)| *c).collect();
    counts.sort_unstable();
    assert_eq!(counts, [3, 10, 10]);
    for (count, arns) in &made {
        assert_eq!(arns.len() as u64, *count, "every task of a call started");
    }
    assert_eq!(moto.throttled_calls(), Vec::<Value>::new());

    // Every slot names a task of its own, and every task started is a slot's.
    let started: BTreeSet<String> = made.iter().flat_map(|(_, a)| a.clone()).collect();
    let slots = slot_records(&store).await;
    assert_eq!(slots.len(), 23);
    let named: BTreeSet<String> = slots
        .iter()
        .map(|s| s.task.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(named, started);
    assert_eq!(report.started.len(), 23);

    // The tasks of one call share its overrides (one pool key a call); calls do not.
    let keys: BTreeSet<String> = moto
        .run_task_requests()
        .iter()
        .map(|r| {
            r["request"]["overrides"]["containerOverrides"][0]["environment"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "SSH_PUBLIC_KEY")
                .unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 3, "one pool key per call");
    // Each call has a lead slot, recorded with its count before the call.
    let mut leads: Vec<u32> = slots
        .iter()
        .filter_map(|s| s.pool.as_ref().unwrap().batch)
        .collect();
    leads.sort_unstable();
    assert_eq!(leads, [3, 10, 10]);
}

#[tokio::test]
async fn a_lead_slots_stop_leaves_its_batch_mates_to_their_slots() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let ecs = moto.setup().await;
    let store = Arc::new(MemoryStore::new());
    let l = launcher(&ecs, &moto.sdk_config(), SdkTransport::single_attempt());
    let d = driver(&ecs, l, store.clone(), 10);
    assert_eq!(
        d.pool_fill(false).await.unwrap().failures,
        Vec::<String>::new()
    );
    let slots = slot_records(&store).await;
    let mut lead = slots
        .iter()
        .find(|s| s.pool.as_ref().unwrap().batch == Some(10))
        .unwrap()
        .clone();
    let lead_task = lead.task.clone().unwrap();
    // The lead's task is past its maximum idle time: the next refill stops it. Its
    // batch-mates carry its key in their labels, but their own slots name them.
    lead.pool.as_mut().unwrap().idle_until = 0;
    store.put(&lead).await.unwrap();
    let report = d.pool_refill(&CancellationToken::new()).await;
    assert_eq!(report.failures, Vec::<String>::new());
    let stopped: Vec<&str> = report.stopped.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(stopped, [lead_task.id.as_str()]);
    assert_eq!(desired_status(&moto, &ecs, &lead_task.id).await, "STOPPED");
    for mate in slots.iter().filter(|s| s.key != lead.key) {
        let arn = &mate.task.as_ref().unwrap().id;
        assert_eq!(desired_status(&moto, &ecs, arn).await, "RUNNING", "{arn}");
    }
    // The one missing slot is launched alone (one call of one task).
    assert_eq!(report.started.len(), 1);
    assert_eq!(calls(&moto).last().unwrap().0, 1);
}

#[tokio::test]
async fn a_partial_answer_keeps_the_tasks_that_started() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let ecs = moto.setup().await;
    moto.set_capacity_tasks(Some(7));
    let store = Arc::new(MemoryStore::new());
    let l = launcher(&ecs, &moto.sdk_config(), SdkTransport::single_attempt());
    let d = driver(&ecs, l, store.clone(), 10);
    let report = d.pool_fill(false).await.unwrap();
    assert_eq!(report.started.len(), 7);
    assert_eq!(report.failures.len(), 3, "{:?}", report.failures);
    assert!(
        report.failures[0].contains("Capacity is unavailable"),
        "{:?}",
        report.failures
    );
    assert_eq!(slot_records(&store).await.len(), 7);
    // No capacity at all: the refill's call of 3 is refused and leaves no slot.
    let report = d.pool_refill(&CancellationToken::new()).await;
    assert_eq!(report.started.len(), 0);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(slot_records(&store).await.len(), 7);
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_replayed_and_every_task_stopped() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let ecs = moto.setup().await;
    let proxy = FaultProxy::start(&moto.endpoint_url());
    // The call reaches ECS after the launcher gave up on it: its answer is lost.
    proxy.inject(Fault::delay("RunTask", Duration::from_secs(3)));
    let mut transport = SdkTransport::single_attempt();
    transport.operation_timeout = Duration::from_secs(1);
    transport.attempt_timeout = Duration::from_secs(1);
    let store = Arc::new(MemoryStore::new());
    let l = launcher(&ecs, &proxy.sdk_config(), transport);
    let d = driver(&ecs, l, store.clone(), 4);
    let report = d.pool_fill(false).await.unwrap();
    assert_eq!(report.started, Vec::<String>::new());
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    // The lead is recorded with the call's client token and count, naming no task yet.
    let slots = slot_records(&store).await;
    assert_eq!(slots.len(), 1);
    let lead = &slots[0];
    assert!(lead.task.is_none());
    assert_eq!(lead.pool.as_ref().unwrap().batch, Some(4));
    let token = lead.pending_attempts().next().unwrap().client_token.clone();
    // Wait until ECS has started the call's tasks.
    let mut first = Vec::new();
    for _ in 0..100 {
        first = calls(&moto);
        if !first.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.len(), 1, "the delayed call reached moto");
    let (count, arns) = first[0].clone();
    assert_eq!((count, arns.len()), (4, 4));

    // The drain replays the call (same token, same count: the same four tasks) and stops
    // every one of them.
    let report = d.pool_drain().await.unwrap();
    let replays: Vec<Value> = moto
        .run_task_requests()
        .into_iter()
        .filter(|r| r["replay"] == true)
        .collect();
    assert_eq!(replays.len(), 1, "{replays:?}");
    assert_eq!(replays[0]["request"]["clientToken"], token.as_str());
    assert_eq!(replays[0]["request"]["count"], 4);
    let stopped: BTreeSet<String> = report.stopped.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(stopped, arns.iter().cloned().collect::<BTreeSet<_>>());
    for arn in &arns {
        assert_eq!(desired_status(&moto, &ecs, arn).await, "STOPPED", "{arn}");
    }
    assert!(slot_records(&store).await.is_empty());
    assert!(store.get(&lead.key).await.unwrap().is_none());
}
