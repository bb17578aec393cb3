//! Tests of the file store: directory checks, links, atomic writes, locks, leftovers.

use super::dir::*;
use super::flock::*;
use super::leftovers::*;
use super::*;
use crate::job::{JobIdentity, Namespace};
use crate::launcher::TaskRef;
use crate::metadata::{Phase, RECORD_FORMAT};
use crate::shell::PrivateKey;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn key(s: &str) -> JobKey {
    JobKey::parse(s).unwrap()
}

/// A record of job `k`, a key `<namespace>-<job id>`. (The only place that builds one.)
fn record(k: &str) -> JobRecord {
    let (namespace, job_id) = k.rsplit_once('-').unwrap();
    let identity = JobIdentity::from_untrusted_job_id(
        Namespace::parse(namespace).unwrap(),
        job_id.parse().unwrap(),
    );
    let rec = JobRecord::new(
        identity,
        PrivateKey::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n".into()),
    );
    assert_eq!(rec.key, key(k));
    rec
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} was reused at once"
    );
    pid
}

/// Runs every operation of `store` and asserts that each fails with `InvalidConfig` and
/// a message containing all of `expect`.
async fn assert_every_operation_refused(store: &FileMetadataStore, expect: &[&str]) {
    let k = key("t-1");
    let errors = [
        ("put", store.put(&record("t-1")).await.unwrap_err()),
        ("get", store.get(&k).await.unwrap_err()),
        ("delete", store.delete(&k).await.unwrap_err()),
        ("list", store.list().await.unwrap_err()),
        (
            "lock",
            store.lock(&k, Duration::from_millis(10)).await.unwrap_err(),
        ),
    ];
    for (op, err) in errors {
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{op}: {err}");
        assert_eq!(err.backend(), Some("file store"), "{op}");
        for e in expect {
            assert!(err.message().contains(e), "{op}: {err} lacks {e:?}");
        }
        assert!(err.hint().is_some(), "{op}: {err}");
    }
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
    // No record, temporary or lock file is left behind.
    assert_eq!(names(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn reads_of_a_missing_directory_do_not_create_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let store = FileMetadataStore::new(&dir);
    assert_eq!(store.get(&key("t-1")).await.unwrap(), None);
    assert_eq!(store.list().await.unwrap(), Vec::<JobKey>::new());
    store.delete(&key("t-1")).await.unwrap();
    assert!(!dir.exists());
    // Locking creates it, private.
    drop(store.lock(&key("t-1"), Duration::ZERO).await.unwrap());
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(names(&dir), Vec::<String>::new());
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
        ("{\"format\":1}", "invalid"),
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
async fn metadata_path_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, "x").unwrap();
    let store = FileMetadataStore::new(&file);
    assert_every_operation_refused(&store, &["not a directory", &file.display().to_string()]).await;
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[tokio::test]
async fn refuses_a_directory_writable_by_group_or_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    fs::create_dir(&dir).unwrap();
    let store = FileMetadataStore::new(&dir);
    let owner = fs::metadata(&dir).unwrap().uid();
    for mode in [0o777, 0o770, 0o720, 0o702, 0o1777] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let shown = format!("mode {mode:04o}");
        let uid = format!("owner uid {owner}");
        assert_every_operation_refused(
            &store,
            &[
                &dir.display().to_string(),
                "writable by group or others",
                &shown,
                &uid,
            ],
        )
        .await;
        let err = store.get(&key("t-1")).await.unwrap_err();
        assert!(
            err.hint().unwrap().contains(&format!(
                "chown {owner} {d} && chmod 700 {d}",
                d = dir.display()
            )),
            "{err:?}"
        );
        assert_eq!(names(&dir), Vec::<String>::new(), "mode {mode:o}");
    }
    // Readable by others is not refused (the CLI warns about it); private is fine too.
    for mode in [0o755, 0o700] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        store.put(&record("t-1")).await.unwrap();
        store.delete(&key("t-1")).await.unwrap();
    }
}

#[tokio::test]
async fn refuses_a_directory_that_is_a_symbolic_link() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
    let link = tmp.path().join("link");
    symlink(&real, &link).unwrap();
    let store = FileMetadataStore::new(&link);
    assert_every_operation_refused(
        &store,
        &[
            &link.display().to_string(),
            "is a symbolic link; refusing to follow it",
        ],
    )
    .await;
    assert_eq!(names(&real), Vec::<String>::new());
    // A dangling link is not "missing": it is not created through.
    fs::remove_dir(&real).unwrap();
    assert_every_operation_refused(&store, &["symbolic link"]).await;
    assert!(!real.exists());
}

