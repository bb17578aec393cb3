//! Servers that will never work fail at once, as configuration errors, while servers that
//! are merely not ready yet stay `Unreachable` (against a real OpenSSH server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::setup;
use fargate_core::{
    CapturedOutput, Endpoint, Error, ErrorKind, KeyPair, KeyType, RemoteShell, RunOutcome,
    RunRequest,
};
use fargate_ssh::Ssh2Shell;
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

const MARKER_PREFIX: &[u8] = b"\x1efargate-";

async fn run(
    shell: &Ssh2Shell,
    request: &RunRequest,
) -> (fargate_core::Result<RunOutcome>, CapturedOutput) {
    let mut out = CapturedOutput::default();
    let result = shell
        .run(request, &mut out, &CancellationToken::new())
        .await;
    (result, out)
}

fn assert_no_marker(out: &CapturedOutput) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream
                .windows(MARKER_PREFIX.len())
                .any(|w| w == MARKER_PREFIX),
            "a bootstrap marker reached the job's output: {:?}",
            String::from_utf8_lossy(stream)
        );
    }
}

/// An sshd with `config` added, a shell and an authorized key.
async fn sshd_with(config: &str) -> (Sshd, Ssh2Shell, KeyPair) {
    let sshd = Sshd::builder().config_line(config).start().unwrap();
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();
    (sshd, shell, key)
}

