use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, ErrorKind};

/// An operation of one of the traits, for fault injection and call counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `TaskLauncher::launch`.
    Launch,
    /// `TaskLauncher::describe`.
    Describe,
    /// `TaskLauncher::stop`.
    Stop,
    /// `TaskLauncher::find`.
    Find,
    /// `TaskLauncher::adopt`.
    Adopt,
    /// `TaskLauncher::resolve_task_definition`.
    ResolveDefinition,
    /// `TaskLauncher::mark_alive`.
    MarkAlive,
    /// `RemoteShell::generate_key`.
    GenerateKey,
    /// `RemoteShell::probe`.
    Probe,
    /// `RemoteShell::run`.
    Run,
    /// `MetadataStore::put`.
    Put,
    /// `MetadataStore::get`.
    Get,
    /// `MetadataStore::delete`.
    Delete,
    /// `MetadataStore::heartbeat`.
    Heartbeat,
}

/// What happens to a faulted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail with this kind, without side effect.
    Fail(ErrorKind),
    /// Never return (until the caller gives up: cancellation or a deadline).
    Hang,
    /// Perform the side effect, then fail with this kind (a lost response).
    LoseResponse(ErrorKind),
    /// Answer normally, but only after this long (a slow API).
    Delay(std::time::Duration),
}

impl Fault {
    /// The error a faulted call returns.
    pub fn error(self, op: Op) -> Error {
        let (kind, unknown) = match self {
            Fault::Fail(k) => (k, false),
            Fault::LoseResponse(k) => (k, true),
            Fault::Hang | Fault::Delay(_) => (ErrorKind::Timeout, true),
        };
        Error::new(kind, format!("injected fault in {op:?}"))
            .with_backend("fake")
            .set_outcome_unknown(unknown)
    }
}

/// Faults to inject, and counts of calls per operation.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    calls: HashMap<Op, u32>,
    /// (operation, call number it applies to (1-based), fault). `None`: every later call.
    rules: Vec<(Op, Option<u32>, Fault)>,
}

impl Faults {
    /// Injects `fault` into call number `nth` (1-based, counted from the start) of `op`.
    pub fn inject_at(&self, op: Op, nth: u32, fault: Fault) {
        self.lock().rules.push((op, Some(nth), fault));
    }

    /// Injects `fault` into the next call of `op`.
    pub fn inject_next(&self, op: Op, fault: Fault) {
        let mut s = self.lock();
        let next = s.calls.get(&op).copied().unwrap_or(0) + 1;
        s.rules.push((op, Some(next), fault));
    }

    /// Injects `fault` into every call of `op` from now on.
    pub fn inject_always(&self, op: Op, fault: Fault) {
        self.lock().rules.push((op, None, fault));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How often `op` was called.
    pub fn calls(&self, op: Op) -> u32 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op` and returns the fault to apply to it, if any.
    pub fn on_call(&self, op: Op) -> Option<Fault> {
        let mut s = self.lock();
        let n = {
            let c = s.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        s.rules
            .iter()
            .find(|(o, at, _)| *o == op && at.is_none_or(|at| at == n))
            .map(|(_, _, f)| *f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
