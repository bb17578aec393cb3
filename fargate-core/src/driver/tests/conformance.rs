//! The in-memory and file backends against the conformance suites.

use super::*;

#[tokio::test(start_paused = true)]
async fn in_memory_backends_pass_the_conformance_suites() {
    use crate::testing::conformance::{self, LauncherCaps, ShellCaps};
    let spec = TaskSpec::new(identity_of(&job(1)), "td").with_client_token("t");
    conformance::launcher(
        &MemoryLauncher::new(),
        &spec,
        &TaskRef::new("nope"),
        LauncherCaps::default(),
    )
    .await;
    let lagging = MemoryLauncher::with_plan(BootPlan {
        invisible_for: Duration::from_secs(3),
        ..BootPlan::default()
    });
    conformance::launcher(
        &lagging,
        &spec,
        &TaskRef::new("nope"),
        LauncherCaps::eventually_consistent(Duration::from_secs(3)),
    )
    .await;

    let shell = MemoryShell::new();
    shell.set_down(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), true);
    let target = crate::testing::conformance::ShellTarget {
        endpoint: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 22,
        },
        host_key: shell.host_key(),
        username: "root".into(),
        private_key: crate::shell::PrivateKey::new("k".into()),
        closed: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            port: 22,
        },
    };
    // In memory, a cancel needs no round trip: it must be as prompt as the cancel itself.
    conformance::shell(
        &shell,
        &target,
        ShellCaps::cancel_within(Duration::from_secs(1)),
    )
    .await;

    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    let caps = crate::testing::conformance::LockCaps::released_on_drop();
    crate::testing::conformance::store(&MemoryStore::new(), &record, caps).await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_locks_like_a_database_with_leases() {
    use crate::testing::conformance::{LockCaps, store_lock};
    let key = identity_of(&job(1)).key();
    let caps = LockCaps::released_on_drop();
    store_lock(&MemoryStore::new(), &key, caps).await;
    let lease = Duration::from_secs(60);
    let leased = MemoryStore::new().with_lock_lease(lease);
    store_lock(&leased, &key, caps.with_lease(lease)).await;
    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    // A holder paused past its lease: its late writes are refused.
    crate::testing::conformance::fenced_writes(&leased, &leased, &record, || {
        tokio::time::advance(lease + Duration::from_secs(1))
    })
    .await;
}

#[tokio::test]
async fn the_file_store_passes_the_conformance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    let store = crate::metadata::FileMetadataStore::new(tmp.path());
    let caps = crate::testing::conformance::LockCaps::released_on_drop();
    crate::testing::conformance::store(&store, &record, caps).await;
}

#[test]
fn task_state_terminality() {
    assert!(TaskState::Stopped.is_terminal() && TaskState::Stopping.is_terminal());
    // Unknown may mean "not visible yet": never terminal by itself.
    assert!(
        !TaskState::Running.is_terminal()
            && !TaskState::Provisioning.is_terminal()
            && !TaskState::Missing.is_terminal()
    );
}

#[tokio::test]
async fn the_memory_and_file_stores_count_slots() {
    let record = JobRecord::new(
        identity_of(&job(1)),
        crate::shell::PrivateKey::new("k".into()),
    );
    crate::testing::conformance::slots(&MemoryStore::new(), &record).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::metadata::FileMetadataStore::new(tmp.path());
    crate::testing::conformance::slots(&store, &record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquirers_never_exceed_the_limit_in_memory_and_in_files() {
    use crate::metadata::DynMetadataStore;
    let memory: DynMetadataStore = std::sync::Arc::new(MemoryStore::new());
    crate::testing::conformance::slots_never_exceed_the_limit(&[memory], "cc.mem", 3, 12, 5).await;
    // Separate handles of one directory: as separate processes of the host.
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<DynMetadataStore> = (0..4)
        .map(|_| {
            std::sync::Arc::new(crate::metadata::FileMetadataStore::new(tmp.path()))
                as DynMetadataStore
        })
        .collect();
    crate::testing::conformance::slots_never_exceed_the_limit(&files, "cc.files", 3, 12, 5).await;
    // Nothing is left held, and only the counter's file stays.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["cc.files.slots"]);
    let left: crate::metadata::SlotHolders =
        serde_json::from_slice(&std::fs::read(tmp.path().join("cc.files.slots")).unwrap()).unwrap();
    assert!(left.holders.is_empty());
}
