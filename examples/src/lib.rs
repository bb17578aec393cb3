//! Examples and test harnesses of the `fargate` driver.
//!
//! - [`local_fargate`]: a local Fargate (moto's ECS emulator plus one real OpenSSH server
//!   per task on the task's loopback IP) for end-to-end tests and the demo;
//! - [`runner`]: a gitlab-runner custom executor emulator that drives the `fargate` binary
//!   exactly as the runner does.
//!
//! Library embedding examples are in `examples/examples/`.

pub mod local_fargate;
pub mod runner;
