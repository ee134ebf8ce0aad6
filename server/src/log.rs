//! Log lines on stderr: `<RFC 3339 time> <LEVEL> <message>`, one event per line, with the
//! seed's messages ("New machine registered: id=... role=... ek=..."). Changes are logged by
//! the store only after their transaction committed, so the log never reports a change that
//! did not happen. Secrets (tokens, keys) are never passed here. Messages carry strings
//! from clients (ids, reasons, hostnames): each line is escaped (`escape`) so that none can
//! forge a line or drive a terminal.

use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::wire::Timestamp;

fn line(level: &str, message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("{} {level} {}", Timestamp(now), escape(message));
}

pub fn info(message: &str) {
    line("INFO", message);
}

pub fn warn(message: &str) {
    line("WARN", message);
}

/// An untrusted string made safe for one log line or a terminal: control characters
/// (newlines, escape sequences) and other non-printing characters are written as Rust
/// escapes (`\n`, `\u{1b}`), so a client cannot forge lines or drive the terminal.
pub fn escape(untrusted: &str) -> std::borrow::Cow<'_, str> {
    let clean = |c: char| !c.is_control() && c != '\u{2028}' && c != '\u{2029}';
    if untrusted.chars().all(clean) {
        return untrusted.into();
    }
    let mut out = String::with_capacity(untrusted.len() + 8);
    for c in untrusted.chars() {
        if clean(c) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::escape("plain id-1"), "plain id-1");
        assert_eq!(
            super::escape("x\n2026-01-01 INFO forged\u{1b}[2J"),
            "x\\n2026-01-01 INFO forged\\u{1b}[2J"
        );
    }
}
