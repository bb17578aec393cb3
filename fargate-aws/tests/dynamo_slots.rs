//! `DynamoStore`'s counters (`MetadataStore::acquire_slot`, the fleet-wide
//! `MaxConcurrentJobs`) against DynamoDB emulators on loopback, each test on moto's and on
//! dynalite: the counting rules of the conformance suite, and many hosts acquiring at once
//! never holding more than the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fargate_aws::SdkTransport;
use fargate_aws::dynamo_store::{DynamoStore, TableSettings};
use fargate_core::metadata::DynMetadataStore;
use fargate_core::testing::conformance;
use fargate_core::{JobIdentity, JobRecord, JobResponse, MetadataStore, Namespace, PrivateKey};
use fargate_testkit::dynamodb::{self, DynamoDb};

fn transport() -> SdkTransport {
    let mut t = SdkTransport::default();
    t.initial_backoff = Duration::from_millis(5);
    t.max_backoff = Duration::from_millis(20);
    t.operation_timeout = Duration::from_secs(20);
    t
}

fn store(db: &dyn DynamoDb, host: &str) -> DynamoStore {
    DynamoStore::new("fleet", &db.sdk_config(), None, &transport())
        .unwrap()
        .with_host(host)
}

async fn table(db: &dyn DynamoDb) {
    let check = dynamodb::init_table(db, &store(db, "init"), &TableSettings::default()).await;
    assert!(check.usable(), "{check:?}");
}

async fn the_store_counts_slots_like_every_store(db: &dyn DynamoDb) {
    table(db).await;
    let identity =
        JobIdentity::from_response(Namespace::parse("ci").unwrap(), &JobResponse::new(7));
    let record = JobRecord::new(identity, PrivateKey::new("k".into()));
    let s = store(db, "host-a");
    conformance::slots(&s, &record).await;
    // Counters are items of their own: never listed as records.
    assert!(s.list().await.unwrap().is_empty());
}

async fn hosts_acquiring_at_once_never_exceed_the_limit(db: &dyn DynamoDb) {
    table(db).await;
    let hosts: Vec<DynMetadataStore> = (0..4)
        .map(|i| Arc::new(store(db, &format!("host-{i}"))) as DynMetadataStore)
        .collect();
    conformance::slots_never_exceed_the_limit(&hosts, "ci.project-1", 3, 10, 3).await;
}

/// `fargate slots` on a fleet: a host lists the holders another host's acquires left in
/// the table, each as it counts (time left; time up but a record; time up and no record),
/// and finds its namespace's counters, not another namespace's.
async fn another_host_lists_the_holders_as_they_count(db: &dyn DynamoDb) {
    use fargate_core::JobKey;
    use fargate_core::metadata::SlotStanding;

    table(db).await;
    let (a, b) = (store(db, "host-a"), store(db, "host-b"));
    let namespace = Namespace::parse("ci").unwrap();
    let record = JobRecord::new(
        JobIdentity::from_response(namespace.clone(), &JobResponse::new(1)),
        PrivateKey::new("k".into()),
    );
    a.put(&record).await.unwrap();
    let (no_record, live) = (
        JobKey::parse("ci-2").unwrap(),
        JobKey::parse("ci-3").unwrap(),
    );
    let counter = "ci.project-42";
    // The holder without a record last: the next acquire would forget it.
    for (holder, ttl) in [
        (&record.key, Duration::ZERO),
        (&live, Duration::from_secs(600)),
        (&no_record, Duration::ZERO),
    ] {
        let grant = a.acquire_slot(counter, holder, 3, ttl).await.unwrap();
        assert_eq!(grant, fargate_core::metadata::SlotGrant::Taken, "{holder}");
    }
    a.acquire_slot("cd.project-42", &live, 3, Duration::from_secs(600))
        .await
        .unwrap();

    let listed: Vec<(String, SlotStanding)> = b
        .slot_holders(counter)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.key.as_str().to_owned(), h.standing))
        .collect();
    assert_eq!(
        listed,
        [
            ("ci-1".to_owned(), SlotStanding::Record),
            ("ci-2".to_owned(), SlotStanding::Gone),
            ("ci-3".to_owned(), SlotStanding::Time),
        ]
    );
    assert_eq!(b.slot_counters("ci.").await.unwrap(), [counter]);
    assert_eq!(b.slot_counters("cd.").await.unwrap(), ["cd.project-42"]);
    assert!(b.slot_counters("ops.").await.unwrap().is_empty());
    assert!(b.slot_holders("ci.project-7").await.unwrap().is_empty());

    // The record gone, its holder stops counting too; listing forgot no one.
    a.delete(&record.key).await.unwrap();
    let standings: Vec<SlotStanding> = b
        .slot_holders(counter)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.standing)
        .collect();
    assert_eq!(
        standings,
        [SlotStanding::Gone, SlotStanding::Gone, SlotStanding::Time]
    );
}

fargate_testkit::dynamodb_tests! {
    #[tokio::test] the_store_counts_slots_like_every_store;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] hosts_acquiring_at_once_never_exceed_the_limit;
    #[tokio::test] another_host_lists_the_holders_as_they_count;
}
