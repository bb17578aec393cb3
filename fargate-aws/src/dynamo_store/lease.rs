//! Locks as leases: taking one (or taking over one that ended), renewing it while its
//! [`JobLock`] lives, releasing it; the fencing token every write under it checks.

use std::sync::Mutex;
use std::time::Duration;

use fargate_core::{Error, ErrorKind, JobKey, JobLock, Result};
use serde_json::{Value, json};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::DynamoStore;
use super::errors::{BACKEND, Failed};
use super::item::{FENCE, HOLDER, LEASE, RECORD, UNTIL, get_n, get_s, n, s};

/// How a [`DynamoStore`]'s locks last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseSettings {
    /// How long a lock lasts after it was taken or last renewed (default 20 s): how long
    /// a killed or paused holder keeps a job's next stage waiting, at most (with
    /// `max_clock_skew`; the driver waits 30 s for a lock).
    pub duration: Duration,
    /// How often a held lock's lease is renewed in the background (default 5 s); `None`:
    /// never (a lease then bounds how long a holder may hold the lock at all).
    pub renew_every: Option<Duration>,
    /// How far behind another host's clock this host's may be (default 5 s): a lease is
    /// taken over by wall clock only this long after its end.
    pub max_clock_skew: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings::new(Duration::from_secs(20))
    }
}

impl LeaseSettings {
    /// Leases of `duration`, renewed every quarter of it, with a clock skew allowance of
    /// 5 s.
    pub fn new(duration: Duration) -> Self {
        LeaseSettings {
            duration,
            renew_every: Some(duration / 4),
            max_clock_skew: Duration::from_secs(5),
        }
    }

    /// The same, renewed every `every` (`None`: never).
    pub fn with_renewal(mut self, every: Option<Duration>) -> Self {
        self.renew_every = every;
        self
    }

