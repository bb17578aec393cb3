//! [`FileCallBudget`]: the [`CallBudget`] of a namespace, shared by every process of a host
//! through a [`FileMetadataStore`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;

use super::file_store::FileMetadataStore;
use crate::budget::{Bucket, CallBudget, CallClass, CallRates, Rate, Reservation};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobKey, Namespace};

/// How long a process waits for another's turn at the budget file before giving up (the
/// launcher then calls without the budget). Each turn is a read and an atomic write.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The API budget of one namespace in a metadata directory: `<dir>/<namespace>.budget`,
/// read and written under the lock `<namespace>_budget`. The file holds each bucket's
/// tokens and time (wall clock, so every process of the host counts alike); a process
/// holds the lock only to update it, never while waiting for its token, so one killed at
/// any point leaves a whole file and an unheld lock behind (see [`crate::budget`]). An
/// unreadable file counts as full buckets.
#[derive(Clone, Debug)]
pub struct FileCallBudget {
    store: FileMetadataStore,
    namespace: Namespace,
    rates: CallRates,
}

impl FileMetadataStore {
    /// The budget of `namespace`'s API calls at `rates`, shared by every process using this
    /// directory.
    pub fn call_budget(&self, namespace: &Namespace, rates: CallRates) -> FileCallBudget {
        FileCallBudget {
            store: self.clone(),
            namespace: namespace.clone(),
            rates,
        }
    }

    /// The file of `namespace`'s API budget: `<dir>/<namespace>.budget`.
    pub fn call_budget_path(&self, namespace: &Namespace) -> PathBuf {
        self.dir().join(format!("{namespace}.budget"))
    }
}

impl FileCallBudget {
    /// Updates the bucket of `class` with `f`, under the lock; blocking. `f` also says
    /// whether it changed anything worth writing.
    fn update<T>(
        &self,
        class: CallClass,
        f: impl FnOnce(&mut Bucket, Rate, u64) -> (T, bool),
    ) -> Result<T> {
        let key = JobKey(format!("{}_budget", self.namespace));
        let _lock = self.store.lock_blocking(&key, LOCK_WAIT)?;
        let path = self.store.call_budget_path(&self.namespace);
        let mut buckets: BTreeMap<CallClass, Bucket> =
            match self.store.read_file(&path, "API budget")? {
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                None => BTreeMap::new(),
            };
        let rate = self.rates.of(class);
        let now = wall_clock_ms();
        let bucket = buckets
            .entry(class)
            .or_insert_with(|| Bucket::full(rate, now));
        let (out, changed) = f(bucket, rate, now);
        if !changed {
            return Ok(out);
        }
        let bytes = serde_json::to_vec(&buckets).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("encoding the API budget: {e}"),
            )
        })?;
        self.store.write_atomic(&key, &path, &bytes, "API budget")?;
        Ok(out)
    }

    async fn update_async<T: Send + 'static>(
        &self,
        class: CallClass,
        f: impl FnOnce(&mut Bucket, Rate, u64) -> (T, bool) + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.update(class, f))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("the API budget's update: {e}"),
                )
            })?
    }
}

/// Milliseconds since the Unix epoch, by the driver's clock.
fn wall_clock_ms() -> u64 {
    crate::world::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl CallBudget for FileCallBudget {
    async fn reserve(&self, class: CallClass, tokens: u32) -> Result<Reservation> {
        self.update_async(class, move |b, rate, now| (b.take(rate, now, tokens), true))
            .await
    }

    async fn confirm(&self, class: CallClass, r: Reservation) -> Result<Option<Reservation>> {
        self.update_async(class, move |b, rate, now| {
            let again = b.confirm(rate, now, r);
            let changed = again.is_some();
            (again, changed)
        })
        .await
    }

    async fn throttled(&self, class: CallClass) -> Result<()> {
        self.update_async(class, |b, rate, now| ((), b.throttled(rate, now)))
            .await
    }
}
