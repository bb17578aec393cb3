use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::faults::{Fault, Faults, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;
use crate::metadata::{JobLock, JobRecord, MetadataStore};

/// An in-memory [`MetadataStore`] with fault injection. Locks hold within the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<JobKey, JobRecord>>,
    locks: Mutex<HashMap<JobKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Faults to inject; also counts calls.
    pub faults: Faults,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored record of `key`, bypassing faults.
    pub fn peek(&self, key: &JobKey) -> Option<JobRecord> {
        self.records().get(key).cloned()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobKey, JobRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fault(&self, op: Op) -> Result<Option<Fault>> {
        match self.faults.on_call(op) {
            Some(Fault::Fail(k)) => Err(Fault::Fail(k).error(op)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn lost(fault: Option<Fault>, op: Op) -> Result<()> {
    match fault {
        Some(f @ Fault::LoseResponse(_)) => Err(f.error(op)),
        _ => Ok(()),
    }
}

#[async_trait]
impl MetadataStore for MemoryStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let fault = self.fault(Op::Put).await?;
        self.records().insert(record.key.clone(), record.clone());
        lost(fault, Op::Put)
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        self.fault(Op::Get).await?;
        Ok(self.records().get(key).cloned())
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        let fault = self.fault(Op::Delete).await?;
        self.records().remove(key);
        lost(fault, Op::Delete)
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        Ok(self.records().keys().cloned().collect())
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let mutex = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        match tokio::time::timeout(wait, mutex.lock_owned()).await {
            Ok(guard) => Ok(JobLock::new(guard)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("job {key} is locked by another holder"),
            )),
        }
    }
}
