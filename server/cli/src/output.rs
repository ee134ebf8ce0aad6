//! Human output: aligned tables, times relative to now, colour only on a terminal (and never
//! with `NO_COLOR`). `--output json` bypasses all of it and prints the server's JSON.

use std::fmt::Display;
use std::io::IsTerminal;

use attest_api::{Status, Timestamp};
use serde_json::Value;

use crate::session::now;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A cell: its text and, on a terminal, an ANSI colour.
pub struct Cell {
    text: String,
    colour: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, colour: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_owned())
    }
}

/// A machine status, coloured by how much attention it needs.
pub fn status_cell(status: Status, stale: bool) -> Cell {
    let colour = match status {
        Status::Attested if stale => "33",
        Status::Attested => "32",
        Status::Registered => "36",
        Status::PendingApproval => "33",
        Status::Locked | Status::Revoked | Status::Rejected => "31",
    };
    let text = if stale {
        format!("{status} (stale)")
    } else {
        status.to_string()
    };
    Cell {
        text,
        colour: Some(colour),
    }
}

/// Prints rows under a header, columns padded to their widest cell (in characters).
pub fn table(header: &[&str], rows: Vec<Vec<Cell>>) {
    let colour = colour_enabled();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    let line = |cells: Vec<(String, Option<&str>)>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (text, code)) in cells.into_iter().enumerate() {
            let pad = if i == last {
                0
            } else {
                widths[i] - text.chars().count() + 2
            };
            match code {
                Some(code) if colour => out.push_str(&format!("\x1b[{code}m{text}\x1b[0m")),
                _ => out.push_str(&text),
            }
            out.push_str(&" ".repeat(pad));
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| (h.to_string(), Some("1"))).collect());
    for row in rows {
        line(row.into_iter().map(|c| (c.text, c.colour)).collect());
    }
}

/// `key  value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:width$}  {v}");
    }
}

/// "3m ago", "in 2h", "just now"; `-` for none.
pub fn relative(time: Option<Timestamp>) -> String {
    match time {
        Some(t) => relative_secs(t.0, now()),
        None => "-".into(),
    }
}

pub fn relative_secs(then: u64, now: u64) -> String {
    let (delta, future) = if then > now {
        (then - now, true)
    } else {
        (now - then, false)
    };
    if delta < 5 {
        return "just now".into();
    }
    let amount = match delta {
        d if d < 90 => format!("{d}s"),
        d if d < 90 * 60 => format!("{}m", d / 60),
        d if d < 36 * 3600 => format!("{}h", d / 3600),
        d => format!("{}d", d / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A field as text, or `-` when it is absent or empty.
/// A value for a person's terminal: `-` when absent, and escaped (`attest_api::escape`):
/// what the server shows comes partly from machines and other operators, and none of it may
/// drive the terminal.
pub fn text(v: Option<impl Display>) -> String {
    match v.map(|v| v.to_string()) {
        Some(s) if !s.is_empty() => attest_api::escape(&s).into_owned(),
        _ => "-".into(),
    }
}

/// JSON for `--output json`: the value, pretty, and nothing else on stdout.
pub fn json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(relative_secs(100, 102), "just now");
        assert_eq!(relative_secs(100, 160), "60s ago");
        assert_eq!(relative_secs(0, 600), "10m ago");
        assert_eq!(relative_secs(0, 7200), "2h ago");
        assert_eq!(relative_secs(0, 3 * 86_400), "3d ago");
        assert_eq!(relative_secs(400, 100), "in 5m");
        assert_eq!(relative(None), "-");
        assert_eq!(relative(Some(Timestamp(now() - 120))), "2m ago");
    }

    #[test]
    fn absent_and_empty_fields_are_a_dash() {
        assert_eq!(text(None::<&str>), "-");
        assert_eq!(text(Some("")), "-");
        assert_eq!(text(Some("edge-1")), "edge-1");
        assert_eq!(text(Some(7u64)), "7");
        assert_eq!(text(Some(attest_api::Role::WorkerApp)), "worker-app");
    }
}