#[tokio::test]
async fn refuses_a_directory_owned_by_another_user() {
    let tmp = tempfile::tempdir().unwrap();
    let euid = effective_uid().unwrap();
    // As root, give a directory away; otherwise use one that root owns.
    let dir = if euid == 0 {
        let dir = tmp.path().join("meta");
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        dir
    } else {
        PathBuf::from("/")
    };
    let owner = fs::metadata(&dir).unwrap().uid();
    assert_ne!(owner, euid);
    let store = FileMetadataStore::new(&dir);
    let uid = format!("owner uid {owner}");
    let runs_as = format!("runs as uid {euid}");
    assert_every_operation_refused(
        &store,
        &["not owned by the user running the driver", &uid, &runs_as],
    )
    .await;
}

#[test]
fn dir_problems_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let meta = fs::symlink_metadata(tmp.path()).unwrap();
    assert_eq!(dir_problem(&meta, meta.uid()), None);
    assert_eq!(
        dir_problem(&meta, meta.uid() + 1),
        Some(DirProblem::NotOwned)
    );
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o730)).unwrap();
    let meta = fs::symlink_metadata(tmp.path()).unwrap();
    assert_eq!(dir_problem(&meta, meta.uid()), Some(DirProblem::Writable));
    let link = tmp.path().join("l");
    symlink(tmp.path(), &link).unwrap();
    let meta = fs::symlink_metadata(&link).unwrap();
    assert_eq!(dir_problem(&meta, meta.uid()), Some(DirProblem::Symlink));
}

#[test]
fn effective_uid_owns_the_files_we_create() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, "").unwrap();
    assert_eq!(effective_uid().unwrap(), fs::metadata(&file).unwrap().uid());
}

#[test]
fn parses_the_effective_uid_of_proc_status() {
    let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\n";
    assert_eq!(parse_effective_uid(status), Some(1001));
    assert_eq!(parse_effective_uid("Uid:\t1000\n"), None);
    assert_eq!(parse_effective_uid("Gid:\t1\t2\t3\t4\n"), None);
}

#[test]
fn o_nofollow_refuses_a_symbolic_link() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::write(&target, "secret").unwrap();
    let link = tmp.path().join("link");
    symlink(&target, &link).unwrap();
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(p)
    };
    assert!(
        open(&link).is_err(),
        "O_NOFOLLOW = {O_NOFOLLOW:#o} followed a link"
    );
    assert!(open(&target).is_ok());
    // Without the flag the same open follows the link: the test above can fail.
    assert!(File::open(&link).is_ok());
}

#[tokio::test]
async fn a_record_that_is_a_symbolic_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path().join("meta"));
    let k = key("t-1");
    // A valid record elsewhere, linked in place of the record.
    let elsewhere = tmp.path().join("elsewhere.json");
    fs::write(&elsewhere, serde_json::to_vec(&record("t-1")).unwrap()).unwrap();
    store.put(&record("t-2")).await.unwrap();
    let path = store.record_path(&k);
    symlink(&elsewhere, &path).unwrap();
    let err = store.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.message().contains(&format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        )),
        "{err}"
    );
    // A dangling link is not a missing record either.
    fs::remove_file(&path).unwrap();
    symlink(tmp.path().join("nowhere"), &path).unwrap();
    let err = store.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    // `put` replaces the link itself, not its target.
    fs::remove_file(&path).unwrap();
    symlink(&elsewhere, &path).unwrap();
    let before = fs::read(&elsewhere).unwrap();
    let mut rec = record("t-1");
    rec.task = Some(TaskRef::new("new"));
    store.put(&rec).await.unwrap();
    assert!(
        !fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&elsewhere).unwrap(), before);
    assert_eq!(store.get(&k).await.unwrap(), Some(rec));
}

#[tokio::test]
async fn a_lock_file_that_is_a_symbolic_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path().join("meta"));
    let k = key("t-1");
    store.put(&record("t-1")).await.unwrap();
    let target = tmp.path().join("created-through-the-link");
    let lock = store.dir().join("t-1.lock");
    symlink(&target, &lock).unwrap();
    let err = store.lock(&k, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.message().contains(&format!(
            "lock file {} is a symbolic link; refusing to follow it",
            lock.display()
        )),
        "{err}"
    );
    assert!(!target.exists(), "the lock was created through the link");
}

