//! What a quote's TPMS_CLOCK_INFO and firmwareVersion say about the TPM since its last
//! accepted quote (DESIGN.md §3.4; TPM 2.0 Part 1 §36, Part 2 TPMS_CLOCK_INFO). The TPM signs
//! them with every quote:
//! - `clock` (milliseconds powered) only advances, across Resets and Restarts too; it is
//!   saved to NV now and then, so after a power loss it may resume from the last saved
//!   value, lower than one already reported, and then the TPM says `safe = NO`. Only
//!   TPM2_Clear sets it (and the counters) back to zero;
//! - `resetCount` goes up at each TPM Reset (a reboot) and never down but by TPM2_Clear;
//! - `restartCount` goes up at each TPM Restart or Resume and starts again at 0 after a
//!   reset;
//! - `firmwareVersion` changes when the TPM's firmware is updated.
//!
//! A clock or a counter going back otherwise means the TPM's state was rolled back (a vTPM
//! restored from a snapshot: Resumes after the restore cannot hide it, the clock is still
//! behind) or the quote is older than one already accepted: a role's policy says whether
//! that refuses the attestation (default) or is only flagged. A TPM2_Clear (counters and
//! clock back near zero, `safe`) is flagged: a reinstalled machine's owner clears its TPM.
//! A firmware change is flagged by default. An operator's `reset-baseline` forgets the
//! reference. The AK must be in the endorsement hierarchy (ours are): for other AKs the TPM
//! obfuscates the counters and firmwareVersion in quotes (Part 3 §18.1). Everything here is
//! a pure comparison; the attestation path audits what it finds.

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
    /// TPM2_Clear: counters and clock back to (near) zero.
    Cleared(String),
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
            ClockChange::Cleared(_) | ClockChange::Reboot(_) | ClockChange::Resume(_) => false,
        }
    }

    pub fn describe(&self) -> &str {
        match self {
            ClockChange::Rollback(s)
            | ClockChange::Cleared(s)
            | ClockChange::Firmware(s)
            | ClockChange::Reboot(s)
            | ClockChange::Resume(s) => s,
        }
    }

    /// Whether it went back.
    pub fn is_rollback(&self) -> bool {
        matches!(self, ClockChange::Rollback(_))
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
    let rebooted = nr > br;
    let cleared = nr < br && nr <= 1 && ns == 0 && now.clock < b.clock && now.safe;
    if cleared {
        out.push(ClockChange::Cleared(format!(
            "TPM cleared (TPM2_Clear): resetCount {br} → {nr}, clock {} → {} ms",
            b.clock, now.clock
        )));
    } else if nr < br {
        out.push(ClockChange::Rollback(format!(
            "TPM resetCount went back ({br} → {nr}): its state was rolled back or the quote is old"
        )));
    } else if nr == br && ns < bs {
        out.push(ClockChange::Rollback(format!(
            "TPM restartCount went back ({bs} → {ns}) within one reset"
        )));
    } else if now.clock < b.clock && (!rebooted || now.safe) {
        // Only a power loss (a reset, and the TPM saying its clock is not safe) may bring
        // the clock back to its last saved value.
        out.push(ClockChange::Rollback(format!(
            "TPM clock went back ({} → {} ms) without a power loss",
            b.clock, now.clock
        )));
    }
    if now.firmware_version != b.firmware_version {
        out.push(ClockChange::Firmware(format!(
            "TPM firmware changed ({:#018x} → {:#018x})",
            b.firmware_version, now.firmware_version
        )));
    }
    if rebooted {
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
                ClockChange::Cleared(_) => "cleared",
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
        assert_eq!(kinds(b, at(6, 0, 1500, 7)), ["reboot"], "the clock goes on");
        assert_eq!(kinds(b, at(5, 3, 1200, 7)), ["resume"]);
        assert_eq!(kinds(b, at(4, 9, 99_999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(5, 1, 99_999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(5, 2, 999, 7)), ["rollback"]);
        assert_eq!(kinds(b, at(6, 0, 1500, 8)), ["firmware", "reboot"]);
        // The clock behind: a rollback, whatever the counters did (a snapshot restored,
        // then resumed or rebooted to push them up) ...
        assert_eq!(kinds(b, at(5, 4, 999, 7)), ["rollback", "resume"]);
        assert_eq!(kinds(b, at(6, 0, 999, 7)), ["rollback", "reboot"]);
        // ... but for a power loss, which the TPM owns up to (safe = NO) ...
        let mut lost = at(6, 0, 900, 7);
        lost.safe = false;
        assert_eq!(kinds(b, lost), ["reboot"]);
        // ... and TPM2_Clear (counters and clock near zero).
        assert_eq!(kinds(b, at(0, 0, 10, 7)), ["cleared"]);
        assert_eq!(kinds(b, at(1, 0, 10, 8)), ["cleared", "firmware"]);
        assert_eq!(kinds(b, at(3, 0, 10, 7)), ["rollback"]);
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
            !refused(at(6, 0, 2000, 8), &default),
            "firmware flagged by default"
        );
        assert!(
            !refused(at(6, 0, 2000, 7), &default),
            "a reboot is no fault"
        );
        assert!(!refused(at(0, 0, 5, 7), &default), "a clear is flagged");
        let lenient = RolePolicy {
            on_clock_rollback: OnClock::Flag,
            on_firmware_change: OnClock::Refuse,
            ..RolePolicy::default()
        };
        assert!(!refused(at(4, 0, 1, 7), &lenient));
        assert!(refused(at(6, 0, 2000, 8), &lenient));
    }
}
