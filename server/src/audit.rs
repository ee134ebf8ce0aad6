//! The audit chain (DESIGN.md §6): append-only, hash-linked, written in the same transaction
//! as the change it records.
//!
//! `entry_hash = SHA-384(prev_hash ‖ canonical encoding)`, where the canonical encoding is the
//! postcard encoding of every field but the two hashes, in declaration order. The genesis
//! `prev_hash` is 48 zero bytes (96 zeros in hex). Verification recomputes the chain and names
//! the first entry whose hash, link or sequence number is wrong.

use attest_common::wire::Hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

pub const GENESIS: [u8; 48] = [0; 48];

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Who: an operator identity, `SYSTEM` for break-glass, `agent` for machines.
    pub operator_cn: String,
    pub action: String,
    pub machine_id: Option<String>,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub detail: String,
    pub source_ip: Option<String>,
    pub prev_hash: Hex<48>,
    pub entry_hash: Hex<48>,
}

/// The fields an entry is made of, before hashing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEntry {
    pub operator_cn: String,
    pub action: String,
    pub machine_id: Option<String>,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub detail: String,
    pub source_ip: Option<String>,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    timestamp: u64,
    operator_cn: &'a str,
    action: &'a str,
    machine_id: &'a Option<String>,
    prev_state: &'a Option<String>,
    new_state: &'a Option<String>,
    detail: &'a str,
    source_ip: &'a Option<String>,
}

impl AuditEntry {
    /// The hash this entry must have, given its fields and `prev_hash`.
    pub fn compute_hash(&self) -> [u8; 48] {
        let canonical = Canonical {
            seq: self.seq,
            timestamp: self.timestamp,
            operator_cn: &self.operator_cn,
            action: &self.action,
            machine_id: &self.machine_id,
            prev_state: &self.prev_state,
            new_state: &self.new_state,
            detail: &self.detail,
            source_ip: &self.source_ip,
        };
        let body = postcard::to_allocvec(&canonical).unwrap_or_default();
        let mut h = Sha384::new();
        h.update(self.prev_hash.0);
        h.update(&body);
        h.finalize().into()
    }

    /// Seals a new entry after `prev` (`None`: the first entry).
    pub fn seal(new: NewEntry, seq: u64, timestamp: u64, prev_hash: [u8; 48]) -> AuditEntry {
        let mut entry = AuditEntry {
            seq,
            timestamp,
            operator_cn: new.operator_cn,
            action: new.action,
            machine_id: new.machine_id,
            prev_state: new.prev_state,
            new_state: new.new_state,
            detail: new.detail,
            source_ip: new.source_ip,
            prev_hash: Hex(prev_hash),
            entry_hash: Hex([0; 48]),
        };
        entry.entry_hash = Hex(entry.compute_hash());
        entry
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<AuditEntry> {
        match bytes.split_first() {
            Some((&1, body)) => postcard::from_bytes(body).ok(),
            _ => None,
        }
    }
}

/// The result of recomputing the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub valid: bool,
    pub entries: u64,
    /// Hex of the last entry's hash (the genesis value for an empty log).
    pub root_hash: String,
    pub first_invalid_id: Option<u64>,
    pub error: Option<String>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies entries given in seq order (`None` for an entry that no longer decodes).
pub fn verify(entries: impl IntoIterator<Item = (u64, Option<AuditEntry>)>) -> Verification {
    let mut prev = GENESIS;
    let mut count = 0u64;
    for (expected_seq, (key, entry)) in (1u64..).zip(entries) {
        count = expected_seq;
        let fail = |error: String| Verification {
            valid: false,
            entries: count,
            root_hash: hex(&prev),
            first_invalid_id: Some(key),
            error: Some(error),
        };
        let Some(entry) = entry else {
            return fail(format!("entry {key} does not decode"));
        };
        if key != expected_seq || entry.seq != key {
            return fail(format!("entry {expected_seq} is missing (found {key})"));
        }
        if entry.prev_hash.0 != prev {
            return fail(format!("entry {key} does not link to entry {}", key - 1));
        }
        if entry.compute_hash() != entry.entry_hash.0 {
            return fail(format!("entry {key} was modified (hash mismatch)"));
        }
        prev = entry.entry_hash.0;
    }
    Verification {
        valid: true,
        entries: count,
        root_hash: hex(&prev),
        first_invalid_id: None,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let e = AuditEntry::seal(
                    NewEntry {
                        operator_cn: "alice".into(),
                        action: "approve".into(),
                        detail: format!("step {seq}"),
                        ..NewEntry::default()
                    },
                    seq,
                    1000 + seq,
                    prev,
                );
                prev = e.entry_hash.0;
                e
            })
            .collect()
    }

    fn check(entries: &[AuditEntry]) -> Verification {
        verify(entries.iter().map(|e| (e.seq, Some(e.clone()))))
    }

    #[test]
    fn detects_edits_deletions_and_reordering() {
        let good = chain(5);
        let v = check(&good);
        assert!(v.valid);
        assert_eq!(v.entries, 5);
        assert_eq!(v.root_hash, hex(&good[4].entry_hash.0));
        assert_eq!(check(&[]).root_hash, "0".repeat(96));

        let mut edited = good.clone();
        edited[2].detail = "forged".into();
        assert_eq!(check(&edited).first_invalid_id, Some(3));

        let mut deleted = good.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted).first_invalid_id, Some(3));

        // Re-sealing an edited entry breaks the next link.
        let mut resealed = good.clone();
        resealed[2].detail = "forged".into();
        resealed[2].entry_hash = Hex(resealed[2].compute_hash());
        assert_eq!(check(&resealed).first_invalid_id, Some(4));

        let bytes = good[0].encode();
        assert_eq!(AuditEntry::decode(&bytes), Some(good[0].clone()));
    }
}
