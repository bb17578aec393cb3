//! How errors reach a person: plainly on stderr (before logging exists, and for the
//! administrator's commands), or in the log (a stage's failure, for the job log).

use fargate_core::{Error, ErrorKind, Failure};

use crate::config::hint_with_keys;

/// `err`'s hint with the `fargate.toml` keys of the settings it names.
fn hint_of(err: &Error) -> Option<String> {
    err.hint().map(|h| hint_with_keys(h, err.settings()))
}

/// Prints `err` on stderr: `ERROR: fargate: <chain>`, then its hint on a `hint:` line.
pub(crate) fn print_plain(err: &Error) {
    eprintln!("ERROR: fargate: {}", err.chain());
    if let Some(hint) = hint_of(err) {
        eprintln!("hint: {hint}");
    }
}

/// Logs a stage's failure for the person reading the job log.
pub(crate) fn log_failure(failure: &Failure) {
    match failure.as_system() {
        None => tracing::error!("{failure}"),
        Some(err) => {
            // The job log shows the hint on its own `hint:` line.
            match hint_of(err) {
                Some(hint) => tracing::error!(hint, "{}", err.chain()),
                None => tracing::error!("{}", err.chain()),
            }
            if err.kind() == ErrorKind::Cancelled {
                tracing::warn!("the stage was cancelled");
            }
        }
    }
}
