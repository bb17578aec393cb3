use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::faults::{Fault, Faults, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::launcher::Endpoint;
use crate::shell::{
    HostKey, KeyPair, KeyType, MAX_OUTPUT_CHUNK, OutputSink, PrivateKey, RemoteShell, RunOutcome,
    RunRequest,
};

/// What a fake script run produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptResult {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Bytes for stderr.
    pub stderr: Vec<u8>,
    /// How it ends.
    pub outcome: RunOutcome,
    /// Wait this long (or until cancelled) before ending.
    pub duration: Duration,
    /// When not empty, the run plays these in order instead (output as it comes, with
    /// waits between), and `stdout`, `stderr` and `duration` only sum them up.
    pub steps: Vec<Step>,
}

/// One step of a fake script run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Write to stdout.
    Stdout(Vec<u8>),
    /// Write to stderr.
    Stderr(Vec<u8>),
    /// Wait (or end if cancelled).
    Sleep(Duration),
}

type Handler = Box<dyn Fn(&RunRequest) -> ScriptResult + Send + Sync>;

/// An in-memory [`RemoteShell`] with fault injection.
///
/// Its scripts understand a few commands, one per line or `;`-separated, run in order with
/// their output written as it comes: `echo WORDS` (`>&2` for stderr), `exit N`, `sleep N`
/// (seconds, fractions allowed), `kill -KILL $$`, `true`; anything else is ignored. [`MemoryShell::set_handler`] replaces that with any behaviour.
pub struct MemoryShell {
    host_key: HostKey,
    down: Mutex<HashSet<IpAddr>>,
    keys: Mutex<Vec<String>>,
    runs: Mutex<Vec<RunRequest>>,
    handler: Mutex<Option<Handler>>,
    revoked: Mutex<HashSet<String>>,
    ignore_swaps: std::sync::atomic::AtomicBool,
    /// Faults to inject; also counts calls.
    pub faults: Faults,
}

impl std::fmt::Debug for MemoryShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryShell")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryShell {
    fn default() -> Self {
        MemoryShell {
            host_key: HostKey {
                algorithm: "ssh-ed25519".into(),
                fingerprint: "SHA256:memory-shell-host-key".into(),
            },
            down: Mutex::default(),
            keys: Mutex::default(),
            runs: Mutex::default(),
            handler: Mutex::default(),
            revoked: Mutex::default(),
            ignore_swaps: std::sync::atomic::AtomicBool::new(false),
            faults: Faults::default(),
        }
    }
}

impl MemoryShell {
    /// A shell whose every endpoint answers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The host key every endpoint presents.
    pub fn host_key(&self) -> HostKey {
        self.host_key.clone()
    }

    /// Makes `ip` unreachable (`true`) or reachable again.
    pub fn set_down(&self, ip: IpAddr, down: bool) {
        let mut set = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down {
            set.insert(ip);
        } else {
            set.remove(&ip);
        }
    }

