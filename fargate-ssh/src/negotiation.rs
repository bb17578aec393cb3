//! Telling "the server and libssh2 share no algorithm" apart from a handshake cut short.
//!
//! libssh2 1.11 fails both with the same code, `LIBSSH2_ERROR_KEX_FAILURE` (-5, "Unable
//! to exchange encryption keys"): a server that offers no key exchange, host key, cipher
//! or MAC algorithm libssh2 supports, and a server that sends its banner and then closes
//! the connection (an sshd that is still starting or being restarted). The first never
//! gets better, the second is worth waiting for, so the two are told apart here:
//!
//! * when libssh2 agreed on a key exchange but not on a cipher, MAC or compression
//!   method, it says so itself ([`Session::methods`] is `None` for that one);
//! * when it did not even agree on the key exchange, the server's `SSH_MSG_KEXINIT` is
//!   fetched over a second, short connection (it is sent in clear right after the
//!   version exchange) and compared with what libssh2 supports. If that comparison finds
//!   nothing missing, or the server's offer cannot be read, the failure was the
//!   connection's, not the configuration's.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ssh2::{MethodType, Session};

/// libssh2's code for a failed key exchange, negotiation failures included.
pub(crate) const KEX_FAILURE: i32 = -5;
/// libssh2's "no method negotiated".
pub(crate) const METHOD_NONE: i32 = -17;

/// The version line sent on the second connection.
const CLIENT_VERSION: &[u8] = b"SSH-2.0-fargate_algorithm_check\r\n";
/// Lines a server may send before its version line, at most (RFC 4253, 4.2).
const MAX_PREAMBLE: usize = 16 * 1024;
/// The largest `SSH_MSG_KEXINIT` packet accepted (OpenSSH's are 1 to 2 KiB).
const MAX_PACKET: usize = 256 * 1024;
/// `SSH_MSG_KEXINIT`.
const MSG_KEXINIT: u8 = 20;

/// One of the negotiations of the SSH handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Negotiation {
    Kex,
    HostKey,
    Cipher,
    Mac,
    Compression,
}

impl Negotiation {
    /// What is negotiated, for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Negotiation::Kex => "key exchange",
            Negotiation::HostKey => "host key",
            Negotiation::Cipher => "cipher",
            Negotiation::Mac => "MAC",
            Negotiation::Compression => "compression",
        }
    }

    /// The `sshd_config` keyword that chooses the server's side.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Negotiation::Kex => "KexAlgorithms",
            Negotiation::HostKey => "HostKeyAlgorithms and HostKey",
            Negotiation::Cipher => "Ciphers",
            Negotiation::Mac => "MACs",
            Negotiation::Compression => "Compression",
        }
    }
}

/// The algorithm name-lists of a server's `SSH_MSG_KEXINIT`, in both directions merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerOffer {
    pub(crate) kex: Vec<String>,
    pub(crate) host_key: Vec<String>,
    pub(crate) cipher: Vec<String>,
    pub(crate) mac: Vec<String>,
    pub(crate) compression: Vec<String>,
}

impl ServerOffer {
    /// The server's algorithms for `negotiation`, without pseudo-algorithms.
    pub(crate) fn offered(&self, negotiation: Negotiation) -> Vec<&str> {
        let list = match negotiation {
            Negotiation::Kex => &self.kex,
            Negotiation::HostKey => &self.host_key,
            Negotiation::Cipher => &self.cipher,
            Negotiation::Mac => &self.mac,
            Negotiation::Compression => &self.compression,
        };
        list.iter()
            .map(String::as_str)
            .filter(|name| !is_pseudo_kex(name))
            .collect()
    }
}

/// What libssh2 supports, from [`Session::supported_algs`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Supported {
    pub(crate) kex: Vec<&'static str>,
    pub(crate) host_key: Vec<&'static str>,
    pub(crate) cipher: Vec<&'static str>,
    pub(crate) mac: Vec<&'static str>,
}

impl Supported {
    pub(crate) fn of(sess: &Session) -> Supported {
        let algs = |method| sess.supported_algs(method).unwrap_or_default();
        Supported {
            kex: algs(MethodType::Kex),
            host_key: algs(MethodType::HostKey),
            cipher: algs(MethodType::CryptCs),
            mac: algs(MethodType::MacCs),
        }
    }

