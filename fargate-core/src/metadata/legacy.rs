//! Records written by GitLab's Go driver: `{"TaskARN":..,"ContainerIP":..,"PrivateKey":<base64 PEM>}`.

use crate::job::JobKey;
use crate::launcher::{Endpoint, TaskRef};
use crate::shell::PrivateKey;

use super::record::{JobRecord, Phase, RECORD_FORMAT};

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
    let pem = base64_decode(&text("PrivateKey")?)
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
        job: None,
        phase: if endpoint.is_some() {
            Phase::Ready
        } else {
            Phase::Launched
        },
        client_token: String::new(),
        task: (!arn.is_empty()).then(|| TaskRef::new(arn)),
        endpoint,
        host_key: None,
        private_key: PrivateKey::new(pem),
        created_at: 0,
        updated_at: 0,
    })
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    if !s.len().is_multiple_of(4) || s.len() - bytes.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("aGk").is_none());
        assert!(base64_decode("a*k=").is_none());
    }
}
