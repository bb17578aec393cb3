//! The test kit of the `fargate` workspace (not published): fixtures and harnesses that the
//! crates' integration tests, the examples, the demo and the benchmarks share.
//!
//! - [`gate`]: fixture tests opt in with `FARGATE_TEST_FIXTURES=1` ([`require_fixture!`]);
//! - [`sshd`]: a throwaway OpenSSH server on loopback standing in for a task's container;
//! - [`moto`]: moto's ECS and EC2 emulator on loopback, patched to refuse and delay what ECS
//!   refuses and delays;
//! - [`dynalite`]: dynalite, a second DynamoDB emulator, on loopback;
//! - [`dynamodb`]: both DynamoDB emulators behind one trait, and [`dynamodb_tests!`] that
//!   runs a store test on each;
//! - [`fault_proxy`]: an HTTP proxy in front of moto that injects the errors and hangs moto
//!   cannot produce;
//! - [`local_fargate`]: a local Fargate, moto plus one real `sshd` per task on the task's
//!   loopback IP;
//! - [`runner`]: a gitlab-runner custom executor emulator that drives the `fargate` binary
//!   exactly as the runner does;
//! - [`interleavings`]: the seeded interleaving harness of the ownership model, on any store.
//!
//! The in-memory backends and the trait conformance suites are not here: they are
//! `fargate_core::testing` (feature `testing`), for backends outside this workspace too.
//!
//! Everything here is test code: it panics on failure where a test would, needs root for
//! `sshd`, and never sends traffic beyond 127.0.0.0/8.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dynalite;
pub mod dynamodb;
pub mod fault_proxy;
pub mod gate;
mod http;
pub mod interleavings;
pub mod local_fargate;
pub mod moto;
pub mod runner;
pub mod sshd;

pub use gate::Fixture;
