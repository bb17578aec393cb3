//! The demo's processes: reading `/proc`, finding the driver's stage processes among the
//! demo's descendants, and what a signal does to them ([`Watch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{SIGNALS, err};

/// One process as `/proc/PID/stat` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Proc {
    pub(super) comm: String,
    pub(super) ppid: i32,
    pub(super) start: u64,
    pub(super) zombie: bool,
}

pub(super) fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    Some(Proc {
        comm,
        zombie: fields.first() == Some(&"Z"),
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process below `root`.
pub(super) fn descendants(root: i32) -> BTreeMap<i32, Proc> {
    let all: BTreeMap<i32, Proc> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_proc(pid)?)))
        .collect();
    let mut found = BTreeMap::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, p) in all.iter().filter(|(_, p)| p.ppid == parent) {
            if found.insert(*pid, p.clone()).is_none() {
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Whether the process we saw is still running (same start time: not a reused PID).
pub(super) fn alive(pid: i32, seen: &Proc) -> bool {
    read_proc(pid).is_some_and(|p| p.start == seen.start && !p.zombie)
}

/// The driver's stage of a child process of ours (`prepare`, `build_script`, ...; with the
/// host's name first in a fleet demo, `host-a: prepare`), if it is a driver process.
pub(super) fn driver_stage(pid: i32, fargate: &Path) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.first().map(PathBuf::from).as_deref() != Some(fargate) {
        return None;
    }
    let custom = args.iter().position(|a| a == "custom")?;
    let stage = match args.get(custom + 1).map(String::as_str) {
        Some("run") => args.last().cloned(),
        Some(stage) => Some(stage.to_owned()),
        None => None,
    }?;
    // With --fleet, the configuration's name is the host's (`host-a.toml`).
    let host = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| Path::new(args.get(i + 1)?).file_stem()?.to_str())
        .filter(|name| name.starts_with("host-"))
        .map(str::to_owned);
    Some(match host {
        Some(host) => format!("{host}: {stage}"),
        None => stage,
    })
}

/// Our direct children, from `/proc/self/task/*/children` (cheap enough to poll often).
pub(super) fn children() -> BTreeMap<i32, Proc> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| Some((pid, read_proc(pid)?)))
        .collect()
}

/// Processes the demo started, and what it does to its driver processes on signals.
pub(super) struct Watch {
    pub(super) me: i32,
    pub(super) fargate: PathBuf,
    pub(super) seen: BTreeMap<i32, Proc>,
    pub(super) stages: BTreeSet<i32>,
    pub(super) termed: BTreeSet<i32>,
    pub(super) handled_signals: usize,
    pub(super) last_full_scan: Option<Instant>,
}

impl Watch {
    /// Looks at our processes once: reports new stages, and cancels or kills stages after
    /// one or two signals. Every 100 ms it also records all our descendants (sshd sessions
    /// too), to check at the end that none is left.
    pub(super) fn poll(&mut self) {
        let now = if self
            .last_full_scan
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.last_full_scan = Some(Instant::now());
            descendants(self.me)
        } else {
            children()
        };
        let signals = SIGNALS.load(Ordering::SeqCst);
        if signals > self.handled_signals {
            self.handled_signals = signals;
            if self.stages.is_empty() {
                err("\n[demo] interrupted: stopping the local Fargate");
            } else if signals == 1 {
                err(
                    "\n[demo] interrupted: cancelling the job as gitlab-runner does (SIGTERM to the running \
                     stage, then cleanup); interrupt again to stop at once",
                );
            } else {
                err(
                    "\n[demo] interrupted again: killing the driver's processes and stopping the local Fargate",
                );
            }
        }
        for (pid, p) in &now {
            // Keep the name after exec (a child seen between fork and exec has ours).
            match self.seen.get_mut(pid) {
                Some(old) if old.start == p.start => old.comm.clone_from(&p.comm),
                _ => {
                    self.seen.insert(*pid, p.clone());
                }
            }
            if p.ppid != self.me || p.zombie {
                continue;
            }
            let Some(stage) = driver_stage(*pid, &self.fargate) else {
                continue;
            };
            if self.stages.insert(*pid) {
                err(&format!("[demo]   ▸ {stage}"));
            }
            // The runner emulator starts every stage in a process group of its own.
            if signals >= 2 {
                // SAFETY: kill(2) on the process group of a driver process we started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            } else if signals == 1 && !stage.ends_with("cleanup") && self.termed.insert(*pid) {
                // SAFETY: as above; cleanup is never cancelled (as with gitlab-runner).
                unsafe { libc::kill(-pid, libc::SIGTERM) };
            }
        }
    }
}
