//! Test support (feature `testing`): in-memory backends with fault injection, a conformance
//! suite per trait that every backend runs, and mockall mocks of the traits.
//!
//! The in-memory backends are complete enough to run the whole [`crate::Driver`] (and the
//! examples) without AWS or SSH. Faults are injected per operation and call number: fail
//! with a kind, hang until cancelled, or perform the side effect and then lose the response.

pub mod conformance;
mod faults;
mod launcher;
mod shell;
mod store;

pub use faults::{Fault, Faults, Op};
pub use launcher::{BootPlan, FakeTask, MemoryLauncher};
pub use shell::{MemoryShell, ScriptResult, Step, interpret};
pub use store::MemoryStore;

pub use crate::launcher::MockTaskLauncher;
pub use crate::metadata::MockMetadataStore;
pub use crate::shell::MockRemoteShell;
