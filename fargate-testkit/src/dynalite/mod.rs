//! The dynalite fixture: [`Dynalite`], a second DynamoDB emulator (Node.js, in memory) on
//! loopback, so that the DynamoDB store's tests do not trust one emulation alone (moto's).
//!
//! dynalite (3.2.2) is found through `FARGATE_DYNALITE`, the directory npm installed it
//! into (the one that holds `node_modules/dynalite`), and runs with `node` from the `PATH`;
//! without them the fixture panics with the install command ([`DYNALITE_INSTALL`]).
//! `scripts/test` installs it into `/opt/fargate-dynalite`.
//!
//! dynalite validates requests as DynamoDB does (expression syntax, reserved words, item
//! and key sizes, with DynamoDB's messages) and makes each item operation atomic. What it
//! lacks, so what no test can check on it:
//!
//! * **TTL**: it has no `UpdateTimeToLive` (an `UnknownOperationException`) and its
//!   `DescribeTimeToLive` always answers `DISABLED` ([`DynamoDb::has_ttl`]);
//! * **encryption at rest**: it drops `SSESpecification` and describes no `SSEDescription`;
//! * request signatures: it checks that a request has one, not that it is right.
//!
//! Its own command line listens on every interface whatever it is told; the fixture runs it
//! from a small launcher that listens on `127.0.0.1` only, on a port the system picks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::dynamodb::DynamoDb;
use crate::http;

/// The dynalite version the fixture is written for.
pub const DYNALITE_VERSION: &str = "3.2.2";
/// The command that installs it (then `FARGATE_DYNALITE=/opt/fargate-dynalite`).
pub const DYNALITE_INSTALL: &str = "npm install --prefix /opt/fargate-dynalite --ignore-scripts --no-audit --no-fund dynalite@3.2.2";

const LAUNCHER: &str = include_str!("dynalite_launcher.js");

/// The dynalite package directory: `$FARGATE_DYNALITE/node_modules/dynalite`.
///
/// # Panics
/// When `FARGATE_DYNALITE` is unset, holds no dynalite, or another version than
/// [`DYNALITE_VERSION`], or `node` does not run: with the install command.
pub fn dynalite_package() -> PathBuf {
    let how = format!(
        "install it with `{DYNALITE_INSTALL}` (Node.js and npm: `apt-get install nodejs npm`) and set FARGATE_DYNALITE=/opt/fargate-dynalite; scripts/test does both"
    );
    let Some(prefix) = std::env::var_os("FARGATE_DYNALITE").filter(|p| !p.is_empty()) else {
        panic!(
            "FARGATE_DYNALITE is not set: the dynalite fixture needs dynalite {DYNALITE_VERSION}; {how}"
        );
    };
    let package = Path::new(&prefix).join("node_modules").join("dynalite");
    let manifest = std::fs::read_to_string(package.join("package.json")).unwrap_or_default();
    let version = serde_json::from_str::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|m| m["version"].as_str().map(str::to_owned));
    match version.as_deref() {
        Some(DYNALITE_VERSION) => {}
        Some(other) => panic!(
            "{} holds dynalite {other}, not {DYNALITE_VERSION}, which the fixture is written for; {how}",
            package.display()
        ),
        None => panic!("{} holds no dynalite; {how}", package.display()),
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        panic!("`node` does not run: the dynalite fixture needs Node.js; {how}");
    }
    package
}

/// Options of a [`Dynalite`] server.
#[derive(Clone, Debug, Default)]
pub struct DynaliteBuilder {
    create_table: Duration,
}

impl DynaliteBuilder {
    /// How long a new table stays `CREATING` before it is `ACTIVE` (default zero; DynamoDB
    /// takes seconds).
    pub fn create_table_delay(mut self, delay: Duration) -> Self {
        self.create_table = delay;
        self
    }

    /// Starts the server and waits until it answers (at most 30 s).
    ///
    /// # Panics
    /// When dynalite is missing (with the install command) or does not start.
    pub fn start(self) -> Dynalite {
        let package = dynalite_package();
        let dir = tempfile::Builder::new()
            .prefix("fargate-dynalite-")
            .tempdir()
            .expect("temporary directory for dynalite");
        let script = dir.path().join("dynalite_launcher.js");
        std::fs::write(&script, LAUNCHER).expect("writing the dynalite launcher");
        let log = std::fs::File::create(dir.path().join("dynalite.log")).expect("dynalite log");
        let port_file = dir.path().join("port");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&package)
            .arg(&port_file)
            .arg(self.create_table.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("dynalite log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node for dynalite: {e}"));
        let stdin = child.stdin.take();
        let mut dynalite = Dynalite {
            child: Mutex::new(child),
            _stdin: stdin,
            port: 0,
            dir,
        };
        match dynalite.wait_ready(&port_file, Duration::from_secs(30)) {
            Ok(port) => dynalite.port = port,
            Err(why) => panic!(
                "dynalite did not start: {why}; its output:\n{}",
                dynalite.log()
            ),
        }
        dynalite
    }
}

/// A dynalite server on `127.0.0.1`, in memory, killed when dropped.
pub struct Dynalite {
    child: Mutex<Child>,
    /// Closed when the test process ends, however it ends: the launcher exits then.
    _stdin: Option<ChildStdin>,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Dynalite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynalite")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Dynalite {
    /// Starts a server with the default options.
    pub fn start() -> Dynalite {
        DynaliteBuilder::default().start()
    }

    /// Options for a server.
    pub fn builder() -> DynaliteBuilder {
        DynaliteBuilder::default()
    }

    /// Waits for the launcher's port file, then for an answer to `ListTables`.
    fn wait_ready(&self, port_file: &Path, timeout: Duration) -> Result<u16, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let port = std::fs::read_to_string(port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok());
            if let Some(port) = port {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if let Ok((200, _)) = raw_call(addr, "ListTables", &serde_json::json!({})) {
                    return Ok(port);
                }
            }
            let exited = self
                .child
                .lock()
                .map(|mut c| c.try_wait().ok().flatten())
                .unwrap_or(None);
            if let Some(status) = exited {
                return Err(format!("node exited ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dynalite.log")).unwrap_or_default()
    }
}

impl DynamoDb for Dynalite {
    fn name(&self) -> &'static str {
        "dynalite"
    }

    fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn dynamodb(&self, operation: &str, input: &serde_json::Value) -> (u16, serde_json::Value) {
        raw_call(self.addr(), operation, input)
            .unwrap_or_else(|e| panic!("dynalite {operation}: {e}"))
    }

    fn has_ttl(&self) -> bool {
        false
    }
}

/// One DynamoDB call to `addr`, with the headers dynalite wants (a signature, not checked).
fn raw_call(
    addr: SocketAddr,
    operation: &str,
    input: &serde_json::Value,
) -> std::io::Result<(u16, serde_json::Value)> {
    let target = format!("DynamoDB_20120810.{operation}");
    let headers = [
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", target.as_str()),
        ("x-amz-date", "20250101T000000Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
        ),
    ];
    let r = http::request(addr, "POST", "/", &headers, input.to_string().as_bytes())?;
    let answer = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    Ok((r.status, answer))
}
