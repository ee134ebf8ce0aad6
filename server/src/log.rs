//! Log lines on stderr: `<RFC 3339 time> <LEVEL> <message>`, one event per line, with the
//! seed's messages ("New machine registered: id=... role=... ek=..."). Changes are logged by
//! the store only after their transaction committed, so the log never reports a change that
//! did not happen. Secrets (tokens, keys) are never passed here.

use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::wire::Timestamp;

fn line(level: &str, message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("{} {level} {message}", Timestamp(now));
}

pub fn info(message: &str) {
    line("INFO", message);
}

pub fn warn(message: &str) {
    line("WARN", message);
}