#[test]
fn a_lock_file_unlinked_by_its_holder_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path());
    let k = key("t-1");
    let path = store.lock_path(&k);
    let first = store.try_lock_blocking(&k).unwrap().unwrap();
    // A second process opens the lock file while the first holds it ...
    let opened = open_lock_file(&path).unwrap();
    // ... the first releases it (unlink, close) before the second flocks it.
    drop(first);
    assert!(!path.exists());
    // The flock now succeeds on the unlinked file, and must not count as holding it.
    assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
    // Same when a third process has recreated the file meanwhile.
    let second = store.try_lock_blocking(&k).unwrap().unwrap();
    let opened = open_lock_file(&path).unwrap();
    drop(second);
    let third = store.try_lock_blocking(&k).unwrap().unwrap();
    assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
    // While the third holds it, a fresh attempt is busy; after it, the file is gone.
    assert!(store.try_lock_blocking(&k).unwrap().is_none());
    drop(third);
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

#[tokio::test]
async fn lock_excludes_a_second_holder_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path());
    let k = key("t-1");
    let guard = store.lock(&k, Duration::from_secs(1)).await.unwrap();
    assert_eq!(names(tmp.path()), vec!["t-1.lock".to_owned()]);
    // A second store instance opens its own file description, as another process would.
    let other = FileMetadataStore::new(tmp.path());
    let err = other
        .lock(&k, Duration::from_millis(120))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    drop(guard);
    assert_eq!(names(tmp.path()), Vec::<String>::new());
    drop(other.lock(&k, Duration::from_secs(1)).await.unwrap());
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

