//! [`InterruptionMemory`]: which jobs lost their task to a capacity reclaim (a Spot-like
//! interruption), remembered for a while so that their retry runs on capacity that is not
//! reclaimed.
//!
//! A note is keyed by [`interruption_key`]: the namespace, the project, the commit and the
//! job's name, all from `JOB_RESPONSE_FILE` (the payload names no pipeline outside its
//! untrusted variables; GitLab's `retry:` runs the same job name on the same commit). No
//! job variable takes part, so a pipeline cannot make another project's jobs skip Spot.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::file_store::{FileMetadataStore, blocking};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobIdentity, JobKey, JobResponse};
use crate::world::unix_now;

/// Why and until when a job's retries avoid the capacity that was reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InterruptionNote {
    /// The backend's reason (ECS `stoppedReason`).
    pub reason: String,
    /// Seconds since the epoch when it was noted.
    pub noted_at: u64,
    /// Seconds since the epoch after which the note no longer counts.
    pub until: u64,
}

impl InterruptionNote {
    /// A note of `reason`, made now, counting for `ttl`.
    pub fn new(reason: impl Into<String>, ttl: Duration) -> Self {
        let now = unix_now();
        InterruptionNote {
            reason: reason.into(),
            noted_at: now,
            until: now.saturating_add(ttl.as_secs()),
        }
    }

    /// Whether the note still counts.
    pub fn is_current(&self) -> bool {
        unix_now() < self.until
    }
}

