//! Untrusted text made safe for one line of a log, a terminal or a serial console: what a
//! relay, a client or a certificate sends (machine ids, URLs, error codes, hostnames) could
//! otherwise forge a line ("signature verified"), move the cursor, recolour the screen or
//! reorder text. One rule for every part: the server's log and the CLI (`attest_api::escape`)
//! and the firmware's console. No allocation (a `Display` wrapper), so the firmware uses it.

use core::fmt;

/// Whether `c` is written as it is: not a control character (C0, DEL, C1: newlines, escape
/// sequences), not a line or paragraph separator, not a bidirectional override or isolate.
pub fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Displays its text with every character that is not [`printable`] written as a Rust
/// escape (`\n`, `\u{1b}`). Idempotent: escaping twice gives the same text.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if printable(c) {
                fmt::Write::write_char(f, c)?;
            } else {
                for e in c.escape_default() {
                    fmt::Write::write_char(f, e)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::Escaped;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        let e = |s: &str| format!("{}", Escaped(s));
        assert_eq!(e("plain id-1 héllo"), "plain id-1 héllo");
        let once = e("x\nitl-firmware: attested (signature verified)\u{1b}[2J\u{202e}txt");
        assert_eq!(
            once,
            "x\\nitl-firmware: attested (signature verified)\\u{1b}[2J\\u{202e}txt"
        );
        assert_eq!(e(&once), once, "idempotent");
        assert_eq!(e("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
    }
}
