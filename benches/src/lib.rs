//! Benchmarks of the `fargate` driver (binaries `ssh_bench` and `job_bench`); shared helpers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

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
