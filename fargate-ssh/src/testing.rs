//! Test fixture: a throwaway OpenSSH server ([`Sshd`]) standing in for a task's container.
//!
//! ```no_run
//! # async fn demo() -> fargate_core::Result<()> {
//! use fargate_core::{CapturedOutput, RemoteShell};
//! use fargate_ssh::{Ssh2Shell, testing::Sshd};
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
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fargate_core::{Endpoint, Error, ErrorKind, HostKey, KeyPair, Result, RunRequest};
use ssh_key::LineEnding;
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::rand_core::OsRng;

use crate::keys::host_key_from_blob;

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

/// Settings of an [`Sshd`]; from [`Sshd::builder`].
#[derive(Clone, Debug)]
pub struct SshdBuilder {
    address: IpAddr,
    port: Option<u16>,
    start_delay: Option<Duration>,
    login_shell: Option<PathBuf>,
    ready_timeout: Duration,
    extra_config: Vec<String>,
    sshd_path: PathBuf,
}

impl SshdBuilder {
    /// The sshd binary (default [`SSHD_PATH`]); must be an absolute path.
    pub fn sshd_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.sshd_path = path.into();
        self
    }

    /// Adds a line to `sshd_config` (e.g. `Ciphers chacha20-poly1305@openssh.com`).
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// The address to listen on (default `127.0.0.1`). Any `127.x.y.z` works on Linux
    /// without configuration, so each fake task can have its own.
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = address;
        self
    }

    /// The port (default: a free one). 22 is fine on a `127.x.y.z` address other than
    /// one where a system sshd listens.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts sshd only after `delay`, on a background thread, like a container that is
    /// still booting. [`SshdBuilder::start`] then returns at once; see [`Sshd::wait_ready`].
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = Some(delay);
        self
    }

    /// Logs in as a dedicated local user whose login shell is `shell` (e.g. `/bin/sh`),
    /// instead of root. The user (`fargate-<shell name>`) is created with `useradd` the
    /// first time; this needs root.
    pub fn login_shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.login_shell = Some(shell.into());
        self
    }

    /// How long [`SshdBuilder::start`] and [`Sshd::wait_ready`] wait for the server to
    /// answer (default 10 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Writes the configuration and keys, starts sshd (now or after the delay) and, when
    /// there is no delay, waits until it answers with an SSH banner.
    pub fn start(self) -> Result<Sshd> {
        if !self.sshd_path.is_file() {
            return Err(fixture_error(format!(
                "the OpenSSH server is not installed ({} is missing); install it with \
                 `{INSTALL_HINT}`",
                self.sshd_path.display()
            ))
            .with_hint(INSTALL_HINT));
        }
        ensure_privsep_dir()?;
        let username = match &self.login_shell {
            Some(shell) => login_user(shell)?,
            None => current_user(),
        };
        let dir = tempfile::Builder::new()
            .prefix("fargate-sshd-")
            .tempdir()
            .map_err(|e| io_error("creating the sshd fixture directory", e))?;
        let host_key = write_host_key(&dir.path().join("host_ed25519"))?;
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, b"").map_err(|e| io_error("writing authorized_keys", e))?;
        let log = dir.path().join("sshd.log");

        let state = Arc::new(Mutex::new(ServerState::default()));
        let mut sshd = Sshd {
            endpoint: Endpoint {
                ip: self.address,
                port: 0,
            },
            host_key,
            username,
            authorized_keys,
            log,
            state,
            starter: None,
            wake: None,
            ready_timeout: self.ready_timeout,
            extra_config: self.extra_config.clone(),
            sshd_path: self.sshd_path.clone(),
            dir,
        };
        match self.start_delay {
            None => {
                // A free port may be taken between the check and sshd's bind: retry.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let port = match self.port {
                        Some(port) => port,
                        None => free_port(self.address)?,
                    };
                    sshd.endpoint.port = port;
                    sshd.write_config()?;
                    let child = sshd.spawn()?;
                    sshd.lock().child = Some(child);
                    match sshd.wait_ready() {
                        Ok(()) => break,
                        Err(e) if self.port.is_some() || attempts >= 5 => return Err(e),
                        Err(_) => {
                            sshd.kill();
                            sshd.lock().stopped = false;
                        }
                    }
                }
            }
            Some(delay) => {
                sshd.endpoint.port = match self.port {
                    Some(port) => port,
                    None => free_port(self.address)?,
                };
                sshd.write_config()?;
                let (wake, wait) = mpsc::channel::<()>();
                let state = Arc::clone(&sshd.state);
                let command = sshd.command();
                let log = sshd.log.clone();
                sshd.wake = Some(wake);
                sshd.starter = Some(std::thread::spawn(move || {
                    // Woken early (disconnected) when the fixture is dropped.
                    if wait.recv_timeout(delay) != Err(mpsc::RecvTimeoutError::Timeout) {
                        return;
                    }
                    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                    if state.stopped {
                        return;
                    }
                    match spawn_command(command, &log) {
                        Ok(child) => state.child = Some(child),
                        Err(e) => eprintln!("sshd fixture: delayed start failed: {e}"),
                    }
                }));
            }
        }
        Ok(sshd)
    }
}

