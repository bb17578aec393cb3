//! [`FileMetadataStore`]: job records as files in a private directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;

use super::{JobLock, JobRecord, MetadataStore};

/// Job records as files `<dir>/<key>.json` (mode 0600) in a directory created 0700.
///
/// Writes go to a temporary file in the same directory, are fsynced, renamed over the
/// record and the directory is fsynced. Locks are `flock`s on `<dir>/<key>.lock`, so they
/// hold across processes and vanish with a killed holder. Records of GitLab's Go driver in
/// the same directory are read too.
#[derive(Clone, Debug)]
pub struct FileMetadataStore {
    dir: PathBuf,
}

const BACKEND: &str = "file store";

impl FileMetadataStore {
    /// A store in `dir`. The directory is created (0700) on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileMetadataStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file of `key`.
    pub fn record_path(&self, key: &JobKey) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn lock_path(&self, key: &JobKey) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    fn ensure_dir(&self) -> Result<()> {
        match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "metadata directory {} is not a directory",
                    self.dir.display()
                ),
            )
            .with_backend(BACKEND)
            .with_hint("point [TaskMetadata] Directory at a directory")),
            Err(e) if e.kind() == IoKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| {
                    Error::io(
                        format!("creating metadata directory {}", self.dir.display()),
                        e,
                    )
                    .with_backend(BACKEND)
                }),
            Err(e) => Err(Error::io(
                format!("reading metadata directory {}", self.dir.display()),
                e,
            )
            .with_backend(BACKEND)),
        }
    }

    fn put_blocking(&self, record: &JobRecord) -> Result<()> {
        self.ensure_dir()?;
        let path = self.record_path(&record.key);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("encoding job record: {e}")))?;
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}-{:x}",
            record.key,
            std::process::id(),
            random_u64()
        ));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing job record {}", path.display()), e).with_backend(BACKEND)
        })
    }

    fn get_blocking(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let path = self.record_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(
                    Error::io(format!("reading job record {}", path.display()), e)
                        .with_backend(BACKEND),
                );
            }
        };
        JobRecord::from_json(key, &bytes).map(Some).map_err(|why| {
            Error::new(
                ErrorKind::CorruptRecord,
                format!("job record {} is unreadable: {why}", path.display()),
            )
            .with_backend(BACKEND)
            .with_hint(format!(
                "check in the ECS console that no task of job {key} is still running, then delete the file"
            ))
        })
    }

    fn delete_blocking(&self, key: &JobKey) -> Result<()> {
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(
                    Error::io(format!("deleting job record {}", path.display()), e)
                        .with_backend(BACKEND),
                );
            }
        }
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn list_blocking(&self) -> Result<Vec<JobKey>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("listing metadata directory {}", self.dir.display()),
                    e,
                )
                .with_backend(BACKEND));
            }
        };
        let mut keys: Vec<JobKey> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                JobKey::parse(name.strip_suffix(".json")?).ok()
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Tries once to take the lock: `Ok(None)` when another holder has it.
    fn try_lock_blocking(&self, key: &JobKey) -> Result<Option<File>> {
        self.ensure_dir()?;
        let path = self.lock_path(key);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                Error::io(format!("opening lock file {}", path.display()), e).with_backend(BACKEND)
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("locking {}", path.display()), e).with_backend(BACKEND))
            }
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_ne_bytes(b)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("metadata store task failed: {e}"),
        )
        .with_backend(BACKEND)
    })?
}

#[async_trait]
impl MetadataStore for FileMetadataStore {
    async fn put(&self, record: &JobRecord) -> Result<()> {
        let (this, record) = (self.clone(), record.clone());
        blocking(move || this.put_blocking(&record)).await
    }

    async fn get(&self, key: &JobKey) -> Result<Option<JobRecord>> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.get_blocking(&key)).await
    }

    async fn delete(&self, key: &JobKey) -> Result<()> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.delete_blocking(&key)).await
    }

    async fn list(&self) -> Result<Vec<JobKey>> {
        let this = self.clone();
        blocking(move || this.list_blocking()).await
    }

    async fn lock(&self, key: &JobKey, wait: Duration) -> Result<JobLock> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (this, k) = (self.clone(), key.clone());
            if let Some(file) = blocking(move || this.try_lock_blocking(&k)).await? {
                return Ok(JobLock::new(file));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "job {key} is locked by another driver process (waited {} s)",
                        wait.as_secs()
                    ),
                )
                .with_backend(BACKEND)
                .with_hint("another stage of the same job is still running; if none is, check for a hung fargate process"));
            }
            // Retry loop bounded by the deadline above: flock has no timed wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a metadata directory for settings that expose private keys, returning warnings.
