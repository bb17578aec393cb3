//! `DynamoStore` against DynamoDB emulators on loopback, each test on moto's DynamoDB
//! (`fargate_testkit::moto`) and on dynalite (`fargate_testkit::dynalite`): the store
//! conformance suite, fencing, leases and their renewal, the table's setup and checks, what
//! a job costs in requests.
//! Lease time moves with a manual clock wherever a test can; the few waits left are the
//! suite's and the store's own bounded waits for a lease to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fargate_aws::SdkTransport;
use fargate_aws::dynamo_store::{DynamoStore, LeaseSettings, TableSettings};
use fargate_core::metadata::{InterruptionMemory, InterruptionNote};
use fargate_core::testing::ManualClock;
use fargate_core::testing::conformance::{self, LockCaps};
use fargate_core::{
    ErrorKind, JobIdentity, JobKey, JobRecord, JobResponse, MetadataStore, Namespace, PrivateKey,
};
use fargate_testkit::dynamodb::{self, DynamoDb};
use serde_json::json;

fn transport() -> SdkTransport {
    let mut t = SdkTransport::default();
    t.initial_backoff = Duration::from_millis(5);
    t.max_backoff = Duration::from_millis(20);
    t.operation_timeout = Duration::from_secs(20);
    t
}

/// A store of host `host` on `table` of `db`.
fn store(db: &dyn DynamoDb, table: &str, host: &str) -> DynamoStore {
    DynamoStore::new(table, &db.sdk_config(), None, &transport())
        .unwrap()
        .with_host(host)
}

async fn table(db: &dyn DynamoDb, name: &str) -> DynamoStore {
    let s = store(db, name, "init");
    let check = dynamodb::init_table(db, &s, &TableSettings::default()).await;
    assert!(check.usable(), "{check:?}");
    s
}

fn record(job: u64) -> JobRecord {
    let identity =
        JobIdentity::from_response(Namespace::parse("ci").unwrap(), &JobResponse::new(job));
    JobRecord::new(
        identity,
        PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nk\n".into()),
    )
}

async fn the_store_passes_the_conformance_suite(db: &dyn DynamoDb) {
    table(db, "fleet").await;
    // The suite waits for a lease to end on its own: a short one, never renewed.
    let lease = Duration::from_secs(1);
    let settings = LeaseSettings::new(lease)
        .with_renewal(None)
        .with_max_clock_skew(Duration::ZERO);
    let copy = tempfile::tempdir().unwrap();
    let s = store(db, "fleet", "host-a")
        .with_lease(settings)
        .with_local_copy(copy.path());
    conformance::store(&s, &record(1), LockCaps::leased(lease)).await;
}

async fn a_holder_paused_past_its_lease_cannot_overwrite_the_new_holder(db: &dyn DynamoDb) {
    table(db, "fleet").await;
    let clock = ManualClock::new();
    let settings = LeaseSettings::new(Duration::from_secs(60)).with_renewal(None);
    let host = |name| {
        store(db, "fleet", name)
            .with_lease(settings)
            .with_clock(Arc::new(clock.clone()))
    };
    let (a, b) = (host("host-a"), host("host-b"));
    // Host a takes the lock and pauses (no renewal) past the lease and the skew allowance.
    conformance::fenced_writes(&a, &b, &record(2), || async {
        clock.advance(Duration::from_secs(60 + 5 + 1));
    })
    .await;
    // Within the skew allowance after the lease's end, a lease is not taken over by clock.
    let lock = a.lock(&record(3).key, Duration::ZERO).await.unwrap();
    clock.advance(Duration::from_secs(64));
    let err = b.lock(&record(3).key, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("host-a/"), "names the holder: {err}");
    a.unlock(lock).await.unwrap();
}

