//! The keeper's wire format: frames of one tag byte, a big-endian `u32` length and that
//! many payload bytes, over a Unix stream socket.

use std::io::{self, Read, Write};

/// Largest payload accepted (a stage script, the largest frame, is far smaller).
pub(super) const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Client: run a script. Payload: `endpoint \n host-key-fingerprint \n script`.
pub(super) const RUN: u8 = b'R';
/// Client: stop the running script (as a cancel of the direct connection would).
pub(super) const CANCEL: u8 = b'C';
/// Client: the job is over; the keeper answers [`BYE`] and exits.
pub(super) const QUIT: u8 = b'Q';
/// Keeper: the script's channel is open; from here on the client never falls back.
pub(super) const STARTED: u8 = b'S';
/// Keeper: a piece of the script's stdout.
pub(super) const STDOUT: u8 = b'O';
/// Keeper: a piece of the script's stderr.
pub(super) const STDERR: u8 = b'E';
/// Keeper: the script exited; payload: the status as a big-endian `i32`.
pub(super) const EXITED: u8 = b'X';
/// Keeper: the script was killed by a signal; payload: its name.
pub(super) const SIGNALED: u8 = b'G';
/// Keeper: the run failed; payload: `kind \n temporary(0|1) \n message \n hint`.
pub(super) const FAILED: u8 = b'F';
/// Keeper: answer to [`QUIT`], sent just before it exits.
pub(super) const BYE: u8 = b'B';

/// Writes one frame.
pub(super) fn write(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// One frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) tag: u8,
    pub(super) payload: Vec<u8>,
}

/// What [`Reader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Frame(Frame),
    /// The read timed out before a whole frame arrived (a socket with a read timeout).
    Pending,
    /// The peer closed the connection (between frames or inside one).
    Closed,
}

/// Reads frames, keeping a partial one across read timeouts.
#[derive(Debug, Default)]
pub(super) struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// The next frame: from what is buffered, else after one read.
    pub(super) fn next(&mut self, r: &mut impl Read) -> io::Result<Next> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Next::Frame(frame));
            }
            let mut chunk = [0u8; 64 * 1024];
            match r.read(&mut chunk) {
                Ok(0) => return Ok(Next::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Next::Pending);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Next::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// A whole buffered frame, if there is one.
    fn take(&mut self) -> io::Result<Option<Frame>> {
        let Some(head) = self.buf.get(..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let tag = head[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(Frame { tag, payload }))
    }
}

/// Splits `payload` into `n` fields at the first `n - 1` newlines (the last one may
/// contain newlines).
pub(super) fn fields(payload: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = payload.splitn(n, |&b| b == b'\n').collect();
    (parts.len() == n).then_some(parts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A reader that hands out one byte per read, then times out once, then goes on.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        timed_out: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == 3 && !self.timed_out {
                self.timed_out = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let Some(&b) = self.data.get(self.at) else {
                return Ok(0);
            };
            buf[0] = b;
            self.at += 1;
            Ok(1)
        }
    }

    #[test]
    fn frames_survive_partial_reads_and_timeouts() {
        let mut data = Vec::new();
        write(&mut data, RUN, b"127.0.0.1:22\nSHA256:x\necho hi\n").unwrap();
        write(&mut data, CANCEL, b"").unwrap();
        let mut r = Trickle {
            data,
            at: 0,
            timed_out: false,
        };
        let mut reader = Reader::default();
        let mut frames = Vec::new();
        loop {
            match reader.next(&mut r).unwrap() {
                Next::Frame(f) => frames.push(f),
                Next::Pending => frames.push(Frame {
                    tag: 0,
                    payload: Vec::new(),
                }),
                Next::Closed => break,
            }
        }
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0].tag, 0, "the timeout is reported, not a frame");
        assert_eq!(frames[1].tag, RUN);
        let f = fields(&frames[1].payload, 3).unwrap();
        assert_eq!(f, [&b"127.0.0.1:22"[..], b"SHA256:x", b"echo hi\n"]);
        assert_eq!(frames[2].tag, CANCEL);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut head = vec![RUN];
        head.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut reader = Reader::default();
        assert!(reader.next(&mut &head[..]).is_err());
        assert!(fields(b"only one", 2).is_none());
    }
}