/// The key of the interruption notes of `identity`'s job: `None` when `JOB_RESPONSE_FILE`
/// does not name its project, commit and name (nothing is then remembered).
pub fn interruption_key(identity: &JobIdentity, response: Option<&JobResponse>) -> Option<JobKey> {
    let response = response?;
    let project = match (identity.project_id, identity.project_path.as_deref()) {
        (Some(id), _) => id.to_string(),
        (None, Some(path)) => path.to_owned(),
        (None, None) => return None,
    };
    let (sha, name) = (
        response.commit_sha.as_deref()?,
        response.job_name.as_deref()?,
    );
    let mut h = Sha256::new();
    for part in [identity.namespace.as_str(), &project, sha, name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    JobKey::parse(&format!(
        "{}-reclaimed-{}",
        identity.namespace,
        &hex::encode(h.finalize())[..32]
    ))
    .ok()
}

/// Remembers capacity reclaims per job (see [`interruption_key`] for the key).
#[async_trait]
pub trait InterruptionMemory: Send + Sync + fmt::Debug {
    /// Notes a reclaim for `key`, replacing an earlier note.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the old or the new note.
    async fn remember(&self, key: &JobKey, note: &InterruptionNote) -> Result<()>;

    /// The note of `key`, if there is one that still counts.
    ///
    /// # Cancel safety
    /// Safe to drop.
    async fn recall(&self, key: &JobKey) -> Result<Option<InterruptionNote>>;
}

impl FileMetadataStore {
    /// The file of the interruption note of `key`: `<dir>/<key>.reclaimed`.
    fn note_path(&self, key: &JobKey) -> std::path::PathBuf {
        self.dir().join(format!("{key}.reclaimed"))
    }

    /// The note of `key` if it still counts; an expired or unreadable one is removed.
    fn current_note(&self, key: &JobKey) -> Result<Option<InterruptionNote>> {
        let path = self.note_path(key);
        let Some(bytes) = self.read_file(&path, "interruption note")? else {
            return Ok(None);
        };
        // An unreadable note is as good as none: it only ever chooses the capacity.
        match serde_json::from_slice::<InterruptionNote>(&bytes) {
            Ok(note) if note.is_current() => Ok(Some(note)),
            _ => {
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// Removes the notes that no longer count, so that the directory holds only those
    /// of the last [`ShapePolicy::interruption_memory`](crate::options::ShapePolicy).
    fn sweep_notes(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let key = name
                .to_str()
                .and_then(|n| n.strip_suffix(".reclaimed"))
                .and_then(|stem| JobKey::parse(stem).ok());
            if let Some(key) = key {
                self.current_note(&key)?;
            }
        }
        Ok(())
    }
}

/// Notes are files `<key>.reclaimed` (0600, written atomically) in the store's directory,
/// under the same checks as job records. An expired note is removed when read, and every
/// expired note when a new one is written.
#[async_trait]
impl InterruptionMemory for FileMetadataStore {
    async fn remember(&self, key: &JobKey, note: &InterruptionNote) -> Result<()> {
        let (this, key) = (self.clone(), key.clone());
        let bytes = serde_json::to_vec(note).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("encoding interruption note: {e}"),
            )
        })?;
        blocking(move || {
            this.write_atomic(&key, &this.note_path(&key), &bytes, "interruption note")?;
            this.sweep_notes()
        })
        .await
    }

    async fn recall(&self, key: &JobKey) -> Result<Option<InterruptionNote>> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.current_note(&key)).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::job::Namespace;

    fn identity(response: &JobResponse) -> JobIdentity {
        JobIdentity::from_response(Namespace::parse("ci").unwrap(), response)
    }

    fn response(sha: &str, name: &str) -> JobResponse {
        JobResponse::parse(
            format!(
                r#"{{"id": 5, "job_info": {{"name": "{name}", "project_id": 17}}, "git_info": {{"sha": "{sha}"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn keys_name_project_commit_and_job_name_from_the_payload_only() {
        let r = response("abc", "build");
        let key = interruption_key(&identity(&r), Some(&r)).unwrap();
        assert!(key.as_str().starts_with("ci-reclaimed-"), "{key}");
        let mut retry = response("abc", "build");
        retry.id = 6;
        assert_eq!(
            interruption_key(&identity(&retry), Some(&retry)),
            Some(key.clone())
        );
        for other in [response("abd", "build"), response("abc", "test")] {
            assert_ne!(
                interruption_key(&identity(&other), Some(&other)),
                Some(key.clone())
            );
        }
        let bare = JobResponse::new(5);
        assert_eq!(interruption_key(&identity(&bare), Some(&bare)), None);
        assert_eq!(interruption_key(&identity(&r), None), None);
    }

    #[tokio::test]
    async fn file_notes_are_private_atomic_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(dir.path().join("m"));
        let key = JobKey::parse("ci-reclaimed-1").unwrap();
        assert_eq!(store.recall(&key).await.unwrap(), None);
        let note =
            InterruptionNote::new("Your Spot Task was interrupted.", Duration::from_secs(60));
        store.remember(&key, &note).await.unwrap();
        assert_eq!(store.recall(&key).await.unwrap(), Some(note.clone()));
        let path = dir.path().join("m/ci-reclaimed-1.reclaimed");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Not a job record.
        assert!(crate::MetadataStore::list(&store).await.unwrap().is_empty());
        let old = InterruptionNote::new("old", Duration::ZERO);
        store.remember(&key, &old).await.unwrap();
        assert!(
            !path.exists(),
            "an expired note is swept when a note is written"
        );
        assert_eq!(store.recall(&key).await.unwrap(), None);
        // Written expired behind the store's back: removed when read.
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(store.recall(&key).await.unwrap(), None);
        assert!(!path.exists(), "an expired note is removed when read");
        // Others' expired notes go when any note is written; current ones stay.
        let other = JobKey::parse("ci-reclaimed-2").unwrap();
        let other_path = dir.path().join("m/ci-reclaimed-2.reclaimed");
        std::fs::write(&other_path, serde_json::to_vec(&old).unwrap()).unwrap();
        store.remember(&key, &note).await.unwrap();
        assert!(!other_path.exists() && path.exists());
        assert_eq!(store.recall(&other).await.unwrap(), None);
    }
}