    /// The same, with this clock skew allowance.
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    pub(super) fn skew_ms(&self) -> u64 {
        millis(self.max_clock_skew)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A lock as the table holds it ([`DynamoStore::lease_of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// Who holds it: `<host>/<pid>/<random hex>`.
    pub holder: String,
    /// Its fencing token.
    pub fence: u64,
    /// When its lease ends, by its holder's clock.
    pub until: std::time::SystemTime,
    /// How long the lease lasts after each renewal.
    pub duration: Duration,
}

/// The holder and fencing token of `lock`, which a [`DynamoStore`] gave.
pub(super) fn token(lock: &JobLock) -> Result<(&str, u64)> {
    match lock.fence() {
        Some(fence) => Ok((lock.holder(), fence)),
        None => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the lock of {} was not given by a DynamoDB store",
                lock.key()
            ),
        )
        .with_backend(BACKEND)),
    }
}

/// What one attempt to take a lock found.
enum Take {
    /// Taken, with this fencing token, and the key's record (its JSON) as the item held it
    /// then.
    Taken(u64, Option<String>),
    /// Held by another: its holder, lease end and lease duration, when known.
    Busy(Option<(String, u64, u64)>),
}

/// What a held [`JobLock`] carries: its renewal, and what releases it when it is dropped
/// without `unlock`.
pub(super) struct Held {
    /// The key's record as this holder knows it: read when the lock was taken, changed by
    /// the holder's own writes under it ([`MetadataStore::get_locked`]).
    ///
    /// [`MetadataStore::get_locked`]: fargate_core::MetadataStore::get_locked
    known: Mutex<Known>,
    renewal: Option<AbortHandle>,
    release: Option<(DynamoStore, JobKey, String, u64)>,
    /// The runtime the lock was taken on (whose I/O the store's client uses): a release
    /// after a drop runs there, wherever the lock is dropped.
    runtime: Option<tokio::runtime::Handle>,
}

/// What a holder knows of its key's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// Nothing: a write under the lock failed without saying whether it was carried out.
    Unsure,
    /// The item has no record.
    Absent,
    /// The record's JSON.
    Present(String),
}

impl Known {
    fn of(record: Option<String>) -> Self {
        record.map_or(Known::Absent, Known::Present)
    }
}

impl Held {
    /// What the holder of `lock` knows of its record (`Unsure` for a lock of another store).
    pub(super) fn known(lock: &JobLock) -> Known {
        lock.guard::<Held>()
            .and_then(|held| held.known.lock().ok().map(|k| k.clone()))
            .unwrap_or(Known::Unsure)
    }

    /// Notes what the holder of `lock` wrote (or failed to) under it.
    pub(super) fn note(lock: &JobLock, known: Known) {
        if let Some(held) = lock.guard::<Held>()
            && let Ok(mut k) = held.known.lock()
        {
            *k = known;
        }
    }

    /// Stops the renewal; nothing happens on drop any more.
    fn disarm(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        self.release = None;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        // A dropped future's lock: released in the background while the runtime lives;
        // otherwise its lease ends.
        if let Some((store, key, holder, fence)) = self.release.take()
            && let Some(runtime) = self.runtime.take()
        {
            runtime.spawn(async move {
                let _ = store.release(&key, &holder, fence).await;
            });
        }
    }
}

impl DynamoStore {
    /// `MetadataStore::lock`: see the [module docs](super).
    pub(super) async fn take_lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let random = fargate_core::world::random_hex();
        let holder = format!("{}/{}/{random}", self.inner.host, std::process::id());
        let deadline = Instant::now() + wait;
        // The lease seen first, and when: taken over once unchanged for its duration.
        let mut seen: Option<((String, u64, u64), Instant)> = None;
        let mut delay = Duration::from_millis(50);
        loop {
            let busy = match self.try_take(key, &holder, None).await? {
                Take::Taken(fence, record) => return Ok(self.held(key, holder, fence, record)),
                Take::Busy(busy) => busy,
            };
            if let Some(current) = busy {
                match &seen {
                    Some((lease, since)) if *lease == current => {
                        if since.elapsed() >= Duration::from_millis(current.2) {
                            let old = (current.0.as_str(), current.1);
                            if let Take::Taken(fence, record) =
                                self.try_take(key, &holder, Some(old)).await?
                            {
                                return Ok(self.held(key, holder, fence, record));
                            }
                        }
                    }
                    _ => seen = Some((current, Instant::now())),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let by = seen
                    .as_ref()
                    .map_or("another holder".to_owned(), |((h, _, _), _)| h.clone());
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{key} is locked by {by} (waited {} s)",
                        wait.as_secs()
                    ),
                )
                .with_backend(BACKEND)
                .with_hint("another stage of the same job (on this or another runner host) is still running; a lock of a host that died ends with its lease"));
            }
            // Bounded by the deadline: DynamoDB has no waiting lock.
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// One conditional write that takes the lock of `key` for `holder`: when it is free or
    /// its lease ended (by this host's clock, with the skew allowance), or with `takeover`,
    /// when it is still that holder's lease with that end. The answer carries the item as
    /// the write left it (`ALL_NEW`), record included: no read follows a lock.
    async fn try_take(
        &self,
        key: &JobKey,
        holder: &str,
        takeover: Option<(&str, u64)>,
    ) -> Result<Take> {
        let lease = &self.inner.lease;
        let now = self.now_ms();
        let mut values = vec![
            (":h", s(holder)),
            (":u", n(now.saturating_add(millis(lease.duration)))),
            (":l", n(millis(lease.duration))),
            (":zero", n(0)),
            (":one", n(1)),
            (":e", n(self.expiry())),
        ];
        let condition = match takeover {
            None => {
                values.push((":stale", n(now.saturating_sub(lease.skew_ms()))));
                "attribute_not_exists(#h) OR #u < :stale"
            }
            Some((old, until)) => {
                values.push((":oh", s(old)));
                values.push((":ou", n(until)));
                "#h = :oh AND #u = :ou"
            }
        };
        let mut input = self.request(
            key,
            Some("SET #h = :h, #u = :u, #l = :l, #f = if_not_exists(#f, :zero) + :one, #exp = :e"),
            Some(condition),
            &values,
        );
        if let Value::Object(map) = &mut input {
            map.insert("ReturnValues".into(), json!("ALL_NEW"));
            map.insert(
                "ReturnValuesOnConditionCheckFailure".into(),
                json!("ALL_OLD"),
            );
        }
        match self.call("UpdateItem", input).await {
            Ok(answer) => match get_n(&answer["Attributes"], FENCE) {
                Some(fence) => Ok(Take::Taken(
                    fence,
                    get_s(&answer["Attributes"], RECORD).map(str::to_owned),
                )),
                None => Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("DynamoDB took the lock of {key} without a fencing token"),
                )
                .with_backend(BACKEND)),
            },
            Err(Failed::Condition(old)) => {
                let old = self.item_after_failed_condition(key, old).await?;
                // A retried request whose first attempt took the lock: ours.
                if get_s(&old, HOLDER) == Some(holder)
                    && let Some(fence) = get_n(&old, FENCE)
                {
                    let record = get_s(&old, RECORD).map(str::to_owned);
                    return Ok(Take::Taken(fence, record));
                }
                let current = match (get_s(&old, HOLDER), get_n(&old, UNTIL), get_n(&old, LEASE)) {
                    (Some(h), Some(u), Some(l)) => Some((h.to_owned(), u, l)),
                    _ => None,
                };
                Ok(Take::Busy(current))
            }
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// The [`JobLock`] of a lock just taken (the key's record then: `record`), its renewal
    /// started.
    fn held(&self, key: &JobKey, holder: String, fence: u64, record: Option<String>) -> JobLock {
        let renewal = self.inner.lease.renew_every.map(|every| {
            let (store, key, holder) = (self.clone(), key.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let renewed = tokio::time::timeout(every, store.renew_once(&key, &holder, fence));
                    match renewed.await {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => {
                            tracing::warn!(key = %key, "the lock was taken over by another holder; its writes will be refused");
                            return;
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(key = %key, error = %err, "could not renew a lock's lease; trying again");
                        }
                        Err(_) => {
                            tracing::warn!(key = %key, "renewing a lock's lease timed out; trying again");
                        }
                    }
                }
            })
            .abort_handle()
        });
        let guard = Held {
            known: Mutex::new(Known::of(record)),
            renewal,
            release: Some((self.clone(), key.clone(), holder.clone(), fence)),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        JobLock::new(key.clone(), holder)
            .with_lease(self.inner.lease.duration)
            .with_fence(fence)
            .with_guard(guard)
    }

    /// The lock of `key` as the table holds it now (also one whose lease ended), if any.
    pub async fn lease_of(&self, key: &JobKey) -> Result<Option<LeaseInfo>> {
        let Some(item) = self.item(key, "#h, #f, #u, #l").await? else {
            return Ok(None);
        };
        Ok(
            match (
                get_s(&item, HOLDER),
                get_n(&item, FENCE),
                get_n(&item, UNTIL),
                get_n(&item, LEASE),
            ) {
                (Some(holder), Some(fence), Some(until), Some(lease)) => Some(LeaseInfo {
                    holder: holder.to_owned(),
                    fence,
                    until: std::time::UNIX_EPOCH + Duration::from_millis(until),
                    duration: Duration::from_millis(lease),
                }),
                _ => None,
            },
        )
    }

    /// Renews `lock`'s lease now; [`ErrorKind::LockLost`] when another holder took it over.
    pub async fn renew(&self, lock: &JobLock) -> Result<()> {
        let (holder, fence) = token(lock)?;
        match self.renew_once(lock.key(), holder, fence).await? {
            true => Ok(()),
            false => {
                Err(fargate_core::metadata::lock_lost(lock, "a renewal").with_backend(BACKEND))
            }
        }
    }

    /// Extends the lease of `holder`'s lock of `key` (token `fence`); `false`: not its lock.
    async fn renew_once(&self, key: &JobKey, holder: &str, fence: u64) -> Result<bool> {
        let until = self
            .now_ms()
            .saturating_add(millis(self.inner.lease.duration));
        let input = self.request(
            key,
            Some("SET #u = :u, #exp = :e"),
            Some("#h = :h AND #f = :f"),
            &[
                (":u", n(until)),
                (":e", n(self.expiry())),
                (":h", s(holder)),
                (":f", n(fence)),
            ],
        );
        match self.call("UpdateItem", input).await {
            Ok(_) => Ok(true),
            Err(Failed::Condition(_)) => Ok(false),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// `MetadataStore::unlock`.
    pub(super) async fn release_lock(&self, mut lock: JobLock) -> Result<()> {
        let Some(mut held) = lock.take_guard::<Held>() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the lock of {} was not given by a DynamoDB store",
                    lock.key()
                ),
            )
            .with_backend(BACKEND));
        };
        held.disarm();
        let known = held.known.lock().map_or(Known::Unsure, |k| k.clone());
        let (holder, fence) = token(&lock)?;
        if known == Known::Absent {
            // No record (this holder deleted it, or it had none): the item goes, in one
            // request; another answer (an item that has a record after all) below.
            if self.drop_item(lock.key(), holder, fence).await? {
                return Ok(());
            }
        }
        self.release(lock.key(), holder, fence).await
    }

    /// `MetadataStore::delete_and_unlock`: the item (record and lock) goes in one request,
    /// if the lock is still this holder's.
    pub(super) async fn delete_item_and_release(&self, mut lock: JobLock) -> Result<()> {
        let (holder, fence) = {
            let (h, f) = token(&lock)?;
            (h.to_owned(), f)
        };
        let input = self.request(
            lock.key(),
            None,
            Some("#h = :h AND #f = :f"),
            &[(":h", s(holder.as_str())), (":f", n(fence))],
        );
        match self.call("DeleteItem", input).await {
            Ok(_) => {
                if let Some(mut held) = lock.take_guard::<Held>() {
                    held.disarm();
                }
                Ok(())
            }
            // Taken over: the new holder's lock stays.
            Err(Failed::Condition(_)) => {
                if let Some(mut held) = lock.take_guard::<Held>() {
                    held.disarm();
                }
                Err(fargate_core::metadata::lock_lost(&lock, "a delete").with_backend(BACKEND))
            }
            // Unknown: the dropped lock is released in the background (or its lease ends).
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// Deletes the item of `key` if `holder` (token `fence`) holds its lock and it has no
    /// record; `false` when the condition failed (nothing changed).
    async fn drop_item(&self, key: &JobKey, holder: &str, fence: u64) -> Result<bool> {
        let input = self.request(
            key,
            None,
            Some("#h = :h AND #f = :f AND attribute_not_exists(#rec)"),
            &[(":h", s(holder)), (":f", n(fence))],
        );
        match self.call("DeleteItem", input).await {
            Ok(_) => Ok(true),
            Err(Failed::Condition(_)) => Ok(false),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// The item of `key` as a write whose condition failed found it (the answer's `Item`,
    /// asked for with `ReturnValuesOnConditionCheckFailure`), `Null` when there is none.
    /// DynamoDB leaves `Item` out when there is no item; implementations that predate the
    /// parameter (2023) ignore it and leave it out always, which would make a lock never
    /// taken over and a dropped lock never released there (dynalite 3.2.2 does, and the
    /// store's tests run on it): so without `Item` the item is read (strongly consistent),
    /// one more request, on DynamoDB only when the item is gone. What the caller decides on
    /// it is then as of the read, never older than the failed write.
    async fn item_after_failed_condition(&self, key: &JobKey, old: Option<Value>) -> Result<Value> {
        match old {
            Some(item) => Ok(item),
            None => Ok(self
                .item(key, "#h, #f, #u, #l, #rec")
                .await?
                .unwrap_or(Value::Null)),
        }
    }

    /// Removes `holder`'s lock of `key` (token `fence`), and the item when it holds no
    /// record; leaves a lock another holder took over alone.
    async fn release(&self, key: &JobKey, holder: &str, fence: u64) -> Result<()> {
        let mine = [(":h", s(holder)), (":f", n(fence))];
        let mut input = self.request(
            key,
            Some("REMOVE #h, #u, #l"),
            Some("#h = :h AND #f = :f AND attribute_exists(#rec)"),
            &mine,
        );
        if let Value::Object(map) = &mut input {
            map.insert(
                "ReturnValuesOnConditionCheckFailure".into(),
                json!("ALL_OLD"),
            );
        }
        let old = match self.call("UpdateItem", input).await {
            Ok(_) => return Ok(()),
            Err(Failed::Condition(old)) => self.item_after_failed_condition(key, old).await?,
            Err(Failed::Error(e)) => return Err(e),
        };
        let ours = get_s(&old, HOLDER) == Some(holder) && get_n(&old, FENCE) == Some(fence);
        if !ours || old.get(RECORD).is_some() {
            // Taken over (or already released): the new holder's.
            return Ok(());
        }
        let input = self.request(
            key,
            None,
            Some("#h = :h AND #f = :f AND attribute_not_exists(#rec)"),
            &mine,
        );
        match self.call("DeleteItem", input).await {
            Ok(_) | Err(Failed::Condition(_)) => Ok(()),
            Err(Failed::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_renew_four_times_per_lease() {
        let l = LeaseSettings::default();
        assert_eq!(l.duration, Duration::from_secs(20));
        assert_eq!(l.renew_every, Some(Duration::from_secs(5)));
        assert_eq!(l.skew_ms(), 5000);
    }
}