/// Threads with their own stores (their own file descriptions, as separate processes
/// have) take one lock over and over, retrying at once instead of every 50 ms so that
/// attempts often open the file just before its holder unlinks it.
#[test]
fn hammered_lock_has_one_holder_at_a_time_and_leaves_no_file() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let holders = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let store = FileMetadataStore::new(tmp.path());
            let (holders, total) = (&holders, &total);
            scope.spawn(move || {
                let k = key("t-1");
                for _ in 0..ROUNDS {
                    let guard = loop {
                        if let Some(guard) = store.try_lock_blocking(&k).unwrap() {
                            break guard;
                        }
                        std::thread::yield_now();
                    };
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    // A read-modify-write that loses updates without mutual exclusion.
                    let seen = total.load(Ordering::SeqCst);
                    std::thread::yield_now();
                    total.store(seen + 1, Ordering::SeqCst);
                    assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::SeqCst), THREADS * ROUNDS);
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

/// The same through the async `lock`, from tasks of a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_async_lock_has_one_holder_at_a_time_and_leaves_no_file() {
    const TASKS: usize = 6;
    const ROUNDS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = FileMetadataStore::new(tmp.path());
        let holders = holders.clone();
        tasks.push(tokio::spawn(async move {
            let k = key("t-1");
            for _ in 0..ROUNDS {
                let guard = store.lock(&k, Duration::from_secs(60)).await.unwrap();
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::task::yield_now().await;
                assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                drop(guard);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(names(tmp.path()), Vec::<String>::new());
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
            rec.task = Some(TaskRef::new(format!("writer-{i}-{}", "x".repeat(i * 1000))));
            store.put(&rec).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rec = store.get(&key("t-1")).await.unwrap().unwrap();
    let written = rec.task.unwrap().id;
    assert!(written.starts_with("writer-"));
    let n: usize = written.split('-').nth(1).unwrap().parse().unwrap();
    assert_eq!(written.len(), format!("writer-{n}-").len() + n * 1000);
    assert_eq!(names(tmp.path()), vec!["t-1.json".to_owned()]);
}

#[test]
fn temp_file_names_match_exactly() {
    let k = key("t-1");
    assert_eq!(temp_file_pid(".t-1.tmp-123-abc0", &k), Some(123));
    for name in [
        ".t-1.tmp-123",
        ".t-1.tmp-123-",
        ".t-1.tmp--abc",
        ".t-1.tmp-12a-abc",
        ".t-1.tmp-123-ABC",
        ".t-1.tmp-123-abc-1",
        ".t-1.tmp-123-xyz",
        ".t-1.tmp-99999999999-abc",
        "t-1.tmp-123-abc",
        ".t-10.tmp-123-abc",
        ".t.tmp-123-abc",
        ".t-1.json",
        "t-1.json",
        "t-1.lock",
    ] {
        assert_eq!(temp_file_pid(name, &k), None, "{name}");
    }
    // What `put` writes matches.
    let name = format!(".t-1.tmp-{}-{:x}", std::process::id(), random_u64());
    assert_eq!(temp_file_pid(&name, &k), Some(std::process::id()));
}

/// Names that look like temporary files of `t-1` but are not: never removed.
const NOT_TEMP_FILES: [&str; 5] = [
    ".t-1.tmp-1",
    ".t-1.tmp-1-xyz",
    "t-1.tmp-1-abc",
    ".t-1.tmp-1-abc.keep",
    ".t-10.tmp-1-abc",
];

#[tokio::test]
async fn put_removes_the_temp_files_of_dead_writers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path());
    let dead = dead_pid();
    let me = std::process::id();
    let stale = format!(".t-1.tmp-{dead}-{:x}", random_u64());
    let live = format!(".t-1.tmp-{me}-{:x}", random_u64());
    let other_key = format!(".t-2.tmp-{dead}-{:x}", random_u64());
    for name in [&stale, &live, &other_key]
        .into_iter()
        .map(String::as_str)
        .chain(NOT_TEMP_FILES)
    {
        fs::write(tmp.path().join(name), "secret").unwrap();
    }
    store.put(&record("t-1")).await.unwrap();
    let mut expect: Vec<String> = [&live, &other_key, "t-1.json"]
        .into_iter()
        .map(|s| s.to_owned())
        .chain(NOT_TEMP_FILES.map(str::to_owned))
        .collect();
    expect.sort();
    assert_eq!(names(tmp.path()), expect);
    assert!(!tmp.path().join(&stale).exists());
}

#[tokio::test]
async fn delete_removes_every_temp_file_of_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path());
    store.put(&record("t-1")).await.unwrap();
    store.put(&record("t-2")).await.unwrap();
    let me = std::process::id();
    let dead = dead_pid();
    let other_key = format!(".t-2.tmp-{me}-{:x}", random_u64());
    for name in [
        format!(".t-1.tmp-{me}-{:x}", random_u64()),
        format!(".t-1.tmp-{dead}-{:x}", random_u64()),
        format!(".t-1.tmp-1-{:x}", random_u64()),
        other_key.clone(),
    ]
    .iter()
    .map(String::as_str)
    .chain(NOT_TEMP_FILES)
    {
        fs::write(tmp.path().join(name), "secret").unwrap();
    }
    store.delete(&key("t-1")).await.unwrap();
    let mut expect: Vec<String> = [other_key.as_str(), "t-2.json"]
        .into_iter()
        .chain(NOT_TEMP_FILES)
        .map(str::to_owned)
        .collect();
    expect.sort();
    assert_eq!(names(tmp.path()), expect);
    // Also when there is no record any more.
    let again = format!(".t-1.tmp-{me}-{:x}", random_u64());
    fs::write(tmp.path().join(&again), "secret").unwrap();
    store.delete(&key("t-1")).await.unwrap();
    assert!(!tmp.path().join(&again).exists());
}

