//! [`DynamoStore`]: the [`MetadataStore`] of a fleet: job records, warm pool slots, locks and
//! interruption notes as items of one DynamoDB table that several runner hosts share.
//!
//! # The table
//! One item per key (a [`JobKey`]: a job's record, a pool slot, the pool's fill lock, an
//! interruption note), partition key `pk` (string), nothing else in the key schema. An item
//! holds what the key has of:
//!
//! | Attribute | What |
//! |---|---|
//! | `rec` | the job record, the same JSON as the file store's `<key>.json`, private key included |
//! | `lk_holder`, `lk_fence`, `lk_until`, `lk_lease` | the key's lock: holder, fencing token, lease end (Unix ms, holder's clock), lease duration (ms) |
//! | `beat`, `beat_host` | the job's heartbeat (Unix s) and the host that sent it |
//! | `note` | an interruption note |
//! | `slots`, `slots_ver` | a counter's holders and version, in the item `slots.<counter>` (see the `slots` module) |
//! | `expires_at` | DynamoDB TTL (Unix s): every write sets it [`ITEM_TTL`] ahead (a note: its end) |
//!
//! Calls go through the SDK's runtime with hand-written requests (the crate's `aws_api`
//! module), not through `aws-sdk-dynamodb`: the same credentials, region, endpoint
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`), retries and timeouts as the ECS client.
//!
//! # Operations and their guarantees
//! - `get`: `GetItem`, strongly consistent. `put`: `UpdateItem SET rec` (one item: atomic,
//!   a reader sees the old or the new record). `delete`: removes `rec`, and the item when no
//!   lock is held on it. `list`: a strongly consistent `Scan` of the keys that have a record.
//!   `records_with_prefix`: one strongly consistent `Scan` that returns the records (a
//!   pool's slots in one request).
//! - `lock`: `UpdateItem` with the condition "no holder, or a lease that ended more than
//!   [`LeaseSettings::max_clock_skew`] ago by this host's clock", which sets the holder, a new
//!   fencing token (`lk_fence + 1`), the lease's end and duration. While it waits, it also
//!   takes over a lease it has seen unchanged (same holder, same end) for the lease's whole
//!   duration on its own monotonic clock, whatever the clocks say. The write returns the
//!   item as it left it (`ALL_NEW`): `get_locked` answers from that record, kept up to
//!   date by the holder's own writes under the lock, so no read follows a lock. A held lock's lease is
//!   renewed in the background every [`LeaseSettings::renew_every`] while its [`JobLock`]
//!   lives, each renewal conditioned on the holder and token.
//! - `put_locked`, `delete_locked`: conditioned on `lk_holder` and `lk_fence` being the
//!   lock's, in the same request: a holder whose lease ran out and was taken over gets
//!   [`ErrorKind::LockLost`] and writes nothing. `put_locked` also sets the job's
//!   heartbeat (a write by the job's lock holder is a sign of life).
//!   `delete_and_unlock`: one `DeleteItem` with the same condition (record and lock go
//!   together).
//! - `unlock`: removes the lock attributes (or the item, when it holds nothing else, in one
//!   `DeleteItem` when the holder knows the record is gone) if they are still this
//!   holder's; a lost lock is left to its new holder. Dropping a [`JobLock`]
//!   stops its renewal and releases it in the background (best effort; else its lease ends).
//!
//! - With [`DynamoStore::with_local_copy`] (the CLI), `get_cached` (a run stage's read)
//!   answers from this host's copy of the ready records it wrote, and `heartbeat` is
//!   skipped while the job's last sign of life this host gave is under 30 s old: a job
//!   costs 8 requests besides heartbeats (see the `copy` module and `docs/fleet.md`).
//! - `may_hold_legacy_records`: `false` (a table never held the Go driver's records).
//!
//! # Expiry
//! Leases end by the explicit checks above; DynamoDB's TTL (`expires_at`) only removes items
//! nothing wrote for [`ITEM_TTL`] (far beyond any job's or task's lifetime), and does so
//! late (within days), so no decision rests on it.
//!
//! # Clock skew
//! A lease is taken over by wall clock when the taker's clock is past its end plus
//! [`LeaseSettings::max_clock_skew`]. A holder renews every `renew_every`, so a live
//! holder never loses its lock as long as the hosts' clocks differ by less than
//! `duration - renew_every + max_clock_skew` (20 s with the defaults); hosts with NTP
//! differ by milliseconds. Even beyond that bound the table's state stays safe: the
//! fencing token refuses the writes of a holder that lost its lock.
//!
//! # Security
//! Records hold the jobs' SSH private keys, as the file store's files do. The table must be
//! encrypted at rest with a KMS key the runner hosts' role may use (`fargate store init`
//! creates it so), and only the runner hosts' role may read it (see `docs/fleet.md`).

mod budget;
mod copy;
mod errors;
mod item;
mod lease;
mod slots;
mod table;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fargate_core::metadata::{InterruptionMemory, InterruptionNote, SlotGrant};
use fargate_core::world::{Clock, SystemClock};
use fargate_core::{Error, ErrorKind, JobKey, JobLock, JobRecord, MetadataStore, Result};
use serde_json::{Value, json};

use crate::SdkTransport;
use crate::aws_api::{AwsApi, DYNAMODB};
use crate::metrics::ApiCalls;

pub use budget::DynamoCallBudget;
pub use copy::COPY_DIR;
pub use lease::{LeaseInfo, LeaseSettings};
pub use table::{TableCheck, TableSettings};

use copy::LocalCopy;
use errors::{BACKEND, Failed, classify};
use item::{NOTE, RECORD, get_s, n, request, s};
use lease::{Held, Known};

/// How long an item nothing writes stays before DynamoDB's TTL may remove it: a week,
/// far beyond any job's lifetime (gc's maximum age is a day by default).
pub const ITEM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The largest record the store writes: a DynamoDB item holds at most 400 KB, attribute
/// names and the lock's attributes included.
pub const MAX_RECORD_BYTES: usize = 350 * 1024;

/// Job records, locks and interruption notes in a DynamoDB table; see the
/// [module docs](self). Cheap to clone (clones share the client and the counter).
#[derive(Clone)]
pub struct DynamoStore {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    api: AwsApi,
    table: String,
    host: String,
    lease: LeaseSettings,
    clock: Arc<dyn Clock>,
    calls: ApiCalls,
    /// This host's copy of the ready records it wrote (see the `copy` module), if kept.
    copy: Option<LocalCopy>,
    /// How old the job's last sign of life (known from the copy) must be before a
    /// heartbeat is sent.
    beat_every: Duration,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.inner.table)
            .field("host", &self.inner.host)
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// A store on `table`, called with `sdk`'s credentials and endpoints in `region` (else
    /// `sdk`'s), with `transport`'s retries and timeouts. The host's name (for lock holders
    /// and heartbeats) is the system's; the lease settings are the defaults.
    ///
    /// Fails with [`ErrorKind::InvalidConfig`] when `table` is not a valid table name.
    pub fn new(
        table: impl Into<String>,
        sdk: &aws_config::SdkConfig,
        region: Option<&str>,
        transport: &SdkTransport,
    ) -> Result<Self> {
        let table = table.into();
        check_table_name(&table)?;
        let calls = ApiCalls::new();
        let api = AwsApi::new(
            sdk,
            region,
            transport.sdk_retry_config(),
            transport.sdk_timeout_config(),
            calls.clone(),
        );
        Ok(DynamoStore {
            inner: Arc::new(Inner {
                api,
                table,
                host: host_name(),
                lease: LeaseSettings::default(),
                clock: Arc::new(SystemClock),
                calls,
                copy: None,
                beat_every: fargate_core::driver::HEARTBEAT_EVERY,
            }),
        })
    }

    /// A store on `table` with the default AWS configuration chain (environment, profile,
    /// IMDS...) in `region` (else the chain's), as the ECS launcher builds its client.
    pub async fn from_env(
        table: impl Into<String>,
        region: Option<&str>,
        transport: &SdkTransport,
    ) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        let sdk = loader.load().await;
        DynamoStore::new(table, &sdk, region, transport)
    }

    /// The same store, naming this host `host` in lock holders and heartbeats.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).host = host.into();
        self
    }

    /// The same store with these lease settings.
    pub fn with_lease(mut self, lease: LeaseSettings) -> Self {
        Arc::make_mut(&mut self.inner).lease = lease;
        self
    }

    /// The same store reading leases' times from `clock` (a test's manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        Arc::make_mut(&mut self.inner).clock = clock;
        self
    }

    /// The same store keeping this host's copy of the ready records it writes in `dir`
    /// (the CLI: `<metadata directory>/`[`COPY_DIR`]; created 0700, files 0600, written
    /// atomically): a run stage then reads its job's record from it
    /// ([`MetadataStore::get_cached`]) and a heartbeat is skipped while the job's last sign
    /// of life this host gave it is younger than [`HEARTBEAT_EVERY`]; see the `copy`
    /// module. Without it, both go to the table.
    ///
    /// [`HEARTBEAT_EVERY`]: fargate_core::driver::HEARTBEAT_EVERY
    pub fn with_local_copy(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        Arc::make_mut(&mut self.inner).copy = Some(LocalCopy::new(dir));
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The host's name in lock holders and heartbeats.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The lease settings.
    pub fn lease(&self) -> &LeaseSettings {
        &self.inner.lease
    }

    /// The counter of DynamoDB requests this store (and its clones) sent, by operation.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.inner.calls
    }

    /// One call of `operation` with `input` (the table's name is added).
    async fn call(&self, operation: &str, mut input: Value) -> std::result::Result<Value, Failed> {
        if let Value::Object(map) = &mut input {
            map.insert("TableName".into(), json!(self.inner.table));
        }
        self.inner
            .api
            .json(DYNAMODB, operation, &input)
            .await
            .map_err(|e| classify(e, operation, &self.inner.table))
    }

    /// Like [`DynamoStore::call`], for calls with no condition.
    async fn call_plain(&self, operation: &str, input: Value) -> Result<Value> {
        self.call(operation, input)
            .await
            .map_err(|f| f.into_error(operation))
    }

    /// Every item that `filter` keeps (with `values` for its placeholders), projected to
    /// `projection`: one strongly consistent scan of the table, page after page.
    async fn scan(
        &self,
        projection: &str,
        filter: &str,
        values: &[(&str, Value)],
    ) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut start: Option<Value> = None;
        loop {
            let mut input = serde_json::Map::new();
            input.insert("ConsistentRead".into(), json!(true));
            input.insert("ProjectionExpression".into(), json!(projection));
            input.insert("FilterExpression".into(), json!(filter));
            item::with_names_and_values(&mut input, &format!("{projection} {filter}"), values);
            if let Some(start) = start.take() {
                input.insert("ExclusiveStartKey".into(), start);
            }
            let mut answer = self.call_plain("Scan", Value::Object(input)).await?;
            if let Some(Value::Array(found)) = answer.get_mut("Items").map(Value::take) {
                items.extend(found);
            }
            match answer.get("LastEvaluatedKey") {
                Some(last) if !last.is_null() => start = Some(last.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Unix milliseconds now, by the store's clock.
    fn now_ms(&self) -> u64 {
        self.inner
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The TTL of an item written now: [`ITEM_TTL`] ahead, in Unix seconds.
    fn expiry(&self) -> u64 {
        self.now_ms() / 1000 + ITEM_TTL.as_secs()
    }

    fn request(
        &self,
        key: &JobKey,
        update: Option<&str>,
        condition: Option<&str>,
        values: &[(&str, Value)],
    ) -> Value {
        request(&self.inner.table, key.as_str(), update, condition, values)
    }

    /// The record's JSON, refused when it would not fit in an item.
    fn encode(record: &JobRecord) -> Result<String> {
        let text = serde_json::to_string_pretty(record).map_err(|e| {
            Error::new(ErrorKind::Unexpected, format!("encoding job record: {e}"))
                .with_backend(BACKEND)
        })?;
        if text.len() > MAX_RECORD_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "job record {} has {} bytes, more than a DynamoDB item holds ({MAX_RECORD_BYTES})",
                    record.key,
                    text.len()
                ),
            )
            .with_backend(BACKEND));
        }
        Ok(text)
    }

    fn decode(key: &JobKey, text: &str) -> Result<JobRecord> {
        JobRecord::from_json(key, text.as_bytes()).map_err(|why| {
            Error::new(
                ErrorKind::CorruptRecord,
                format!("job record {key} in the DynamoDB table is unreadable: {why}"),
            )
            .with_backend(BACKEND)
            .with_hint(format!(
                "check in the ECS console that no task of job {key} is still running, then delete the item"
            ))
        })
    }

    /// The item of `key` (strongly consistent), with only `attributes`.
    async fn item(&self, key: &JobKey, attributes: &str) -> Result<Option<Value>> {
        let mut input = serde_json::Map::new();
        input.insert("Key".into(), json!({ item::KEY: s(key.as_str()) }));
        input.insert("ConsistentRead".into(), json!(true));
        input.insert("ProjectionExpression".into(), json!(attributes));
        item::with_names_and_values(&mut input, attributes, &[]);
        let answer = self.call_plain("GetItem", Value::Object(input)).await?;
        Ok(answer.get("Item").cloned())
    }
}

/// Whether `table` is a table name DynamoDB allows: 3-255 characters of
/// `a-z A-Z 0-9 _ - .`.
pub fn valid_table_name(table: &str) -> bool {
    (3..=255).contains(&table.len())
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn check_table_name(table: &str) -> Result<()> {
    if valid_table_name(table) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!("{table:?} is not a DynamoDB table name: use 3-255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"),
    )
    .with_backend(BACKEND))
}

/// This host's name (`/proc/sys/kernel/hostname`), or `runner`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".to_owned())
}

#[async_trait]
impl MetadataStore for DynamoStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let text = Self::encode(record)?;
        let input = self.request(
            &record.key,
            Some("SET #rec = :r, #exp = :e"),
            None,
            &[(":r", s(text)), (":e", n(self.expiry()))],
        );
        self.forget_copy(&record.key).await?;
        self.call_plain("UpdateItem", input).await?;
        self.keep_copy(record).await;
        Ok(())
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let Some(item) = self.item(key, "#rec").await? else {
            return Ok(None);
        };
        match get_s(&item, RECORD) {
            Some(text) => Self::decode(key, text).map(Some),
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        self.forget_copy(key).await?;
        // The whole item when no live lock is on it; else only the record.
        let stale = self.now_ms().saturating_sub(self.inner.lease.skew_ms());
        let input = self.request(
            key,
            None,
            Some("attribute_not_exists(#h) OR #u < :stale"),
            &[(":stale", n(stale))],
        );
        match self.call("DeleteItem", input).await {
            Ok(_) => Ok(()),
            Err(Failed::Condition(_)) => {
                let input =
                    self.request(key, Some("REMOVE #rec"), Some("attribute_exists(#pk)"), &[]);
                match self.call("UpdateItem", input).await {
                    Ok(_) | Err(Failed::Condition(_)) => Ok(()),
                    Err(Failed::Error(e)) => Err(e),
                }
            }
            Err(Failed::Error(e)) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        let mut keys: Vec<JobKey> = self
            .scan("#pk", "attribute_exists(#rec)", &[])
            .await?
            .iter()
            .filter_map(|item| get_s(item, item::KEY).and_then(|k| JobKey::parse(k).ok()))
            .collect();
        keys.sort();
        if let Some(copy) = &self.inner.copy {
            copy.sweep(&keys, self.inner.clock.now()).await;
        }
        Ok(keys)
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        self.take_lock(key, wait).await
    }

    async fn unlock(&self, lock: JobLock) -> Result<()> {
        self.release_lock(lock).await
    }

    async fn put_locked(&self, lock: &JobLock, record: &JobRecord) -> Result<()> {
        if lock.key() != &record.key {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a write of {} under the lock of {}: a record is written under its own lock",
                    record.key,
                    lock.key()
                ),
            )
            .with_backend(BACKEND));
        }
        let text = Self::encode(record)?;
        let (holder, fence) = lease::token(lock)?;
        // A write by the job's lock holder is a sign of life: the heartbeat goes with it.
        let input = self.request(
            &record.key,
            Some("SET #rec = :r, #exp = :e, #beat = :b, #bh = :host"),
            Some("#h = :h AND #f = :f"),
            &[
                (":r", s(text.clone())),
                (":e", n(self.expiry())),
                (":b", n(self.now_ms() / 1000)),
                (":host", s(self.inner.host.clone())),
                (":h", s(holder)),
                (":f", n(fence)),
            ],
        );
        self.forget_copy(&record.key).await?;
        match self.call("UpdateItem", input).await {
            Ok(_) => {
                Held::note(lock, Known::Present(text));
                self.keep_copy(record).await;
                Ok(())
            }
            Err(Failed::Condition(_)) => {
                Err(fargate_core::metadata::lock_lost(lock, "a write").with_backend(BACKEND))
            }
            Err(Failed::Error(e)) => {
                Held::note(lock, Known::Unsure);
                Err(e)
            }
        }
    }

    async fn delete_locked(&self, lock: &JobLock) -> Result<()> {
        let (holder, fence) = lease::token(lock)?;
        let input = self.request(
            lock.key(),
            Some("REMOVE #rec"),
            Some("#h = :h AND #f = :f"),
            &[(":h", s(holder)), (":f", n(fence))],
        );
        self.forget_copy(lock.key()).await?;
        match self.call("UpdateItem", input).await {
            Ok(_) => {
                Held::note(lock, Known::Absent);
                Ok(())
            }
            Err(Failed::Condition(_)) => {
                Err(fargate_core::metadata::lock_lost(lock, "a delete").with_backend(BACKEND))
            }
            Err(Failed::Error(e)) => {
                Held::note(lock, Known::Unsure);
                Err(e)
            }
        }
    }

    async fn get_locked(&self, lock: &JobLock) -> Result<Option<JobRecord>> {
        match Held::known(lock) {
            Known::Present(text) => Self::decode(lock.key(), &text).map(Some),
            Known::Absent => Ok(None),
            Known::Unsure => MetadataStore::get(self, lock.key()).await,
        }
    }

    async fn get_cached(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        if let Some(copy) = &self.inner.copy
            && let Some(record) = copy.read(key).await
        {
            return Ok(Some(record));
        }
        MetadataStore::get(self, key).await
    }

    async fn delete_and_unlock(&self, lock: JobLock) -> Result<()> {
        self.forget_copy(lock.key()).await?;
        self.delete_item_and_release(lock).await
    }

    async fn records_with_prefix(&self, prefix: &str) -> Result<Vec<JobRecord>> {
        // One strongly consistent scan that returns the records themselves (a pool's
        // claim reads its slots in one request, not one per slot).
        let filter = "begins_with(#pk, :prefix) AND attribute_exists(#rec)";
        let mut records = Vec::new();
        for found in self
            .scan("#pk, #rec", filter, &[(":prefix", s(prefix))])
            .await?
        {
            let (Some(key), Some(text)) = (get_s(&found, item::KEY), get_s(&found, RECORD)) else {
                continue;
            };
            let Ok(key) = JobKey::parse(key) else {
                continue;
            };
            match Self::decode(&key, text) {
                Ok(record) => records.push(record),
                Err(err) => {
                    tracing::warn!(record = %key, error = %err, "skipping an unreadable record")
                }
            }
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    fn may_hold_legacy_records(&self) -> bool {
        // Records of the Go driver and of format 1 exist only in metadata directories.
        false
    }

    async fn heartbeat(&self, key: &JobKey) -> Result<()> {
        self.beat(key).await
    }

    async fn last_heartbeat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        self.last_beat(key).await
    }

    async fn acquire_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        self.take_slot(counter, holder, limit, ttl).await
    }

    async fn release_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.give_back_slot(counter, holder).await
    }

    async fn slot_holders(&self, counter: &str) -> Result<Vec<fargate_core::metadata::SlotHolder>> {
        self.list_slot_holders(counter).await
    }

    async fn slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        self.list_slot_counters(prefix).await
    }
}

impl DynamoStore {
    /// `MetadataStore::heartbeat`: the record's item gets `beat` (now, Unix seconds by the
    /// store's clock) and `beat_host`; nothing when the key has no record, nor when this
    /// host's copy says it gave the job a sign of life less than `beat_every` ago.
    async fn beat(&self, key: &JobKey) -> Result<()> {
        let now = self.inner.clock.now();
        if let Some(copy) = &self.inner.copy
            && let Some(at) = copy.stamped(key).await
            && now
                .duration_since(at)
                .is_ok_and(|age| age < self.inner.beat_every)
        {
            return Ok(());
        }
        let input = self.request(
            key,
            Some("SET #beat = :b, #bh = :host"),
            Some("attribute_exists(#rec)"),
            &[
                (":b", n(self.now_ms() / 1000)),
                (":host", s(self.inner.host.clone())),
            ],
        );
        match self.call("UpdateItem", input).await {
            Ok(_) => {
                if let Some(copy) = &self.inner.copy
                    && let Err(err) = copy.stamp(key, now).await
                {
                    tracing::debug!(job = %key, error = %err, "could not note the heartbeat in this host's copy");
                }
                Ok(())
            }
            Err(Failed::Condition(_)) => Ok(()),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// Forgets this host's copy of `key`'s record, before a write of the table.
    async fn forget_copy(&self, key: &JobKey) -> Result<()> {
        match &self.inner.copy {
            Some(copy) => copy.forget(key).await,
            None => Ok(()),
        }
    }

    /// Keeps this host's copy of `record`, written to the table just now.
    async fn keep_copy(&self, record: &JobRecord) {
        if let Some(copy) = &self.inner.copy {
            copy.keep(record, self.inner.clock.now()).await;
        }
    }

    /// `MetadataStore::last_heartbeat`.
    async fn last_beat(&self, key: &JobKey) -> Result<Option<std::time::SystemTime>> {
        let Some(item) = self.item(key, "#rec, #beat").await? else {
            return Ok(None);
        };
        if item.get(RECORD).is_none() {
            return Ok(None);
        }
        Ok(item::get_n(&item, item::BEAT)
            .map(|secs| std::time::UNIX_EPOCH + Duration::from_secs(secs)))
    }
}

/// Interruption notes as items of their own key, which DynamoDB's TTL removes after the
/// note's end (reads check the end themselves: TTL deletes late).
#[async_trait]
impl InterruptionMemory for DynamoStore {
    async fn remember(&self, key: &JobKey, note: &InterruptionNote) -> Result<()> {
        let text = serde_json::to_string(note).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("encoding an interruption note: {e}"),
            )
        })?;
        let input = self.request(
            key,
            Some("SET #note = :n, #exp = :e"),
            None,
            &[(":n", s(text)), (":e", n(note.until))],
        );
        self.call_plain("UpdateItem", input).await.map(drop)
    }

    async fn recall(&self, key: &JobKey) -> Result<Option<InterruptionNote>> {
        let Some(item) = self.item(key, "#note").await? else {
            return Ok(None);
        };
        // An unreadable note is as good as none: it only ever chooses the capacity.
        Ok(get_s(&item, NOTE)
            .and_then(|text| serde_json::from_str::<InterruptionNote>(text).ok())
            .filter(InterruptionNote::is_current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_dynamodb_rules() {
        assert!(check_table_name("fargate-fleet").is_ok());
        assert!(check_table_name("a.b_c-1").is_ok());
        for bad in ["ab", "has space", "ünï", &"x".repeat(256)] {
            let err = check_table_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }
}
