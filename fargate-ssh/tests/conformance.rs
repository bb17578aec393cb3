//! The core's `RemoteShell` conformance suite, against a real OpenSSH server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, TcpListener};

use fargate_core::Endpoint;
use fargate_core::testing::conformance::{self, ShellCaps, ShellTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh2_shell_conforms() {
    fargate_testkit::require_fixture!(Sshd);
    let (sshd, shell, key) = common::setup().await;
    let closed = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        Endpoint {
            ip: Ipv4Addr::LOCALHOST.into(),
            port: listener.local_addr().unwrap().port(),
        }
    };
    let target = ShellTarget {
        endpoint: sshd.endpoint(),
        host_key: sshd.host_key().clone(),
        username: sshd.username().to_owned(),
        private_key: key.private_key.clone(),
        closed,
    };
    conformance::shell(&shell, &target, ShellCaps::default()).await;
}
