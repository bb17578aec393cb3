//! [`MetadataStore`]'s rules.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::job::JobKey;
use crate::launcher::TaskRef;
use crate::metadata::{JobRecord, MetadataStore, Phase};

/// [`MetadataStore`]: every store check below, in order, with the lock rules `caps` calls
/// for. `record` is written and removed again.
pub async fn store(store: &dyn MetadataStore, record: &JobRecord, caps: LockCaps) {
    records_round_trip(store, record).await;
    store_lock(store, &record.key, caps).await;
    locked_writes(store, record).await;
}

/// `put_locked` and `delete_locked` write as the lock's holder: they work while it holds
/// the lock, and a write of a record under the lock of another key is refused
/// (`InvalidInput`). `get_locked` reads what the holder wrote, `get_cached` too (on one
/// host, after that host's write); `delete_and_unlock` deletes and frees the lock at once.
/// `record` is removed again.
pub async fn locked_writes(store: &dyn MetadataStore, record: &JobRecord) {
    let key = &record.key;
    let lock = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    assert_eq!(store.get_locked(&lock).await.expect("get_locked"), None);
    store
        .put_locked(&lock, record)
        .await
        .expect("a write under a held lock");
    assert_eq!(store.get(key).await.expect("get").as_ref(), Some(record));
    assert_eq!(
        store.get_locked(&lock).await.expect("get_locked").as_ref(),
        Some(record)
    );
    assert_eq!(
        store.get_cached(key).await.expect("get_cached").as_ref(),
        Some(record)
    );
    let mut other = record.clone();
    other.key = JobKey::parse(&format!("{key}x")).expect("a key");
    let err = store
        .put_locked(&lock, &other)
        .await
        .expect_err("a record is written under its own lock only");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(store.get(&other.key).await.expect("get"), None);
    store
        .delete_locked(&lock)
        .await
        .expect("a delete under a held lock");
    assert_eq!(store.get(key).await.expect("get deleted"), None);
    assert_eq!(store.get_locked(&lock).await.expect("get_locked"), None);
    assert_eq!(store.get_cached(key).await.expect("get_cached"), None);
    store.unlock(lock).await.expect("unlock");
    // A lock taken on a record reads it; delete-and-unlock leaves neither behind.
    store.put(record).await.expect("put");
    let lock = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    assert_eq!(
        store.get_locked(&lock).await.expect("get_locked").as_ref(),
        Some(record)
    );
    store
        .delete_and_unlock(lock)
        .await
        .expect("delete and unlock");
    assert_eq!(store.get(key).await.expect("get deleted"), None);
    assert_eq!(store.get_cached(key).await.expect("get_cached"), None);
    let again = store
        .lock(key, Duration::ZERO)
        .await
        .expect("delete_and_unlock frees the lock at once");
    assert_eq!(store.get_locked(&again).await.expect("get_locked"), None);
    store.unlock(again).await.expect("unlock");
}

/// Fencing: once `second` took over the lock that `first` held (after `expire` made its
/// lease run out without a release: a holder paused or cut off), the first holder's
/// `put_locked` and `delete_locked` fail with `LockLost` and change nothing, while the new
/// holder's writes work. `first` and `second` may be one store or two handles of the same
/// one (two hosts). The two locks carry different fencing tokens. `record` is removed
/// again.
pub async fn fenced_writes<F: std::future::Future<Output = ()>>(
    first: &dyn MetadataStore,
    second: &dyn MetadataStore,
    record: &JobRecord,
    expire: impl FnOnce() -> F,
) {
    let key = &record.key;
    let old = first.lock(key, Duration::ZERO).await.expect("lock");
    assert!(
        old.fence().is_some(),
        "a store with leases fences its locks"
    );
    first
        .put_locked(&old, record)
        .await
        .expect("a write under a held lock");
    expire().await;
    let new = second
        .lock(key, Duration::ZERO)
        .await
        .expect("an expired lease is taken over at once");
    assert_ne!(
        new.fence(),
        old.fence(),
        "each acquisition has its own token"
    );
    let mut updated = record.clone();
    updated.phase = Phase::Stopping;
    second
        .put_locked(&new, &updated)
        .await
        .expect("the new holder writes");
    let err = first
        .put_locked(&old, record)
        .await
        .expect_err("the old holder's late write must be refused");
    assert_eq!(err.kind(), ErrorKind::LockLost, "{err}");
    let err = first
        .delete_locked(&old)
        .await
        .expect_err("the old holder's late delete must be refused");
    assert_eq!(err.kind(), ErrorKind::LockLost, "{err}");
    assert_eq!(
        second.get_locked(&new).await.expect("get_locked").as_ref(),
        Some(&updated),
        "the new holder reads its own write"
    );
    assert_eq!(
        second.get(key).await.expect("get").as_ref(),
        Some(&updated),
        "the new holder's state stays"
    );
    let err = first
        .delete_and_unlock(old)
        .await
        .expect_err("the old holder's late delete-and-unlock must be refused");
    assert_eq!(err.kind(), ErrorKind::LockLost, "{err}");
    assert_eq!(
        second.get(key).await.expect("get").as_ref(),
        Some(&updated),
        "the new holder's state stays"
    );
    second
        .lock(key, Duration::ZERO)
        .await
        .expect_err("unlocking a lost lock leaves the new holder's lock alone");
    second
        .delete_locked(&new)
        .await
        .expect("the new holder deletes");
    second.unlock(new).await.expect("unlock");
    assert_eq!(first.get(key).await.expect("get"), None);
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

/// What a store's locks may legitimately do differently, for [`store`] and the lock rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockCaps {
    /// A [`JobLock`](crate::JobLock) dropped without `unlock` releases the lock at once
    /// (an `flock`, a process-local table); a store that cannot release synchronously (a
    /// database row) relies on its lease instead.
    pub released_on_drop: bool,
    /// The store's locks expire after this lease.
    pub lease: Option<Duration>,
}

