//! Resource usage of exited children, from `wait4(2)`.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// Resource usage of one exited child process, from `wait4(2)`.
///
/// Linux caveat: `ru_maxrss` of a child is the maximum over its whole life *including the
/// address space it had before `execve`*; a child started with `vfork`/`posix_spawn` (as
/// `std::process::Command` does) shares its parent's address space until then, so the
/// figure is never below the parent's own peak RSS at spawn time. Compare against a
/// trivial program (`/bin/true`) spawned the same way to see that floor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kb: u64,
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
}

impl Usage {
    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    fn from_rusage(ru: &libc::rusage) -> Usage {
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Usage {
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
        }
    }
}

/// `wait4(pid, WNOHANG)`: `Ok(None)` while the child runs, else its exit status and usage.
/// Once this returned `Some`, the child is reaped: do not wait for it again (e.g. with
/// [`std::process::Child::wait`]).
///
/// # Errors
/// The `wait4` error (`ECHILD` when `pid` is not an unwaited child of this process).
pub fn try_wait_usage(pid: u32) -> std::io::Result<Option<(std::process::ExitStatus, Usage)>> {
    wait_usage_flags(pid, libc::WNOHANG)
}

/// `wait4(pid, 0)`: blocks until the child exits; returns its exit status and usage. The
/// child is reaped: do not wait for it again.
///
/// # Errors
/// The `wait4` error (`ECHILD` when `pid` is not an unwaited child of this process).
pub fn wait_usage(pid: u32) -> std::io::Result<(std::process::ExitStatus, Usage)> {
    loop {
        match wait_usage_flags(pid, 0) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn wait_usage_flags(
    pid: u32,
    flags: libc::c_int,
) -> std::io::Result<Option<(std::process::ExitStatus, Usage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `ru` are valid, writable, and live for the call.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut ru) };
    match r {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some((
            std::process::ExitStatus::from_raw(status),
            Usage::from_rusage(&ru),
        ))),
    }
}
