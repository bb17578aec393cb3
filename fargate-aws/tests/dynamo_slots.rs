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

fargate_testkit::dynamodb_tests! {
    #[tokio::test] the_store_counts_slots_like_every_store;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] hosts_acquiring_at_once_never_exceed_the_limit;
}