    /// The lists for the hint: real algorithms only, certificate variants left out.
    pub(crate) fn describe(&self) -> String {
        let lists = [
            ("key exchange", &self.kex),
            ("host keys", &self.host_key),
            ("ciphers", &self.cipher),
            ("MACs", &self.mac),
        ];
        lists
            .iter()
            .filter_map(|(what, list)| {
                let names: Vec<&str> = list
                    .iter()
                    .copied()
                    .filter(|n| !is_pseudo_kex(n) && !n.contains("-cert-"))
                    .collect();
                (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Markers in the key exchange list that are not key exchange methods (RFC 8308 and the
/// strict-kex extension).
fn is_pseudo_kex(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

/// The negotiation libssh2 itself reports as failed: one that never got a method while
/// the key exchange method was agreed. `None` when the key exchange method itself was not
/// agreed (or every method was): libssh2 cannot tell a mismatch from a cut connection then.
pub(crate) fn failed_by_libssh2(sess: &Session) -> Option<Negotiation> {
    sess.methods(MethodType::Kex)?;
    let missing = |a, b| sess.methods(a).is_none() || sess.methods(b).is_none();
    if missing(MethodType::CryptCs, MethodType::CryptSc) {
        Some(Negotiation::Cipher)
    } else if missing(MethodType::MacCs, MethodType::MacSc) {
        Some(Negotiation::Mac)
    } else if missing(MethodType::CompCs, MethodType::CompSc) {
        Some(Negotiation::Compression)
    } else {
        None
    }
}

/// Of the key exchange and host key negotiations (libssh2 agrees on both together,
/// before anything else), those that cannot succeed with this server's offer.
pub(crate) fn failed_by_offer(offer: &ServerOffer, supported: &Supported) -> Vec<Negotiation> {
    let shares = |ours: &[&str], negotiation| {
        offer
            .offered(negotiation)
            .iter()
            .any(|theirs| ours.contains(theirs))
    };
    let mut failed = Vec::new();
    if !shares(&supported.kex, Negotiation::Kex) {
        failed.push(Negotiation::Kex);
    }
    if !shares(&supported.host_key, Negotiation::HostKey) {
        failed.push(Negotiation::HostKey);
    }
    failed
}

/// Connects to `addr`, exchanges versions and returns the server's algorithm lists,
/// giving up at `deadline`. Sends nothing but its version line.
pub(crate) fn read_server_offer(addr: SocketAddr, deadline: Instant) -> io::Result<ServerOffer> {
    let mut tcp = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    tcp.set_write_timeout(Some(remaining(deadline)?))?;
    tcp.write_all(CLIENT_VERSION)?;
    let mut buf = Vec::with_capacity(4096);
    let body = loop {
        if let Some(at) = after_version_line(&buf)? {
            break at;
        }
        read_more(&mut tcp, &mut buf, deadline)?;
    };
    let packet_len = loop {
        if let Some(len) = buf.get(body..body + 4) {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if !(5..=MAX_PACKET).contains(&len) {
                return Err(invalid("implausible packet length"));
            }
            break len;
        }
        read_more(&mut tcp, &mut buf, deadline)?;
    };
    let end = body + 4 + packet_len;
    while buf.len() < end {
        read_more(&mut tcp, &mut buf, deadline)?;
    }
    let packet = &buf[body + 4..end];
    let padding = usize::from(packet[0]);
    let payload = packet
        .get(1..packet_len.saturating_sub(padding))
        .ok_or_else(|| invalid("bad padding length"))?;
    parse_kexinit(payload).ok_or_else(|| invalid("not an SSH_MSG_KEXINIT"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no time left"))
}

fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
    tcp.set_read_timeout(Some(remaining(deadline)?))?;
    let mut chunk = [0u8; 4096];
    match tcp.read(&mut chunk)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// Where the binary protocol starts: after the first line beginning with `SSH-`. `None`
/// while that line is incomplete.
fn after_version_line(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        start += nl + 1;
        if line.starts_with(b"SSH-") {
            return Ok(Some(start));
        }
    }
    if buf.len() > MAX_PREAMBLE {
        return Err(invalid("no SSH version line"));
    }
    Ok(None)
}

/// The algorithm lists of an `SSH_MSG_KEXINIT` payload (RFC 4253, 7.1).
fn parse_kexinit(payload: &[u8]) -> Option<ServerOffer> {
    let (&kind, rest) = payload.split_first()?;
    if kind != MSG_KEXINIT {
        return None;
    }
    let mut rest = rest.get(16..)?; // the cookie
    let mut lists: Vec<Vec<String>> = Vec::with_capacity(8);
    for _ in 0..8 {
        let len = rest.get(..4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let text = std::str::from_utf8(rest.get(4..4usize.checked_add(len)?)?).ok()?;
        lists.push(
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
        rest = &rest[4 + len..];
    }
    let mut lists = lists.into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let kex = next();
    let host_key = next();
    let both = |a: Vec<String>, b: Vec<String>| {
        let mut merged = a;
        merged.extend(b);
        let mut seen = std::collections::HashSet::new();
        merged.retain(|s| seen.insert(s.clone()));
        merged
    };
    let cipher = both(next(), next());
    let mac = both(next(), next());
    let compression = both(next(), next());
    Some(ServerOffer {
        kex,
        host_key,
        cipher,
        mac,
        compression,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::TcpListener;

    fn kexinit(lists: [&str; 10]) -> Vec<u8> {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[7u8; 16]);
        for list in lists {
            payload.extend_from_slice(&(list.len() as u32).to_be_bytes());
            payload.extend_from_slice(list.as_bytes());
        }
        payload.extend_from_slice(&[0, 0, 0, 0, 0]);
        payload
    }

    fn packet(payload: &[u8]) -> Vec<u8> {
        let padding = 8 - (payload.len() + 5) % 8 + 4;
        let mut out = ((payload.len() + padding + 1) as u32)
            .to_be_bytes()
            .to_vec();
        out.push(padding as u8);
        out.extend_from_slice(payload);
        out.extend(std::iter::repeat_n(0u8, padding));
        out
    }

    const OPENSSH_PQ_ONLY: [&str; 10] = [
        "sntrup761x25519-sha512@openssh.com,kex-strict-s-v00@openssh.com",
        "ssh-ed25519",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "umac-64@openssh.com",
        "hmac-sha2-256",
        "none,zlib@openssh.com",
        "none",
        "",
        "",
    ];

    fn supported() -> Supported {
        Supported {
            kex: vec!["curve25519-sha256", "kex-strict-c-v00@openssh.com"],
            host_key: vec!["ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"],
            cipher: vec!["aes128-ctr"],
            mac: vec!["hmac-sha2-256"],
        }
    }

    #[test]
    fn kexinit_lists_are_parsed_and_directions_merged() {
        let offer = parse_kexinit(&kexinit(OPENSSH_PQ_ONLY)).unwrap();
        assert_eq!(
            offer.offered(Negotiation::Kex),
            ["sntrup761x25519-sha512@openssh.com"]
        );
        assert_eq!(offer.host_key, ["ssh-ed25519"]);
        assert_eq!(
            offer.cipher,
            ["chacha20-poly1305@openssh.com", "aes128-ctr"]
        );
        assert_eq!(offer.mac, ["umac-64@openssh.com", "hmac-sha2-256"]);
        assert_eq!(offer.compression, ["none", "zlib@openssh.com"]);
    }

    #[test]
    fn truncated_or_foreign_payloads_are_rejected() {
        let payload = kexinit(OPENSSH_PQ_ONLY);
        assert!(parse_kexinit(&payload[..40]).is_none());
        let mut other = payload.clone();
        other[0] = 21;
        assert!(parse_kexinit(&other).is_none());
        assert!(parse_kexinit(&[]).is_none());
    }

    #[test]
    fn mismatch_is_found_per_negotiation() {
        let offer = parse_kexinit(&kexinit(OPENSSH_PQ_ONLY)).unwrap();
        assert_eq!(failed_by_offer(&offer, &supported()), [Negotiation::Kex]);

        let mut lists = OPENSSH_PQ_ONLY;
        lists[0] = "curve25519-sha256";
        lists[1] = "ssh-dss";
        let offer = parse_kexinit(&kexinit(lists)).unwrap();
        assert_eq!(
            failed_by_offer(&offer, &supported()),
            [Negotiation::HostKey]
        );

        lists[1] = "ssh-ed25519";
        let offer = parse_kexinit(&kexinit(lists)).unwrap();
        assert!(failed_by_offer(&offer, &supported()).is_empty());
    }

    #[test]
    fn pseudo_algorithms_never_count_as_shared() {
        let mut lists = OPENSSH_PQ_ONLY;
        lists[0] = "kex-strict-c-v00@openssh.com,ext-info-c";
        let offer = parse_kexinit(&kexinit(lists)).unwrap();
        assert_eq!(failed_by_offer(&offer, &supported()), [Negotiation::Kex]);
    }

    #[test]
    fn hint_lists_leave_out_certificates_and_markers() {
        let text = supported().describe();
        assert_eq!(
            text,
            "key exchange curve25519-sha256; host keys ssh-ed25519; ciphers aes128-ctr; \
             MACs hmac-sha2-256"
        );
    }

    fn serve_once(reply: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut version = [0u8; CLIENT_VERSION.len()];
            conn.read_exact(&mut version).unwrap();
            assert_eq!(&version[..], CLIENT_VERSION);
            // Written in small pieces, as a slow network would deliver it.
            for piece in reply.chunks(7) {
                if conn.write_all(piece).is_err() {
                    return;
                }
            }
        });
        addr
    }

    #[test]
    fn server_offer_is_read_after_preamble_lines() {
        let mut reply = b"hello there\r\nSSH-2.0-Test_1.0\r\n".to_vec();
        reply.extend(packet(&kexinit(OPENSSH_PQ_ONLY)));
        let addr = serve_once(reply);
        let offer = read_server_offer(addr, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(offer.host_key, ["ssh-ed25519"]);
    }

    #[test]
    fn server_that_closes_after_its_version_gives_no_offer() {
        let addr = serve_once(b"SSH-2.0-Test_1.0\r\n".to_vec());
        let err = read_server_offer(addr, Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
