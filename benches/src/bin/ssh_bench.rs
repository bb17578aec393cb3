//! `Ssh2Shell` against OpenSSH's `ssh` client, on the same throwaway sshd and cipher.
//!
//! ```sh
//! cargo run --release -p fargate-benches --bin ssh_bench [-- ROUNDS MEGABYTES PAIRS]
//! ```
//!
//! (a) connect + key exchange + auth + run `true`: median of ROUNDS (default 15) fresh
//!     connections each. Target: `Ssh2Shell` ≤ 1.25 × `ssh`.
//! (b) streaming MEGABYTES (default 200) of stdout into a discarding sink, whole call
//!     timed (connection included, like `ssh host cmd > /dev/null`), PAIRS (default 9)
//!     back-to-back pairs of one `Ssh2Shell` run and one `ssh` run. The verdict uses the
//!     median of the per-pair MB/s ratios: the two runs of a pair share the machine's
//!     load of that moment, so that ratio is what a noisy machine disturbs least.
//!     Target: `Ssh2Shell` ≥ 0.9 × `ssh` in MB/s.
//!
//! Needs root (the sshd fixture) and the OpenSSH client and server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fargate_core::{KeyType, OutputSink, RemoteShell, RunOutcome};
use fargate_ssh::Ssh2Shell;
use fargate_testkit::sshd::Sshd;
use tokio_util::sync::CancellationToken;

use fargate_benches::{CIPHER, median};

/// Drops everything, counting bytes.
#[derive(Default)]
struct Discard(u64);