#[derive(Debug, Default)]
struct ServerState {
    child: Option<Child>,
    stopped: bool,
}

/// A running (or soon running) OpenSSH server with throwaway keys, stopped on drop.
///
/// Runs `/usr/sbin/sshd -D -e -f <config>` with its own ed25519 host key, its own
/// `authorized_keys` ([`Sshd::authorize`]), `StrictModes no`, `UsePAM no` and no
/// password login. Must run as root (like a container's sshd).
#[derive(Debug)]
pub struct Sshd {
    endpoint: Endpoint,
    host_key: HostKey,
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
        for line in &self.extra_config {
            config.push_str(line);
            config.push('\n');
        }
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

fn spawn_command(mut command: Command, log: &Path) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_error("opening the sshd log", e))?;
    command
        .stderr(log)
        .spawn()
        .map_err(|e| io_error("starting sshd", e))
}

/// Whether an SSH server answers at `addr`.
fn banner(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf.starts_with(b"SSH-")
}

fn free_port(address: IpAddr) -> Result<u16> {
    let listener = TcpListener::bind((address, 0))
        .map_err(|e| io_error(format!("finding a free port on {address}"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| io_error("finding a free port", e))
}

fn ensure_privsep_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| io_error("creating /run/sshd", e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error("setting the mode of /run/sshd", e))?;
    }
    Ok(())
}

fn write_host_key(path: &Path) -> Result<HostKey> {
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
    Ok(host_key_from_blob(&blob))
}

fn current_user() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "root".to_owned();
    }
    std::env::var("USER").unwrap_or_else(|_| "root".to_owned())
}

/// Serialises user creation between the tests of one process.
static USERADD: Mutex<()> = Mutex::new(());

/// The name of the local user that [`SshdBuilder::login_shell`] logs in as
/// (`fargate-<shell name>`, e.g. `fargate-bash`), created with a fresh home from
/// `/etc/skel` if needed. This needs root.
pub fn login_user(shell: &Path) -> Result<String> {
    let name = shell
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| fixture_error(format!("unusable login shell {}", shell.display())))?;
    let user = format!("fargate-{name}");
    let _guard = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    let wanted = shell.display().to_string();
    if let Some(current) = login_shell_of(&user) {
        if current != wanted {
            run_tool("usermod", &["-s", &wanted, &user])?;
        }
    } else if let Err(e) = run_tool(
        "useradd",
        // `-p '*'`: no password but not locked (sshd refuses locked accounts without PAM).
        &["-m", "-s", &wanted, "-p", "*", &user],
    ) {
        // Another test process may have created it meanwhile.
        if login_shell_of(&user).as_deref() != Some(wanted.as_str()) {
            return Err(e);
        }
    }
    Ok(user)
}

fn login_shell_of(user: &str) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user))
            .then(|| fields.get(6).map(|s| (*s).to_owned()))
            .flatten()
    })
}

fn run_tool(tool: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| io_error(format!("running {tool} (the fixture needs root)"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fixture_error(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Every process below `root` (children, their children, ...), from `/proc`.
fn descendants(root: u32) -> Vec<libc::pid_t> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may contain spaces: the fields after it follow the last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
        .into_iter()
        .skip(1)
        .filter_map(|p| libc::pid_t::try_from(p).ok())
        .collect()
}
