//! ECS's throttling, as the moto fixture reproduces it, and the call budget that keeps a
//! burst of launches under it (`fargate_core::budget`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fargate_aws::{EcsLauncher, SdkTransport};
use fargate_core::budget::{BudgetedLauncher, CallRates, MemoryCallBudget, Rate};
use fargate_core::{ErrorKind, TaskLauncher};
use fargate_testkit::moto::Moto;

async fn launcher(moto: &Moto) -> (Arc<EcsLauncher>, fargate_testkit::moto::MotoEcs) {
    let ecs = moto.setup().await;
    let mut config = ecs.config();
    // One attempt per call: the SDK does not retry a throttled call behind our back.
    config.transport = SdkTransport::single_attempt();
    (
        Arc::new(EcsLauncher::new(config, &moto.sdk_config()).unwrap()),
        ecs,
    )
}

#[tokio::test]
async fn the_fixture_throttles_run_task_as_ecs_does() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let (l, ecs) = launcher(&moto).await;
    moto.set_throttling(&[("RunTask", 0.5, 2.0)]);
    l.launch(&ecs.spec(1)).await.unwrap();
    l.launch(&ecs.spec(2)).await.unwrap();
    let err = l.launch(&ecs.spec(3)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.to_string().contains("Rate exceeded"), "{err}");
    assert!(
        !err.outcome_unknown(),
        "a throttled call started nothing: {err:?}"
    );
    let throttled = moto.throttled_calls();
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert_eq!(throttled[0]["action"], "RunTask");
    // The refused call started nothing: two tasks run.
    let running = moto
        .ecs_client()
        .list_tasks()
        .cluster("ci")
        .send()
        .await
        .unwrap();
    assert_eq!(running.task_arns().len(), 2);
    // Task launches have their own bucket, counted in tasks.
    moto.set_throttling(&[("FargateTasks", 0.5, 1.0)]);
    l.launch(&ecs.spec(4)).await.unwrap();
    let err = l.launch(&ecs.spec(5)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert_eq!(moto.throttled_calls()[1]["bucket"], "FargateTasks");
}

/// Launches `jobs` tasks at once through `l`, each retried at once on a throttle (the
/// budget decides when it goes); returns when the last one started.
async fn burst(l: Arc<dyn TaskLauncher>, ecs: &fargate_testkit::moto::MotoEcs, jobs: u64) {
    let mut handles = Vec::new();
    for job in 1..=jobs {
        let l = l.clone();
        let spec = ecs.spec(job);
        handles.push(tokio::spawn(async move {
            for _ in 0..50 {
                match l.launch(&spec).await {
                    Ok(_) => return,
                    Err(e) if e.kind() == ErrorKind::Throttled => continue,
                    Err(e) => panic!("job {job}: {e}"),
                }
            }
            panic!("job {job}: still throttled after 50 attempts");
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_budget_at_the_limit_is_never_throttled_and_an_optimistic_one_converges() {
    fargate_testkit::require_fixture!(Moto);
    let moto = Moto::start();
    let (l, ecs) = launcher(&moto).await;
    moto.set_throttling(&[("RunTask", 10.0, 5.0)]);

    // A budget below ECS's: 30 jobs at once, not one throttled call.
    let budget = Arc::new(MemoryCallBudget::new(CallRates::new(
        Rate::new(8.0, 4.0),
        Rate::new(20.0, 20.0),
        Rate::new(100.0, 100.0),
    )));
    burst(Arc::new(BudgetedLauncher::new(l.clone(), budget)), &ecs, 30).await;
    assert_eq!(moto.throttled_calls(), Vec::<serde_json::Value>::new());

    // A budget that thinks it has three times ECS's rate (another tool uses the account):
    // the first throttles halve it until it fits, and the storm ends well before the burst.
    let budget = Arc::new(MemoryCallBudget::new(CallRates::new(
        Rate::new(30.0, 5.0),
        Rate::new(20.0, 20.0),
        Rate::new(300.0, 300.0),
    )));
    let started = std::time::SystemTime::now();
    burst(Arc::new(BudgetedLauncher::new(l.clone(), budget)), &ecs, 60).await;
    let ended = std::time::SystemTime::now();
    let throttled = moto.throttled_calls();
    eprintln!(
        "throttled calls of the optimistic budget: {}",
        throttled.len()
    );
    assert!(
        !throttled.is_empty(),
        "the optimistic budget was throttled at first"
    );
    assert!(
        throttled.len() <= 20,
        "{} throttled calls for 60 launches: the budget did not slow down",
        throttled.len()
    );
    // No throttle in the last third of the burst.
    let at = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let cut = at(started) + (at(ended) - at(started)) * 2.0 / 3.0;
    let late: Vec<_> = throttled
        .iter()
        .filter(|t| t["at"].as_f64().unwrap() > cut)
        .collect();
    assert!(late.is_empty(), "throttled late in the burst: {late:?}");
}
