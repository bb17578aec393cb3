//! Test fixture: a throwaway OpenSSH server ([`Sshd`]) standing in for a task's container.
//!
//! ```no_run
//! # async fn demo() -> fargate_core::Result<()> {
//! use fargate_core::{CapturedOutput, RemoteShell};
//! use fargate_ssh::Ssh2Shell;
//! use fargate_testkit::sshd::Sshd;
//! use tokio_util::sync::CancellationToken;
//!
//! let sshd = Sshd::start()?;
//! let shell = Ssh2Shell::new();
//! let key = shell.generate_key(Default::default()).await?;
//! sshd.authorize(&key.public_key)?;
//! let request = sshd.request(&key, "echo hello");
//! let mut out = CapturedOutput::default();
//! shell.run(&request, &mut out, &CancellationToken::new()).await?;
//! assert_eq!(out.stdout, b"hello\n");
//! # Ok(()) }
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fargate_core::{Endpoint, Error, ErrorKind, HostKey, KeyPair, Result, RunRequest};
use fargate_ssh::keys::host_key_from_blob;
use ssh_key::LineEnding;
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::rand_core::OsRng;

use process::{banner, descendants, spawn_command};

mod builder;
mod process;
mod user;

pub use builder::SshdBuilder;
pub use user::login_user;

/// Where the fixture expects the OpenSSH server (sshd re-executes itself, so the path
/// must be absolute).
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// The command that installs it on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install -y openssh-server";

fn fixture_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Io, message).with_backend("sshd fixture")
}

fn io_error(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    fixture_error(format!("{what}: {e}")).with_source(e)
}

#[derive(Debug, Default)]
struct ServerState {
    child: Option<Child>,
    stopped: bool,
}

/// A running (or soon running) OpenSSH server with throwaway keys, stopped on drop.
///
/// Runs `/usr/sbin/sshd -D -e -f <config>` with its own ed25519 host key, its own
/// `authorized_keys` ([`Sshd::authorize`]; in a directory the login user owns, named to
/// its sessions by `FARGATE_AUTHORIZED_KEYS`, so that it can replace them as a user can
/// replace `~/.ssh/authorized_keys`), its own [deadline file](Sshd::deadline_file) (named
/// by `FARGATE_DEADLINE_FILE`: the servers of the local Fargate share one login user and
/// its home, where a task has a home of its own), `StrictModes no`, `UsePAM no` and no
/// password login. Must run as root (like a container's sshd).
#[derive(Debug)]
pub struct Sshd {
    endpoint: Endpoint,
    host_key: HostKey,
    host_public_key: String,
    username: String,
    authorized_keys: PathBuf,
    log: PathBuf,
    state: Arc<Mutex<ServerState>>,
    starter: Option<JoinHandle<()>>,
    wake: Option<mpsc::Sender<()>>,
    ready_timeout: Duration,
    extra_config: Vec<String>,
    sshd_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Settings, starting from the defaults (127.0.0.1, a free port, no delay, root).
    pub fn builder() -> SshdBuilder {
        SshdBuilder {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            start_delay: None,
            login_shell: None,
            ready_timeout: Duration::from_secs(10),
            extra_config: Vec::new(),
            sshd_path: PathBuf::from(SSHD_PATH),
        }
    }

    /// An sshd on 127.0.0.1 on a free port, ready.
    pub fn start() -> Result<Sshd> {
        Sshd::builder().start()
    }

