//! [`FaultProxy`]: an HTTP proxy in front of moto that answers chosen operations with
//! injected errors, for the failures moto cannot produce (throttling, `failures[]`,
//! capacity, access denied), or holds them for a while before forwarding them (a hanging
//! ECS call, [`Fault::delay`]), or until the test releases them ([`FaultProxy::hold`]).
//!
//! Each connection is served by its own thread, so a held request does not hold up others.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{head_end, header};

/// An injected answer for the next request(s) of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Operation it answers (`RunTask`, `DescribeTasks`...).
    pub operation: String,
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// How many requests it answers before it is used up.
    pub times: usize,
}

impl Fault {
    /// An AWS JSON error: `status` with `{"__type": code, "message": message}`.
    pub fn error(operation: &str, status: u16, code: &str, message: &str) -> Fault {
        Fault {
            operation: operation.to_owned(),
            status,
            body: serde_json::json!({ "__type": code, "message": message }).to_string(),
            times: 1,
        }
    }

    /// `ThrottlingException` (HTTP 400) for `operation`.
    pub fn throttling(operation: &str) -> Fault {
        Fault::error(operation, 400, "ThrottlingException", "Rate exceeded")
    }

    /// A `RunTask` answer with no task and one `failures[]` entry.
    pub fn run_task_failure(reason: &str, detail: Option<&str>) -> Fault {
        let mut failure = serde_json::json!({
            "arn": "arn:aws:ecs:us-east-1:123456789012:task-definition/ci:1",
            "reason": reason,
        });
        if let Some(detail) = detail {
            failure["detail"] = detail.into();
        }
        Fault {
            operation: "RunTask".to_owned(),
            status: 200,
            body: serde_json::json!({ "tasks": [], "failures": [failure] }).to_string(),
            times: 1,
        }
    }

    /// The same fault for the next `n` requests of its operation.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    /// A [`Delay`]: the next request of `operation` is held for `duration`, then forwarded
    /// to moto (which then answers it as usual). Use [`Delay::times`] for more requests.
    pub fn delay(operation: &str, duration: Duration) -> Delay {
        Delay {
            operation: operation.to_owned(),
            duration,
            times: 1,
        }
    }
}

/// Holds the next request(s) of one operation for a while before forwarding them to moto:
/// a slow or hanging ECS call. Made by [`Fault::delay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delay {
    /// Operation it holds (`DescribeTasks`...).
    pub operation: String,
    /// How long each request is held before it is forwarded.
    pub duration: Duration,
    /// How many requests it holds before it is used up.
    pub times: usize,
}

impl Delay {
    /// The same delay for the next `n` requests of its operation.
    pub fn times(mut self, n: usize) -> Delay {
        self.times = n;
        self
    }
}

/// What [`FaultProxy::inject`] queues: an injected answer or a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Answer with this [`Fault`] instead of moto.
    Answer(Fault),
    /// Hold the request, then forward it to moto.
    Delay(Delay),
}

impl Injection {
    fn operation(&self) -> &str {
        match self {
            Injection::Answer(f) => &f.operation,
            Injection::Delay(d) => &d.operation,
        }
    }

    fn times_mut(&mut self) -> &mut usize {
        match self {
            Injection::Answer(f) => &mut f.times,
            Injection::Delay(d) => &mut d.times,
        }
    }
}

impl From<Fault> for Injection {
    fn from(fault: Fault) -> Injection {
        Injection::Answer(fault)
    }
}

impl From<Delay> for Injection {
    fn from(delay: Delay) -> Injection {
        Injection::Delay(delay)
    }
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    /// Its operation (`X-Amz-Target` suffix, or the query `Action`).
    pub operation: String,
    /// Its body (JSON for ECS).
    pub body: String,
    /// Whether a [`Fault`] answered it (else moto did).
    pub faulted: bool,
    /// How long a [`Delay`] held it before it was forwarded (`None`: not held).
    pub delayed: Option<Duration>,
}

impl ProxiedRequest {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct State {
    faults: VecDeque<Injection>,
    holds: VecDeque<HoldSlot>,
    seen: Vec<ProxiedRequest>,
}

/// The proxy's side of a [`Held`].
struct HoldSlot {
    operation: String,
    arrived: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

/// The next request of one operation, held by the proxy until the test releases it: for
/// tests that interleave two actors at a chosen point without sleeping. Made by
/// [`FaultProxy::hold`]. Dropped without [`Held::release`], the held request's connection is
/// closed unanswered.
#[derive(Debug)]
pub struct Held {
    operation: String,
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Held {
    /// Waits until the request has reached the proxy (and is held there).
    ///
    /// # Panics
    /// When the proxy is gone before a request arrived.
    pub async fn arrived(&mut self) {
        if let Some(rx) = self.arrived.take() {
            rx.await.unwrap_or_else(|_| {
                panic!("the proxy went away before a {} request", self.operation)
            });
        }
    }

    /// Forwards the held request to moto (or lets the next one through unheld, when none
    /// arrived yet).
    pub fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

/// A loopback HTTP proxy that forwards to an upstream (moto) except where a [`Fault`] is
/// queued for the request's operation. Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    match state.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream`, an `http://127.0.0.1:PORT` URL (e.g.
    /// [`crate::moto::Moto::endpoint_url`]).
    ///
    /// # Panics
    /// When `upstream` is not such a URL or no loopback port can be bound.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("FaultProxy upstream {upstream:?}: {e}"));
        assert!(
            upstream.ip().is_loopback(),
            "FaultProxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("FaultProxy: cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("FaultProxy: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (state, stop) = (state2.clone(), stop2.clone());
                // One thread per connection: a held (delayed) request holds up no other.
                thread::spawn(move || {
                    let _ = serve(conn, upstream, &state, &stop);
                });
            }
        });
        FaultProxy { addr, state, stop }
    }

