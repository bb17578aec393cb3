//! The connection keeper (`fargate_ssh::keeper`) against a real OpenSSH server: scripts
//! run through one kept connection with the semantics of a direct one, and a keeper that
//! is gone, refuses, or ends is never a stage's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::setup;
use fargate_core::{CapturedOutput, HostKey, RemoteShell, RunOutcome, RunRequest};
use fargate_ssh::keeper::{self, KeeperOptions};
use fargate_ssh::{Ssh2Config, Ssh2Shell};
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

/// A keeper for `login` on a socket in a fresh directory, serving on its own thread until
/// it ends; `listening` fires once its socket exists.
struct Kept {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    ended: std::thread::JoinHandle<fargate_core::Result<()>>,
}

fn start_keeper(login: RunRequest, idle: Duration) -> Kept {
    let dir = tempfile::tempdir().unwrap();
    let socket = keeper::socket_path(dir.path(), "ci-1");
    let options = KeeperOptions::new(&socket, idle);
    let (tx, rx) = mpsc::channel();
    let ended = std::thread::spawn(move || {
        keeper::serve(&Ssh2Config::default(), &login, &options, move || {
            tx.send(()).unwrap();
        })
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the keeper listens");
    Kept {
        socket,
        _dir: dir,
        ended,
    }
}

/// The number of SSH sessions sshd has started so far (its log says so for each login).
fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

async fn run(shell: &Ssh2Shell, request: &RunRequest) -> (RunOutcome, CapturedOutput) {
    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(request, &mut out, &CancellationToken::new())
        .await
        .unwrap();
    (outcome, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_through_one_kept_connection_and_quit_ends_the_keeper() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, direct, key) = setup().await;
    let probe = direct.probe(sshd.endpoint()).await.unwrap();
    let mut login = sshd.request(&key, "");
    login.host_key = Some(probe);
    let kept = start_keeper(login.clone(), Duration::from_secs(60));
    let mode = std::fs::metadata(&kept.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let shell = Ssh2Shell::new().with_keeper(&kept.socket);
    // The keeper's login, once it is connected (the first run waits for it).
    let mut warm = sshd.request(&key, "echo warm");
    warm.host_key = login.host_key.clone();
    let (outcome, out) = run(&shell, &warm).await;
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"warm\n");
    let before = logins(&sshd);
    for code in [0, 3, 255] {
        let mut request = sshd.request(
            &key,
            format!("echo out-{code}\necho err >&2\nexit {code}\n"),
        );
        request.host_key = login.host_key.clone();
        let (outcome, out) = run(&shell, &request).await;
        assert_eq!(outcome, RunOutcome::Exited(code));
        assert_eq!(out.stdout, format!("out-{code}\n").as_bytes());
        assert_eq!(out.stderr, b"err\n");
    }
    let mut killed = sshd.request(&key, "kill -KILL $$");
    killed.host_key = login.host_key.clone();
    let (outcome, _) = run(&shell, &killed).await;
    assert_eq!(
        outcome,
        RunOutcome::Signaled {
            signal: "KILL".into()
        }
    );
    assert_eq!(logins(&sshd), before, "no new SSH login:\n{}", sshd.log());
    assert!(keeper::quit(&kept.socket, Duration::from_secs(5)));
    kept.ended.join().unwrap().unwrap();
    assert!(!kept.socket.exists(), "the keeper removes its socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_key_or_no_keeper_connects_directly() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, direct, key) = setup().await;
    let probe = direct.probe(sshd.endpoint()).await.unwrap();
    let mut login = sshd.request(&key, "");
    login.host_key = Some(probe.clone());
    let kept = start_keeper(login, Duration::from_secs(60));
    let shell = Ssh2Shell::new().with_keeper(&kept.socket);
    // Pinned to nothing while the keeper pinned the server's key: the keeper refuses,
    // the stage connects directly and succeeds.
    let before = logins(&sshd);
    let mut unpinned = sshd.request(&key, "echo direct");
    unpinned.host_key = None;
    let (outcome, out) = run(&shell, &unpinned).await;
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"direct\n");
    assert!(logins(&sshd) > before, "a direct login:\n{}", sshd.log());
    // A wrong pinned key is still refused, whichever way the stage goes.
    let mut wrong = sshd.request(&key, "echo never");
    wrong.host_key = Some(HostKey {
        algorithm: probe.algorithm.clone(),
        fingerprint: "SHA256:not-this-server".into(),
    });
    let err = shell
        .run(
            &wrong,
            &mut CapturedOutput::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), fargate_core::ErrorKind::HostKeyMismatch);
    assert!(keeper::quit(&kept.socket, Duration::from_secs(5)));
    kept.ended.join().unwrap().unwrap();
    // No keeper at all: direct.
    let gone = Ssh2Shell::new().with_keeper(&kept.socket);
    let mut request = sshd.request(&key, "echo still");
    request.host_key = Some(probe);
    let (outcome, out) = run(&gone, &request).await;
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"still\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keeper_ends_and_a_cancel_through_it_stops_the_script() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, direct, key) = setup().await;
    let probe = direct.probe(sshd.endpoint()).await.unwrap();
    let mut login = sshd.request(&key, "");
    login.host_key = Some(probe);
    let kept = start_keeper(login.clone(), Duration::from_secs(3));
    let shell = Ssh2Shell::new().with_keeper(&kept.socket);
    let mut request = sshd.request(&key, "echo started\nsleep 600\n");
    request.host_key = login.host_key.clone();
    let mut out = common::CancelOn::new(b"started");
    let token = out.token.clone();
    let err = shell.run(&request, &mut out, &token).await.unwrap_err();
    let took = out.cancelled_at.expect("cancelled").elapsed();
    assert_eq!(err.kind(), fargate_core::ErrorKind::Cancelled);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Nothing runs for 3 s: the keeper ends by itself.
    let waited = Instant::now();
    kept.ended.join().unwrap().unwrap();
    assert!(waited.elapsed() < Duration::from_secs(10));
    assert!(!kept.socket.exists());
}

/// Issue 21: `fargate gc` probes keeper sockets (connect, close) to find dead ones. A live
/// keeper never looks dead, and the probes do not keep it alive: it still ends after its
/// idle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_see_a_live_keeper_and_do_not_reset_its_idle_time() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, direct, key) = setup().await;
    let mut login = sshd.request(&key, "");
    login.host_key = Some(direct.probe(sshd.endpoint()).await.unwrap());
    let idle = Duration::from_secs(2);
    let kept = start_keeper(login, idle);
    let started = Instant::now();
    let mut probes = 0;
    while !kept.ended.is_finished() {
        assert!(
            started.elapsed() < idle + Duration::from_secs(5),
            "the keeper outlived its idle time while probed ({probes} probes)"
        );
        // A keeper that removed its socket on the way out is not dead either: nothing to do.
        assert!(!keeper::is_dead_socket(&kept.socket));
        probes += 1;
        // The probing rate of this test, not a synchronisation: each probe is the check.
        std::thread::sleep(Duration::from_millis(100));
    }
    kept.ended.join().unwrap().unwrap();
    assert!(probes > 10, "{probes}");
    assert!(!kept.socket.exists());
    assert!(!keeper::remove_if_dead(&kept.socket).unwrap());
}