/// The host's copy of a record (what a run stage reads) never holds what the table does
/// not: a write the table refuses (a holder that lost its lock) leaves no copy, a record
/// another host changed is read from the table, and a copy whose record another host
/// removed goes at the next listing, a minute later.
async fn the_hosts_copy_never_holds_what_the_table_does_not(db: &dyn DynamoDb) {
    use fargate_core::Phase;
    table(db, "fleet").await;
    let clock = ManualClock::new();
    let settings = LeaseSettings::new(Duration::from_secs(60)).with_renewal(None);
    let dir = tempfile::tempdir().unwrap();
    let host = |name: &str| {
        store(db, "fleet", name)
            .with_lease(settings)
            .with_clock(Arc::new(clock.clone()))
            .with_local_copy(dir.path().join(name))
    };
    let (a, b) = (host("host-a"), host("host-b"));
    let mut ready = record(5);
    ready.phase = Phase::Ready;
    let key = ready.key.clone();
    let copy = dir.path().join("host-a").join(format!("{key}.json"));
    let lock = a.lock(&key, Duration::ZERO).await.unwrap();
    a.put_locked(&lock, &ready).await.unwrap();
    assert!(copy.exists(), "a ready record this host wrote is copied");
    let calls = a.api_calls();
    calls.reset();
    assert_eq!(a.get_cached(&key).await.unwrap().as_ref(), Some(&ready));
    assert_eq!(calls.total(), 0, "read from the copy");
    // Host a pauses past its lease; host b takes the job over and changes the record.
    clock.advance(Duration::from_secs(60 + 5 + 1));
    let taken = b.lock(&key, Duration::ZERO).await.unwrap();
    let mut stopping = ready.clone();
    stopping.phase = Phase::Stopping;
    b.put_locked(&taken, &stopping).await.unwrap();
    // Host a's late write is refused, and its copy is gone with it: its stages read the
    // table, which says what host b wrote.
    let err = a.put_locked(&lock, &ready).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockLost, "{err}");
    assert!(!copy.exists(), "a refused write leaves no copy");
    assert_eq!(a.get_cached(&key).await.unwrap().as_ref(), Some(&stopping));
    a.unlock(lock).await.unwrap();
    b.unlock(taken).await.unwrap();
    // A copy of a record another host removed: kept for a minute (a listing's scan may
    // miss a record written while it ran), then removed by this host's next listing.
    let mut other = record(6);
    other.phase = Phase::Ready;
    let other_copy = dir
        .path()
        .join("host-a")
        .join(format!("{}.json", other.key));
    a.put(&other).await.unwrap();
    b.delete(&other.key).await.unwrap();
    a.list().await.unwrap();
    assert!(other_copy.exists(), "younger than a minute: kept");
    clock.advance(Duration::from_secs(61));
    a.list().await.unwrap();
    assert!(!other_copy.exists(), "removed once a minute old");
    assert_eq!(a.get_cached(&other.key).await.unwrap(), None);
}