fn assert_no_common_algorithm(err: &Error, what: &str, server_offers: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(!err.is_temporary(), "{err:?}");
    assert_eq!(err.backend(), Some("ssh"));
    let message = err.message();
    assert!(
        message.contains(&format!("no {what} algorithm in common")),
        "{message}"
    );
    assert!(message.contains("libssh2"), "{message}");
    assert!(message.contains(server_offers), "{message}");
    let hint = err.hint().unwrap();
    for offered in [
        "sshd_config",
        "curve25519-sha256",
        "ssh-ed25519",
        "rsa-sha2-256",
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "hmac-sha2-256",
    ] {
        assert!(hint.contains(offered), "{offered} missing from: {hint}");
    }
    assert!(!hint.contains("-cert-"), "{hint}");
    assert!(!hint.contains("kex-strict"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_key_exchange_is_invalid_config_at_once() {
    fargate_testkit::require_fixture!(Sshd);
    // OpenSSH 9.2's post-quantum default, which libssh2 1.11 lacks, as the only choice.
    let (sshd, shell, key) = sshd_with("KexAlgorithms sntrup761x25519-sha512@openssh.com").await;

    let started = Instant::now();
    let err = shell.probe(sshd.endpoint()).await.unwrap_err();
    let took = started.elapsed();
    assert_no_common_algorithm(&err, "key exchange", "sntrup761x25519-sha512@openssh.com");
    assert!(err.hint().unwrap().contains("KexAlgorithms"), "{err}");
    assert!(took < Duration::from_secs(5), "probe took {took:?}");

    // `run` fails the same way, before anything is sent.
    let path = sshd.dir().join("ran");
    let request = sshd.request(&key, format!("touch {}\n", path.display()));
    let (result, out) = run(&shell, &request).await;
    let err = result.unwrap_err();
    assert_no_common_algorithm(&err, "key exchange", "sntrup761x25519-sha512@openssh.com");
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert!(!path.exists());
    // sshd saw the same mismatch.
    assert!(
        sshd.log().contains("no matching key exchange method found"),
        "{}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_negotiation_is_named() {
    fargate_testkit::require_fixture!(Sshd);
    // An RSA host key offered only with SHA-1 signatures (`ssh-rsa`), which this libssh2
    // does not verify. (A server with no usable host key at all closes the connection
    // right after its version line instead: that looks like a server still starting.)
    let keys = tempfile::tempdir().unwrap();
    let rsa = keys.path().join("host_rsa");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(status.success());
    let sha1_host_key = format!("HostKey {}\nHostKeyAlgorithms ssh-rsa", rsa.display());
    // (sshd_config lines, the negotiation named, what the server offers for it)
    let cases = [
        (sha1_host_key.as_str(), "host key", "ssh-rsa"),
        ("Ciphers 3des-cbc", "cipher", "3des-cbc"),
        // libssh2 negotiates a MAC even for chacha20-poly1305.
        ("MACs umac-64@openssh.com", "MAC", "umac-64@openssh.com"),
    ];
    for (config, what, server_offers) in cases {
        let sshd = Sshd::builder().config_line(config).start().unwrap();
        let started = Instant::now();
        let err = Ssh2Shell::new().probe(sshd.endpoint()).await.unwrap_err();
        let took = started.elapsed();
        assert_no_common_algorithm(&err, what, server_offers);
        assert!(
            took < Duration::from_secs(5),
            "{config}: probe took {took:?}"
        );
    }
}

/// A server that sends an SSH version line, reads the client's, and closes the
/// connection: an sshd that is still starting, or being restarted.
fn cutting_server() -> Endpoint {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let endpoint = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: listener.local_addr().unwrap().port(),
    };
    // Serves until the test process ends.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n");
            let mut version = [0u8; 256];
            let _ = conn.read(&mut version);
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_cut_after_the_version_stays_unreachable() {
    // libssh2 reports this with the same code as a mismatch (LIBSSH2_ERROR_KEX_FAILURE).
    let endpoint = cutting_server();
    let shell = Ssh2Shell::new();
    let started = Instant::now();
    let err = shell.probe(endpoint).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_temporary());
    assert!(err.message().contains("handshake"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    let request = RunRequest {
        endpoint,
        username: "root".into(),
        private_key: key.private_key,
        host_key: None,
        script: b"true\n".as_slice().into(),
    };
    let err = run(&shell, &request).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_temporary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_and_refused_stay_unreachable() {
    let shell = Ssh2Shell::with_config(
        fargate_ssh::Ssh2Config::builder()
            .probe_timeout(Duration::from_millis(500))
            .build(),
    );
    // Accepts TCP (the kernel's backlog) but never speaks SSH.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let endpoint = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: silent.local_addr().unwrap().port(),
    };
    let err = shell.probe(endpoint).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_temporary());

    // Nothing listens any more.
    drop(silent);
    let err = shell.probe(endpoint).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_temporary());
    assert!(err.message().contains("connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_public_key_login_fails_authentication_permanently() {
    fargate_testkit::require_fixture!(Sshd);
    // A `Match` block overrides the fixture's settings.
    let (sshd, shell, key) =
        sshd_with("Match all\n  PubkeyAuthentication no\n  PasswordAuthentication yes").await;
    let err = run(&shell, &sshd.request(&key, "true\n"))
        .await
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(!err.is_temporary());
    let message = err.message();
    assert!(message.contains("'root'"), "{message}");
    assert!(message.contains("ssh-ed25519"), "{message}");
    assert!(
        message.contains("methods the server offers: password"),
        "{message}"
    );
    assert!(err.hint().unwrap().contains("SSH_PUBLIC_KEY"), "{err}");
}

/// A login shell for a task image without bash: `/bin/sh` with a `PATH` that has `sh`
/// and nothing else. sshd runs the bootstrap as `<shell> -c <bootstrap>`.
fn no_bash_login_shell(dir: &Path) -> std::path::PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
    let shell = dir.join("nobash");
    std::fs::write(
        &shell,
        format!(
            "#!/bin/sh\nPATH={}\nexport PATH\nexec /bin/sh \"$@\"\n",
            bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
    shell
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bash_is_invalid_config_not_a_script_failure() {
    fargate_testkit::require_fixture!(Sshd);
    let dir = tempfile::tempdir().unwrap();
    let login_shell = no_bash_login_shell(dir.path());
    let sshd = Sshd::builder().login_shell(&login_shell).start().unwrap();
    assert_eq!(sshd.username(), "fargate-nobash");
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();

    // The login shell itself works: only bash is missing.
    let ran = dir.path().join("ran");
    let small = format!("touch {}\n", ran.display());
    // More than libssh2's 2 MiB window, so that the bootstrap ends while it is still
    // being sent.
    let large = format!("{small}: '{}'\n", "x".repeat(3 * 1024 * 1024));
    for script in [small, large] {
        let (result, out) = run(&shell, &sshd.request(&key, &script)).await;
        let err = match result {
            Err(err) => err,
            Ok(outcome) => panic!("{outcome:?}, sshd log:\n{}", sshd.log()),
        };
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(!err.is_temporary());
        assert_eq!(err.backend(), Some("ssh"));
        assert!(
            err.message()
                .contains("bash was not found in the task image"),
            "{err}"
        );
        assert!(err.message().contains("'fargate-nobash'"), "{err}");
        assert!(err.hint().unwrap().contains("install bash"), "{err}");
        assert_no_marker(&out);
        assert!(!ran.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_exiting_127_is_the_scripts_own_result() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = setup().await;
    let (result, out) = run(
        &shell,
        &sshd.request(&key, "echo before\nnosuchcommand-fargate\n"),
    )
    .await;
    assert_eq!(result.unwrap(), RunOutcome::Exited(127));
    assert_eq!(out.stdout, b"before\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchcommand-fargate: command not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_marker(&out);
}
