//! `[Metrics] File`: a Prometheus text file for node_exporter's textfile collector, the sum
//! over every process of the driver.
//!
//! Each driver process (one per stage) collects its changes in memory from the driver's
//! events ([`Metrics`] is an [`Observer`]) and, when its stage ends, merges them into a
//! state file beside the output (`<File>.state`, JSON) under an exclusive lock
//! (`<File>.lock`), then writes the output anew: to a temporary file renamed over it, so a
//! reader sees the old file or the new one, never a part. None of these files is
//! followed through a link, and a directory others may write to is refused
//! ([`crate::shared_files`]). A metrics write that fails is a warning; it never fails a
//! stage.

mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fargate_core::observe::{Event, Observer, PreparePhase};
use fargate_core::{Error, Result};

use state::State;

use crate::shared_files;

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

/// Under the lock: reads the state, applies `change`, writes state and output atomically
/// (see [`crate::shared_files`]: the directory is often shared with other users).
fn update(file: &Path, change: impl FnOnce(&mut State)) -> Result<()> {
    shared_files::check_dir(file, "[Metrics] File")?;
    let lock_path = beside(file, ".lock");
    let lock = shared_files::open_lock(&lock_path)?;
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
    let mut state: State = match shared_files::read_own(&state_path, "metrics state")? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "the metrics state {} is unreadable ({e}); starting from zero",
                state_path.display()
            );
            State::default()
        }),
        None => State::default(),
    };
    change(&mut state);
    let json = serde_json::to_vec(&state)
        .map_err(|e| Error::io("encoding the metrics state", e.into()))?;
    shared_files::replace(&state_path, &json, 0o600)?;
    shared_files::replace(file, state.render().as_bytes(), 0o644)?;
    drop(lock); // closing the file releases the lock
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A metrics file in a fresh private directory, and a victim file outside it that
    /// another user would like the driver to overwrite.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fargate.prom");
        let victim = dir.path().join("victim");
        (dir, file, victim)
    }

    fn count_a_stage(state: &mut State) {
        state.finish_stage("config", None, "success", None, 0);
    }

    #[test]
    fn a_link_at_the_lock_file_is_not_followed() {
        let (_dir, file, victim) = setup();
        // Dangling: following it would create the victim.
        symlink(&victim, beside(&file, ".lock")).unwrap();
        let err = update(&file, count_a_stage).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!victim.exists(), "the lock's link was followed");
        assert!(!file.exists());
    }

    #[test]
    fn a_link_at_the_state_file_is_not_followed() {
        let (_dir, file, victim) = setup();
        // Forged figures another user would have the driver publish.
        std::fs::write(&victim, br#"{"cost": 1000000.0}"#).unwrap();
        symlink(&victim, beside(&file, ".state")).unwrap();
        let err = update(&file, count_a_stage).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!file.exists(), "metrics written from a linked state");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            br#"{"cost": 1000000.0}"#.as_slice()
        );
    }

    #[test]
    fn links_at_temporary_names_are_not_followed() {
        let (dir, file, victim) = setup();
        std::fs::write(&victim, "precious").unwrap();
        // The names a temporary file of this process had before: `<file>.<pid>.tmp`.
        let pid = std::process::id();
        for target in [&file, &beside(&file, ".state")] {
            symlink(&victim, beside(target, &format!(".{pid}.tmp"))).unwrap();
        }
        update(&file, count_a_stage).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for written in [&file, &beside(&file, ".state")] {
            let meta = std::fs::symlink_metadata(written).unwrap();
            assert!(
                meta.is_file(),
                "{} is not a regular file",
                written.display()
            );
        }
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("fargate_stages_total{stage=\"config\",outcome=\"success\"} 1")
        );
        // The planted links are left alone, and no temporary file of ours remains.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected = vec![
            "fargate.prom".to_owned(),
            format!("fargate.prom.{pid}.tmp"),
            "fargate.prom.lock".to_owned(),
            "fargate.prom.state".to_owned(),
            format!("fargate.prom.state.{pid}.tmp"),
            "victim".to_owned(),
        ];
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, file, _victim) = setup();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = update(&file, count_a_stage).unwrap_err();
        assert!(err.to_string().contains("[Metrics] File"), "{err}");
        assert!(err.hint().unwrap_or_default().contains("chmod"), "{err:?}");
        assert!(!file.exists() && !beside(&file, ".lock").exists());
    }
}