    /// The proxy's URL, for the SDK's endpoint.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An SDK configuration that talks to moto through this proxy.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::moto::sdk_config_for(&self.endpoint_url())
    }

    /// Queues `fault` (a [`Fault`] or a [`Delay`]); the faults and delays of one operation
    /// apply in the order they were queued.
    pub fn inject(&self, fault: impl Into<Injection>) {
        lock(&self.state).faults.push_back(fault.into());
    }

    /// Holds the next request of `operation` (after any queued fault or delay of it) until
    /// the returned [`Held`] is released.
    pub fn hold(&self, operation: &str) -> Held {
        let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        lock(&self.state).holds.push_back(HoldSlot {
            operation: operation.to_owned(),
            arrived: arrived_tx,
            release: release_rx,
        });
        Held {
            operation: operation.to_owned(),
            arrived: Some(arrived_rx),
            release: Some(release_tx),
        }
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.state).seen.clone()
    }

    /// The requests of `operation` seen so far.
    pub fn requests_of(&self, operation: &str) -> Vec<ProxiedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    /// Faults and delays queued and not yet used up.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state).faults.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn read_message(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = head_end(&raw) {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let len: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + len {
                raw.truncate(end + len);
                return Ok(raw);
            }
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Replaces any `Connection` header of a message head by `Connection: close`.
fn close_connection(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        })
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn operation(head: &str, body: &str) -> String {
    header(head, "x-amz-target")
        .and_then(|t| t.rsplit('.').next())
        .map(str::to_owned)
        .or_else(|| {
            body.split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Sleeps `duration` in short steps; `false` when the proxy stopped meanwhile.
fn hold(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Takes one use of the first injection queued for `op`.
fn take_injection(s: &mut State, op: &str) -> Option<Injection> {
    let i = s.faults.iter().position(|f| f.operation() == op)?;
    let taken = s.faults[i].clone();
    let used_up = {
        let times = s.faults[i].times_mut();
        *times = times.saturating_sub(1);
        *times == 0
    };
    if used_up {
        s.faults.remove(i);
    }
    Some(taken)
}

fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let raw = read_message(&mut conn)?;
    let end = head_end(&raw).unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = String::from_utf8_lossy(&raw[end..]).into_owned();
    let op = operation(&head, &body);
    let (injection, held) = {
        let mut s = lock(state);
        let injection = take_injection(&mut s, &op);
        let held = s
            .holds
            .iter()
            .position(|h| h.operation == op)
            .and_then(|i| s.holds.remove(i));
        s.seen.push(ProxiedRequest {
            operation: op,
            body: body.clone(),
            faulted: matches!(injection, Some(Injection::Answer(_))),
            delayed: match &injection {
                Some(Injection::Delay(d)) => Some(d.duration),
                _ => None,
            },
        });
        (injection, held)
    };
    if let Some(h) = held {
        let _ = h.arrived.send(());
        // This is a plain thread (no runtime): blocking on the release is fine.
        if h.release.blocking_recv().is_err() || stop.load(Ordering::SeqCst) {
            return Ok(()); // released never, or the proxy is gone: drop the connection
        }
    }
    let fault = match injection {
        Some(Injection::Answer(f)) => Some(f),
        Some(Injection::Delay(d)) => {
            if !hold(d.duration, stop) {
                return Ok(()); // the proxy is gone: drop the connection
            }
            None
        }
        None => None,
    };
    if let Some(f) = fault {
        let answer = format!(
            "HTTP/1.1 {} Injected\r\nContent-Type: application/x-amz-json-1.1\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            f.status,
            f.body.len(),
            f.body
        );
        conn.write_all(answer.as_bytes())?;
        return conn.flush();
    }
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(close_connection(&head).as_bytes())?;
    up.write_all(&raw[end..])?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    match head_end(&answer) {
        Some(end) => {
            let head = String::from_utf8_lossy(&answer[..end]).into_owned();
            conn.write_all(close_connection(&head).as_bytes())?;
            conn.write_all(&answer[end..])?;
        }
        None => conn.write_all(&answer)?,
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_get_connection_close() {
        let h = close_connection("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nA: b\r\n\r\n");
        assert_eq!(h, "HTTP/1.1 200 OK\r\nA: b\r\nConnection: close\r\n\r\n");
        assert_eq!(
            operation("POST / HTTP/1.1\r\nX-Amz-Target: X.RunTask\r\n\r\n", ""),
            "RunTask"
        );
        assert_eq!(
            operation("POST / HTTP/1.1\r\n\r\n", "Action=Foo&V=1"),
            "Foo"
        );
    }

    #[test]
    fn injections_of_one_operation_apply_in_order_and_wear_out() {
        let mut s = State::default();
        s.faults.push_back(
            Fault::delay("DescribeTasks", Duration::from_secs(1))
                .times(2)
                .into(),
        );
        s.faults.push_back(Fault::throttling("RunTask").into());
        s.faults
            .push_back(Fault::throttling("DescribeTasks").into());
        assert!(take_injection(&mut s, "ListTasks").is_none());
        for _ in 0..2 {
            assert!(matches!(
                take_injection(&mut s, "DescribeTasks"),
                Some(Injection::Delay(d)) if d.duration == Duration::from_secs(1)
            ));
        }
        assert!(matches!(
            take_injection(&mut s, "DescribeTasks"),
            Some(Injection::Answer(f)) if f.body.contains("ThrottlingException")
        ));
        assert!(take_injection(&mut s, "DescribeTasks").is_none());
        assert_eq!(s.faults.len(), 1, "the RunTask fault is left");
    }
}
