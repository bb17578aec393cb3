//! One running script: sending it, pumping its output to the async side, its outcome,
//! and stopping it on cancel.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use fargate_core::{CancelBudget, ErrorKind, Result, RunOutcome};
use ssh2::Channel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bootstrap::{GROUP_CLOSE, GROUP_OPEN, MarkerScanner, no_bash};
use super::connection::Connection;
use super::{Chunk, POLL_SLICE, is_eagain, ssh_error};

/// How long a cancel waits for the bootstrap's process-group marker still on its way.
const MARKER_WAIT: Duration = Duration::from_millis(300);

/// The most stopping the script may take: the longest grace plus the marker wait, so that
/// a cancelled `run` returns within [`CancelBudget::run`].
const KILL_BUDGET: Duration = CancelBudget::DEFAULT
    .max_grace()
    .saturating_add(MARKER_WAIT);

/// State of one running script.
pub(super) struct Run<'a> {
    pub(super) conn: &'a Connection,
    /// The user logged in as.
    pub(super) user: &'a str,
    pub(super) channel: Channel,
    pub(super) tx: &'a mpsc::Sender<Chunk>,
    pub(super) buf: Vec<u8>,
    pub(super) scanner: MarkerScanner,
    /// Output is dropped (after a cancel).
    pub(super) discard: bool,
    /// The receiving side went away.
    pub(super) receiver_gone: bool,
    pub(super) eof: bool,
}

