//! Strings from clients (machine ids, reasons, hostnames, certificate names, hardware
//! fields) made safe for one line of a log or a terminal. The server's log and the CLI's
//! human output both go through [`escape`], so neither can be made to forge a line, move the
//! cursor, recolour the screen or reorder text.

use std::borrow::Cow;

use attest_common::text::{Escaped, printable};

/// `untrusted` with every other character written as a Rust escape (`\n`, `\u{1b}`)
/// (`attest_common::text`, the rule the firmware's console follows too). Idempotent:
/// escaping twice gives the same text.
pub fn escape(untrusted: &str) -> Cow<'_, str> {
    if untrusted.chars().all(printable) {
        return untrusted.into();
    }
    Escaped(untrusted).to_string().into()
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
