//! [`DynamoCallBudget`]: the fleet's API budget as one item of the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use fargate_core::budget::{Bucket, CallBudget, CallClass, CallRates, Rate, Reservation};
use fargate_core::{Error, ErrorKind, Namespace, Result};
use serde_json::{Map, Value, json};

use super::DynamoStore;
use super::errors::{BACKEND, Failed};
use super::item::{self, get_n, get_s, n, s};

/// The buckets' JSON (string attribute).
const BUCKETS: &str = "budget";
/// The buckets' version (number attribute), increased by every write.
const VERSION: &str = "budget_ver";

/// How often one change starts over after another host's write came first, before it fails
/// as `Conflict` (the launcher then calls without the budget, see
/// [`fargate_core::budget::BudgetedLauncher`]).
const MAX_TURNS: usize = 64;

type Buckets = BTreeMap<CallClass, Bucket>;

/// The buckets as seen, and their version (`None`: no item yet).
#[derive(Clone, Debug, Default)]
struct Seen {
    buckets: Buckets,
    version: Option<u64>,
}

/// The API budget of a namespace ([`fargate_core::budget`]) as one item
/// of the fleet's table, shared by every process of every host that uses the table.
///
/// The item's key is `budget.<namespace>` (a job key never has a `.`, so it is never a
/// record's); it holds the buckets as the file budget's JSON (`budget`, one [`Bucket`] per
/// [`CallClass`]: tokens, when they were counted in Unix milliseconds, the throttled share
/// and its epoch) and a version (`budget_ver`).
///
/// Every change is an optimistic, conditional write, as the counters' (the `slots`
/// module): apply the change to the buckets as last seen, and write them back with the
/// condition "the version is still the one seen" (or "no version yet"), setting version + 1.
/// A host whose write lost gets the item as it is in the failure's answer
/// (`ReturnValuesOnConditionCheckFailure`) and decides again on it, so no reservation is
/// ever lost or counted on a stale state. Nothing is held between requests (no lock, no
/// lease): a process killed at any point leaves a whole item whose tokens it already
/// spent, and the bucket refills at its rate (see [`fargate_core::budget`]).
///
/// # Cost
/// A host keeps the state its last write made: a reservation costs **one** `UpdateItem`
/// when no other host wrote since, two when one did (the first fails its condition, which
/// DynamoDB bills as a write). A caller that must wait for its turn reads the item once
/// more after waiting (`GetItem`, strongly consistent: did a throttle void its turn?). A
/// throttle report writes once (at most once a second per namespace changes the item). The
/// item is a few hundred bytes: each request is 1 request unit.
///
/// # Clocks
/// Buckets count in the hosts' wall clocks ([`DynamoStore`]'s clock); a host whose clock is
/// behind the last writer's refills nothing until it catches up ([`Bucket::advance`]
/// ignores time going back), one ahead refills early by its skew: with NTP, milliseconds.
///
/// Clones share what they last saw of the item, and take turns at it: the callers of one
/// process never race each other's conditional writes, only other processes' and hosts'.
#[derive(Clone, Debug)]
pub struct DynamoCallBudget {
    store: DynamoStore,
    namespace: Namespace,
    rates: CallRates,
    seen: Arc<tokio::sync::Mutex<Option<Seen>>>,
}

impl DynamoStore {
    /// The budget of `namespace`'s API calls at `rates`, shared by every host on this
    /// table: `rates` are the whole fleet's (give every host the same ones).
    pub fn call_budget(&self, namespace: &Namespace, rates: CallRates) -> DynamoCallBudget {
        DynamoCallBudget {
            store: self.clone(),
            namespace: namespace.clone(),
            rates,
            seen: Arc::default(),
        }
    }
}

impl DynamoCallBudget {
    /// The item's key: `budget.<namespace>`.
    pub fn item_key(&self) -> String {
        format!("budget.{}", self.namespace)
    }