impl Run<'_> {
    /// Reads what is available on both streams. Returns whether anything was read.
    fn read_available(&mut self) -> Result<bool> {
        let mut progressed = false;
        for stream_id in [0, 1] {
            let n = match self.channel.stream(stream_id).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(self.conn.lost(e)),
            };
            if n == 0 {
                continue;
            }
            progressed = true;
            let data = if stream_id == 0 {
                let out = self.scanner.feed(&self.buf[..n]);
                if out.is_empty() {
                    continue;
                }
                Chunk::Stdout(out)
            } else {
                Chunk::Stderr(self.buf[..n].to_vec())
            };
            self.deliver(data);
        }
        Ok(progressed)
    }

    fn deliver(&mut self, chunk: Chunk) {
        if self.discard || self.receiver_gone {
            return;
        }
        if self.tx.blocking_send(chunk).is_err() {
            self.receiver_gone = true;
        }
    }

    /// Pumps output until the channel is at EOF and closed, `stop` fires or `deadline`
    /// passes. Returns whether the channel closed.
    pub(super) fn pump_until_closed(
        &mut self,
        stop: Option<&CancellationToken>,
        deadline: Option<Instant>,
        keepalive: bool,
    ) -> Result<bool> {
        loop {
            if stop.is_some_and(|s| s.is_cancelled()) || self.receiver_gone {
                return Ok(false);
            }
            let progressed = self.read_available()?;
            if !self.eof && self.channel.eof() {
                self.eof = true;
            }
            if self.eof {
                match self.channel.wait_close() {
                    Ok(()) => return Ok(true),
                    Err(e) if is_eagain(&e) => {}
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            if keepalive {
                match self.conn.sess.keepalive_send() {
                    Ok(_) => {}
                    Err(e) if is_eagain(&e) => {}
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            let mut slice = POLL_SLICE;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                slice = slice.min(deadline - now);
            }
            if !progressed {
                self.conn.wait(slice);
            }
        }
    }

    /// Sends the script (inside a `{ }` group) and EOF, reading output meanwhile.
    /// Returns `false` if `stop` fired first.
    pub(super) fn send_script(&mut self, script: &[u8], stop: &CancellationToken) -> Result<bool> {
        let needs_newline = !script.is_empty() && !script.ends_with(b"\n");
        let parts: [&[u8]; 4] = [
            GROUP_OPEN,
            script,
            if needs_newline { b"\n" } else { b"" },
            GROUP_CLOSE,
        ];
        let mut part = 0;
        let mut offset = 0;
        let mut eof_sent = false;
        while !eof_sent {
            if stop.is_cancelled() || self.receiver_gone {
                return Ok(false);
            }
            let mut progressed = false;
            if part < parts.len() {
                let data = parts[part];
                if offset >= data.len() {
                    part += 1;
                    offset = 0;
                    continue;
                }
                match self.channel.write(&data[offset..]) {
                    Ok(n) => {
                        offset += n;
                        progressed |= n > 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The bootstrap ended without reading the script; `outcome` says why.
                    Err(_) if self.scanner.no_bash() => return Ok(true),
                    Err(e) => return Err(self.conn.lost(e)),
                }
            } else {
                match self.channel.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if is_eagain(&e) => {}
                    Err(_) if self.scanner.no_bash() => return Ok(true),
                    Err(e) => return Err(self.conn.lost(e)),
                }
            }
            progressed |= self.read_available()?;
            if self.channel.eof() {
                // The remote ended before reading the whole script (e.g. no bash).
                self.eof = true;
                return Ok(true);
            }
            if !progressed && !eof_sent {
                self.conn.wait(POLL_SLICE);
            }
        }
        Ok(true)
    }

    pub(super) fn outcome(&mut self) -> Result<RunOutcome> {
        let rest = self.scanner.flush();
        if !rest.is_empty() {
            self.deliver(Chunk::Stdout(rest));
        }
        if self.scanner.no_bash() {
            return Err(no_bash(self.conn.endpoint, self.user));
        }
        let signal = self
            .channel
            .exit_signal()
            .ok()
            .and_then(|s| s.exit_signal)
            .filter(|s| !s.is_empty());
        if let Some(signal) = signal {
            return Ok(RunOutcome::Signaled { signal });
        }
        self.channel
            .exit_status()
            .map(RunOutcome::Exited)
            .map_err(|e| {
                ssh_error(
                    ErrorKind::Unexpected,
                    format!(
                        "the SSH server at {} closed the session without an exit status: {}",
                        self.conn.endpoint,
                        e.message()
                    ),
                )
            })
    }

    /// Stops the remote script and all its children, within [`KILL_BUDGET`].
    pub(super) fn kill(&mut self, script_sent: bool, grace: Duration) -> String {
        self.discard = true;
        let started = Instant::now();
        let overall = started + KILL_BUDGET;
        // The marker may still be on its way.
        if self.scanner.pgid().is_none() && script_sent && !self.eof {
            let _ = self.pump_until(|run| run.scanner.pgid().is_some(), started + MARKER_WAIT);
        }
        let Some(pgid) = self.scanner.pgid() else {
            let _ = self.channel.close();
            return if script_sent {
                "the script's process group was not known; the session was closed".to_owned()
            } else {
                "the script had not been fully sent, so it did not start".to_owned()
            };
        };
        // One helper command: SIGTERM to the group, up to `grace` for it to go away
        // (`kill -s 0` fails once no process is left in it), then SIGKILL for whatever
        // ignored SIGTERM.
        let rounds = (grace.as_millis() / 100).max(1);
        let stop_group = format!(
            "kill -s TERM -- -{pgid} 2>/dev/null || kill -s TERM {pgid} 2>/dev/null; i=0; \
             while kill -s 0 -- -{pgid} 2>/dev/null && [ $i -lt {rounds} ]; do \
             sleep 0.1 2>/dev/null; i=$((i+1)); done; \
             kill -s KILL -- -{pgid} 2>/dev/null; exit 0"
        );
        let stopped = self.exec_helper(&stop_group, overall);
        let _ = self.channel.close();
        if stopped {
            format!(
                "the script's process group ({pgid}) was stopped (SIGTERM, then SIGKILL for \
                 what was left)"
            )
        } else {
            format!("stopping the script's process group ({pgid}) could not be confirmed")
        }
    }

    /// Pumps until `done(self)` or `deadline`.
    fn pump_until(&mut self, done: impl Fn(&Self) -> bool, deadline: Instant) -> Result<bool> {
        loop {
            if done(self) {
                return Ok(true);
            }
            let progressed = self.read_available()?;
            if self.channel.eof() {
                self.eof = true;
                return Ok(done(self));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if !progressed {
                self.conn.wait((deadline - now).min(POLL_SLICE));
            }
        }
    }

    /// Runs `command` in a second channel of the same session and waits for it to end.
    fn exec_helper(&mut self, command: &str, deadline: Instant) -> bool {
        let conn = self.conn;
        let Some(Ok(mut helper)) = conn.retry(deadline, || conn.sess.channel_session()) else {
            return false;
        };
        if !matches!(conn.retry(deadline, || helper.exec(command)), Some(Ok(()))) {
            return false;
        }
        let mut sink = [0u8; 1024];
        loop {
            // Keep the main channel flowing too, so its window does not block the session.
            if self.read_available().is_err() {
                return false;
            }
            let _ = helper.read(&mut sink);
            let _ = helper.stderr().read(&mut sink);
            if helper.eof() {
                return matches!(conn.retry(deadline, || helper.wait_close()), Some(Ok(())));
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            conn.wait((deadline - now).min(POLL_SLICE));
        }
    }
}
