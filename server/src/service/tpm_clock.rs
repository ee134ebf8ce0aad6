//! What a quote's TPMS_CLOCK_INFO and firmwareVersion say about the TPM since its last
//! accepted quote (DESIGN.md §3.4). The TPM signs them with every quote:
//! - `resetCount` goes up at each TPM Reset (a reboot) and never down;
//! - `restartCount` goes up at each TPM Restart or Resume (resume from hibernation) and
//!   starts again at 0 after a reset;
//! - `clock` (milliseconds powered) never runs backwards within one reset and restart;
//! - `safe = NO` says the clock may have been reported higher before (a power loss before
//!   it was saved): recorded, shown, not refused (it is the TPM being honest);
//! - `firmwareVersion` changes when the TPM's firmware is updated.
//!
//! Counters going back, or the clock running backwards within one reset, mean the TPM's
//! state was rolled back (a vTPM restored from a snapshot) or the quote is older than one
//! already accepted: a role's policy says whether that refuses the attestation (default)
//! or is only flagged. A firmware change is flagged by default. Everything here is a pure
//! comparison; the attestation path audits what it finds.

use attest_common::tpm::attest::QuoteInfo;

use crate::policy::{OnClock, RolePolicy};
use crate::record::TpmClock;

impl TpmClock {
    /// The clock information of a verified quote.
    pub fn of(info: &QuoteInfo) -> TpmClock {
        TpmClock {
            clock: info.clock_info.clock,
            reset_count: info.clock_info.reset_count,
            restart_count: info.clock_info.restart_count,
            safe: info.clock_info.safe,
            firmware_version: info.firmware_version,
        }
    }
}

/// What changed since the last accepted quote, in the order worth telling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockChange {
    /// resetCount, restartCount or the clock went back: the TPM state was rolled back, or
    /// this quote is older than one already accepted.
    Rollback(String),
    /// The TPM's firmware version changed.
    Firmware(String),
    /// A TPM Reset (a reboot) since the last quote.
    Reboot(String),
    /// A TPM Restart or Resume since the last quote.
    Resume(String),
}

impl ClockChange {
    /// Whether the role's policy refuses an attestation showing this change.
    pub fn refused_by(&self, policy: &RolePolicy) -> bool {
        match self {
            ClockChange::Rollback(_) => policy.on_clock_rollback == OnClock::Refuse,
            ClockChange::Firmware(_) => policy.on_firmware_change == OnClock::Refuse,
            ClockChange::Reboot(_) | ClockChange::Resume(_) => false,
        }
    }

    pub fn describe(&self) -> &str {
        match self {
            ClockChange::Rollback(s)
            | ClockChange::Firmware(s)
            | ClockChange::Reboot(s)
            | ClockChange::Resume(s) => s,
        }
    }
}

/// The changes from `before` (the last accepted quote's, if any) to `now`.
pub fn changes(before: Option<&TpmClock>, now: &TpmClock) -> Vec<ClockChange> {
    let Some(b) = before else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (br, nr) = (b.reset_count, now.reset_count);
    let (bs, ns) = (b.restart_count, now.restart_count);
    if nr < br {
        out.push(ClockChange::Rollback(format!(
            "TPM resetCount went back ({br} → {nr}): its state was rolled back or the quote is old"
        )));
    } else if nr == br && ns < bs {
        out.push(ClockChange::Rollback(format!(
            "TPM restartCount went back ({bs} → {ns}) within one reset"
        )));
    } else if nr == br && ns == bs && now.clock < b.clock {
        out.push(ClockChange::Rollback(format!(
            "TPM clock ran backwards ({} → {} ms) within one reset",
            b.clock, now.clock
        )));
    }
    if now.firmware_version != b.firmware_version {
        out.push(ClockChange::Firmware(format!(
            "TPM firmware changed ({:#018x} → {:#018x})",
            b.firmware_version, now.firmware_version
        )));
    }
    if nr > br {
        out.push(ClockChange::Reboot(format!(
            "rebooted: resetCount {br} → {nr}"
        )));
    } else if nr == br && ns > bs {
        out.push(ClockChange::Resume(format!(
            "resumed: restartCount {bs} → {ns}"
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(reset: u32, restart: u32, clock: u64, fw: u64) -> TpmClock {
        TpmClock {
            clock,
            reset_count: reset,
            restart_count: restart,
            safe: true,
            firmware_version: fw,
        }
    }

    fn kinds(before: TpmClock, now: TpmClock) -> Vec<&'static str> {
        changes(Some(&before), &now)
            .iter()
            .map(|c| match c {
                ClockChange::Rollback(_) => "rollback",
                ClockChange::Firmware(_) => "firmware",
                ClockChange::Reboot(_) => "reboot",
                ClockChange::Resume(_) => "resume",
            })
            .collect()
    }

    #[test]
    fn each_change_is_named() {
        let b = at(5, 2, 1000, 7);
        assert!(
            changes(None, &b).is_empty(),
            "the first quote is the reference"
        );
        assert!(kinds(b, at(5, 2, 1000, 7)).is_empty());
        assert!(kinds(b, at(5, 2, 9000, 7)).is_empty());
        assert_eq!(
            kinds(b, at(6, 0, 10, 7)),
            ["reboot"],
            "a reboot restarts the clock"
        );
        assert_eq!(kinds(b, at(5, 3, 1200, 7)), ["resume"]);
        assert_eq!(kinds(b, at(4, 9, 99_999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(5, 1, 99_999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(5, 2, 999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(6, 0, 10, 8)), ["firmware", "reboot"]);
        assert_eq!(kinds(b, at(1, 0, 10, 8)), ["rollback", "firmware"]);
    }

    #[test]
    fn the_policy_decides_what_refuses() {
        let b = at(5, 2, 1000, 7);
        let default = RolePolicy::default();
        let refused =
            |now: TpmClock, p: &RolePolicy| changes(Some(&b), &now).iter().any(|c| c.refused_by(p));
        assert!(
            refused(at(4, 0, 1, 7), &default),
            "rollback refused by default"
        );
        assert!(
            !refused(at(6, 0, 1, 8), &default),
            "firmware flagged by default"
        );
        assert!(!refused(at(6, 0, 1, 7), &default), "a reboot is no fault");
        let lenient = RolePolicy {
            on_clock_rollback: OnClock::Flag,
            on_firmware_change: OnClock::Refuse,
            ..RolePolicy::default()
        };
        assert!(!refused(at(4, 0, 1, 7), &lenient));
        assert!(refused(at(6, 0, 1, 8), &lenient));
    }
}
