//! The job log's line format: short lines for the person reading the job log.
//!
//! GitLab shows its own timestamps, so a line is only the message: no time, no level for
//! `info`, no module path, no key=value fields (those go to the structured log: `LogFile`
//! or `LogFormat = "json"`). Warnings and errors start with `WARNING:` / `ERROR:`; an
//! `error` field is appended to the message (`... failed: <error>`) and a `hint` field gets
//! its own `hint:` line. At debug level the other fields follow in parentheses.
//!
//! So a human line is written as `tracing::info!("the task is ready at {endpoint}")`: put
//! the fact in the message, and any machine-readable copy in fields.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of the job log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HumanFormat;

/// An event's message, `error`, `hint` and other fields.
#[derive(Default)]
struct Parts {
    message: String,
    error: Option<String>,
    hint: Option<String>,
    others: Vec<String>,
}

impl Visit for Parts {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Parts {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "error" => self.error = Some(value),
            "hint" => self.hint = Some(value),
            name => self.others.push(format!("{name}={value}")),
        }
    }
}

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut parts = Parts::default();
        event.record(&mut parts);
        writer.write_str(&render(*event.metadata().level(), &parts))
    }
}

/// The line(s) of one event, ending in a newline.
fn render(level: Level, parts: &Parts) -> String {
    let mut line = String::new();
    line.push_str(match level {
        Level::ERROR => "ERROR: ",
        Level::WARN => "WARNING: ",
        Level::INFO => "",
        _ => "DEBUG: ",
    });
    line.push_str(&parts.message);
    if let Some(error) = &parts.error {
        let _ = write!(line, ": {error}");
    }
    if level > Level::INFO && !parts.others.is_empty() {
        let _ = write!(line, " ({})", parts.others.join(", "));
    }
    line.push('\n');
    if let Some(hint) = &parts.hint {
        let _ = writeln!(line, "hint: {hint}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(message: &str, error: Option<&str>, hint: Option<&str>, others: &[&str]) -> Parts {
        Parts {
            message: message.into(),
            error: error.map(Into::into),
            hint: hint.map(Into::into),
            others: others.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn info_is_the_bare_message_and_fields_stay_out() {
        let p = parts("the task is ready", None, None, &["task=arn:1"]);
        assert_eq!(render(Level::INFO, &p), "the task is ready\n");
    }

    #[test]
    fn errors_carry_their_error_and_hint_lines() {
        let p = parts(
            "prepare failed",
            Some("no capacity"),
            Some("add subnets"),
            &[],
        );
        assert_eq!(
            render(Level::ERROR, &p),
            "ERROR: prepare failed: no capacity\nhint: add subnets\n"
        );
        let p = parts("retrying", None, None, &["attempt=2"]);
        assert_eq!(render(Level::WARN, &p), "WARNING: retrying\n");
        assert_eq!(render(Level::DEBUG, &p), "DEBUG: retrying (attempt=2)\n");
    }
}
