//! Strings from clients (machine ids, reasons, hostnames, certificate names, hardware
//! fields) made safe for one line of a log or a terminal. The server's log and the CLI's
//! human output both go through [`escape`], so neither can be made to forge a line, move the
//! cursor, recolour the screen or reorder text.

use std::borrow::Cow;

/// Whether `c` is written as it is: not a control character (C0, DEL, C1: newlines, escape
/// sequences), not a line or paragraph separator, not a bidirectional override or isolate.
fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `untrusted` with every other character written as a Rust escape (`\n`, `\u{1b}`).
/// Idempotent: escaping twice gives the same text.
pub fn escape(untrusted: &str) -> Cow<'_, str> {
    if untrusted.chars().all(printable) {
        return untrusted.into();
    }
    let mut out = String::with_capacity(untrusted.len() + 8);
    for c in untrusted.chars() {
        if printable(c) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escape("plain id-1 héllo"), "plain id-1 héllo");
        let once = escape("x\n2026-01-01 INFO forged\u{1b}[2J\u{202e}txt.exe");
        assert_eq!(once, "x\\n2026-01-01 INFO forged\\u{1b}[2J\\u{202e}txt.exe");
        assert_eq!(escape(&once), once, "idempotent");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
    }
}
