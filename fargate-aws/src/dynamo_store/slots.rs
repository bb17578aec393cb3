//! The DynamoDB store's counters ([`MetadataStore::acquire_slot`]): one item per counter,
//! key `slots.<counter>` (a job key never has a `.`, so it is never a record's), holding the
//! holders as a map `slots` (job key → until when it counts without a record, Unix s) and a
//! version `slots_ver`.
//!
//! Every change is an optimistic, conditional write: read the item (strongly consistent),
//! decide with [`SlotHolders`] (checking the records of holders whose time is up), and
//! write the whole map back with the condition "the version is still the one read" (or
//! "no version yet"), setting version + 1. Two hosts that decide on the same state cannot
//! both write: the second's condition fails, and it reads again and decides anew. So the
//! map never holds more than `limit` holders that counted when it was written, whatever
//! the interleaving. A decision that changes nothing (a full counter, a holder renewing a
//! time already later) writes nothing: it is as of the consistent read.
//!
//! [`MetadataStore::acquire_slot`]: fargate_core::MetadataStore::acquire_slot

use std::time::{Duration, SystemTime};

use fargate_core::metadata::{SlotGrant, SlotHolder, SlotHolders, check_counter};
use fargate_core::{Error, ErrorKind, JobKey, Result};
use serde_json::{Map, Value, json};

use super::DynamoStore;
use super::errors::{BACKEND, Failed};
use super::item::{self, RECORD, get_n, get_s, n, request, s};

/// How often one acquire or release starts over after another host's write came first,
/// before it fails as `Conflict` (each turn is a read and a write; the others progress).
const MAX_TURNS: usize = 64;

/// The item key of `counter`.
fn item_key(counter: &str) -> String {
    format!("slots.{counter}")
}

/// What to do to a counter's holders.
#[derive(Clone, Copy)]
enum SlotOp<'a> {
    Acquire {
        holder: &'a JobKey,
        limit: u32,
        ttl: Duration,
    },
    Release {
        holder: &'a JobKey,
    },
}

impl DynamoStore {
    /// `MetadataStore::acquire_slot`.
    pub(super) async fn take_slot(
        &self,
        counter: &str,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        let op = SlotOp::Acquire { holder, limit, ttl };
        self.update_slots(counter, op).await
    }

    /// `MetadataStore::release_slot`.
    pub(super) async fn give_back_slot(&self, counter: &str, holder: &JobKey) -> Result<()> {
        self.update_slots(counter, SlotOp::Release { holder })
            .await
            .map(drop)
    }

    /// Applies `op` to the holders of `counter`'s item as read, and writes them back
    /// under the version read, starting over when another writer came first.
    async fn update_slots(&self, counter: &str, op: SlotOp<'_>) -> Result<SlotGrant> {
        check_counter(counter)?;
        let pk = item_key(counter);
        for _ in 0..MAX_TURNS {
            let (mut holders, version) = self.read_slots(&pk).await?;
            let before = holders.clone();
            let out = match op {
                SlotOp::Acquire { holder, limit, ttl } => {
                    let now = self.inner.clock.now();
                    let without_record = self.without_record(&holders, now).await?;
                    holders.try_take(holder, limit, ttl, now, &without_record)
                }
                SlotOp::Release { holder } => {
                    holders.release(holder);
                    SlotGrant::Taken
                }
            };
            if holders == before {
                return Ok(out);
            }
            let map: Map<String, Value> = holders
                .holders
                .iter()
                .map(|(k, until)| (k.as_str().to_owned(), n(until)))
                .collect();
            let condition = match version {
                Some(_) => "#sv = :v",
                None => "attribute_not_exists(#sv)",
            };
            let mut values = vec![
                (":m", json!({ "M": map })),
                (":nv", n(version.unwrap_or(0) + 1)),
                (":e", n(self.expiry())),
            ];
            if let Some(v) = version {
                values.push((":v", n(v)));
            }
            let input = request(
                &self.inner.table,
                &pk,
                Some("SET #slots = :m, #sv = :nv, #exp = :e"),
                Some(condition),
                &values,
            );
            match self.call("UpdateItem", input).await {
                Ok(_) => return Ok(out),
                Err(Failed::Condition(_)) => {
                    // Another host wrote first: a short random pause spreads the retries.
                    tokio::time::sleep(Duration::from_millis(5 + jitter_ms())).await;
                }
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!("counter {counter}: other hosts' writes came first {MAX_TURNS} times"),
        )
        .with_backend(BACKEND)
        .set_temporary(true))
    }

