//! `Ssh2Shell` against a real OpenSSH server (the `fargate_testkit::sshd` fixture).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use common::{CancelOn, marker, process_exists, setup};
use fargate_core::{
    CapturedOutput, Endpoint, ErrorKind, HostKey, KeyType, OutputSink, RemoteShell, RunOutcome,
};
use fargate_ssh::{Ssh2Config, Ssh2Shell};
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

/// Runs `request` to its end (never cancelled), capturing the output.
async fn run(
    shell: &Ssh2Shell,
    request: &fargate_core::RunRequest,
) -> (fargate_core::Result<RunOutcome>, CapturedOutput) {
    let mut out = CapturedOutput::default();
    let result = shell
        .run(request, &mut out, &CancellationToken::new())
        .await;
    (result, out)
}

async fn run_script(script: &str) -> (fargate_core::Result<RunOutcome>, CapturedOutput) {
    let (sshd, shell, key) = setup().await;
    let (result, out) = run(&shell, &sshd.request(&key, script)).await;
    if result.is_err() {
        eprintln!("sshd log:\n{}", sshd.log());
    }
    (result, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_streams_stdout_and_stderr() {
    fargate_testkit::require_fixture!(Sshd);
    let (result, out) = run_script("#!/usr/bin/env bash\n\necho hello\necho oops >&2\n").await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_reported() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    for code in [1, 3, 255] {
        let script = format!("echo before\nexit {code}\necho after\n");
        let (outcome, out) = run(&shell, &sshd.request(&key, script)).await;
        assert_eq!(outcome.unwrap(), RunOutcome::Exited(code));
        assert_eq!(out.stdout, b"before\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_kept_apart_from_stdout() {
    fargate_testkit::require_fixture!(Sshd);
    let (result, out) =
        run_script("for i in 1 2 3; do echo out$i; echo err$i >&2; done; echo -n tail").await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out1\nout2\nout3\ntail"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err1\nerr2\nerr3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_binary_output_arrive_unchanged() {
    fargate_testkit::require_fixture!(Sshd);
    let script = "printf 'héllo wörld ✓ 日本\\n'\n\
                  for i in $(seq 0 255); do printf \"\\\\$(printf %03o $i)\"; done >&2\n";
    let (result, out) = run_script(script).await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "héllo wörld ✓ 日本\n"
    );
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(out.stderr, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_features_work_and_script_is_not_on_the_command_line() {
    fargate_testkit::require_fixture!(Sshd);
    // `$'..'`, `[[ ]]`, pipefail: the runner's scripts need bash.
    let (result, out) = run_script(
        "set -eo pipefail\n[[ 1 == 1 ]] && echo $'a\\tb'\n\
         tr '\\0' ' ' < /proc/$$/cmdline\n",
    )
    .await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\tb\nbash /dev/fd/3 "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_script_runs() {
    fargate_testkit::require_fixture!(Sshd);
    // 8 MiB of here-document, then output on both streams while the client still sends
    // nothing more: the whole script must arrive, and be counted remotely.
    let line = "0123456789abcdef".repeat(4) + "\n"; // 65 bytes
    let lines = 8 * 1024 * 1024 / line.len() + 1;
    let mut script = String::from("n=$(wc -c <<'EOF'\n");
    for _ in 0..lines {
        script.push_str(&line);
    }
    script.push_str("EOF\n)\necho \"bytes=$n\"\nhead -c 3000000 /dev/zero >&2\n");
    assert!(script.len() >= 8 * 1024 * 1024);
    let (result, out) = run_script(&script).await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("bytes={}\n", lines * line.len())
    );
    assert_eq!(out.stderr.len(), 3_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_reading_stdin_gets_eof() {
    fargate_testkit::require_fixture!(Sshd);
    let (result, out) =
        run_script("if read -r line; then echo \"got:$line\"; else echo eof; fi\ncat\necho done\n")
            .await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "eof\ndone\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_script_never_runs_partly() {
    fargate_testkit::require_fixture!(Sshd);
    // The `{ }` wrapping: a script with an unterminated quote is a syntax error as a
    // whole, so even its first line does not run.
    let (result, out) = run_script("echo first\necho 'unterminated\n").await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(2));
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpected EOF"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_shell_sh_runs_bash_scripts() {
    fargate_testkit::require_fixture!(Sshd);
    let sshd = Sshd::builder().login_shell("/bin/sh").start().unwrap();
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();
    assert_eq!(sshd.username(), "fargate-sh");
    let script = "id -un\ngetent passwd \"$(id -un)\" | cut -d: -f7\n[[ -n $BASH_VERSION ]] && echo $'bash\\x21'\n";
    let (outcome, out) = run(&shell, &sshd.request(&key, script)).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Exited(0), "{}", sshd.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fargate-sh\n/bin/sh\nbash!\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_remote_process_tree() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    let term_marker = format!("1000.{}", marker());
    let stubborn_marker = format!("1000.{}", marker());
    // One child that obeys SIGTERM, one that ignores it (needs the SIGKILL), and a
    // foreground wait. The trap mirrors the runner's scripts.
    let script = format!(
        "trap 'exit 1' TERM\n\
         sleep {term_marker} &\n\
         bash -c 'trap \"\" TERM; exec sleep {stubborn_marker}' &\n\
         until pgrep -f {stubborn_marker} >/dev/null; do :; done\n\
         echo ready\n\
         wait\n\
         echo never\n"
    );
    let mut sink = CancelOn::new(b"ready\n");
    let token = sink.token.clone();
    let result = shell
        .run(&sshd.request(&key, script), &mut sink, &token)
        .await;
    let returned = Instant::now();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    eprintln!("{err}");
    let cancelled_at = sink.cancelled_at.expect("the script printed ready");
    let took = returned - cancelled_at;
    assert!(
        took < Duration::from_secs(2),
        "run returned {took:?} after cancel"
    );
    assert!(!String::from_utf8_lossy(&sink.stdout).contains("never"));
    assert!(
        !process_exists(&term_marker),
        "the sleep child survived the cancel"
    );
    assert!(
        !process_exists(&stubborn_marker),
        "the TERM-ignoring child survived the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_run_sends_nothing() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    let token = CancellationToken::new();
    token.cancel();
    let path = sshd.dir().join("ran");
    let script = format!("touch {}\n", path.display());
    let err = shell
        .run(
            &sshd.request(&key, script),
            &mut CapturedOutput::default(),
            &token,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_death_is_reported() {
    fargate_testkit::require_fixture!(Sshd);
    let (result, out) = run_script("echo dying\nkill -KILL $$\necho after\n").await;
    assert_eq!(
        result.unwrap(),
        RunOutcome::Signaled {
            signal: "KILL".into()
        }
    );
    assert_eq!(out.stdout, b"dying\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_key_fails_authentication() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, _authorized) = setup().await;
    let stranger = shell.generate_key(KeyType::Ed25519).await.unwrap();
    let path = sshd.dir().join("ran");
    let err = run(
        &shell,
        &sshd.request(&stranger, format!("touch {}\n", path.display())),
    )
    .await
    .0
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(!err.is_temporary(), "{err:?}");
    let message = err.message();
    assert!(message.contains("'root'"), "{message}");
    assert!(message.contains("ssh-ed25519"), "{message}");
    assert!(message.contains("publickey"), "{message}");
    assert!(err.hint().unwrap().contains("SSH_PUBLIC_KEY"));
    assert_eq!(err.backend(), Some("ssh"));
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_before_sending_anything() {
    fargate_testkit::require_fixture!(Sshd);
    let first = Sshd::start().unwrap();
    let endpoint = first.endpoint();
    let shell = Ssh2Shell::new();
    let pinned = shell.probe(endpoint).await.unwrap();
    assert_eq!(&pinned, first.host_key());
    drop(first);

    // Same address and port, new machine (new host key).
    let second = Sshd::builder()
        .address(endpoint.ip)
        .port(endpoint.port)
        .start()
        .unwrap();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    second.authorize(&key.public_key).unwrap();
    let path = second.dir().join("ran");
    let mut request = second.request(&key, format!("touch {}\n", path.display()));
    request.host_key = Some(pinned.clone());
    let err = run(&shell, &request).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostKeyMismatch, "{err}");
    assert!(err.message().contains(&pinned.fingerprint), "{err}");
    assert!(
        err.message().contains(second.host_key_fingerprint()),
        "{err}"
    );
    assert!(!path.exists());
    assert!(
        !second.log().contains("Accepted publickey"),
        "authenticated despite the mismatch:\n{}",
        second.log()
    );

    // Unpinned (records of the Go driver): accepted.
    request.host_key = None;
    let outcome = run(&shell, &request).await.0.unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_succeeds_once_a_delayed_sshd_starts() {
    fargate_testkit::require_fixture!(Sshd);
    let sshd = Sshd::builder()
        .start_delay(Duration::from_millis(1500))
        .start()
        .unwrap();
    let shell = Ssh2Shell::new();
    let first = shell.probe(sshd.endpoint()).await.unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Unreachable, "{first}");
    assert!(first.is_temporary());
    assert!(first.message().contains("could not connect"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    let key = loop {
        interval.tick().await;
        match shell.probe(sshd.endpoint()).await {
            Ok(key) => break key,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
                assert!(Instant::now() < deadline, "sshd never came up: {e}");
            }
        }
    };
    assert_eq!(&key, sshd.host_key());
    assert_eq!(key.algorithm, "ssh-ed25519");
    assert!(key.fingerprint.starts_with("SHA256:"));
}

fn unused_endpoint() -> Endpoint {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unreachable() {
    let endpoint = unused_endpoint();
    let shell = Ssh2Shell::new();
    let started = Instant::now();
    let err = shell.probe(endpoint).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(err.is_temporary());
    assert!(started.elapsed() < Duration::from_secs(1));

    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    let request = fargate_core::RunRequest {
        endpoint,
        username: "root".into(),
        private_key: key.private_key,
        host_key: None,
        script: b"true\n".as_slice().into(),
    };
    let err = run(&shell, &request).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(err.message().contains("could not connect"), "{err}");
    assert!(err.message().contains("connection refused"), "{err}");
    assert!(err.hint().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_unreachable_within_the_timeout() {
    // Accepts TCP (the kernel's backlog) but never speaks SSH.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let endpoint = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: listener.local_addr().unwrap().port(),
    };
    let shell = Ssh2Shell::with_config(
        Ssh2Config::builder()
            .probe_timeout(Duration::from_millis(500))
            .build(),
    );
    let started = Instant::now();
    let err = shell.probe(endpoint).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.message().contains("handshake"), "{err}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lost_mid_script_is_unreachable() {
    fargate_testkit::require_fixture!(Sshd);
    // The script kills the sshd process serving its session.
    let (result, out) =
        run_script("echo started\nkill -KILL $PPID\nsleep 5\necho survived\n").await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(
        err.message().contains("lost while the script was running"),
        "{err}"
    );
    assert!(!err.is_temporary());
    // sshd is killed right after `echo`, so the line may or may not have been forwarded.
    assert!(b"started\n".starts_with(&out.stdout), "{:?}", out.stdout);
}

struct FailingSink;

impl OutputSink for FailingSink {
    fn stdout(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("disk full"))
    }
    fn stderr(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_stops_the_script() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    let sleeper = format!("1000.{}", marker());
    let script = format!("echo hi\nsleep {sleeper}\n");
    let started = Instant::now();
    let err = shell
        .run(
            &sshd.request(&key, script),
            &mut FailingSink,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.chain().contains("disk full"), "{}", err.chain());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!process_exists(&sleeper));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_authenticate_with_sha2_signatures() {
    fargate_testkit::require_fixture!(Sshd);
    // An RSA key made by ssh-keygen (generating one in a debug build takes a minute; see
    // `generated_rsa_key_authenticates`): OpenSSH 9.2 accepts only rsa-sha2-256/512.
    let (sshd, shell, _) = setup().await;
    let path = sshd.dir().join("client_rsa");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let private = std::fs::read_to_string(&path).unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    sshd.authorize(&public).unwrap();
    let key = fargate_core::KeyPair {
        public_key: public.trim_end().to_owned(),
        private_key: fargate_core::PrivateKey::new(private),
    };
    let (outcome, out) = run(&shell, &sshd.request(&key, "echo rsa")).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"rsa\n");
    assert!(
        sshd.log()
            .contains("Accepted publickey for root from 127.0.0.1")
    );
    assert!(sshd.log().contains(": RSA SHA256:"), "{}", sshd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_rsa_key_authenticates() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, _) = setup().await;
    let key = shell
        .generate_key(KeyType::Rsa { bits: 3072 })
        .await
        .unwrap();
    assert!(key.public_key.starts_with("ssh-rsa AAAA"));
    assert!(key.public_key.ends_with(" fargate-job"));
    sshd.authorize(&key.public_key).unwrap();
    let (outcome, out) = run(&shell, &sshd.request(&key, "echo rsa")).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"rsa\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_the_fixture_host_key() {
    fargate_testkit::require_fixture!(Sshd);
    let sshd = Sshd::start().unwrap();
    let key: HostKey = Ssh2Shell::new().probe(sshd.endpoint()).await.unwrap();
    assert_eq!(&key, sshd.host_key());
    // Same as `ssh-keygen -lf` on the host key.
    let output = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir().join("host_ed25519"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(listing.contains(&key.fingerprint), "{listing} vs {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_connecting_returns_at_once() {
    // A server that never completes the handshake; the handshake timeout is 10 s.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let endpoint = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: listener.local_addr().unwrap().port(),
    };
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    let request = fargate_core::RunRequest {
        endpoint,
        username: "root".into(),
        private_key: key.private_key,
        host_key: None,
        script: b"true\n".as_slice().into(),
    };
    let cancel = CancellationToken::new();
    let mut out = CapturedOutput::default();
    let run = shell.run(&request, &mut out, &cancel);
    tokio::pin!(run);
    // Let the run get into its handshake before cancelling.
    let early = tokio::time::timeout(Duration::from_millis(200), &mut run).await;
    assert!(early.is_err(), "run ended without a server: {early:?}");
    cancel.cancel();
    let cancelled_at = Instant::now();
    let err = run.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(500),
        "{:?}",
        cancelled_at.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn a_script_without_output_ends() {
    fargate_testkit::require_fixture!(Sshd);
    let (result, out) =
        tokio::time::timeout(std::time::Duration::from_secs(10), run_script("true\n"))
            .await
            .expect("a silent script must end");
    assert_eq!(result.unwrap(), RunOutcome::Exited(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

/// Issue 15: the login right after a successful probe (prepare's login check) reuses the
/// probe's connection: one TCP connection, one key exchange, for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_after_a_probe_reuses_its_connection() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    let connections = |sshd: &Sshd| sshd.log().matches("Connection from").count();
    let before = connections(&sshd);
    let host_key = shell.probe(sshd.endpoint()).await.unwrap();
    assert_eq!(host_key.fingerprint, sshd.host_key_fingerprint());
    let (outcome, out) = run(&shell, &sshd.request(&key, "echo reused")).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Exited(0));
    assert_eq!(out.stdout, b"reused\n");
    assert_eq!(connections(&sshd), before + 1, "{}", sshd.log());
    // Used once: the next run connects anew.
    let (outcome, _) = run(&shell, &sshd.request(&key, "true")).await;
    assert_eq!(outcome.unwrap(), RunOutcome::Exited(0));
    assert_eq!(connections(&sshd), before + 2, "{}", sshd.log());
}
