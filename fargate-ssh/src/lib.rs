#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! * **One connection per call, or one per job.** Every custom-executor stage is its own
//!   driver process, so [`Ssh2Shell`] keeps nothing between calls. libssh2 is blocking:
//!   each call runs its whole session on a blocking thread (`tokio::task::spawn_blocking`),
//!   never in an async task. Built [`with_keeper`](Ssh2Shell::with_keeper), it runs scripts
//!   through a per-job [`keeper`] process that holds one connection for all of a job's
//!   stages, and connects directly only when there is no working keeper.
//! * **Timeouts.** The TCP connect and the SSH handshake (plus authentication) are
//!   bounded ([`Ssh2Config`]: 10 s each by default); while a script runs, SSH keepalives
//!   are sent every 30 s so that idle NAT/ELB paths stay open and a dead peer is noticed.
//! * **Keys.** [`generate_key`](fargate_core::RemoteShell::generate_key) makes ed25519 keys
//!   by default, RSA (3072 to 8192 bits) only when asked; libssh2 1.11 signs RSA with
//!   `rsa-sha2-256/512`, which OpenSSH ≥ 8.8 requires. The private key is in OpenSSH
//!   format and zeroized when dropped; the public key is one `authorized_keys` line
//!   without newline, with the comment `fargate-job`.
//! * **Host-key pinning.** [`probe`](fargate_core::RemoteShell::probe) (TCP connect and
//!   handshake only, cheap enough to poll every 250 ms while a task boots) returns the host
//!   key as `SHA256:<unpadded base64>` of the key blob, as `ssh-keygen -lf` shows it
//!   (the shell keeps the probe's handshaken connection for 5 s, so that the login that
//!   follows it, to the same endpoint and pinned key, needs no new connection). The
//!   core pins it in the job record; [`run`](fargate_core::RemoteShell::run) compares the
//!   server's key with the pinned one right after the handshake and fails with
//!   [`HostKeyMismatch`](fargate_core::ErrorKind::HostKeyMismatch) before authenticating or
//!   sending anything when they differ (another machine may have the task's IP by now).
//!
//! # How a script runs
//!
//! The script is **not** the SSH command line (that would be limited to 128 KiB, visible
//! in `ps`, and need a bash login shell). The exec command is a fixed POSIX `sh` bootstrap
//! (run by whatever login shell the user has):
//!
//! ```sh
//! command -v bash >/dev/null 2>&1 || { printf '\036fargate-no-bash\n'; exit 127; }
//! printf '\036fargate-pgid:%s\n' "$$"          # the script's process group, for cancel
//! exec bash /dev/fd/3 3<&0 </dev/null           # script from the channel, stdin = /dev/null
//! ```
//!
//! Both marker lines (they start with the byte 0x1E) are taken out of stdout before
//! anything reaches the [`OutputSink`](fargate_core::OutputSink), so they never show in
//! the job's log. When the bootstrap reports that there is no bash (the task image lacks
//! it, or it is not on the SSH user's `PATH`), `run` fails with
//! [`InvalidConfig`](fargate_core::ErrorKind::InvalidConfig) (not temporary), saying so
//! and hinting to install bash in the image; it never returns `Exited(127)` for that,
//! which the driver would report as a build failure of the user's script. A script that
//! itself exits with 127 (a command not found) is still `Ok(Exited(127))`.
//!
//! The client then writes the script to the channel's stdin and sends EOF. bash reads its
//! script from fd 3 (a pipe from sshd: nothing is written to disk, secrets do not show in
//! the process list) and the script's commands get EOF on stdin. The script is sent
//! wrapped in `{ ` … `}`: bash parses a compound command completely before running it,
//! so a script cut short by a lost connection or a cancel is a syntax error and no part
//! of it runs. (Side effects of the wrapping: `$0` is `/dev/fd/3`, and an alias the script
//! defines takes effect only in code parsed later, such as `eval` or functions; the
//! runner's scripts use neither.)
//!
//! The script is written inside the same non-blocking loop that reads its output, so an
//! 8 MiB script that prints while it is still being received cannot deadlock. stdout and
//! stderr are read separately as they arrive (non-blocking libssh2 demultiplexing, `poll`
//! on the socket, no busy loop) and handed to the async task in chunks of at most 256 KiB
//! ([`MAX_OUTPUT_CHUNK`](fargate_core::MAX_OUTPUT_CHUNK))
//! through a bounded channel, which writes them to the
//! [`OutputSink`](fargate_core::OutputSink). Memory use is bounded by that channel and
//! libssh2's 2 MiB window, whatever the amount of output. The exit status becomes
//! [`RunOutcome::Exited`](fargate_core::RunOutcome::Exited); death by a signal becomes
//! [`RunOutcome::Signaled`](fargate_core::RunOutcome::Signaled) (bash is `exec`'d, so it is
//! the process sshd reports on).
//!
//! # Cancellation
//!
//! sshd starts each session in its own session and process group, led by the login
//! shell, which `exec`s bash: the first line the bootstrap prints (hidden from the sink)
//! is that process group id. When the cancellation token fires, `run` opens a second
//! channel on the same connection and runs a small POSIX command there: `kill -s TERM --
//! -<pgid>` (the runner's scripts `trap 'exit 1' TERM`), a wait of up to
//! [`Ssh2Config::cancel_grace`] (1 s) for the group to empty (`kill -s 0`), then `kill -s
//! KILL -- -<pgid>` for whatever ignored `SIGTERM`. `run` returns
//! [`Cancelled`](fargate_core::ErrorKind::Cancelled) within 2 s (the shared
//! [`CancelBudget`](fargate_core::CancelBudget)); a cancel that comes while
//! still connecting returns at once and the script is never started. The SSH `signal`
//! request is not used: libssh2's Rust binding lacks it and many sshd versions ignore it.
//! Children that leave the process group (`setsid`, daemons) are not stopped; the task is
//! stopped by the cleanup stage anyway.
//!
//! # Task image contract
//!
//! * an SSH server on the configured port (OpenSSH ≥ 8.8 is tested), allowing public key
//!   login for the configured user (`PermitRootLogin prohibit-password` for root);
//! * the entrypoint writes the value of `SSH_PUBLIC_KEY` (one line) into
//!   `~<user>/.ssh/authorized_keys` before starting sshd;
//! * a POSIX login shell for that user (`sh`, `dash`, `bash`, `ash`), and **`bash`** on its
//!   `PATH` (the runner's scripts are bash scripts);
//! * sshd allowing at least one key exchange, host key, cipher and MAC algorithm of
//!   libssh2 1.11 (OpenSSH's defaults since 8.8 do);
//! * `/dev/fd` (standard in containers) and a `kill` that takes a negative pid (POSIX);
//! * recommended: the container ends at `FARGATE_TASK_DEADLINE` (Unix seconds, set by the
//!   driver), so that a task nobody stops does not run for ever (the example image's
//!   `until-deadline.sh` does).
//!
//! # Known limitations
//!
//! * libssh2 reports exit status 0 when the server closes the channel without sending an
//!   exit status or signal, so that case cannot be told apart (OpenSSH always sends one;
//!   a broken connection is reported as `Unreachable`).
//! * Once connected, output streams at about 0.6-0.7× the rate of OpenSSH's client on the
//!   same CPU (roughly 250 MB/s on a 2.5 GHz Xeon core): libssh2's chacha20-poly1305 is
//!   portable C, OpenSSH's uses OpenSSL's vectorised chacha20. A whole `run` still keeps
//!   up with `ssh host cmd` for 200 MB, because connecting is faster (`benches/`).
//! * The script's processes inherit fd 3 (the read end of the script pipe).
//! * The cancel helper waits in steps of `sleep 0.1` (GNU coreutils, busybox); where
//!   fractional sleeps are not supported the `SIGKILL` follows the `SIGTERM` at once.
//!
//! # Errors
//!
//! All errors are [`fargate_core::Error`]s with backend `"ssh"`. Messages never contain
//! the private key or the script. The driver's prepare stage keeps polling
//! [`probe`](fargate_core::RemoteShell::probe) only while it fails with `Unreachable`, so
//! what will never work is reported as something else:
//!
//! * **`Unreachable`, temporary**: could not connect (refused, no answer, the handshake
//!   timed out or the server closed the connection during it): the task may still be
//!   starting. A connection lost while the script was running is also `Unreachable` but
//!   not temporary (the script may have partly run).
//! * **`InvalidConfig`, not temporary: no common algorithm.** The server offers no key
//!   exchange, host key, cipher or MAC algorithm that libssh2 supports (e.g. an sshd
//!   allowing only `sntrup761x25519-sha512@openssh.com`). libssh2 1.11 reports this as
//!   `LIBSSH2_ERROR_KEX_FAILURE` (-5, "Unable to exchange encryption keys"), the same
//!   code as for a server that closes the connection after its version line. When
//!   libssh2 agreed on a key exchange it tells which later negotiation failed; otherwise
//!   the server's `SSH_MSG_KEXINIT` is read over a second short connection and compared
//!   with libssh2's algorithms, and only a real mismatch becomes `InvalidConfig`. The
//!   message names the negotiation and what the server offers; the hint lists what
//!   libssh2 offers (key exchange curve25519-sha256, ecdh-sha2-nistp256/384/521,
//!   diffie-hellman-group14/16/18 and group-exchange; host keys ssh-ed25519, ecdsa,
//!   rsa-sha2-256/512; ciphers chacha20-poly1305, aes-gcm, aes-ctr, aes-cbc; MACs
//!   hmac-sha2-256/512, which libssh2 needs even with chacha20-poly1305) and tells the
//!   administrator to allow one of them in the task image's `sshd_config`. Both `probe`
//!   and `run` fail this way, before authenticating.
//! * **`InvalidConfig`, not temporary: no bash** in the task image (see above).
//! * **`AuthenticationFailed`, not temporary**: the server refused the job's key, or
//!   offers no public key login; the message names the user, the key type and the
//!   methods the server offers, the hint says how the key must reach `authorized_keys`.
//! * `HostKeyMismatch`, `Cancelled`, `InvalidInput` (the job's key is unusable) and
//!   `Unexpected`.
//!
//! An sshd that has no usable host key for its `HostKeyAlgorithms` closes the connection
//! right after its version line; a client cannot tell that from a server still starting,
//! so it stays `Unreachable` (sshd logs "No supported key exchange algorithms").
//!
//! # Testing
//!
//! The integration tests (`tests/`) run [`Ssh2Shell`] against a real OpenSSH server on
//! loopback, the `sshd` fixture of the unpublished `fargate-testkit` crate; they need root
//! and `/usr/sbin/sshd` and run only with `FARGATE_TEST_FIXTURES=1` (they say that they
//! skipped otherwise). This crate ships no test infrastructure.

pub mod config;
pub mod keeper;
pub mod keys;
mod negotiation;
mod session;
mod shell;

pub use config::{Ssh2Config, Ssh2ConfigBuilder};
pub use shell::Ssh2Shell;

/// The backend name put on errors.
pub(crate) const BACKEND: &str = "ssh";
