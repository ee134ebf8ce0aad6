//! What an audit entry records: one closed list, so the server's log, the CLI (`attestation
//! audit actions`) and the README name the same actions. Stored as its text
//! (`AuditEntry::action`), which older entries already carry; the chain hashes that text.

use std::fmt;
use std::str::FromStr;

/// Every action the audit log records (what each means: [`AuditAction::description`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    Register,
    SelfRegister,
    ReRegister,
    FirstAttest,
    Attest,
    AttestFailed,
    AkRotated,
    Stale,
    ApproveVote,
    Approve,
    Reject,
    Lock,
    Unlock,
    Revoke,
    WipeConfirmed,
    Delete,
    PcrBaselineReset,
    ConfigConsumed,
    ConfigRefetch,
    OfflineBundle,
    Enroll,
    EnrollFailed,
    Import,
    Backup,
    KeyRotated,
}

impl AuditAction {
    /// Every action, in the order the README lists them.
    pub const ALL: [AuditAction; 25] = [
        AuditAction::Register,
        AuditAction::SelfRegister,
        AuditAction::ReRegister,
        AuditAction::FirstAttest,
        AuditAction::Attest,
        AuditAction::AttestFailed,
        AuditAction::AkRotated,
        AuditAction::Stale,
        AuditAction::ApproveVote,
        AuditAction::Approve,
        AuditAction::Reject,
        AuditAction::Lock,
        AuditAction::Unlock,
        AuditAction::Revoke,
        AuditAction::WipeConfirmed,
        AuditAction::Delete,
        AuditAction::PcrBaselineReset,
        AuditAction::ConfigConsumed,
        AuditAction::ConfigRefetch,
        AuditAction::OfflineBundle,
        AuditAction::Enroll,
        AuditAction::EnrollFailed,
        AuditAction::Import,
        AuditAction::Backup,
        AuditAction::KeyRotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Register => "register",
            AuditAction::SelfRegister => "self-register",
            AuditAction::ReRegister => "re-register",
            AuditAction::FirstAttest => "first-attest",
            AuditAction::Attest => "attest",
            AuditAction::AttestFailed => "attest-failed",
            AuditAction::AkRotated => "ak-rotated",
            AuditAction::Stale => "stale",
            AuditAction::ApproveVote => "approve-vote",
            AuditAction::Approve => "approve",
            AuditAction::Reject => "reject",
            AuditAction::Lock => "lock",
            AuditAction::Unlock => "unlock",
            AuditAction::Revoke => "revoke",
            AuditAction::WipeConfirmed => "wipe-confirmed",
            AuditAction::Delete => "delete",
            AuditAction::PcrBaselineReset => "pcr-baseline-reset",
            AuditAction::ConfigConsumed => "config-consumed",
            AuditAction::ConfigRefetch => "config-refetch",
            AuditAction::OfflineBundle => "offline-bundle",
            AuditAction::Enroll => "enroll",
            AuditAction::EnrollFailed => "enroll-failed",
            AuditAction::Import => "import",
            AuditAction::Backup => "backup",
            AuditAction::KeyRotated => "key-rotated",
        }
    }
}

impl AuditAction {
    /// What it records, in a sentence.
    pub fn description(self) -> &'static str {
        match self {
            AuditAction::Register => "Pre-registration of a new EK (`POST /register`).",
            AuditAction::SelfRegister => {
                "Zero-touch registration of a new EK (`POST /self-register`)."
            }
            AuditAction::ReRegister => {
                "(before this release) a known EK registered again; now logged, not audited."
            }
            AuditAction::FirstAttest => {
                "(before this release) an unknown EK's first attestation made a pending machine."
            }
            AuditAction::Attest => "An attestation that changed something or carried an action.",
            AuditAction::AttestFailed => "A verified attestation refused by the PCR policy.",
            AuditAction::AkRotated => {
                "A machine's AK replaced by a new one its EK activated (reinstall or reset)."
            }
            AuditAction::Stale => {
                "An attested machine silent for longer than interval × liveness factor."
            }
            AuditAction::ApproveVote => "One operator's dual-control vote, short of the quorum.",
            AuditAction::Approve => "An operator's approval took effect (role, hostname, address).",
            AuditAction::Reject => "A pending machine rejected.",
            AuditAction::Lock => "A machine locked: its next contact is told to lock.",
            AuditAction::Unlock => "A locked machine unlocked.",
            AuditAction::Revoke => "A machine revoked (with or without a wipe).",
            AuditAction::WipeConfirmed => {
                "A revoked machine's quote-bound report that its wipe ran: no longer pending."
            }
            AuditAction::Delete => "A revoked or rejected record deleted (its entries stay).",
            AuditAction::PcrBaselineReset => "An operator forgot a machine's PCR baseline.",
            AuditAction::ConfigConsumed => {
                "A config fetched: the full one by a single-use URL, or a token's first use."
            }
            AuditAction::ConfigRefetch => {
                "A long-lived config token used again (earlier releases; now counted and logged, \
                 not written)."
            }
            AuditAction::OfflineBundle => {
                "An offline bundle (and its enrollment certificate) issued."
            }
            AuditAction::Enroll => "An enrollment certificate proven over a server nonce.",
            AuditAction::EnrollFailed => {
                "An enrollment whose proof verified, refused by the machine's state."
            }
            AuditAction::Import => "A TPM receipt imported by an operator.",
            AuditAction::Backup => "A live backup of the registry taken.",
            AuditAction::KeyRotated => {
                "The response key, the activation key or the Enrollment CA replaced on purpose \
                 (`attestation-server rotate`); the old one kept beside it."
            }
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(s: &str) -> Result<AuditAction, String> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn every_action_reads_back_from_its_text() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(a));
        }
        let mut texts: Vec<_> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), AuditAction::ALL.len());
    }

    #[test]
    fn the_readme_lists_every_action_and_no_other() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("Audit actions (").expect("the README's list");
        let list = &readme[start..start + readme[start..].find("\n\n").unwrap()];
        // The names follow the parenthesis that says where the list comes from.
        let list = &list[list.find("): ").expect("the list after its source")..];
        let named: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        let all: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(named, all);
    }
}
