//! [`MetadataStore`]'s rules.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::launcher::TaskRef;
use crate::metadata::{JobRecord, MetadataStore, Phase};

/// [`MetadataStore`]: every store check below, in order. `record` is written and removed
/// again.
pub async fn store(store: &dyn MetadataStore, record: &JobRecord) {
    records_round_trip(store, record).await;
    lock_is_exclusive(store, record).await;
}

/// Put, get, replace, list and delete `record`; a missing record is `None` and deleting it
/// succeeds. `record` is removed again.
pub async fn records_round_trip(store: &dyn MetadataStore, record: &JobRecord) {
    let key = &record.key;
    assert_eq!(store.get(key).await.expect("get missing"), None);
    store
        .delete(key)
        .await
        .expect("deleting a missing record must succeed");
    store.put(record).await.expect("put");
    assert_eq!(store.get(key).await.expect("get").as_ref(), Some(record));
    let mut updated = record.clone();
    updated.phase = Phase::Launched;
    updated.task = Some(TaskRef::new("task-1"));
    store.put(&updated).await.expect("replace");
    assert_eq!(store.get(key).await.expect("get").as_ref(), Some(&updated));
    assert!(store.list().await.expect("list").contains(key));
    store.delete(key).await.expect("delete");
    assert_eq!(store.get(key).await.expect("get deleted"), None);
    assert!(!store.list().await.expect("list").contains(key));
}

/// The lock of `record`'s job has one holder at a time: a second `lock` waits and then
/// fails with `Timeout`; after the release it is given again.
pub async fn lock_is_exclusive(store: &dyn MetadataStore, record: &JobRecord) {
    let key = &record.key;
    let guard = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    let err = store
        .lock(key, Duration::from_millis(100))
        .await
        .expect_err("a held lock must not be given twice");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    drop(guard);
    drop(
        store
            .lock(key, Duration::from_secs(1))
            .await
            .expect("lock after release"),
    );
}
