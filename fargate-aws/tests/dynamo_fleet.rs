//! Fleet mode with the driver's own stages: several hosts (each a `Driver` with its own
//! `DynamoStore`, one namespace) on one table of a DynamoDB emulator (each test on moto's
//! and on dynalite), one launcher and shell
//! (the in-memory ones: ECS is not what is tested here). One warm pool serves every host,
//! and no warm task ever serves two jobs, also when hosts claim at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use fargate_aws::SdkTransport;
use fargate_aws::dynamo_store::{DynamoStore, TableSettings};
use fargate_core::options::WarmPoolOptions;
use fargate_core::testing::{MemoryLauncher, MemoryShell};
use fargate_core::{
    Driver, DriverOptions, JobContext, JobResponse, MetadataStore, Namespace, TaskLauncher,
};
use fargate_testkit::dynamodb::{self, DynamoDb};
use tokio_util::sync::CancellationToken;

struct Fleet {
    launcher: Arc<MemoryLauncher>,
    shell: Arc<MemoryShell>,
    config: aws_config::SdkConfig,
}

impl Fleet {
    async fn start(db: &dyn DynamoDb) -> Fleet {
        let fleet = Fleet {
            launcher: Arc::new(MemoryLauncher::new()),
            shell: Arc::new(MemoryShell::new()),
            config: db.sdk_config(),
        };
        let check = dynamodb::init_table(db, &fleet.store("init"), &TableSettings::default()).await;
        assert!(check.usable(), "{check:?}");
        fleet
    }

    fn store(&self, host: &str) -> DynamoStore {
        DynamoStore::new("fleet", &self.config, None, &SdkTransport::default())
            .unwrap()
            .with_host(host)
    }

    /// Host `name`'s driver, with a warm pool of `pool`.
    fn host(&self, name: &str, pool: usize) -> Driver {
        self.host_on(self.store(name), pool)
    }

    /// A host's driver on `store`, with a warm pool of `pool`.
    fn host_on(&self, store: DynamoStore, pool: usize) -> Driver {
        let mut options = DriverOptions::builder()
            .namespace(Namespace::parse("fleet").unwrap())
            .task_definition("ci-coordinator:1")
            .build()
            .unwrap();
        let mut warm = WarmPoolOptions::default();
        warm.size = pool;
        options.pool = warm;
        Driver::new(
            options,
            self.launcher.clone(),
            self.shell.clone(),
            Arc::new(store),
        )
    }
}

fn job(id: u64) -> JobContext {
    JobContext::new(JobResponse::new(id))
}

async fn one_warm_pool_serves_every_host(db: &dyn DynamoDb) {
    let fleet = Fleet::start(db).await;
    let (a, b) = (fleet.host("host-a", 2), fleet.host("host-b", 2));
    let cancel = CancellationToken::new();
    // Host a fills the pool; host b sees it.
    let filled = a.pool_fill(true).await.unwrap();
    assert_eq!(filled.idle(), 2, "{filled}");
    assert_eq!(b.pool_status().await.unwrap().idle(), 2);
    // A job on host b and one on host a both get warm tasks, not the same one.
    let on_b = b.prepare(&job(1), &cancel).await.unwrap();
    let on_a = a.prepare(&job(2), &cancel).await.unwrap();
    assert!(on_b.warm && on_a.warm, "both jobs take warm tasks");
    assert_ne!(on_b.task, on_a.task);
    // The pool is empty for every host now: a third job launches its own task.
    let third = b.prepare(&job(3), &cancel).await.unwrap();
    assert!(!third.warm);
    // Any host's cleanup ends any host's job: a job's record is the fleet's.
    a.cleanup(&job(1)).await.unwrap();
    b.cleanup(&job(2)).await.unwrap();
    a.cleanup(&job(3)).await.unwrap();
    assert!(fleet.launcher.running().is_empty(), "every task stopped");
    assert!(
        fleet.store("check").list().await.unwrap().is_empty(),
        "nothing is left"
    );
}