async fn a_held_lock_is_renewed_and_a_dropped_one_released(db: &dyn DynamoDb) {
    table(db, "fleet").await;
    let clock = ManualClock::new();
    let settings =
        LeaseSettings::new(Duration::from_secs(60)).with_renewal(Some(Duration::from_millis(50)));
    let host = |name| {
        store(db, "fleet", name)
            .with_lease(settings)
            .with_clock(Arc::new(clock.clone()))
    };
    let (a, b) = (host("host-a"), host("host-b"));
    let key = record(4).key;
    let lock = a.lock(&key, Duration::ZERO).await.unwrap();
    let first = a.lease_of(&key).await.unwrap().unwrap();
    assert_eq!(first.holder, lock.holder());
    assert_eq!(Some(first.fence), lock.fence());
    assert_eq!(first.duration, Duration::from_secs(60));
    // 50 s later the holder's renewal (every 50 ms) has pushed the lease's end ahead.
    clock.advance(Duration::from_secs(50));
    let renewed = wait_for(|| async {
        let now = a.lease_of(&key).await.unwrap().unwrap();
        (now.until > first.until).then_some(now)
    })
    .await;
    assert_eq!(renewed.fence, first.fence, "a renewal keeps the token");
    // So 30 s more (80 s after it was taken) it is still held.
    clock.advance(Duration::from_secs(30));
    let err = b.lock(&key, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // A renewal by hand works too; one of a lock that was lost says so.
    a.renew(&lock).await.unwrap();
    // Dropped without unlock (a dropped future): released in the background.
    drop(lock);
    let again = b.lock(&key, Duration::from_secs(10)).await.unwrap();
    b.unlock(again).await.unwrap();
    assert_eq!(a.lease_of(&key).await.unwrap(), None, "nothing is left");
}

async fn a_dead_holders_lease_is_taken_over_after_its_duration_whatever_the_clocks_say(
    db: &dyn DynamoDb,
) {
    table(db, "fleet").await;
    let lease = Duration::from_secs(1);
    let settings = LeaseSettings::new(lease).with_renewal(None);
    let a = store(db, "fleet", "host-a").with_lease(settings);
    // Host b's clock is an hour behind: by its clock, a's lease never ends.
    let behind = ManualClock::at(std::time::SystemTime::now() - Duration::from_secs(3600));
    let b = store(db, "fleet", "host-b")
        .with_lease(settings)
        .with_clock(Arc::new(behind));
    let key = record(5).key;
    // Host a takes the lock and dies (its process ends: nothing releases it).
    std::mem::forget(a.lock(&key, Duration::ZERO).await.unwrap());
    let started = tokio::time::Instant::now();
    let lock = b.lock(&key, Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() >= lease,
        "taken over after {:?}, before the lease's duration",
        started.elapsed()
    );
    assert!(lock.holder().starts_with("host-b/"));
    b.unlock(lock).await.unwrap();
}

/// Polls `probe` (every 20 ms, at most 10 s) until it gives a value.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(probe: impl Fn() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition never came true"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn records_notes_and_their_limits(db: &dyn DynamoDb) {
    let s = table(db, "fleet").await;
    // Records of several namespaces; list gives those with a record only.
    let (a, b) = (record(10), record(11));
    s.put(&a).await.unwrap();
    s.put(&b).await.unwrap();
    let lock_only = s
        .lock(&JobKey::parse("ci_pool_fill").unwrap(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(s.list().await.unwrap(), [a.key.clone(), b.key.clone()]);
    s.unlock(lock_only).await.unwrap();
    // A record too large for an item is refused before it is sent...
    let mut big = record(12);
    big.private_key = PrivateKey::new("x".repeat(400 * 1024));
    let err = s.put(&big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(s.get(&big.key).await.unwrap(), None);
    // ...and the fixture refuses such an item as DynamoDB does.
    let (status, answer) = db.dynamodb(
        "PutItem",
        &json!({"TableName": "fleet", "Item": {"pk": {"S": "x"}, "rec": {"S": "y".repeat(410 * 1024)}}}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("Item size has exceeded"),
        "{answer}"
    );
    // An unreadable record is a corrupt record, never a missing one.
    db.dynamodb(
        "PutItem",
        &json!({"TableName": "fleet", "Item": {"pk": {"S": "ci-13"}, "rec": {"S": "{"}}}),
    );
    let err = s.get(&JobKey::parse("ci-13").unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptRecord, "{err}");
    // Interruption notes: recalled while current; the TTL attribute is the note's end.
    let key = JobKey::parse("ci-reclaimed-0123").unwrap();
    let note = InterruptionNote::new("Your Spot Task was interrupted.", Duration::from_secs(600));
    s.remember(&key, &note).await.unwrap();
    assert_eq!(s.recall(&key).await.unwrap(), Some(note.clone()));
    let (_, item) = db.dynamodb(
        "GetItem",
        &json!({"TableName": "fleet", "Key": {"pk": {"S": "ci-reclaimed-0123"}}}),
    );
    assert_eq!(item["Item"]["expires_at"]["N"], note.until.to_string());
    let old = InterruptionNote::new("old", Duration::ZERO);
    s.remember(&key, &old).await.unwrap();
    assert_eq!(
        s.recall(&key).await.unwrap(),
        None,
        "TTL deletes late: checked on read"
    );
    // Records carry the item TTL a week ahead.
    let (_, item) = db.dynamodb(
        "GetItem",
        &json!({"TableName": "fleet", "Key": {"pk": {"S": a.key.as_str()}}}),
    );
    let ttl: u64 = item["Item"]["expires_at"]["N"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ttl > now + 6 * 24 * 3600, "{ttl}");
}

async fn init_creates_a_table_and_check_says_what_is_wrong(db: &dyn DynamoDb) {
    let s = store(db, "fleet", "init");
    // No table: every call says how to make one.
    let err = s.get(&record(1).key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.hint().unwrap().contains("fargate store init"),
        "{err:?}"
    );
    let check = s.check_table().await.unwrap();
    assert!(!check.exists && !check.usable(), "{check:?}");
    // Created on demand, with TTL; a second init changes nothing.
    let settings = TableSettings::default().with_kms_key(Some("alias/fargate".into()));
    if db.has_ttl() {
        let check = s.init_table(&settings).await.unwrap();
        assert!(check.usable(), "{check:?}");
        assert!(
            check.done.iter().any(|d| d.contains("created")),
            "{check:?}"
        );
        assert!(
            !check
                .warnings
                .iter()
                .any(|w| w.contains("TTL") || w.contains("provisioned") || w.contains("KMS")),
            "{check:?}"
        );
        let again = s.init_table(&TableSettings::default()).await.unwrap();
        assert!(again.usable() && again.done.is_empty(), "{again:?}");
    } else {
        // dynalite has neither TTL nor encryption at rest: init creates the table, fails
        // at turning TTL on, and the check says what is missing. DynamoDB has both.
        let check = dynamodb::init_table(db, &s, &settings).await;
        assert!(check.usable(), "{check:?}");
        assert!(
            check.warnings.iter().any(|w| w.contains("TTL off")),
            "{check:?}"
        );
        assert!(
            check.warnings.iter().any(|w| w.contains("KMS")),
            "{check:?}"
        );
        assert!(
            !check.warnings.iter().any(|w| w.contains("provisioned")),
            "{check:?}"
        );
        let again = dynamodb::init_table(db, &s, &TableSettings::default()).await;
        assert_eq!(again, check, "a second init creates nothing");
    }
    let (_, described) = db.dynamodb("DescribeTable", &json!({"TableName": "fleet"}));
    assert_eq!(
        described["Table"]["BillingModeSummary"]["BillingMode"],
        "PAY_PER_REQUEST"
    );
    assert_eq!(described["Table"]["TableStatus"], "ACTIVE");
    // A table of another shape is not used.
    db.dynamodb(
        "CreateTable",
        &json!({
            "TableName": "other",
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "N"}],
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        }),
    );
    let check = store(db, "other", "init").check_table().await.unwrap();
    assert!(!check.usable(), "{check:?}");
    assert!(
        check.errors[0].contains("string partition key `pk`"),
        "{check:?}"
    );
    assert!(
        check.warnings.iter().any(|w| w.contains("provisioned")),
        "{check:?}"
    );
    assert!(
        check.warnings.iter().any(|w| w.contains("TTL")),
        "{check:?}"
    );
}

/// A new table is `CREATING` for a while on DynamoDB (moto's is `ACTIVE` at once): init
/// waits until it is `ACTIVE` before it goes on (on dynalite, to turning TTL on, which fails
/// there at once).
#[tokio::test]
async fn init_waits_for_a_new_table_to_be_active() {
    fargate_testkit::require_fixture!(Dynalite);
    let db = fargate_testkit::dynalite::Dynalite::builder()
        .create_table_delay(Duration::from_millis(1500))
        .start();
    let s = store(&db, "fleet", "init");
    let check = dynamodb::init_table(&db, &s, &TableSettings::default()).await;
    assert!(check.usable(), "{check:?}");
    let (_, described) = db.dynamodb("DescribeTable", &json!({"TableName": "fleet"}));
    assert_eq!(described["Table"]["TableStatus"], "ACTIVE", "{described}");
}

/// What a job costs in DynamoDB requests, with the driver's own stages (in-memory launcher
/// and shell) and the host's local copy, as the CLI keeps it: prepare, the ten run stages
/// gitlab-runner makes, cleanup; heartbeats at most one per 30 s (the store's clock is a
/// manual one, moved past 30 s once between two stages). The figures are the docs'
/// (docs/fleet.md).
async fn a_jobs_dynamodb_requests(db: &dyn DynamoDb) {
    use fargate_core::testing::{MemoryLauncher, MemoryShell};
    use fargate_core::{Driver, DriverOptions, JobContext};
    use std::os::unix::fs::PermissionsExt;
    table(db, "fleet").await;
    let dir = tempfile::tempdir().unwrap();
    let copy_dir = dir.path().join(fargate_aws::dynamo_store::COPY_DIR);
    let clock = ManualClock::new();
    let store = store(db, "fleet", "host-a")
        .with_clock(Arc::new(clock.clone()))
        .with_local_copy(&copy_dir);
    let options = DriverOptions::builder()
        .namespace(Namespace::parse("ci").unwrap())
        .task_definition("td:1")
        .build()
        .unwrap();
    let driver = Driver::new(
        options,
        Arc::new(MemoryLauncher::new()),
        Arc::new(MemoryShell::new()),
        Arc::new(store.clone()),
    );
    let job = JobContext::new(JobResponse::new(77));
    let key = job
        .identity(&Namespace::parse("ci").unwrap())
        .unwrap()
        .key();
    let cancel = tokio_util::sync::CancellationToken::new();
    let calls = store.api_calls();
    let run = |stage: &'static str| {
        let (driver, job, cancel) = (&driver, &job, &cancel);
        async move {
            let mut out = fargate_core::CapturedOutput::default();
            driver
                .run(job, stage, Arc::from(&b"true"[..]), &mut out, cancel)
                .await
                .unwrap();
        }
    };
    calls.reset();
    driver.prepare(&job, &cancel).await.unwrap();
    let prepare = calls.snapshot();
    assert_eq!(
        calls.total(),
        5,
        "prepare: a lock that reads, three writes (the last one its heartbeat), an unlock: {prepare:?}"
    );
    // The host's copy: a ready record, 0600 in a 0700 directory.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&copy_dir), 0o700);
    assert_eq!(mode(&copy_dir.join(format!("{key}.json"))), 0o600);
    let (_, item) = db.dynamodb(
        "GetItem",
        &json!({"TableName": "fleet", "Key": {"pk": {"S": key.as_str()}}}),
    );
    let record_bytes = item["Item"]["rec"]["S"].as_str().unwrap().len();
    let beats = store.last_heartbeat(&key).await.unwrap();
    assert!(
        beats.is_some(),
        "prepare's last write is the job's heartbeat"
    );

    // gitlab-runner's run stages of a job, each a process of its own: within 30 s of the
    // last sign of life, none reads or writes the table.
    calls.reset();
    for stage in [
        "prepare_script",
        "get_sources",
        "restore_cache",
        "download_artifacts",
        "step_script",
        "after_script",
        "archive_cache",
        "upload_artifacts_on_success",
        "cleanup_file_variables",
    ] {
        run(stage).await;
    }
    assert_eq!(calls.total(), 0, "run stages: {:?}", calls.snapshot());
    // 30 s later by the store's clock: the next stage notes one heartbeat, the one after
    // it none.
    clock.advance(Duration::from_secs(31));
    run("build_script").await;
    assert_eq!(
        calls.snapshot(),
        [("UpdateItem".to_owned(), 1)].into(),
        "one heartbeat after 30 s"
    );
    let beat = store.last_heartbeat(&key).await.unwrap().unwrap();
    assert!(
        beat >= beats.unwrap() + Duration::from_secs(31),
        "the heartbeat is in the table: {beat:?} after {beats:?}"
    );
    calls.reset();
    run("after_script").await;
    assert_eq!(calls.total(), 0, "no second heartbeat within 30 s");

    calls.reset();
    driver.cleanup(&job).await.unwrap();
    let cleanup = calls.snapshot();
    assert_eq!(
        calls.total(),
        3,
        "cleanup: a lock that reads, a write (stopping), a delete that unlocks: {cleanup:?}"
    );
    println!(
        "DynamoDB requests: prepare {prepare:?}, 11 run stages: 1 heartbeat, cleanup {cleanup:?}; the ready record has {record_bytes} bytes"
    );
    assert_eq!(
        store.list().await.unwrap(),
        Vec::<JobKey>::new(),
        "nothing is left"
    );
    assert!(
        !copy_dir.join(format!("{key}.json")).exists(),
        "nor the host's copy"
    );
    let (_, scan) = db.dynamodb("Scan", &json!({"TableName": "fleet"}));
    assert_eq!(scan["Count"], 0, "no item (nor lock) is left: {scan}");
}

fargate_testkit::dynamodb_tests! {
    #[tokio::test] the_store_passes_the_conformance_suite;
    #[tokio::test] a_holder_paused_past_its_lease_cannot_overwrite_the_new_holder;
    #[tokio::test] the_hosts_copy_never_holds_what_the_table_does_not;
    #[tokio::test] a_held_lock_is_renewed_and_a_dropped_one_released;
    #[tokio::test] a_dead_holders_lease_is_taken_over_after_its_duration_whatever_the_clocks_say;
    #[tokio::test] records_notes_and_their_limits;
    #[tokio::test] init_creates_a_table_and_check_says_what_is_wrong;
    #[tokio::test] a_jobs_dynamodb_requests;
}
