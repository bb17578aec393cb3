//! Logging with `tracing`: the job log on stderr, the structured log in a file.
//!
//! The runner copies the driver's stderr into the job log (for config, prepare and run), so
//! stderr gets short lines written for the person reading it ([`crate::human_log`]); the
//! administrator's `LogFile` gets the structured form (timestamps and fields, or JSON).

use std::path::Path;
use std::sync::Mutex;

use fargate_core::{Error, ErrorKind, Result};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::human_log::HumanFormat;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines (the Go driver's `text` and `text-simple`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective level: `--debug`, then `--log-level`, then `LogLevel`, then `info`.
pub(crate) fn level(debug: bool, flag: Option<&str>, file: Option<&str>) -> Result<LevelFilter> {
    if debug {
        return Ok(LevelFilter::DEBUG);
    }
    let name = flag.or(file).unwrap_or("info").to_ascii_lowercase();
    Ok(match name.as_str() {
        "panic" | "fatal" | "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "info" | "" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("log level {other:?} is not one of error, warn, info, debug, trace"),
            ));
        }
    })
}

/// Parses `--log-format`.
pub(crate) fn format(flag: Option<&str>, file: LogFormat) -> Result<LogFormat> {
    match flag.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(file),
        Some("text" | "text-simple") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("log format {other:?} is not \"text\" or \"json\""),
        )),
    }
}

/// Crates whose logs show the wire: requests, signing, connections. Kept at `sdk_level`
/// (`AwsSdkLogLevel`, default `warn`) whatever the driver's own level, so `--debug` never
/// pours them into the job log.
const SDK_TARGETS: [&str; 7] = [
    "aws_smithy",
    "aws_sdk",
    "aws_config",
    "aws_sigv4",
    "hyper",
    "rustls",
    "h2",
];

/// The level filter per target: `level` for the driver, `sdk_level` for the AWS SDK's own.
fn targets(level: LevelFilter, sdk_level: LevelFilter) -> Targets {
    SDK_TARGETS
        .iter()
        .fold(Targets::new().with_default(level), |t, target| {
            t.with_target(*target, sdk_level.min(level))
        })
}

/// Installs the global subscriber.
///
/// stderr is the job log: short human lines ([`HumanFormat`]) for `text`, or JSON lines
/// for `json`. With `file`, the structured form (timestamps, fields; or JSON) is appended
/// there (created 0600), and stderr keeps the human lines.
pub(crate) fn init(
    level: LevelFilter,
    sdk_level: LevelFilter,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<()> {
    let filter = targets(level, sdk_level);
    let human = |format: LogFormat| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Json => layer.json().with_filter(filter.clone()).boxed(),
            LogFormat::Text => layer
                .event_format(HumanFormat)
                .with_filter(filter.clone())
                .boxed(),
        }
    };
    let structured = match file {
        None => None,
        Some(path) => {
            // Not followed through a link, and only a regular file of this user.
            let f = crate::shared_files::open_append(path, 0o600, "log file").map_err(|e| {
                if e.hint().is_some() {
                    e
                } else {
                    e.with_hint("check [LogFile] / --log-file and the directory's permissions")
                }
            })?;
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(Mutex::new(f));
            Some(match format {
                LogFormat::Json => layer.json().with_filter(filter.clone()).boxed(),
                LogFormat::Text => layer.with_filter(filter.clone()).boxed(),
            })
        }
    };
    // With a log file, the job log stays human whatever the file's format.
    let stderr = human(if structured.is_some() {
        LogFormat::Text
    } else {
        format
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(structured)
        .try_init()
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("cannot set up logging: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_precedence() {
        assert_eq!(
            level(true, Some("error"), Some("warn")).unwrap(),
            LevelFilter::DEBUG
        );
        assert_eq!(
            level(false, Some("error"), Some("warn")).unwrap(),
            LevelFilter::ERROR
        );
        assert_eq!(
            level(false, None, Some("warning")).unwrap(),
            LevelFilter::WARN
        );
        assert_eq!(level(false, None, None).unwrap(), LevelFilter::INFO);
        assert!(
            level(false, Some("loud"), None)
                .unwrap_err()
                .message()
                .contains("\"loud\"")
        );
    }

    #[test]
    fn sdk_wire_logs_stay_out_unless_asked_for() {
        let t = targets(LevelFilter::DEBUG, LevelFilter::WARN);
        assert!(t.would_enable("fargate_core::driver", &tracing::Level::DEBUG));
        assert!(!t.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
        assert!(!t.would_enable("hyper_util::client", &tracing::Level::INFO));
        assert!(t.would_enable("aws_sdk_ecs", &tracing::Level::WARN));
        let asked = targets(LevelFilter::DEBUG, LevelFilter::TRACE);
        assert!(asked.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
    }

    #[test]
    fn format_precedence() {
        assert_eq!(format(None, LogFormat::Json).unwrap(), LogFormat::Json);
        assert_eq!(
            format(Some("TEXT"), LogFormat::Json).unwrap(),
            LogFormat::Text
        );
        assert!(format(Some("xml"), LogFormat::Text).is_err());
    }
}