    /// Where it listens.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Its host key, as [`fargate_core::RemoteShell::probe`] reports it.
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// Its host public key as an OpenSSH line (`ssh-ed25519 AAAA... comment`), what a task
    /// image's entry point announces.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// Its host key fingerprint (`SHA256:...`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key.fingerprint
    }

    /// The user to log in as (root, or the user of [`SshdBuilder::login_shell`]).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The fixture's directory (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where a session's deadline script writes this server's task deadline
    /// (`FARGATE_DEADLINE_FILE`), next to its authorized keys.
    pub fn deadline_file(&self) -> PathBuf {
        self.authorized_keys.with_file_name("fargate-deadline")
    }

    /// Allows a client key: appends one `authorized_keys` line.
    pub fn authorize(&self, public_key_line: &str) -> Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .map_err(|e| io_error("opening authorized_keys", e))?;
        writeln!(file, "{}", public_key_line.trim_end())
            .map_err(|e| io_error("writing authorized_keys", e))
    }

    /// A [`RunRequest`] for `script` with `key`, pinned to this server's host key.
    pub fn request(&self, key: &KeyPair, script: impl AsRef<[u8]>) -> RunRequest {
        RunRequest {
            endpoint: self.endpoint,
            username: self.username.clone(),
            private_key: key.private_key.clone(),
            host_key: Some(self.host_key.clone()),
            script: Arc::from(script.as_ref()),
        }
    }

    /// sshd's log so far (`LogLevel VERBOSE`), for failing tests.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until sshd answers with an SSH banner (by connecting, not by sleeping).
    pub fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        let addr = SocketAddr::new(self.endpoint.ip, self.endpoint.port);
        loop {
            if let Some(status) = self.exited() {
                return Err(fixture_error(format!(
                    "sshd exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                )));
            }
            if banner(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fixture_error(format!(
                    "sshd did not answer on {addr} within {:?}; its log:\n{}",
                    self.ready_timeout,
                    self.log()
                )));
            }
            // Not a synchronisation sleep: the next connection attempt is the check.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops sshd now (existing sessions end too). Idempotent; also done on drop.
    pub fn kill(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if let Some(mut child) = state.child.take() {
            // sshd puts each connection in a session of its own: kill every descendant,
            // as a stopping container would, so that existing sessions end too.
            for pid in descendants(child.id()) {
                // SAFETY: kill(2) on a process this fixture's sshd started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&self) -> Option<String> {
        let mut state = self.lock();
        let child = state.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn write_config(&self) -> Result<()> {
        let dir = self.dir.path().display();
        let config = format!(
            "Port {port}\n\
             ListenAddress {ip}\n\
             HostKey {dir}/host_ed25519\n\
             PidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {keys}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PrintMotd no\n\
             UseDNS no\n\
             MaxStartups 200\n\
             MaxSessions 50\n\
             LogLevel VERBOSE\n",
            port = self.endpoint.port,
            ip = self.endpoint.ip,
            keys = self.authorized_keys.display(),
        );
        let mut config = config;
        // sshd takes the first SetEnv line only: every variable goes on one.
        let mut setenv = vec![
            format!(
                "{}={}",
                fargate_core::driver::pool::AUTHORIZED_KEYS_ENV,
                self.authorized_keys.display()
            ),
            format!(
                "{}={}",
                fargate_core::driver::pool::DEADLINE_FILE_ENV,
                self.deadline_file().display()
            ),
        ];
        for line in &self.extra_config {
            match line.strip_prefix("SetEnv ") {
                Some(vars) => setenv.push(vars.trim().to_owned()),
                None => {
                    config.push_str(line);
                    config.push('\n');
                }
            }
        }
        config.push_str(&format!("SetEnv {}\n", setenv.join(" ")));
        fs::write(self.config_path(), config).map_err(|e| io_error("writing sshd_config", e))
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.sshd_path);
        command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    fn spawn(&self) -> Result<Child> {
        spawn_command(self.command(), &self.log)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        self.wake.take();
        if let Some(starter) = self.starter.take() {
            let _ = starter.join();
        }
        // The starter may have spawned sshd just before `kill` took the lock.
        self.kill();
    }
}

/// The public OpenSSH line of a fresh ed25519 key that no server has: what a host that
/// answers for someone else's address would show.
pub fn throwaway_public_key() -> Result<String> {
    let key = ssh_key::PrivateKey::new(
        KeypairData::from(Ed25519Keypair::random(&mut OsRng)),
        "someone-else",
    )
    .map_err(|e| fixture_error(format!("making a key: {e}")))?;
    key.public_key()
        .to_openssh()
        .map_err(|e| fixture_error(format!("encoding a public key: {e}")))
}

/// Writes a fresh ed25519 host key to `path`; its [`HostKey`] and public OpenSSH line.
fn write_host_key(path: &Path) -> Result<(HostKey, String)> {
    let key = ssh_key::PrivateKey::new(
        KeypairData::from(Ed25519Keypair::random(&mut OsRng)),
        "fargate-test-host",
    )
    .map_err(|e| fixture_error(format!("making a host key: {e}")))?;
    let encoded = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fixture_error(format!("encoding the host key: {e}")))?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("writing the host key", e))?;
    file.write_all(encoded.as_bytes())
        .map_err(|e| io_error("writing the host key", e))?;
    let blob = key
        .public_key()
        .to_bytes()
        .map_err(|e| fixture_error(format!("encoding the host public key: {e}")))?;
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| fixture_error(format!("encoding the host public key: {e}")))?;
    Ok((host_key_from_blob(&blob), line))
}
