//! `[Metrics] File`: a Prometheus text file for node_exporter's textfile collector, the sum
//! over every process of the driver.
//!
//! Each driver process (one per stage) collects its changes in memory from the driver's
//! events ([`Metrics`] is an [`Observer`]) and, when its stage ends, merges them into a
//! state file beside the output (`<File>.state`, JSON) under an exclusive lock
//! (`<File>.lock`), then writes the output anew: to a temporary file renamed over it, so a
//! reader sees the old file or the new one, never a part. A metrics write that fails is a
//! warning; it never fails a stage.

mod state;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fargate_core::observe::{Event, Observer, PreparePhase};
use fargate_core::{Error, Result};

use state::State;

/// How long a process waits for another's metrics update.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Collects one process's metrics (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    file: Option<PathBuf>,
    delta: Arc<Mutex<State>>,
}

impl Observer for Metrics {
    fn observe(&self, event: &Event) {
        if self.file.is_none() {
            return;
        }
        let Ok(mut d) = self.delta.lock() else { return };
        match event {
            Event::Phase { phase, elapsed } => {
                let point = match phase {
                    PreparePhase::Launching => return,
                    PreparePhase::Accepted => "accepted",
                    PreparePhase::AddressKnown => "address_known",
                    PreparePhase::SshUp => "ssh_up",
                    _ => "other",
                };
                d.prepare
                    .entry(point.into())
                    .or_default()
                    .observe(elapsed.as_secs_f64());
            }
            Event::Ready { elapsed, .. } => d
                .prepare
                .entry("ready".into())
                .or_default()
                .observe(elapsed.as_secs_f64()),
            Event::ApiCall { operation, outcome } => {
                *d.api_calls
                    .entry(format!("{} {}", operation.as_str(), outcome.as_str()))
                    .or_default() += 1;
            }
            Event::Retry { operation, .. } => {
                *d.retries.entry(operation.replace(' ', "_")).or_default() += 1;
            }
            Event::Stopped { cause, .. } => {
                *d.stops.entry(cause.as_str().into()).or_default() += 1;
            }
            Event::Kept { .. } => d.kept += 1,
            Event::WarmPool { outcome } => {
                *d.warm.entry(outcome.as_str().into()).or_default() += 1;
            }
            Event::Summary(s) => {
                use fargate_core::observe::SummaryPoint;
                match s.point {
                    // A warm task's boot was the pool's, long before the job.
                    SummaryPoint::Prepared if s.warm_claim.is_some() => {}
                    SummaryPoint::Prepared => {
                        let p = s.phases();
                        for (name, d2) in [
                            ("provisioning", p.provisioning),
                            ("image_pull", p.image_pull),
                            ("container_start", p.container_start),
                            ("ssh", p.ssh_ready),
                        ] {
                            if let Some(v) = d2 {
                                d.task_phases
                                    .entry(name.into())
                                    .or_default()
                                    .observe(v.as_secs_f64());
                            }
                        }
                    }
                    _ => d.cost += s.cost.as_ref().map_or(0.0, |c| c.amount),
                }
            }
            _ => {}
        }
    }
}

impl Metrics {
    /// Metrics written to `file`; `None`: nothing is collected or written.
    pub(crate) fn new(file: Option<PathBuf>) -> Self {
        Metrics {
            file,
            delta: Arc::default(),
        }
    }

    /// Counts the end of `stage` (`run`'s `step`) with `outcome` for `job`, and writes the
    /// file. Failures are logged as warnings.
    pub(crate) fn finish(&self, stage: &str, step: Option<&str>, outcome: &str, job: Option<&str>) {
        let Some(file) = &self.file else { return };
        let delta = match self.delta.lock() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(err) = update(file, |state| {
            state.merge(&delta);
            state.finish_stage(stage, step, outcome, job, now);
        }) {
            tracing::warn!(error = %err, "could not update the metrics file");
        }
    }
}

/// `<file><suffix>`.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Under the lock: reads the state, applies `change`, writes state and output atomically.
fn update(file: &Path, change: impl FnOnce(&mut State)) -> Result<()> {
    let lock_path = beside(file, ".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("cannot open {}", lock_path.display()), e))?;
    let started = Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::timeout("waiting for the metrics file's lock"));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", lock_path.display()), e));
            }
        }
    }
    let state_path = beside(file, ".state");
    let mut state: State = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "the metrics state {} is unreadable ({e}); starting from zero",
                state_path.display()
            );
            State::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => {
            return Err(Error::io(
                format!("cannot read {}", state_path.display()),
                e,
            ));
        }
    };
    change(&mut state);
    let json = serde_json::to_vec(&state)
        .map_err(|e| Error::io("encoding the metrics state", e.into()))?;
    replace(&state_path, &json)?;
    replace(file, state.render().as_bytes())?;
    drop(lock); // closing the file releases the lock
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = beside(path, &format!(".{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}
