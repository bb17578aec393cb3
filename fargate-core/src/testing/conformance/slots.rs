//! [`MetadataStore::acquire_slot`]'s rules: counting, liveness by record, and atomicity
//! under contention.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::job::JobKey;
use crate::metadata::{JobRecord, MetadataStore, SlotGrant, SlotStanding};

const TTL: Duration = Duration::from_secs(600);

fn key(s: &str) -> JobKey {
    JobKey::parse(s).expect("a key")
}

/// Every slot rule below, in order, on counters named after `record`'s key. `record` is
/// written and removed again.
pub async fn slots(store: &dyn MetadataStore, record: &JobRecord) {
    slots_count_up_to_the_limit(store, &format!("conf.{}", record.key)).await;
    slots_of_jobs_without_a_record_expire(store, &format!("conf-r.{}", record.key), record).await;
    slots_are_listed_as_they_count(store, &format!("conf-l.{}", record.key), record).await;
}

/// A counter gives `limit` slots and refuses the next holder, naming the holders; a holder
/// takes again what it holds; a slot given back is free at once; giving back twice is
/// harmless; a bad counter name is refused (`InvalidInput`).
pub async fn slots_count_up_to_the_limit(store: &dyn MetadataStore, counter: &str) {
    let (a, b, c) = (key("slot-a"), key("slot-b"), key("slot-c"));
    for holder in [&a, &b, &a] {
        assert_eq!(
            store
                .acquire_slot(counter, holder, 2, TTL)
                .await
                .expect("acquire"),
            SlotGrant::Taken,
            "{holder} under the limit"
        );
    }
    assert_eq!(
        store
            .acquire_slot(counter, &c, 2, TTL)
            .await
            .expect("acquire"),
        SlotGrant::Full {
            holders: vec![a.clone(), b.clone()]
        }
    );
    store.release_slot(counter, &a).await.expect("release");
    store
        .release_slot(counter, &a)
        .await
        .expect("release again");
    assert_eq!(
        store
            .acquire_slot(counter, &c, 2, TTL)
            .await
            .expect("acquire"),
        SlotGrant::Taken
    );
    assert!(matches!(
        store
            .acquire_slot(counter, &a, 2, TTL)
            .await
            .expect("acquire"),
        SlotGrant::Full { .. }
    ));
    for holder in [&b, &c] {
        store.release_slot(counter, holder).await.expect("release");
    }
    let err = store
        .acquire_slot("../escape", &a, 2, TTL)
        .await
        .expect_err("a counter name with a slash");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// A holder whose time is up counts while its job has a record and stops counting when
/// the record is gone (a crashed prepare, a job `gc` removed): nothing leaks a slot.
/// `record` is written and removed again.
pub async fn slots_of_jobs_without_a_record_expire(
    store: &dyn MetadataStore,
    counter: &str,
    record: &JobRecord,
) {
    let other = key("slot-other");
    // Time up at once, but the record keeps the slot.
    store.put(record).await.expect("put");
    assert_eq!(
        store
            .acquire_slot(counter, &record.key, 1, Duration::ZERO)
            .await
            .expect("acquire"),
        SlotGrant::Taken
    );
    assert_eq!(
        store
            .acquire_slot(counter, &other, 1, TTL)
            .await
            .expect("acquire"),
        SlotGrant::Full {
            holders: vec![record.key.clone()]
        },
        "a holder with a record counts"
    );
    store.delete(&record.key).await.expect("delete");
    assert_eq!(
        store
            .acquire_slot(counter, &other, 1, TTL)
            .await
            .expect("acquire"),
        SlotGrant::Taken,
        "a holder whose time is up and whose record is gone does not count"
    );
    store.release_slot(counter, &other).await.expect("release");
}

/// `slot_holders` lists every holder with the standing `acquire_slot` counts it by: a
/// holder with time left counts by its time, one whose time is up by its job's record, and
/// one whose time is up and whose record is gone is listed as not counting (a new holder
/// gets the slot it no longer takes) until an acquire forgets it; listing changes nothing.
/// `slot_counters` finds the counter by its prefix. `record` is written and removed again.
pub async fn slots_are_listed_as_they_count(
    store: &dyn MetadataStore,
    counter: &str,
    record: &JobRecord,
) {
    let (live, dead, next) = (key("slot-live"), key("slot-dead"), key("slot-next"));
    let standings = || async {
        let mut listed: Vec<(JobKey, SlotStanding)> = store
            .slot_holders(counter)
            .await
            .expect("slot_holders")
            .into_iter()
            .map(|h| (h.key, h.standing))
            .collect();
        listed.sort();
        listed
    };
    let sorted = |mut v: Vec<(JobKey, SlotStanding)>| {
        v.sort();
        v
    };
    assert_eq!(
        standings().await,
        [],
        "a counter never taken has no holders"
    );
    store.put(record).await.expect("put");
    for (holder, ttl) in [
        (&record.key, Duration::ZERO),
        (&live, TTL),
        (&dead, Duration::ZERO),
    ] {
        let grant = store.acquire_slot(counter, holder, 3, ttl).await;
        assert_eq!(grant.expect("acquire"), SlotGrant::Taken, "{holder}");
    }
    let want = sorted(vec![
        (record.key.clone(), SlotStanding::Record),
        (live.clone(), SlotStanding::Time),
        (dead.clone(), SlotStanding::Gone),
    ]);
    assert_eq!(standings().await, want);
    assert_eq!(standings().await, want, "listing forgets no holder");
    let prefix = counter
        .split('.')
        .next()
        .map(|p| format!("{p}."))
        .expect("a prefix");
    let counters = store.slot_counters(&prefix).await.expect("slot_counters");
    assert!(
        counters.iter().any(|c| c == counter),
        "{counters:?} has {counter}"
    );
    assert!(
        counters.iter().all(|c| c.starts_with(&prefix)),
        "{counters:?}"
    );
    assert_eq!(
        store
            .slot_counters("conf-none.")
            .await
            .expect("slot_counters"),
        Vec::<String>::new()
    );
    // The holder listed as not counting leaves its slot to a new one: 2 of 3 count.
    let grant = store.acquire_slot(counter, &next, 3, TTL).await;
    assert_eq!(grant.expect("acquire"), SlotGrant::Taken);
    let after = standings().await;
    assert!(
        after.iter().all(|(k, _)| *k != dead),
        "acquire forgot it: {after:?}"
    );
    assert_eq!(after.len(), 3, "{after:?}");
    store.delete(&record.key).await.expect("delete");
    let gone = standings().await;
    assert!(
        gone.contains(&(record.key.clone(), SlotStanding::Gone)),
        "its record is gone: {gone:?}"
    );
    for holder in [&record.key, &live, &next] {
        store.release_slot(counter, holder).await.expect("release");
    }
    assert_eq!(standings().await, []);
    let err = store
        .slot_holders("../escape")
        .await
        .expect_err("a counter name with a slash");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// Many acquirers at once, through `stores` (handles of one store: several processes or
/// hosts), never hold more than `limit` slots: first all of `acquirers` (more than
/// `limit`) ask once at the same time and exactly `limit` get one; then each takes a slot
/// `rounds` times (waiting while the counter is full), holds it across an await point and
/// gives it back, while a shared count of holders is checked against `limit`.
pub async fn slots_never_exceed_the_limit(
    stores: &[Arc<dyn MetadataStore>],
    counter: &str,
    limit: u32,
    acquirers: usize,
    rounds: usize,
) {
    assert!(acquirers > limit as usize && !stores.is_empty());
    let holder = |i: usize| key(&format!("slot-cc-{i}"));
    let start = Arc::new(tokio::sync::Barrier::new(acquirers));
    let mut tasks = Vec::new();
    for i in 0..acquirers {
        let store = Arc::clone(&stores[i % stores.len()]);
        let (start, counter, me) = (Arc::clone(&start), counter.to_owned(), holder(i));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .acquire_slot(&counter, &me, limit, TTL)
                .await
                .expect("acquire")
        }));
    }
    let mut taken = 0;
    for t in tasks {
        if t.await.expect("acquirer") == SlotGrant::Taken {
            taken += 1;
        }
    }
    assert_eq!(taken, limit as usize, "acquirers at once that got a slot");
    for i in 0..acquirers {
        stores[0]
            .release_slot(counter, &holder(i))
            .await
            .expect("release");
    }

    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..acquirers {
        let store = Arc::clone(&stores[i % stores.len()]);
        let (counter, me) = (counter.to_owned(), holder(i));
        let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                // Waits for a free slot like prepare does (bounded: the test's own limit).
                let mut tries = 0;
                while store
                    .acquire_slot(&counter, &me, limit, TTL)
                    .await
                    .expect("acquire")
                    != SlotGrant::Taken
                {
                    tries += 1;
                    assert!(tries < 10_000, "{me} never got a slot");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(now <= limit as usize, "{now} holders of {limit} slots");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                store.release_slot(&counter, &me).await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("acquirer");
    }
    assert!(most.load(Ordering::SeqCst) <= limit as usize);
}