pub fn permission_warnings(dir: &Path) -> Vec<String> {
    match fs::metadata(dir) {
        Ok(meta) if meta.mode() & 0o077 != 0 => vec![format!(
            "metadata directory {} has mode {:o}: job records hold private keys, use 0700",
            dir.display(),
            meta.permissions().mode() & 0o7777
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobIdentity;
    use crate::launcher::TaskRef;
    use crate::metadata::{Phase, RECORD_FORMAT};
    use crate::shell::PrivateKey;

    fn key(s: &str) -> JobKey {
        JobKey::parse(s).unwrap()
    }

    fn record(k: &str) -> JobRecord {
        JobRecord::new(
            key(k),
            JobIdentity {
                runner_short_token: "t".into(),
                project_url: "u".into(),
                pipeline_id: 1,
                job_id: 2,
            },
            "token-1".into(),
            PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n".into()),
        )
    }

    #[tokio::test]
    async fn put_get_delete_roundtrip_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meta/nested");
        let store = FileMetadataStore::new(&dir);
        let mut rec = record("t-1");
        store.put(&rec).await.unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let path = store.record_path(&rec.key);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
        rec.phase = Phase::Launched;
        rec.task = Some(TaskRef::new("arn:1"));
        store.put(&rec).await.unwrap();
        assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
        assert_eq!(store.list().await.unwrap(), vec![rec.key.clone()]);
        store.delete(&rec.key).await.unwrap();
        store.delete(&rec.key).await.unwrap();
        assert_eq!(store.get(&rec.key).await.unwrap(), None);
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn reads_go_driver_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("test-293ac3a36135714f5953037b893ee39de22e40d9c8622a626308e13b91fa0c3f");
        // base64 of "-----BEGIN RSA PRIVATE KEY-----\n"
        let pem_b64 = "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=";
        fs::write(
            store.record_path(&k),
            format!(
                "{{\"TaskARN\":\"arn:aws:ecs:r:1:task/c/abc\",\"ContainerIP\":\"10.0.0.1\",\"PrivateKey\":\"{pem_b64}\"}}\n"
            ),
        )
        .unwrap();
        let rec = store.get(&k).await.unwrap().unwrap();
        assert_eq!(rec.phase, Phase::Ready);
        assert_eq!(rec.task, Some(TaskRef::new("arn:aws:ecs:r:1:task/c/abc")));
        assert_eq!(rec.endpoint.unwrap().ip.to_string(), "10.0.0.1");
        assert_eq!(rec.endpoint.unwrap().port, 0);
        assert_eq!(rec.host_key, None);
        assert_eq!(
            rec.private_key.expose(),
            "-----BEGIN RSA PRIVATE KEY-----\n"
        );
        // The lowercase keys of the Go tests, and a record written before the IP was known.
        fs::write(store.record_path(&k), "{\"taskARN\":\"1234\"}").unwrap();
        let rec = store.get(&k).await.unwrap().unwrap();
        assert_eq!(rec.phase, Phase::Launched);
        assert_eq!(rec.task, Some(TaskRef::new("1234")));
    }

    #[tokio::test]
    async fn corrupt_records_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        for (content, expect) in [
            ("", "not JSON"),
            ("{\"format\":1,", "not JSON"),
            ("[]", "not a JSON object"),
            ("{}", "neither a driver record"),
            ("{\"format\":1}", "invalid record"),
            ("{\"TaskARN\":5}", "TaskARN is 5"),
            ("{\"TaskARN\":\"a\",\"ContainerIP\":\"nope\"}", "not an IP"),
            ("{\"TaskARN\":\"a\",\"PrivateKey\":\"!!\"}", "not base64"),
        ] {
            fs::write(store.record_path(&k), content).unwrap();
            let err = store.get(&k).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::CorruptRecord, "{content}");
            assert!(err.message().contains(expect), "{content}: {err}");
            assert!(err.hint().unwrap().contains("t-1"));
        }
        let mut other = record("t-2");
        other.format = 9;
        fs::write(store.record_path(&k), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert!(err.message().contains("format 9"), "{err}");
        other.format = RECORD_FORMAT;
        fs::write(store.record_path(&k), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = store.get(&k).await.unwrap_err();
        assert!(err.message().contains("not t-1"), "{err}");
    }

    #[tokio::test]
    async fn metadata_path_that_is_a_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap();
        let err = FileMetadataStore::new(&file)
            .put(&record("t-1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("not a directory"), "{err}");
    }

    #[tokio::test]
    async fn lock_excludes_a_second_holder_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let k = key("t-1");
        let guard = store.lock(&k, Duration::from_secs(1)).await.unwrap();
        // A second store instance opens its own file description, as another process would.
        let other = FileMetadataStore::new(tmp.path());
        let err = other
            .lock(&k, Duration::from_millis(120))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        drop(guard);
        other.lock(&k, Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_writers_leave_one_whole_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(tmp.path());
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rec = record("t-1");
                rec.client_token = format!("writer-{i}-{}", "x".repeat(i * 1000));
                store.put(&rec).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rec = store.get(&key("t-1")).await.unwrap().unwrap();
        assert!(rec.client_token.starts_with("writer-"));
        let n: usize = rec.client_token.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            rec.client_token.len(),
            format!("writer-{n}-").len() + n * 1000
        );
    }

    #[test]
    fn warns_about_open_directories() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(permission_warnings(tmp.path()).len(), 1);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(permission_warnings(tmp.path()).is_empty());
    }
}
