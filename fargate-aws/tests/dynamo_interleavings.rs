//! The interleaving test of the ownership model (`fargate_testkit::interleavings`) on the
//! DynamoDB store, against moto's DynamoDB and against dynalite: the two runners are two
//! hosts, each with its own `DynamoStore`, on one table (a fresh one per seed). Leases are long and never renewed
//! here (the scheduler's clock is paused and jumps): lease expiry and fencing have their
//! own tests (`tests/dynamo.rs`); this one checks the ownership invariants on the real
//! store's conditional writes, scans and locks.
//!
//! `FARGATE_INTERLEAVING_SEEDS=<n>` sets how many seeds run (default 40);
//! `FARGATE_INTERLEAVING_SEED=<n>` runs seed `n` alone and prints its step log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fargate_aws::SdkTransport;
use fargate_aws::dynamo_store::{DynamoStore, LeaseSettings, TableSettings};
use fargate_core::testing::ManualClock;
use fargate_core::{JobKey, JobRecord, MetadataStore};
use fargate_testkit::dynamodb::{self, DynamoDb};
use fargate_testkit::interleavings::{
    Backend, Bridge, check_rogues_are_caught, check_seeds, seeds_to_run,
};

/// Two hosts' stores on one table, each behind a [`Bridge`].
struct DynamoBackend {
    hosts: [Bridge; 2],
}

impl Backend for DynamoBackend {
    fn store(&self, runner: usize) -> Arc<dyn MetadataStore> {
        Arc::new(self.hosts[runner % 2].clone())
    }
    fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        self.hosts[0].peek(key)
    }
}

/// A fresh table `seed-<seed>` on `db`, and the two hosts' stores on it.
fn backend(
    db: &dyn DynamoDb,
    runtime: &Arc<tokio::runtime::Runtime>,
    seed: u64,
) -> Arc<dyn Backend> {
    let clock = ManualClock::new();
    let mut transport = SdkTransport::default();
    transport.operation_timeout = Duration::from_secs(30);
    let lease = LeaseSettings::new(Duration::from_secs(30 * 24 * 3600)).with_renewal(None);
    let table = format!("seed-{seed}");
    let host = |name: &str| {
        DynamoStore::new(&table, &db.sdk_config(), None, &transport)
            .unwrap()
            .with_host(name)
            .with_lease(lease)
            .with_clock(Arc::new(clock.clone()))
    };
    let (a, b) = (host("host-a"), host("host-b"));
    let check = runtime.block_on(dynamodb::init_table(db, &a, &TableSettings::default()));
    assert!(check.usable(), "{check:?}");
    let bridge = |store: DynamoStore| Bridge::new(Arc::new(store), runtime.clone(), clock.clone());
    Arc::new(DynamoBackend {
        hosts: [bridge(a), bridge(b)],
    })
}

fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    )
}

fn interleavings_keep_the_ownership_invariants_on_dynamodb(db: &dyn DynamoDb) {
    let runtime = runtime();
    check_seeds(seeds_to_run(40), |seed| backend(db, &runtime, seed));
}

fn the_checker_catches_a_rogue_actor_on_dynamodb(db: &dyn DynamoDb) {
    let runtime = runtime();
    let next = std::sync::atomic::AtomicU64::new(0);
    check_rogues_are_caught(|_| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        backend(db, &runtime, n)
    });
}

fargate_testkit::dynamodb_tests! {
    sync #[test] interleavings_keep_the_ownership_invariants_on_dynamodb;
    sync #[test] the_checker_catches_a_rogue_actor_on_dynamodb;
}
