//! [`JobRecord`]: what one job keeps between its stage processes.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::job::{JobIdentity, JobKey};
use crate::launcher::{Endpoint, TaskRef};
use crate::shell::{HostKey, PrivateKey};

use super::go_record::go_record;

/// Version of the record format written by this crate.
pub const RECORD_FORMAT: u32 = 1;

/// How far the job's prepare got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// About to call the launcher with the record's client token; the task may or may not exist.
    LaunchRequested,
    /// The launcher accepted the task; its reference is recorded.
    Launched,
    /// The task is reachable; endpoint and host key are recorded.
    Ready,
    /// Cleanup (or a failed prepare) is stopping the task.
    Stopping,
}

/// The state of one job, as stored between stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Record format version ([`RECORD_FORMAT`]).
    pub format: u32,
    /// The job's key (the record's name).
    pub key: JobKey,
    /// The job's identity; `None` for records written by the Go driver.
    #[serde(default)]
    pub job: Option<JobIdentity>,
    /// How far prepare got.
    pub phase: Phase,
    /// Idempotency token of the launch.
    #[serde(default)]
    pub client_token: String,
    /// The task, once launched.
    #[serde(default)]
    pub task: Option<TaskRef>,
    /// Where the task's SSH server is, once ready. Port 0 means "the configured port"
    /// (records of the Go driver).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// The host key pinned when the task became ready; `None` only for Go driver records.
    #[serde(default)]
    pub host_key: Option<HostKey>,
    /// The job's client private key.
    pub private_key: PrivateKey,
    /// Seconds since the epoch when the record was created.
    #[serde(default)]
    pub created_at: u64,
    /// Seconds since the epoch of the last update.
    #[serde(default)]
    pub updated_at: u64,
}

impl JobRecord {
    /// A new record in [`Phase::LaunchRequested`].
    pub fn new(
        key: JobKey,
        job: JobIdentity,
        client_token: String,
        private_key: PrivateKey,
    ) -> Self {
        let now = unix_now();
        JobRecord {
            format: RECORD_FORMAT,
            key,
            job: Some(job),
            phase: Phase::LaunchRequested,
            client_token,
            task: None,
            endpoint: None,
            host_key: None,
            private_key,
            created_at: now,
            updated_at: now,
        }
    }

    /// Parses a record in this crate's format or in the Go driver's
    /// (`{"TaskARN":..,"ContainerIP":..,"PrivateKey":<base64 PEM>}`), named `key`.
    pub fn from_json(key: &JobKey, bytes: &[u8]) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = value.as_object().ok_or("not a JSON object")?;
        if obj.contains_key("format") {
            let record: JobRecord =
                serde_json::from_value(value).map_err(|e| format!("invalid record: {e}"))?;
            if record.format != RECORD_FORMAT {
                return Err(format!(
                    "record format {} is not supported (this driver writes format {RECORD_FORMAT})",
                    record.format
                ));
            }
            if &record.key != key {
                return Err(format!("record is for job {}, not {key}", record.key));
            }
            return Ok(record);
        }
        go_record(key, obj)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