    /// Applies `f` to the bucket of `class` (starting from the state last seen, or from a
    /// fresh read when `fresh` or when there is none) and writes the buckets back under the
    /// version seen, starting over on the item another host wrote meanwhile. `f` also says
    /// whether it changed anything worth writing; it may run several times.
    async fn update<T>(
        &self,
        class: CallClass,
        fresh: bool,
        mut f: impl FnMut(&mut Bucket, Rate, u64) -> (T, bool),
    ) -> Result<T> {
        let pk = self.item_key();
        let rate = self.rates.of(class);
        // This process's turn (held across the requests of one change only; a caller
        // dropped meanwhile releases it).
        let mut remembered = self.seen.lock().await;
        let mut state = if fresh { None } else { remembered.clone() };
        for _ in 0..MAX_TURNS {
            let mut seen = match state.take() {
                Some(seen) => seen,
                None => self.read(&pk).await?,
            };
            let now = self.store.now_ms();
            let bucket = seen
                .buckets
                .entry(class)
                .or_insert_with(|| Bucket::full(rate, now));
            let (out, changed) = f(bucket, rate, now);
            if !changed {
                *remembered = Some(seen);
                return Ok(out);
            }
            match self.write(&pk, &seen).await {
                Ok(()) => {
                    seen.version = Some(seen.version.unwrap_or(0) + 1);
                    *remembered = Some(seen);
                    return Ok(out);
                }
                Err(Failed::Condition(current)) => {
                    // Another host wrote first: decide again on what it wrote.
                    state = match current {
                        Some(item) => Some(Self::decode(&pk, &item)?),
                        None => None,
                    };
                }
                Err(Failed::Error(e)) => {
                    *remembered = None;
                    return Err(e);
                }
            }
        }
        *remembered = None;
        Err(Error::new(
            ErrorKind::Conflict,
            format!("API budget {pk}: other hosts' writes came first {MAX_TURNS} times in a row"),
        )
        .with_backend(BACKEND)
        .set_temporary(true))
    }

    /// The item `pk` as it is now (strongly consistent).
    async fn read(&self, pk: &str) -> Result<Seen> {
        let mut input = Map::new();
        input.insert("Key".into(), json!({ item::KEY: s(pk) }));
        input.insert("ConsistentRead".into(), json!(true));
        input.insert("ProjectionExpression".into(), json!("#b, #bv"));
        input.insert(
            "ExpressionAttributeNames".into(),
            json!({ "#b": BUCKETS, "#bv": VERSION }),
        );
        let answer = self
            .store
            .call_plain("GetItem", Value::Object(input))
            .await?;
        match answer.get("Item") {
            Some(found) => Self::decode(pk, found),
            None => Ok(Seen::default()),
        }
    }

    /// Writes `seen.buckets` as version `seen.version + 1`, if the item is still at
    /// `seen.version`.
    async fn write(&self, pk: &str, seen: &Seen) -> std::result::Result<(), Failed> {
        let text = serde_json::to_string(&seen.buckets).map_err(|e| {
            Failed::Error(
                Error::new(
                    ErrorKind::Unexpected,
                    format!("encoding the API budget: {e}"),
                )
                .with_backend(BACKEND),
            )
        })?;
        let mut values = Map::new();
        values.insert(":b".into(), s(text));
        values.insert(":nv".into(), n(seen.version.unwrap_or(0) + 1));
        values.insert(":e".into(), n(self.store.expiry()));
        let condition = match seen.version {
            Some(v) => {
                values.insert(":v".into(), n(v));
                "#bv = :v"
            }
            None => "attribute_not_exists(#bv)",
        };
        let input = json!({
            "Key": { item::KEY: s(pk) },
            "UpdateExpression": "SET #b = :b, #bv = :nv, #exp = :e",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": { "#b": BUCKETS, "#bv": VERSION, "#exp": item::EXPIRES },
            "ExpressionAttributeValues": Value::Object(values),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        });
        self.store.call("UpdateItem", input).await.map(drop)
    }

    /// The buckets and version of `item`. Buckets that do not parse count as full (as the
    /// file budget's): the version still orders the writes.
    fn decode(pk: &str, item: &Value) -> Result<Seen> {
        let version = get_n(item, VERSION);
        if version.is_none() && item.get(VERSION).is_some() {
            return Err(Error::new(
                ErrorKind::CorruptRecord,
                format!("API budget item {pk} has an unreadable version"),
            )
            .with_backend(BACKEND)
            .with_hint("delete the item: the budget starts again full"));
        }
        let buckets = get_s(item, BUCKETS)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Ok(Seen { buckets, version })
    }
}

#[async_trait]
impl CallBudget for DynamoCallBudget {
    async fn reserve(&self, class: CallClass, tokens: u32) -> Result<Reservation> {
        self.update(class, false, move |b, rate, now| {
            (b.take(rate, now, tokens), true)
        })
        .await
    }

    async fn confirm(&self, class: CallClass, r: Reservation) -> Result<Option<Reservation>> {
        // Read now: whether another host's throttle voided the turn is in the item.
        self.update(class, true, |b, rate, now| {
            let again = b.confirm(rate, now, r);
            let changed = again.is_some();
            (again, changed)
        })
        .await
    }

    async fn throttled(&self, class: CallClass) -> Result<()> {
        self.update(class, false, |b, rate, now| ((), b.throttled(rate, now)))
            .await
    }
}
