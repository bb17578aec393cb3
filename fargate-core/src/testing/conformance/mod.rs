//! Behaviour every backend must have, as `async fn`s that panic on a violation.
//!
//! Call them from a backend's tests: the in-memory backends run them in this crate, the real
//! ones in `fargate-aws` (against moto) and `fargate-ssh` (against OpenSSH), and a backend
//! outside this workspace can run them the same way. They are test code: they assert with
//! panics and may leave tasks stopped but not deleted.
//!
//! There is one small function per rule of a trait's contract, so a failure names the rule
//! and a backend can run the rules one by one; [`launcher`], [`shell`] and [`store`] run every
//! rule of their trait in order. Where backends legitimately differ, the difference is an
//! argument ([`LauncherCaps`], [`ShellCaps`], [`LockCaps`]), never a probe for an error.
//!
//! # Stability
//!
//! The function names and signatures, the targets and the capability types follow
//! `fargate-core`'s semver like the rest of the crate (the capability types are
//! `#[non_exhaustive]` with constructors, so a new capability is not a breaking change).
//! What the checks assert does not: a minor release may add checks (also to [`launcher`],
//! [`shell`] and [`store`]) or make one stricter as the traits' contracts are sharpened, so a
//! backend that passed may fail after an update. That is the point of the suite: read the
//! failure as a change of the contract, documented on the trait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod launcher;
mod shell;
mod slots;
mod store;

pub use launcher::*;
pub use shell::*;
pub use slots::*;
pub use store::*;
