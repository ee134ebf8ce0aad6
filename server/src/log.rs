//! Log lines on stderr, through `tracing` (DESIGN.md §10), one event per line, with the
//! seed's messages ("New machine registered: id=... role=... ek=...").
//!
//! - seed (the default, `ITL_LOG_FORMAT=seed`): the service we replace's
//!   `<RFC 3339 UTC time> <LEVEL> <logger> — <message>`, its level names (`WARNING`) and
//!   logger `itl.attestation`, so that its operators' greps and alerts keep working;
//! - text (`ITL_LOG_FORMAT=text`): `<RFC 3339 UTC time> <LEVEL> <message>`;
//! - JSON (`ITL_LOG_FORMAT=json`): one object per line with `timestamp`, `level`, `target`
//!   and `message`.
//!
//! `RUST_LOG` filters (tracing's `EnvFilter` syntax; default `info`). Changes are logged by
//! the store only after their transaction committed, so the log never reports a change that
//! did not happen. Secrets (tokens, keys) are never passed here. Messages carry strings from
//! clients (ids, reasons, hostnames): each is escaped (`escape`) so that none can forge a
//! line or drive a terminal; the text format escapes every event it writes, whichever crate
//! it comes from.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::wire::Timestamp;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the server's own events (`RUST_LOG=attest_server=warn`).
pub const TARGET: &str = "attest_server";

/// A level, for lines written later (after a commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
}

/// `message` at `level`.
pub fn at(level: Level, message: &str) {
    match level {
        Level::Info => info(message),
        Level::Warning => warn(message),
    }
}

pub fn info(message: &str) {
    tracing::info!(target: TARGET, "{}", escape(message));
}

pub fn debug(message: &str) {
    tracing::debug!(target: TARGET, "{}", escape(message));
}

pub fn warn(message: &str) {
    tracing::warn!(target: TARGET, "{}", escape(message));
}

pub fn error(message: &str) {
    tracing::error!(target: TARGET, "{}", escape(message));
}

/// How log lines are written (`ITL_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Seed,
    Text,
    Json,
}

/// The logger name the seed format gives the server's own lines.
pub const SEED_LOGGER: &str = "itl.attestation";

/// A logging variable with a value that cannot be used.
#[derive(Debug)]
pub struct LogConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for LogConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for LogConfigError {}

/// The format named by `ITL_LOG_FORMAT` (unset or empty: text).
pub fn format_from(value: Option<&str>) -> Result<Format, LogConfigError> {
    match value.map(str::trim) {
        None | Some("" | "seed") => Ok(Format::Seed),
        Some("text") => Ok(Format::Text),
        Some("json") => Ok(Format::Json),
        Some(other) => Err(LogConfigError {
            variable: "ITL_LOG_FORMAT",
            message: format!("{:?} is not \"seed\", \"text\" or \"json\"", escape(other)),
        }),
    }
}

/// The filter `RUST_LOG` asks for (unset or empty: `info`).
pub fn filter_from(value: Option<&str>) -> Result<EnvFilter, LogConfigError> {
    let directives = value.map(str::trim).filter(|v| !v.is_empty());
    EnvFilter::builder()
        .parse(directives.unwrap_or("info"))
        .map_err(|e| LogConfigError {
            variable: "RUST_LOG",
            message: format!("{e}"),
        })
}

/// Installs the process's logger from `RUST_LOG` and `ITL_LOG_FORMAT`.
pub fn init_from_env() -> Result<(), LogConfigError> {
    let var = |name: &str| std::env::var(name).ok();
    let format = format_from(var("ITL_LOG_FORMAT").as_deref())?;
    let filter = filter_from(var("RUST_LOG").as_deref())?;
    init(format, filter);
    Ok(())
}

/// Installs the process's logger (once; later calls change nothing).
pub fn init(format: Format, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        Format::Seed => builder.event_format(Line { seed: true }).try_init(),
        Format::Text => builder.event_format(Line { seed: false }).try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .try_init(),
    };
    // Already installed (a test that starts twice): the first one stays.
    drop(installed);
}

/// One line per event. The seed's layout (`seed: true`): `<RFC 3339 UTC time> <LEVEL>
/// <logger> — <message>` with Python's level names, the logger [`SEED_LOGGER`] for the
/// server's own lines and the crate's target for others'. The text layout: `<RFC 3339 UTC
/// time> <LEVEL> <message>`, other crates' events with their target before the message.
/// Fields other than the message follow it as `name=value`.
struct Line {
    seed: bool,
}

impl<S, N> FormatEvent<S, N> for Line
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let meta = event.metadata();
        let mut text = Fields::default();
        event.record(&mut text);
        let message = escape(&text.0);
        if !self.seed {
            write!(writer, "{} {} ", Timestamp(now), meta.level())?;
            if meta.target() != TARGET {
                write!(writer, "{}: ", escape(meta.target()))?;
            }
            return writeln!(writer, "{message}");
        }
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        let logger = match meta.target() {
            TARGET => std::borrow::Cow::Borrowed(SEED_LOGGER),
            other => escape(other),
        };
        writeln!(
            writer,
            "{} {level} {logger} \u{2014} {message}",
            Timestamp(now)
        )
    }
}

/// An event's fields as text: the message, then `name=value` for the others.
#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            let _ = write!(self.0, "{sep}{value:?}");
        } else {
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Escaping of untrusted strings, shared with the CLI (`attest_api::escape`).
pub use attest_api::escape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain id-1"), "plain id-1");
        let once = escape("x\n2026-01-01 INFO forged\u{1b}[2J");
        assert_eq!(once, "x\\n2026-01-01 INFO forged\\u{1b}[2J");
        assert_eq!(escape(&once), once, "idempotent");
    }

    #[test]
    fn formats_and_filters_are_checked() {
        assert_eq!(format_from(None).unwrap(), Format::Seed);
        assert_eq!(format_from(Some("seed")).unwrap(), Format::Seed);
        assert_eq!(format_from(Some("text")).unwrap(), Format::Text);
        assert_eq!(format_from(Some("json")).unwrap(), Format::Json);
        let e = format_from(Some("yaml")).unwrap_err();
        assert_eq!(e.variable, "ITL_LOG_FORMAT");
        assert!(e.to_string().contains("yaml"), "{e}");
        assert!(filter_from(None).is_ok());
        assert!(filter_from(Some("attest_server=debug,warn")).is_ok());
        assert_eq!(
            filter_from(Some("attest_server=loud"))
                .unwrap_err()
                .variable,
            "RUST_LOG"
        );
    }
}
