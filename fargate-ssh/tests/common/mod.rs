//! Shared helpers of the integration tests (against a real sshd).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io;
use std::time::Instant;

use fargate_core::{KeyPair, KeyType, OutputSink, RemoteShell};
use fargate_ssh::Ssh2Shell;
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

/// An sshd, a shell and an authorized ed25519 key.
pub async fn setup() -> (Sshd, Ssh2Shell, KeyPair) {
    let sshd = Sshd::start().expect("sshd fixture");
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();
    (sshd, shell, key)
}

/// A unique marker for process-list checks.
pub fn marker() -> String {
    let mut bytes = [0u8; 4];
    getrandom_bytes(&mut bytes);
    // A fractional sleep duration nobody else uses: `sleep 1000.<digits>`.
    format!("{}", u32::from_le_bytes(bytes) % 1_000_000_000)
}

fn getrandom_bytes(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .unwrap();
}

/// Whether any process has `pattern` in its command line.
pub fn process_exists(pattern: &str) -> bool {
    let status = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    status.success()
}

/// Captures output and cancels `token` once stdout contains `trigger`.
pub struct CancelOn {
    pub token: CancellationToken,
    pub trigger: &'static [u8],
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub cancelled_at: Option<Instant>,
}

impl CancelOn {
    pub fn new(trigger: &'static [u8]) -> Self {
        CancelOn {
            token: CancellationToken::new(),
            trigger,
            stdout: Vec::new(),
            stderr: Vec::new(),
            cancelled_at: None,
        }
    }
}

impl OutputSink for CancelOn {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stdout.extend_from_slice(chunk);
        if self.cancelled_at.is_none()
            && self
                .stdout
                .windows(self.trigger.len())
                .any(|w| w == self.trigger)
        {
            self.cancelled_at = Some(Instant::now());
            self.token.cancel();
        }
        Ok(())
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stderr.extend_from_slice(chunk);
        Ok(())
    }
}

/// Counts bytes without keeping them.
#[derive(Default)]
pub struct Counting {
    pub stdout: u64,
    pub stderr: u64,
    pub stdout_nonzero: u64,
}

impl OutputSink for Counting {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stdout += chunk.len() as u64;
        self.stdout_nonzero += chunk.iter().filter(|&&b| b != 0).count() as u64;
        Ok(())
    }
    fn stderr(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.stderr += chunk.len() as u64;
        Ok(())
    }
}

/// A field of /proc/self/status in kB.
pub fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
