//! Test support (feature `testing`): in-memory backends with fault injection, and a
//! conformance suite per trait that every backend runs ([`conformance`]).
//!
//! The in-memory backends are complete enough to run the whole [`crate::Driver`] (and the
//! examples) without AWS or SSH. Faults are injected per operation and call number: fail
//! with a kind, hang until cancelled, or perform the side effect and then lose the response.
//!
//! Fixtures that need more than the process (an OpenSSH server, moto, root) are not here:
//! they live in the workspace's unpublished `fargate-testkit` crate.
//!
//! # Stability
//!
//! This module is public API under the crate's semver, like the rest of `fargate-core`:
//! the in-memory backends, their fault injection and the conformance functions' signatures
//! change only in a breaking release. Two things may change in a minor release: the
//! in-memory backends may model the real services more closely (new states, new faults, a
//! rule a real backend enforces), and the conformance checks may get stricter (see
//! [`conformance`]'s own stability note). Tests that rely on a fake accepting something a
//! real backend refuses may then fail: that is a bug the update found.

mod clock;
pub mod conformance;
pub(crate) mod determinism;
mod faults;
mod launcher;
mod shell;
mod store;

pub use clock::ManualClock;
pub use determinism::Determinism;
pub use faults::{Fault, Faults, Op};
pub use launcher::{BootPlan, FakeTask, MemoryLauncher};
pub use shell::{MemoryShell, ScriptResult, Step, interpret};
pub use store::MemoryStore;