/// A lock file left by a killed holder (its flock went with it, the file stayed: made
/// here by creating it), and a temporary file of a dead writer, are removed; a held
/// lock, the lock of a key with a record, a running writer's temporary file, links,
/// directories and other names stay.
#[tokio::test]
async fn remove_leftovers_takes_only_what_has_no_live_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let store = FileMetadataStore::new(&dir);
    store.put(&record("t-3")).await.unwrap();
    // Held by "another process": a store of its own, its own open file description.
    let held = FileMetadataStore::new(&dir)
        .try_lock_blocking(&key("t-2"))
        .unwrap()
        .unwrap();
    let (dead, me) = (dead_pid(), std::process::id());
    let outside = tmp.path().join("outside");
    fs::write(&outside, "keep").unwrap();
    let dead_temp = format!(".t-4.tmp-{dead}-{:x}", random_u64());
    let dead_temp_of_record = format!(".t-3.tmp-{dead}-{:x}", random_u64());
    let live_temp = format!(".t-5.tmp-{me}-{:x}", random_u64());
    for name in [
        "t-1.lock",
        "t-3.lock",
        &dead_temp,
        &dead_temp_of_record,
        &live_temp,
        "keeper-0123456789abcdef.sock",
        "t-8.lock.old",
        "not a key.lock",
    ]
    .into_iter()
    .chain(NOT_TEMP_FILES)
    {
        fs::write(dir.join(name), "").unwrap();
    }
    symlink(&outside, dir.join("t-6.lock")).unwrap();
    symlink(&outside, dir.join(format!(".t-6.tmp-{dead}-abc"))).unwrap();
    fs::create_dir(dir.join("t-7.lock")).unwrap();
    let before = names(&dir);
    let expect: Vec<PathBuf> = {
        let mut e: Vec<PathBuf> = ["t-1.lock", &dead_temp, &dead_temp_of_record]
            .into_iter()
            .map(|n| dir.join(n))
            .collect();
        e.sort();
        e
    };
    // A dry run names them and changes nothing.
    assert_eq!(store.leftovers().unwrap(), expect);
    assert_eq!(names(&dir), before);
    assert_eq!(store.remove_leftovers().unwrap(), expect);
    let mut left: Vec<String> = before
        .into_iter()
        .filter(|n| !expect.contains(&dir.join(n)))
        .collect();
    left.sort();
    assert_eq!(names(&dir), left);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    // Nothing more to remove; the held lock is still held, and released as usual.
    assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    assert!(store.try_lock_blocking(&key("t-2")).unwrap().is_none());
    drop(held);
    assert!(!dir.join("t-2.lock").exists());
    // The removed lock is free to take.
    drop(store.try_lock_blocking(&key("t-1")).unwrap().unwrap());
    // Once its record is gone, the record's leftover lock goes too.
    store.delete(&key("t-3")).await.unwrap();
    assert_eq!(
        store.remove_leftovers().unwrap(),
        vec![dir.join("t-3.lock")]
    );
    // A missing directory has none and is not created.
    let missing = FileMetadataStore::new(tmp.path().join("missing"));
    assert_eq!(missing.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    assert!(!tmp.path().join("missing").exists());
}

/// Removing an unheld lock file follows the release protocol: whoever opened it before
/// the removal finds it stale and starts over, so two holders never overlap.
#[test]
fn a_removed_leftover_lock_is_stale_for_whoever_opened_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileMetadataStore::new(tmp.path());
    let k = key("t-1");
    let path = store.lock_path(&k);
    fs::write(&path, "").unwrap();
    let opened = open_lock_file(&path).unwrap();
    assert_eq!(store.remove_leftovers().unwrap(), vec![path.clone()]);
    assert!(matches!(take_lock(opened, &path).unwrap(), Take::Stale));
    let guard = store.try_lock_blocking(&k).unwrap().unwrap();
    // A held lock file is not a leftover, even without a record.
    assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    drop(guard);
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

/// 1,000 jobs as prepare and cleanup run them, 20 at a time (fsyncs dominate the
/// time: sequentially they take 2 s on an idle disk but 20 s on a busy one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_jobs_leave_an_empty_directory() {
    const JOBS: usize = 1000;
    const AT_ONCE: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for first in 0..AT_ONCE {
        let store = FileMetadataStore::new(&dir);
        tasks.push(tokio::spawn(async move {
            for i in (first..JOBS).step_by(AT_ONCE) {
                let mut rec = record(&format!("job-{i}"));
                let lock = store.lock(&rec.key, Duration::from_secs(5)).await.unwrap();
                store.put(&rec).await.unwrap();
                rec.phase = Phase::Launched;
                store.put(&rec).await.unwrap();
                assert_eq!(store.get(&rec.key).await.unwrap(), Some(rec.clone()));
                store.delete(&rec.key).await.unwrap();
                drop(lock);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{JOBS} jobs took {:?}", started.elapsed());
    assert_eq!(names(&dir), Vec::<String>::new());
}

#[test]
fn warns_about_open_or_refused_directories() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let w = permission_warnings(tmp.path());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("mode 0755") && w[0].contains("chmod 700"),
        "{w:?}"
    );
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(permission_warnings(tmp.path()).len(), 1);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o775)).unwrap();
    let w = permission_warnings(tmp.path());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("writable by group or others") && w[0].contains("will refuse"),
        "{w:?}"
    );
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(permission_warnings(tmp.path()).is_empty());
    let link = tmp.path().join("link");
    symlink(tmp.path(), &link).unwrap();
    let w = permission_warnings(&link);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("symbolic link"), "{w:?}");
    assert!(permission_warnings(&tmp.path().join("missing")).is_empty());
}