impl LockCaps {
    /// A store whose dropped locks are released at once ([`crate::FileMetadataStore`],
    /// the in-memory store).
    pub fn released_on_drop() -> Self {
        LockCaps {
            released_on_drop: true,
            lease: None,
        }
    }

    /// A store whose locks expire after `lease` and are not released when dropped (a
    /// database row: a dropped lock's row stays until its lease ends, or until a release
    /// in the background, which the suite does not count on).
    pub fn leased(lease: Duration) -> Self {
        LockCaps {
            released_on_drop: false,
            lease: Some(lease),
        }
    }

    /// The same store, whose locks also expire after `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// Every lock rule `caps` calls for, on the lock of `key`.
pub async fn store_lock(store: &dyn MetadataStore, key: &JobKey, caps: LockCaps) {
    lock_is_exclusive(store, key, caps).await;
    unlock_releases_at_once(store, key).await;
    if caps.released_on_drop {
        dropped_lock_is_released(store, key).await;
    }
    if let Some(lease) = caps.lease {
        expired_lease_can_be_taken_over(store, key, lease).await;
    }
}

/// The lock of `key` has one holder at a time: a second `lock` waits and then fails with
/// `Timeout`. The lock names its job and says its lease.
pub async fn lock_is_exclusive(store: &dyn MetadataStore, key: &JobKey, caps: LockCaps) {
    let lock = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    assert_eq!(lock.key(), key);
    assert_eq!(lock.lease(), caps.lease);
    let err = store
        .lock(key, Duration::from_millis(100))
        .await
        .expect_err("a held lock must not be given twice");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    store.unlock(lock).await.expect("unlock");
}

/// After `unlock`, the lock of `key` can be taken again at once (without waiting).
pub async fn unlock_releases_at_once(store: &dyn MetadataStore, key: &JobKey) {
    let lock = store.lock(key, Duration::from_secs(1)).await.expect("lock");
    store.unlock(lock).await.expect("unlock");
    let again = store
        .lock(key, Duration::ZERO)
        .await
        .expect("a released lock can be taken again at once");
    store.unlock(again).await.expect("unlock");
}

/// A lock dropped without `unlock` (a dropped future) is released at once.
pub async fn dropped_lock_is_released(store: &dyn MetadataStore, key: &JobKey) {
    drop(store.lock(key, Duration::from_secs(1)).await.expect("lock"));
    let again = store
        .lock(key, Duration::ZERO)
        .await
        .expect("a dropped lock is released at once");
    store.unlock(again).await.expect("unlock");
}

/// A lock not released within its `lease` can be taken over; unlocking the expired lock
/// afterwards leaves the new holder's lock alone.
pub async fn expired_lease_can_be_taken_over(
    store: &dyn MetadataStore,
    key: &JobKey,
    lease: Duration,
) {
    let expired = store.lock(key, Duration::ZERO).await.expect("lock");
    let started = tokio::time::Instant::now();
    let taken_over = store
        .lock(key, lease * 4)
        .await
        .expect("a lock whose lease expired can be taken over");
    assert!(
        started.elapsed() + Duration::from_millis(1) >= lease / 2,
        "the lock was taken over after {:?}, before its lease of {lease:?} ran out",
        started.elapsed()
    );
    assert_ne!(taken_over.holder(), expired.holder());
    store
        .unlock(expired)
        .await
        .expect("unlocking an expired lock succeeds");
    store
        .lock(key, Duration::ZERO)
        .await
        .expect_err("unlocking an expired lock must not release its new holder's lock");
    store.unlock(taken_over).await.expect("unlock");
}
