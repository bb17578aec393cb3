//! The local users the fixture logs in as (`useradd`, needs root).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use fargate_core::Result;

use super::{fixture_error, io_error};

pub(super) fn current_user() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "root".to_owned();
    }
    std::env::var("USER").unwrap_or_else(|_| "root".to_owned())
}

/// Serialises user creation between the tests of one process.
static USERADD: Mutex<()> = Mutex::new(());

/// The name of the local user that [`SshdBuilder::login_shell`](super::SshdBuilder::login_shell) logs in as
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

/// The uid and gid of `user`, from `/etc/passwd`.
pub(super) fn ids_of(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&user) {
            return None;
        }
        Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
    })
}

pub(super) fn login_shell_of(user: &str) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user))
            .then(|| fields.get(6).map(|s| (*s).to_owned()))
            .flatten()
    })
}

pub(super) fn run_tool(tool: &str, args: &[&str]) -> Result<()> {
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
