//! The opt-in gate of fixture tests: tests that need a real sshd, moto or root run only
//! when `FARGATE_TEST_FIXTURES=1`, and say that they skipped otherwise.
//!
//! A plain `cargo test --workspace` on a laptop without root, OpenSSH's `sshd` or moto
//! therefore passes, listing what it skipped. With the variable set (`scripts/test` sets it),
//! every fixture test runs, and a missing fixture is a test failure, never a skip.
//!
//! ```no_run
//! #[test]
//! fn logs_in() {
//!     fargate_testkit::require_fixture!(Sshd);
//!     // ... start `fargate_testkit::sshd::Sshd` and test against it
//! }
//! ```

use std::io::Write as _;

/// The environment variable that enables fixture tests: `1` runs them, unset (or `0`)
/// skips them.
pub const ENABLE_VAR: &str = "FARGATE_TEST_FIXTURES";

/// How every skip line starts; `scripts/test` fails when its output contains it.
pub const SKIP_MARKER: &str = "skipped: needs";

/// What a test needs beyond `cargo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fixture {
    /// [`crate::sshd::Sshd`]: root and OpenSSH's `sshd`.
    Sshd,
    /// [`crate::moto::Moto`]: moto 5.2.5 (`FARGATE_MOTO_PYTHON`).
    Moto,
    /// [`crate::local_fargate::LocalFargate`]: moto, `sshd` and root.
    LocalFargate,
    /// [`crate::dynalite::Dynalite`]: dynalite 3.2.2 (`FARGATE_DYNALITE`) and Node.js.
    Dynalite,
}

impl Fixture {
    fn needs(self) -> &'static str {
        match self {
            Fixture::Sshd => "the sshd fixture (root and /usr/sbin/sshd)",
            Fixture::Moto => "the moto fixture (moto 5.2.5)",
            Fixture::LocalFargate => "the local Fargate (moto, /usr/sbin/sshd and root)",
            Fixture::Dynalite => "the dynalite fixture (dynalite 3.2.2 and Node.js)",
        }
    }
}

/// Whether tests that need `fixture` run: `true` when [`ENABLE_VAR`] is `1`. Otherwise
/// writes a skip line naming the test and how to enable it to stderr (past the test
/// harness's output capture, so that `cargo test` shows it) and returns `false`.
///
/// # Panics
/// When [`ENABLE_VAR`] has a value other than `0` or `1` (a typo must not skip silently).
pub fn enabled(fixture: Fixture) -> bool {
    let value = std::env::var(ENABLE_VAR).unwrap_or_default();
    match value.as_str() {
        "1" => true,
        "" | "0" => {
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("a test");
            let _ = writeln!(
                std::io::stderr(),
                "{SKIP_MARKER} {}; set {ENABLE_VAR}=1 (scripts/test does) to run it ({test})",
                fixture.needs()
            );
            false
        }
        other => panic!("{ENABLE_VAR}={other:?}: use 1 to run fixture tests, 0 to skip them"),
    }
}

/// Returns from the enclosing test unless [`enabled`] says that tests needing the
/// [`Fixture`] named by its argument (`Sshd`, `Moto`, `LocalFargate`, `Dynalite`) run.
#[macro_export]
macro_rules! require_fixture {
    ($fixture:ident) => {
        if !$crate::gate::enabled($crate::gate::Fixture::$fixture) {
            return;
        }
    };
}
