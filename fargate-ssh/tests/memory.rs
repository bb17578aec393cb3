//! Bounded memory: 100 MB of output pass through without the process growing.
//!
//! Alone in its own test binary so that no other test allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Counting, proc_status_kb, setup};
use fargate_core::{RemoteShell, RunOutcome};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_of_output_in_bounded_memory() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    // Warm up: runtime threads, libssh2 and OpenSSL state, the blocking pool.
    let mut warm = Counting::default();
    let outcome = shell
        .run(
            &sshd.request(&key, "head -c 5000000 /dev/zero; echo x >&2"),
            &mut warm,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(warm.stdout, 5_000_000);

    let hwm_before = proc_status_kb("VmHWM");
    let rss_before = proc_status_kb("VmRSS");
    let mut sink = Counting::default();
    let outcome = shell
        .run(
            &sshd.request(
                &key,
                "head -c 100000000 /dev/zero\nhead -c 10000000 /dev/zero | tr '\\0' e >&2\n",
            ),
            &mut sink,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let hwm_after = proc_status_kb("VmHWM");
    let rss_after = proc_status_kb("VmRSS");
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(sink.stdout, 100_000_000);
    assert_eq!(sink.stdout_nonzero, 0);
    assert_eq!(sink.stderr, 10_000_000);
    eprintln!("VmHWM {hwm_before} -> {hwm_after} kB, VmRSS {rss_before} -> {rss_after} kB");
    let grown = hwm_after.saturating_sub(hwm_before);
    assert!(
        grown < 8 * 1024,
        "peak memory grew by {grown} kB while streaming 110 MB"
    );
}