    /// Replaces the script interpreter.
    pub fn set_handler(
        &self,
        handler: impl Fn(&RunRequest) -> ScriptResult + Send + Sync + 'static,
    ) {
        *self.handler.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(handler));
    }

    /// Makes every server refuse `key` from now on.
    pub fn revoke(&self, key: &PrivateKey) {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.expose().to_owned());
    }

    /// By default a warm pool's key swap (a script that renames a `.fargate-swap` file over
    /// the authorized keys) revokes the key that ran it, as replacing `authorized_keys`
    /// does; `true` makes swaps succeed without effect (an image whose sshd reads its keys
    /// elsewhere).
    pub fn ignore_key_swaps(&self, ignore: bool) {
        self.ignore_swaps
            .store(ignore, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request `run` received.
    pub fn runs(&self) -> Vec<RunRequest> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Public keys generated so far.
    pub fn generated_keys(&self) -> Vec<String> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_down(&self, ip: IpAddr) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    async fn fault(&self, op: Op) -> Result<()> {
        match self.faults.on_call(op) {
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Some(f) => Err(f.error(op)),
            None => Ok(()),
        }
    }
}

/// Interprets the few commands [`MemoryShell`] understands.
pub fn interpret(script: &str) -> ScriptResult {
    let mut r = ScriptResult {
        stdout: Vec::new(),
        stderr: Vec::new(),
        outcome: RunOutcome::Exited(0),
        duration: Duration::ZERO,
        steps: Vec::new(),
    };
    for cmd in script.lines().flat_map(|l| l.split(';')).map(str::trim) {
        if let Some(rest) = cmd.strip_prefix("echo ") {
            match rest.strip_suffix(">&2") {
                Some(text) => {
                    let line = format!("{}\n", text.trim()).into_bytes();
                    r.stderr.extend_from_slice(&line);
                    r.steps.push(Step::Stderr(line));
                }
                None => {
                    let line = format!("{rest}\n").into_bytes();
                    r.stdout.extend_from_slice(&line);
                    r.steps.push(Step::Stdout(line));
                }
            }
        } else if let Some(code) = cmd.strip_prefix("exit ") {
            r.outcome = RunOutcome::Exited(code.trim().parse().unwrap_or(2));
            return r;
        } else if let Some(secs) = cmd.strip_prefix("sleep ") {
            let d = Duration::from_secs_f64(secs.trim().parse().unwrap_or(0.0));
            r.duration += d;
            r.steps.push(Step::Sleep(d));
        } else if cmd == "kill -KILL $$" {
            r.outcome = RunOutcome::Signaled {
                signal: "KILL".into(),
            };
            return r;
        }
    }
    r
}

#[async_trait]
impl RemoteShell for MemoryShell {
    async fn generate_key(&self, key_type: KeyType) -> Result<KeyPair> {
        self.fault(Op::GenerateKey).await?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let n = keys.len();
        let public_key = format!("ssh-{key_type} FAKEKEY{n} fargate-job");
        keys.push(public_key.clone());
        Ok(KeyPair {
            public_key,
            private_key: PrivateKey::new(format!("FAKE PRIVATE KEY {n}")),
        })
    }

    async fn probe(&self, endpoint: Endpoint) -> Result<HostKey> {
        self.fault(Op::Probe).await?;
        if self.is_down(endpoint.ip) {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!("could not connect to {endpoint}: connection refused"),
            ));
        }
        Ok(self.host_key.clone())
    }

    async fn run(
        &self,
        request: &RunRequest,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        match self.faults.on_call(Op::Run) {
            Some(Fault::Hang) => {
                cancel.cancelled().await;
                return Err(Error::cancelled("running the script"));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(f) => return Err(f.error(Op::Run)),
            None => {}
        }
        if self.is_down(request.endpoint.ip) {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "could not connect to {}: connection refused",
                    request.endpoint
                ),
            ));
        }
        if let Some(pinned) = &request.host_key
            && pinned != &self.host_key
        {
            return Err(Error::new(
                ErrorKind::HostKeyMismatch,
                format!(
                    "host key of {} is {}, not the pinned {pinned}",
                    request.endpoint, self.host_key
                ),
            ));
        }
        if self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(request.private_key.expose())
        {
            return Err(Error::new(
                ErrorKind::AuthenticationFailed,
                format!("{} refused the key", request.endpoint),
            ));
        }
        if String::from_utf8_lossy(&request.script).contains(".fargate-swap")
            && !self.ignore_swaps.load(std::sync::atomic::Ordering::SeqCst)
        {
            self.revoke(&request.private_key);
        }
        let result = {
            let handler = self.handler.lock().unwrap_or_else(|p| p.into_inner());
            match handler.as_ref() {
                Some(h) => h(request),
                None => interpret(&String::from_utf8_lossy(&request.script)),
            }
        };
        let io = |e: std::io::Error| Error::io("writing the script's output", e);
        let steps = if result.steps.is_empty() {
            vec![
                Step::Stdout(result.stdout),
                Step::Stderr(result.stderr),
                Step::Sleep(result.duration),
            ]
        } else {
            result.steps
        };
        for step in steps {
            match step {
                Step::Stdout(b) => {
                    for chunk in b.chunks(MAX_OUTPUT_CHUNK) {
                        output.stdout(chunk).map_err(io)?;
                    }
                }
                Step::Stderr(b) => {
                    for chunk in b.chunks(MAX_OUTPUT_CHUNK) {
                        output.stderr(chunk).map_err(io)?;
                    }
                }
                Step::Sleep(d) => tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::cancelled("running the script")),
                    _ = tokio::time::sleep(d) => {}
                },
            }
        }
        Ok(result.outcome)
    }
}
