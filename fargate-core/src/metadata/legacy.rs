//! Records this driver reads but no longer writes: those of GitLab's Go driver
//! (`{"TaskARN":..,"ContainerIP":..,"PrivateKey":<base64 PEM>}`) and format 1 of this
//! driver, for jobs in flight during an upgrade. Both are named after the Go driver's job id
//! ([`crate::job::GoJobId::record_key`]) and have no namespace; the driver only looks them up
//! under the name computed with the trusted job id.

use base64ct::{Base64, Encoding};
use serde::Deserialize;

use crate::job::JobKey;
use crate::launcher::{Endpoint, TaskRef};
use crate::shell::{HostKey, PrivateKey};

use super::record::{JobRecord, Phase, RECORD_FORMAT};

/// Format 1 of this driver's records (before namespaces and launch attempts).
#[derive(Deserialize)]
struct Format1 {
    key: JobKey,
    phase: Phase,
    #[serde(default)]
    task: Option<TaskRef>,
    #[serde(default)]
    endpoint: Option<Endpoint>,
    #[serde(default)]
    host_key: Option<HostKey>,
    private_key: PrivateKey,
    #[serde(default)]
    created_at: u64,
    #[serde(default)]
    updated_at: u64,
}

/// Converts a format 1 record. Its launch token cannot be replayed (the record does not say
/// what was launched): a task it may have started is found by `find`.
pub(super) fn format_1(value: serde_json::Value) -> std::result::Result<JobRecord, String> {
    let v1: Format1 =
        serde_json::from_value(value).map_err(|e| format!("invalid format 1 record: {e}"))?;
    Ok(JobRecord {
        format: RECORD_FORMAT,
        key: v1.key,
        identity: None,
        phase: v1.phase,
        spec: None,
        attempts: Vec::new(),
        task: v1.task,
        endpoint: v1.endpoint,
        host_key: v1.host_key,
        job_container: None,
        pool: None,
        failed_step: None,
        kept_until: None,
        private_key: v1.private_key,
        created_at: v1.created_at,
        updated_at: v1.updated_at,
    })
}

/// Converts a Go driver record. Go matched keys case-insensitively, so do we.
pub(super) fn go_record(
    key: &JobKey,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<JobRecord, String> {
    let field = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let text = |name: &str| -> std::result::Result<String, String> {
        match field(name) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name} is {other}, not a string")),
        }
    };
    let arn = text("TaskARN")?;
    if arn.is_empty() && field("TaskARN").is_none() {
        return Err(
            "neither a driver record (no \"format\") nor a Go driver record (no \"TaskARN\")"
                .into(),
        );
    }
    let ip = text("ContainerIP")?;
    let pem = Base64::decode_vec(&text("PrivateKey")?)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("PrivateKey is not base64 of a PEM key")?;
    let endpoint = if ip.is_empty() {
        None
    } else {
        let ip = ip
            .parse()
            .map_err(|_| format!("ContainerIP {ip:?} is not an IP address"))?;
        Some(Endpoint { ip, port: 0 })
    };
    Ok(JobRecord {
        format: RECORD_FORMAT,
        key: key.clone(),
        identity: None,
        phase: if endpoint.is_some() {
            Phase::Ready
        } else {
            Phase::Launched
        },
        spec: None,
        attempts: Vec::new(),
        task: (!arn.is_empty()).then(|| TaskRef::new(arn)),
        endpoint,
        host_key: None,
        job_container: None,
        pool: None,
        failed_step: None,
        kept_until: None,
        private_key: PrivateKey::new(pem),
        created_at: 0,
        updated_at: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_base64_decodes_as_go_wrote_it() {
        // Go's encoding/json writes []byte as standard base64 with padding.
        for (text, bytes) in [
            ("aGVsbG8=", &b"hello"[..]),
            ("aGVsbG8h", b"hello!"),
            ("", b""),
        ] {
            assert_eq!(Base64::decode_vec(text).unwrap(), bytes);
        }
        assert!(Base64::decode_vec("aGk").is_err());
        assert!(Base64::decode_vec("a*k=").is_err());
    }
}
