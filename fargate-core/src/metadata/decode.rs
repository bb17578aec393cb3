//! Reading a stored record of any format: this crate's ([`RECORD_FORMAT`]), its format 1
//! and the Go driver's ([`super::legacy`]). Depends on both; neither depends on it.

use crate::job::JobKey;

use super::legacy;
use super::record::{JobRecord, RECORD_FORMAT};

impl JobRecord {
    /// Parses a record named `key`: this crate's format, its format 1, or the Go driver's
    /// (`{"TaskARN":..,"ContainerIP":..,"PrivateKey":<base64 PEM>}`).
    pub fn from_json(key: &JobKey, bytes: &[u8]) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = value.as_object().ok_or("not a JSON object")?;
        let record = match obj.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(RECORD_FORMAT) => serde_json::from_value::<JobRecord>(value)
                .map_err(|e| format!("invalid record: {e}"))?,
            Some(1) => legacy::format_1(value)?,
            Some(f) => {
                return Err(format!(
                    "record format {f} is not supported (this driver writes format {RECORD_FORMAT})"
                ));
            }
            None if obj.contains_key("format") => return Err("invalid record: bad format".into()),
            None => legacy::go_record(key, obj)?,
        };
        if &record.key != key {
            return Err(format!("record is for job {}, not {key}", record.key));
        }
        if let Some(identity) = &record.identity
            && &identity.key() != key
        {
            return Err(format!("record names {identity}, not job {key}"));
        }
        Ok(record)
    }
}
