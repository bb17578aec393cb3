//! The bootstrap: the POSIX `sh` command that starts bash on the script sent over the
//! channel, and the marker lines it prints, which never reach the script's output.

use fargate_core::{Endpoint, Error, ErrorKind};

use super::ssh_error;

/// The marker the bootstrap prints (on stdout, before anything of the script) with the
/// process group id of the script.
pub(super) const PGID_MARKER: &[u8] = b"\x1efargate-pgid:";

/// The line the bootstrap prints (on stdout) instead of the pgid marker when there is no
/// bash to run the script with.
pub(super) const NO_BASH_MARKER: &[u8] = b"\x1efargate-no-bash\n";

/// What the bootstrap's markers start with.
const MARKER_PREFIX: &[u8] = b"\x1efargate-";

/// The exec command. Run by the user's login shell with `-c`, so it is POSIX `sh`.
///
/// 1. check that bash exists (the runner's scripts need it); if not, print
///    [`NO_BASH_MARKER`] and exit 127, and `run` fails with `InvalidConfig`;
/// 2. print the marker and `$$`: sshd starts each session in a new session and process
///    group whose id is the pid of the login shell, which `exec`s bash below, so `$$` is
///    the process group of the script and of everything it starts;
/// 3. `exec bash /dev/fd/3` with fd 3 = the channel's stdin, on which the client sends the
///    script, and stdin = `/dev/null`: the script's commands see EOF on stdin.
pub(super) const BOOTSTRAP: &str = "command -v bash >/dev/null 2>&1 || \
{ printf '\\036fargate-no-bash\\n'; exit 127; }; \
printf '\\036fargate-pgid:%s\\n' \"$$\"; \
exec bash /dev/fd/3 3<&0 </dev/null";

/// Opening and closing of the `{ ... }` group the script is sent in. bash parses a whole
/// compound command before running any of it, so a script cut short (lost connection,
/// cancel while sending) is a syntax error and nothing of it runs.
pub(super) const GROUP_OPEN: &[u8] = b"{ ";
pub(super) const GROUP_CLOSE: &[u8] = b"}\n";
/// Finds the bootstrap's marker line at the start of stdout (the process group id, or
/// "no bash") and keeps it out of the script's output.
#[derive(Debug, Default)]
pub(super) struct MarkerScanner {
    pending: Vec<u8>,
    done: bool,
    pgid: Option<u32>,
    no_bash: bool,
}

/// Output before the marker longer than this means there is no marker.
const MARKER_SEARCH_LIMIT: usize = 64 * 1024;

impl MarkerScanner {
    /// Feeds stdout bytes; returns the bytes that are script output.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.done {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        if let Some(start) = find(&self.pending, NO_BASH_MARKER) {
            self.no_bash = true;
            return self.take_around(start, start + NO_BASH_MARKER.len());
        }
        if let Some(start) = find(&self.pending, PGID_MARKER) {
            let digits_at = start + PGID_MARKER.len();
            if let Some(nl) = self.pending[digits_at..].iter().position(|&b| b == b'\n') {
                let digits = &self.pending[digits_at..digits_at + nl];
                self.pgid = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|&p| p > 1);
                return self.take_around(start, digits_at + nl + 1);
            }
        }
        if self.pending.len() > MARKER_SEARCH_LIMIT {
            self.done = true;
            return std::mem::take(&mut self.pending);
        }
        Vec::new()
    }

    /// Ends the search: returns what was held back, without `start..end` (the marker).
    fn take_around(&mut self, start: usize, end: usize) -> Vec<u8> {
        self.done = true;
        let mut out = std::mem::take(&mut self.pending);
        out.drain(start..end);
        out
    }

    /// The process group, once seen.
    pub(super) fn pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// Whether the bootstrap reported that there is no bash.
    pub(super) fn no_bash(&self) -> bool {
        self.no_bash
    }

    /// Whatever is held back (at the end of the stream), without the start of a marker
    /// cut off by the end of the stream.
    pub(super) fn flush(&mut self) -> Vec<u8> {
        self.done = true;
        let mut out = std::mem::take(&mut self.pending);
        let cut = find(&out, MARKER_PREFIX).or_else(|| {
            // Even a few bytes of one at the very end.
            (1..MARKER_PREFIX.len())
                .rev()
                .find(|&n| out.ends_with(&MARKER_PREFIX[..n]))
                .map(|n| out.len() - n)
        });
        if let Some(start) = cut {
            out.truncate(start);
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
/// The bootstrap found no bash to run the script with.
pub(super) fn no_bash(endpoint: Endpoint, user: &str) -> Error {
    ssh_error(
        ErrorKind::InvalidConfig,
        format!(
            "bash was not found in the task image at {endpoint} (or it is not on the PATH \
             of the SSH user '{user}'), so the job's script was not run"
        ),
    )
    .with_hint(format!(
        "install bash in the task image (e.g. `apk add bash` on Alpine) and make sure it is \
         on the PATH of '{user}' in SSH sessions: the runner's job scripts are bash scripts"
    ))
    .set_temporary(false)
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scanner_strips_marker_and_keeps_surrounding_output() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-pg"), b"");
        assert_eq!(s.feed(b"id:4242\nhello"), b"motd\nhello");
        assert_eq!(s.pgid(), Some(4242));
        assert_eq!(s.feed(b"\x1efargate-pgid:1\n"), b"\x1efargate-pgid:1\n");
    }

    #[test]
    fn scanner_gives_up_after_the_limit() {
        let mut s = MarkerScanner::default();
        let big = vec![b'x'; MARKER_SEARCH_LIMIT + 1];
        assert_eq!(s.feed(&big).len(), big.len());
        assert_eq!(s.pgid(), None);
        assert_eq!(s.feed(b"y"), b"y");
    }

    #[test]
    fn scanner_flushes_held_back_output() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"partial"), b"");
        assert_eq!(s.flush(), b"partial");
    }

    #[test]
    fn scanner_recognises_no_bash_split_across_chunks() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-no-"), b"");
        assert_eq!(s.feed(b"bash\nrest"), b"motd\nrest");
        assert!(s.no_bash());
        assert_eq!(s.pgid(), None);
        assert_eq!(s.feed(b"\x1efargate-no-bash\n"), b"\x1efargate-no-bash\n");
    }

    #[test]
    fn scanner_never_lets_a_marker_through_when_output_ends() {
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efargate-pgid:12"), b"");
        assert_eq!(s.flush(), b"motd\n");
        assert!(!s.no_bash());
        let mut s = MarkerScanner::default();
        assert_eq!(s.feed(b"motd\n\x1efarg"), b"");
        assert_eq!(s.flush(), b"motd\n");
    }

    #[test]
    fn bootstrap_reports_the_pgid_or_no_bash_as_markers() {
        for (path, expected) in [
            ("/usr/bin:/bin", PGID_MARKER),
            ("/nonexistent", NO_BASH_MARKER),
        ] {
            let output = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(BOOTSTRAP)
                .env("PATH", path)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(output.stdout.starts_with(expected), "{output:?}");
            let mut s = MarkerScanner::default();
            let mut out = s.feed(&output.stdout);
            out.extend(s.flush());
            assert!(out.is_empty(), "{out:?}");
            assert_eq!(s.no_bash(), expected == NO_BASH_MARKER);
            assert_eq!(s.pgid().is_some(), expected == PGID_MARKER);
        }
    }
}
