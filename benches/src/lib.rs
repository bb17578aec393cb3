//! Benchmarks of the `fargate` driver (binaries `ssh_bench` and `job_bench`); shared helpers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cipher both sides use in every comparison (libssh2's fastest, OpenSSH's default).
pub const CIPHER: &str = "chacha20-poly1305@openssh.com";

/// An OpenSSH `ssh` command line for the baselines: batch mode, no host key checks (throwaway
/// loopback servers), only `key`, cipher [`CIPHER`], then `extra` options, `user@ip`, `remote`.
pub fn openssh(
    key: &Path,
    user: &str,
    ip: &str,
    port: u16,
    extra: &[&str],
    remote: &str,
) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-c",
        CIPHER,
    ])
    .args(extra)
    .arg("-i")
    .arg(key)
    .arg("-p")
    .arg(port.to_string())
    .arg(format!("{user}@{ip}"))
    .arg(remote);
    cmd
}

/// Writes a private key for `ssh -i`: created or truncated with mode 0600, as ssh demands.
pub fn write_private_key(path: &Path, key: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?
        .write_all(key.as_bytes())
}

/// Runs `cmd` to its end with no stdin and its output drained: its wall time and what it
/// wrote to stderr. Panics (naming `what`) when it cannot start or fails.
pub fn timed(mut cmd: Command, what: &str) -> (Duration, String) {
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    (wall, stderr)
}

/// The median of `v` (the upper middle value of an even count). Panics when `v` is empty;
/// a NaN sorts as equal to anything.
pub fn median<T: PartialOrd + Copy>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