impl OutputSink for Discard {
    fn stdout(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
    fn stderr(&mut self, _chunk: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ssh_command(sshd: &Sshd, key: &Path, extra: &[&str], remote: &str) -> Command {
    let ip = sshd.endpoint().ip.to_string();
    let mut cmd = fargate_benches::openssh(
        key,
        sshd.username(),
        &ip,
        sshd.endpoint().port,
        extra,
        remote,
    );
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// User + system CPU time of this process (`RUSAGE_SELF`) or of its waited-for children.
fn cpu(who: i32) -> Duration {
    // SAFETY: `usage` is a valid, writable rusage for the call.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn time_ssh(sshd: &Sshd, key: &Path, extra: &[&str], remote: &str) -> Duration {
    let started = Instant::now();
    let status = ssh_command(sshd, key, extra, remote).status().unwrap();
    let took = started.elapsed();
    assert!(status.success(), "ssh failed: {status}\n{}", sshd.log());
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(15, |a| a.parse().unwrap());
    let megabytes: u64 = args.next().map_or(200, |a| a.parse().unwrap());
    let pairs: usize = args.next().map_or(9, |a| a.parse().unwrap());

    // A dedicated user with bash as its login shell and a fresh home, as in a task image:
    // root's own rc files on the bench machine (which may run slow tools on every SSH
    // command) would otherwise add the same constant to both sides.
    let sshd = Sshd::builder()
        .login_shell("/bin/bash")
        .config_line(format!("Ciphers {CIPHER}"))
        .start()
        .expect("sshd fixture (run as root, with openssh-server installed)");
    let shell = Ssh2Shell::new();
    let key = shell.generate_key(KeyType::Ed25519).await.unwrap();
    sshd.authorize(&key.public_key).unwrap();
    let key_path = sshd.dir().join("client_ed25519");
    fargate_benches::write_private_key(&key_path, key.private_key.expose()).unwrap();
    let never = CancellationToken::new();

    println!("sshd {} , cipher {CIPHER}", sshd.endpoint());

    // (a) connect + auth + `true`, alternating to share any drift.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut theirs_curve = Vec::new();
    // Warm-up of both (page cache, sshd's first fork).
    time_ssh(&sshd, &key_path, &[], "true");
    shell
        .run(&sshd.request(&key, "true"), &mut Discard::default(), &never)
        .await
        .unwrap();
    for _ in 0..rounds {
        let started = Instant::now();
        let outcome = shell
            .run(&sshd.request(&key, "true"), &mut Discard::default(), &never)
            .await
            .unwrap();
        ours.push(started.elapsed());
        assert_eq!(outcome, RunOutcome::Exited(0));
        theirs.push(time_ssh(&sshd, &key_path, &[], "true"));
        theirs_curve.push(time_ssh(
            &sshd,
            &key_path,
            &["-o", "KexAlgorithms=curve25519-sha256"],
            "true",
        ));
    }
    let (a_ours, a_theirs, a_curve) = (median(&ours), median(&theirs), median(&theirs_curve));
    println!("(a) connect+auth+`true`, median of {rounds}:");
    println!("    Ssh2Shell                      {:8.1} ms", ms(a_ours));
    println!("    ssh (default kex sntrup761)    {:8.1} ms", ms(a_theirs));
    println!(
        "    ssh -o KexAlgorithms=curve25519-sha256 {:8.1} ms",
        ms(a_curve)
    );
    let ratio_a = a_ours.as_secs_f64() / a_theirs.as_secs_f64();
    println!(
        "    ratio Ssh2Shell/ssh = {ratio_a:.2} (target <= 1.25: {}); vs curve25519 ssh = {:.2}",
        if ratio_a <= 1.25 { "met" } else { "MISSED" },
        a_ours.as_secs_f64() / a_curve.as_secs_f64()
    );

    // (b) throughput.
    let bytes = megabytes * 1_000_000;
    let remote = format!("head -c {bytes} /dev/zero");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ours_cpu = Vec::new();
    let mut theirs_cpu = Vec::new();
    for _ in 0..pairs {
        let mut sink = Discard::default();
        let cpu_before = cpu(libc::RUSAGE_SELF);
        let started = Instant::now();
        let outcome = shell
            .run(&sshd.request(&key, &remote), &mut sink, &never)
            .await
            .unwrap();
        ours.push(started.elapsed());
        ours_cpu.push(cpu(libc::RUSAGE_SELF) - cpu_before);
        assert_eq!(outcome, RunOutcome::Exited(0));
        assert_eq!(sink.0, bytes);
        let cpu_before = cpu(libc::RUSAGE_CHILDREN);
        theirs.push(time_ssh(&sshd, &key_path, &[], &remote));
        theirs_cpu.push(cpu(libc::RUSAGE_CHILDREN) - cpu_before);
    }
    let rate = |d: Duration| megabytes as f64 / d.as_secs_f64();
    let best = |v: &[Duration]| *v.iter().min().unwrap();
    let pair_ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(o, t)| t.as_secs_f64() / o.as_secs_f64())
        .collect();
    let (b_ours, b_theirs) = (median(&ours), median(&theirs));
    println!("(b) {megabytes} MB of stdout to a discarding sink, whole call, {pairs} pairs:");
    println!(
        "    Ssh2Shell  median {:7.1} MB/s  best {:7.1} MB/s",
        rate(b_ours),
        rate(best(&ours)),
    );
    println!(
        "    ssh        median {:7.1} MB/s  best {:7.1} MB/s",
        rate(b_theirs),
        rate(best(&theirs)),
    );
    println!(
        "    client CPU (user+sys) median: Ssh2Shell {:.0} ms, ssh {:.0} ms",
        ms(median(&ours_cpu)),
        ms(median(&theirs_cpu))
    );
    let listed: Vec<String> = pair_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("    per-pair ratios Ssh2Shell/ssh: {}", listed.join(" "));
    let ratio_b = median(&pair_ratios);
    println!(
        "    ratio Ssh2Shell/ssh (median of pairs) = {ratio_b:.2} (target >= 0.9: {}); \
         of medians = {:.2}; best/best = {:.2}",
        if ratio_b >= 0.9 { "met" } else { "MISSED" },
        rate(b_ours) / rate(b_theirs),
        rate(best(&ours)) / rate(best(&theirs))
    );
}
