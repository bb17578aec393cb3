//! [`SshdBuilder`]: the settings of an [`Sshd`] and how it is started.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use fargate_core::{Endpoint, Result};

use super::process::{ensure_privsep_dir, free_port, spawn_command};
use super::user::{current_user, ids_of};
use super::{INSTALL_HINT, ServerState, Sshd, fixture_error, io_error, login_user, write_host_key};

/// Settings of an [`Sshd`]; from [`Sshd::builder`].
#[derive(Clone, Debug)]
pub struct SshdBuilder {
    pub(super) address: IpAddr,
    pub(super) port: Option<u16>,
    pub(super) start_delay: Option<Duration>,
    pub(super) login_shell: Option<PathBuf>,
    pub(super) ready_timeout: Duration,
    pub(super) extra_config: Vec<String>,
    pub(super) sshd_path: PathBuf,
}

impl SshdBuilder {
    /// The sshd binary (default [`SSHD_PATH`](super::SSHD_PATH)); must be an absolute path.
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
        let (host_key, host_public_key) = write_host_key(&dir.path().join("host_ed25519"))?;
        // The login user owns the directory of its authorized keys, as a user owns
        // `~/.ssh` in a task image: it can replace them (a warm pool's key swap). sshd is
        // told where they are through FARGATE_AUTHORIZED_KEYS (see `write_config`).
        let keys_dir = dir.path().join("keys");
        let authorized_keys = keys_dir.join("authorized_keys");
        fs::create_dir(&keys_dir).map_err(|e| io_error("creating the keys directory", e))?;
        fs::write(&authorized_keys, b"").map_err(|e| io_error("writing authorized_keys", e))?;
        if let Some((uid, gid)) = ids_of(&username) {
            for path in [&keys_dir, &authorized_keys] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| io_error("giving the login user its keys", e))?;
            }
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
                .map_err(|e| io_error("opening the fixture directory", e))?;
        }
        let log = dir.path().join("sshd.log");

        let state = Arc::new(Mutex::new(ServerState::default()));
        let mut sshd = Sshd {
            endpoint: Endpoint {
                ip: self.address,
                port: 0,
            },
            host_key,
            host_public_key,
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
