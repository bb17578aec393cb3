//! The sshd fixture itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};

use fargate_core::{CapturedOutput, ErrorKind, KeyType, RemoteShell, RunOutcome};
use fargate_ssh::Ssh2Shell;
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_a_task_address_and_port_22_and_stops_on_drop() {
    fargate_testkit::require_fixture!(Sshd);
    // A per-task loopback address, as the end-to-end tests use, on the default SSH port.
    let mut random = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .unwrap();
    let n = u32::from_le_bytes(random);
    let ip = IpAddr::V4(Ipv4Addr::new(
        127,
        77,
        (n % 250 + 1) as u8,
        (n / 250 % 250 + 2) as u8,
    ));
    let sshd = Sshd::builder().address(ip).port(22).start().unwrap();
    assert_eq!(sshd.endpoint().ip, ip);
    assert_eq!(sshd.endpoint().port, 22);
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();
    let mut out = CapturedOutput::default();
    let outcome = shell
        .run(
            &sshd.request(&key, "echo \"$SSH_CONNECTION\" | cut -d' ' -f3,4"),
            &mut out,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{ip} 22\n"));

    let endpoint = sshd.endpoint();
    drop(sshd);
    let err = shell.probe(endpoint).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

#[test]
fn fixtures_have_distinct_host_keys_and_free_ports() {
    fargate_testkit::require_fixture!(Sshd);
    let a = Sshd::start().unwrap();
    let b = Sshd::start().unwrap();
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.host_key(), b.host_key());
    assert!(a.host_key_fingerprint().starts_with("SHA256:"));
    assert_eq!(a.username(), "root");
    assert!(a.log().contains("Server listening"), "{}", a.log());
}

#[test]
fn dropping_a_delayed_fixture_before_it_starts_is_prompt() {
    fargate_testkit::require_fixture!(Sshd);
    let started = std::time::Instant::now();
    let sshd = Sshd::builder()
        .start_delay(std::time::Duration::from_secs(30))
        .start()
        .unwrap();
    drop(sshd);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn missing_sshd_names_the_install_command() {
    let err = Sshd::builder()
        .sshd_path("/nonexistent/sbin/sshd")
        .start()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("apt-get install -y openssh-server"),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/sbin/sshd"), "{err}");
}