    /// `MetadataStore::slot_holders`: one strongly consistent read of the counter's item,
    /// and one of the record of each holder whose time is up.
    pub(super) async fn list_slot_holders(&self, counter: &str) -> Result<Vec<SlotHolder>> {
        check_counter(counter)?;
        let (holders, _) = self.read_slots(&item_key(counter)).await?;
        let now = self.inner.clock.now();
        let without_record = self.without_record(&holders, now).await?;
        Ok(holders.standings(now, &without_record))
    }

    /// `MetadataStore::slot_counters`: one strongly consistent scan of the keys of the
    /// counter items `slots.<prefix>…`.
    pub(super) async fn list_slot_counters(&self, prefix: &str) -> Result<Vec<String>> {
        let filter = "begins_with(#pk, :prefix)";
        let items = self
            .scan("#pk", filter, &[(":prefix", s(item_key(prefix)))])
            .await?;
        let mut counters: Vec<String> = items
            .iter()
            .filter_map(|found| get_s(found, item::KEY)?.strip_prefix("slots."))
            .filter(|c| check_counter(c).is_ok())
            .map(str::to_owned)
            .collect();
        counters.sort();
        Ok(counters)
    }

    /// The holders of `holders` whose time is up at `now` and whose job has no record
    /// (one strongly consistent read each): what acquiring and listing give
    /// [`SlotHolders::standings`].
    async fn without_record(&self, holders: &SlotHolders, now: SystemTime) -> Result<Vec<JobKey>> {
        let mut without = Vec::new();
        for key in holders.expired(now) {
            let has_record = self
                .item(&key, "#rec")
                .await?
                .is_some_and(|i| i.get(RECORD).is_some());
            if !has_record {
                without.push(key);
            }
        }
        Ok(without)
    }

    /// The holders of the counter item `pk` and its version (`None`: no item yet).
    async fn read_slots(&self, pk: &str) -> Result<(SlotHolders, Option<u64>)> {
        let mut input = Map::new();
        input.insert("Key".into(), json!({ item::KEY: s(pk) }));
        input.insert("ConsistentRead".into(), json!(true));
        input.insert("ProjectionExpression".into(), json!("#slots, #sv"));
        item::with_names_and_values(&mut input, "#slots #sv", &[]);
        let answer = self.call_plain("GetItem", Value::Object(input)).await?;
        let Some(found) = answer.get("Item") else {
            return Ok((SlotHolders::default(), None));
        };
        let version = get_n(found, item::SLOTS_VERSION);
        let mut holders = SlotHolders::default();
        if let Some(map) = found
            .get(item::SLOTS)
            .and_then(|m| m.get("M"))
            .and_then(Value::as_object)
        {
            for (k, v) in map {
                let until = v
                    .get("N")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse().ok());
                match (JobKey::parse(k), until) {
                    (Ok(key), Some(until)) => {
                        holders.holders.insert(key, until);
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::CorruptRecord,
                            format!("counter item {pk} has an unreadable holder {k:?}"),
                        )
                        .with_backend(BACKEND)
                        .with_hint("delete the item: the jobs holding its slots take them again when they next ask"));
                    }
                }
            }
        }
        Ok((holders, version))
    }
}

/// 0-49 ms, random per call.
fn jitter_ms() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 50
}
