//! Processes and sockets: starting sshd, waiting for its banner, free ports, killing
//! process trees.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use fargate_core::Result;

use super::io_error;

pub(super) fn spawn_command(mut command: Command, log: &Path) -> Result<Child> {
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
pub(super) fn banner(addr: SocketAddr) -> bool {
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

pub(super) fn free_port(address: IpAddr) -> Result<u16> {
    let listener = TcpListener::bind((address, 0))
        .map_err(|e| io_error(format!("finding a free port on {address}"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| io_error("finding a free port", e))
}

pub(super) fn ensure_privsep_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| io_error("creating /run/sshd", e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error("setting the mode of /run/sshd", e))?;
    }
    Ok(())
}

/// Every process below `root` (children, their children, ...), from `/proc`.
pub(super) fn descendants(root: u32) -> Vec<libc::pid_t> {
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
