//! [`MemoryCallBudget`]: a budget for the tasks of one process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Bucket, CallBudget, CallClass, CallRates, Reservation};
use crate::error::Result;

/// A [`CallBudget`] in memory: shared by the clones of an `Arc` in one process. Its clock
/// is tokio's (so a test with paused time sees the budget refill as its sleeps pass).
#[derive(Debug)]
pub struct MemoryCallBudget {
    rates: CallRates,
    origin: tokio::time::Instant,
    buckets: Mutex<BTreeMap<CallClass, Bucket>>,
}

impl MemoryCallBudget {
    /// A budget of `rates`, its buckets full.
    pub fn new(rates: CallRates) -> Self {
        MemoryCallBudget {
            rates,
            origin: tokio::time::Instant::now(),
            buckets: Mutex::default(),
        }
    }

    fn with_bucket<T>(&self, class: CallClass, f: impl FnOnce(&mut Bucket, u64) -> T) -> T {
        let rate = self.rates.of(class);
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = buckets
            .entry(class)
            .or_insert_with(|| Bucket::full(rate, now));
        f(bucket, now)
    }
}

#[async_trait]
impl CallBudget for MemoryCallBudget {
    async fn reserve(&self, class: CallClass, tokens: u32) -> Result<Reservation> {
        let rate = self.rates.of(class);
        Ok(self.with_bucket(class, |b, now| b.take(rate, now, tokens)))
    }

    async fn confirm(&self, class: CallClass, r: Reservation) -> Result<Option<Reservation>> {
        let rate = self.rates.of(class);
        Ok(self.with_bucket(class, |b, now| b.confirm(rate, now, r)))
    }

    async fn throttled(&self, class: CallClass) -> Result<()> {
        let rate = self.rates.of(class);
        self.with_bucket(class, |b, now| b.throttled(rate, now));
        Ok(())
    }
}