async fn hosts_claiming_at_once_never_share_a_warm_task(db: &dyn DynamoDb) {
    let fleet = Fleet::start(db).await;
    let hosts: Vec<Driver> = (0..4)
        .map(|i| fleet.host(&format!("host-{i}"), 8))
        .collect();
    let cancel = CancellationToken::new();
    for round in 0..3u64 {
        let filled = hosts[0].pool_fill(true).await.unwrap();
        assert_eq!(filled.idle(), 8, "round {round}: {filled}");
        // 8 jobs, two per host, all at once, on the runtime's threads.
        let prepares: Vec<_> = (0..8u64)
            .map(|n| {
                let host = hosts[n as usize % 4].clone();
                let cancel = cancel.clone();
                tokio::spawn(async move { host.prepare(&job(round * 100 + n), &cancel).await })
            })
            .collect();
        let mut reports = Vec::new();
        for prepare in prepares {
            reports.push(prepare.await.unwrap().unwrap());
        }
        let mut tasks = BTreeSet::new();
        let mut warm = 0;
        for report in reports {
            warm += usize::from(report.warm);
            assert!(
                tasks.insert(report.task.id.clone()),
                "round {round}: {} served two jobs",
                report.task
            );
        }
        // Every idle task went to one job (a claim that lost a race launches its own).
        assert!(warm >= 1, "round {round}: no job got a warm task");
        for n in 0..8u64 {
            hosts[(n as usize + 1) % 4]
                .cleanup(&job(round * 100 + n))
                .await
                .unwrap();
        }
        hosts[0].pool_drain().await.unwrap();
        assert!(
            fleet.launcher.running().is_empty(),
            "round {round}: tasks left"
        );
        let left = fleet.store("check").list().await.unwrap();
        assert!(left.is_empty(), "round {round}: records left: {left:?}");
        let _ = fleet
            .launcher
            .list(&Namespace::parse("fleet").unwrap())
            .await;
    }
}

async fn a_dead_hosts_job_is_stopped_by_another_hosts_gc(db: &dyn DynamoDb) {
    use fargate_core::gc::{self, Action, GcOptions};
    let fleet = Fleet::start(db).await;
    // Host a's clock says an hour ago: what it writes now is what a host that died an
    // hour ago wrote last (its heartbeats, and below its record's last change).
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let clock = fargate_core::testing::ManualClock::at(an_hour_ago);
    let a = fleet.host_on(fleet.store("host-a").with_clock(Arc::new(clock)), 0);
    let b = fleet.host("host-b", 0);
    let cancel = CancellationToken::new();
    let dead = a.prepare(&job(1), &cancel).await.unwrap();
    let store_a = fleet.store("host-a");
    let key = a.identity(&job(1)).unwrap().key();
    let mut record = store_a.get(&key).await.unwrap().unwrap();
    record.updated_at -= 3600;
    store_a.put(&record).await.unwrap();
    // Host b's job is alive: its prepare noted a heartbeat now.
    let alive = b.prepare(&job(2), &cancel).await.unwrap();
    let b_store = fleet.store("host-b");
    let beat = b_store.last_heartbeat(&key).await.unwrap().unwrap();
    assert!(
        beat <= an_hour_ago + std::time::Duration::from_secs(5),
        "host a's heartbeat is old"
    );
    // Host b's gc: host a's job gave no sign of life for an hour; b's own job did.
    let report = gc::collect(
        &*fleet.launcher,
        &b_store,
        &Namespace::parse("fleet").unwrap(),
        &GcOptions::default(),
    )
    .await
    .unwrap();
    let action = |task: &fargate_core::TaskRef| {
        report
            .tasks
            .iter()
            .find(|t| t.task == task.id)
            .map(|t| t.action)
    };
    assert_eq!(action(&dead.task), Some(Action::Removed), "{report}");
    assert!(report.to_string().contains("no sign of life"), "{report}");
    assert_eq!(action(&alive.task), Some(Action::Kept), "{report}");
    assert_eq!(fleet.launcher.running(), std::slice::from_ref(&alive.task));
    assert_eq!(
        b_store.get(&key).await.unwrap(),
        None,
        "the dead job's record goes too"
    );
    b.cleanup(&job(2)).await.unwrap();
}

fargate_testkit::dynamodb_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] one_warm_pool_serves_every_host;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] hosts_claiming_at_once_never_share_a_warm_task;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_dead_hosts_job_is_stopped_by_another_hosts_gc;
}
