//! The audit chain (DESIGN.md §6): append-only, hash-linked, written in the same transaction
//! as the change it records.
//!
//! `entry_hash = SHA-384(prev_hash ‖ canonical encoding)`, where the canonical encoding is the
//! postcard encoding of every field but the two hashes, in declaration order. The genesis
//! `prev_hash` is 48 zero bytes (96 zeros in hex). Verification recomputes the chain and names
//! the first entry whose hash, link or sequence number is wrong.
//!
//! The chain alone cannot tell a log that was rewritten and re-chained, or cut short, from an
//! honest one. So the server signs checkpoints ([`Checkpoint`]: seq, entry hash, time, signed
//! with its response key) of the chain head, and verification also checks every checkpoint:
//! its signature, that the entry at its seq still has the hash it signed, that checkpoints
//! are dated in seq order, and that the log does not end before the latest one.

use attest_common::nonce::VerifyingKey;
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

/// A signed statement that entry `seq` of the chain had hash `entry_hash` (DESIGN.md §6):
/// the API's type, so that the server, the CLI and the stored table agree on the one signed
/// message (`AuditCheckpoint::verify`).
pub use attest_api::AuditCheckpoint as Checkpoint;

/// A checkpoint as stored: a version byte, then postcard (the hash and the signature as raw
/// bytes).
pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend(postcard::to_allocvec(c).unwrap_or_default());
    out
}

pub fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    match bytes.split_first() {
        Some((&1, body)) => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

/// The result of recomputing the chain and checking it against the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub valid: bool,
    pub entries: u64,
    /// Hex of the last entry's hash (the genesis value for an empty log).
    pub root_hash: String,
    pub first_invalid_id: Option<u64>,
    pub error: Option<String>,
    /// Checkpoints found good (up to the first failure).
    pub checkpoints: u64,
    /// The newest good checkpoint when the log is valid.
    pub latest_checkpoint: Option<Checkpoint>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies entries given in seq order (`None` for an entry that no longer decodes), without
/// checkpoints.
pub fn verify(entries: impl IntoIterator<Item = (u64, Option<AuditEntry>)>) -> Verification {
    verify_with_checkpoints(entries, std::iter::empty(), None)
}

/// A short form of a hash for messages.
fn short(hash: &[u8; 48]) -> String {
    format!("{}…", hex(&hash[..8]))
}

/// Verifies entries given in seq order against checkpoints given in seq order (`None` for
/// one that no longer decodes), both streamed (the log can outgrow memory). Signatures are
/// checked when `key` is given (the response key's public half); without it only the rest.
///
/// Checked, in seq order: the chain (as [`verify`]); for each checkpoint, its signature,
/// that it is not dated before the checkpoint before it, and that the entry at its seq
/// exists and has exactly its entry hash; and that the log does not end before the last
/// checkpoint. A rewritten entry re-chained offline keeps the chain valid but changes every
/// later hash: the first checkpoint after it no longer matches, and the rewrite lies between
/// the last checkpoint that still matches and that one (`first_invalid_id` is the first entry
/// of that range).
pub fn verify_with_checkpoints(
    entries: impl IntoIterator<Item = (u64, Option<AuditEntry>)>,
    checkpoints: impl IntoIterator<Item = (u64, Option<Checkpoint>)>,
    key: Option<&VerifyingKey>,
) -> Verification {
    let mut checkpoints = checkpoints.into_iter().peekable();
    let mut prev = GENESIS;
    let mut count = 0u64;
    let mut good = 0u64;
    let mut latest: Option<Checkpoint> = None;
    let fail = |entries: u64, root: &[u8; 48], good: u64, id: u64, error: String| Verification {
        valid: false,
        entries,
        root_hash: hex(root),
        first_invalid_id: Some(id),
        error: Some(error),
        checkpoints: good,
        latest_checkpoint: None,
    };
    for (expected_seq, (seq, entry)) in (1u64..).zip(entries) {
        count = expected_seq;
        let Some(entry) = entry else {
            return fail(
                count,
                &prev,
                good,
                seq,
                format!("entry {seq} does not decode"),
            );
        };
        if seq != expected_seq || entry.seq != seq {
            return fail(
                count,
                &prev,
                good,
                seq,
                format!("entry {expected_seq} is missing (found {seq})"),
            );
        }
        if entry.prev_hash.0 != prev {
            return fail(
                count,
                &prev,
                good,
                seq,
                format!("entry {seq} does not link to entry {}", seq - 1),
            );
        }
        if entry.compute_hash() != entry.entry_hash.0 {
            return fail(
                count,
                &prev,
                good,
                seq,
                format!("entry {seq} was modified (hash mismatch)"),
            );
        }
        while let Some((at, c)) = checkpoints.next_if(|(at, _)| *at <= seq) {
            let c = match check_checkpoint(at, c, key, latest.as_ref()) {
                Ok(c) => c,
                Err(error) => return fail(count, &prev, good, at.max(1), error),
            };
            if at != seq {
                return fail(
                    count,
                    &prev,
                    good,
                    seq,
                    format!("checkpoint {at} names no entry"),
                );
            }
            if c.entry_hash != entry.entry_hash {
                let from = latest.as_ref().map_or(1, |l| l.seq + 1);
                let trusted = latest.as_ref().map_or(GENESIS, |l| l.entry_hash.0);
                let range = if from == seq {
                    format!("entry {seq} was rewritten")
                } else {
                    format!("the rewrite is in entries {from} to {seq}")
                };
                return fail(
                    count,
                    &trusted,
                    good,
                    from,
                    format!(
                        "entry {seq} differs from the signed checkpoint at seq {seq} (signed \
                         {}, the log has {}): {range} and the chain after it was recomputed",
                        short(&c.entry_hash.0),
                        short(&entry.entry_hash.0)
                    ),
                );
            }
            good += 1;
            latest = Some(c);
        }
        prev = entry.entry_hash.0;
    }
    // Checkpoints beyond the end: the tail was cut (each is still checked, so that a forged
    // one is named as such).
    let mut beyond = None;
    let mut before = latest.clone();
    for (at, c) in checkpoints {
        match check_checkpoint(at, c, key, before.as_ref()) {
            Ok(c) => {
                beyond = Some(at);
                before = Some(c);
            }
            Err(error) => return fail(count, &prev, good, at.max(1), error),
        }
    }
    if let Some(at) = beyond {
        return fail(
            count,
            &prev,
            good,
            count + 1,
            format!("the log ends at seq {count} but a checkpoint signed seq {at}"),
        );
    }
    Verification {
        valid: true,
        entries: count,
        root_hash: hex(&prev),
        first_invalid_id: None,
        error: None,
        checkpoints: good,
        latest_checkpoint: latest,
    }
}

/// One checkpoint on its own and against the one before it: decodes, is stored under its
/// seq, is signed by `key` (when given), is not dated before `before`.
fn check_checkpoint(
    at: u64,
    c: Option<Checkpoint>,
    key: Option<&VerifyingKey>,
    before: Option<&Checkpoint>,
) -> Result<Checkpoint, String> {
    let c = c.ok_or_else(|| format!("checkpoint {at} does not decode"))?;
    if c.seq != at {
        return Err(format!(
            "checkpoint {at} is stored under the wrong seq ({})",
            c.seq
        ));
    }
    if let Some(key) = key
        && c.verify(key).is_err()
    {
        return Err(format!("checkpoint {at}'s signature does not verify"));
    }
    if let Some(b) = before
        && c.timestamp < b.timestamp
    {
        return Err(format!(
            "checkpoint {at} is dated before checkpoint {} (checkpoint seqs must increase with time)",
            b.seq
        ));
    }
    Ok(c)
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

    fn key(seed: u8) -> p384::ecdsa::SigningKey {
        p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap()
    }

    fn sign(k: &p384::ecdsa::SigningKey, e: &AuditEntry, timestamp: u64) -> Checkpoint {
        let context = Checkpoint::context(e.seq, timestamp);
        Checkpoint {
            seq: e.seq,
            entry_hash: e.entry_hash,
            timestamp,
            signature: attest_common::nonce::sign(k, Checkpoint::DOMAIN, &e.entry_hash.0, &context),
        }
    }

    /// Checkpoints every 5 entries of a chain of `n`, signed by `k`.
    fn every_five(k: &p384::ecdsa::SigningKey, entries: &[AuditEntry]) -> Vec<Checkpoint> {
        entries
            .iter()
            .filter(|e| e.seq % 5 == 0)
            .map(|e| sign(k, e, e.timestamp))
            .collect()
    }

    fn check_all(
        entries: &[AuditEntry],
        checkpoints: &[Checkpoint],
        k: &p384::ecdsa::SigningKey,
    ) -> Verification {
        verify_with_checkpoints(
            entries.iter().map(|e| (e.seq, Some(e.clone()))),
            checkpoints.iter().map(|c| (c.seq, Some(c.clone()))),
            Some(k.verifying_key()),
        )
    }

    /// Entry `at` rewritten, and every later hash and link recomputed: what an attacker with
    /// the file does.
    fn rechained(good: &[AuditEntry], at: usize, detail: &str) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = good.to_vec();
        out[at - 1].detail = detail.into();
        let mut prev = out[at - 2].entry_hash.0;
        for e in &mut out[at - 1..] {
            e.prev_hash = Hex(prev);
            e.entry_hash = Hex(e.compute_hash());
            prev = e.entry_hash.0;
        }
        out
    }

    #[test]
    fn checkpoints_catch_a_rechained_rewrite_a_cut_tail_and_forgeries() {
        let k = key(7);
        let good = chain(23);
        let cps = every_five(&k, &good);
        let v = check_all(&good, &cps, &k);
        assert!(v.valid, "{v:?}");
        assert_eq!((v.entries, v.checkpoints), (23, 4));
        assert_eq!(v.latest_checkpoint, Some(cps[3].clone()));
        assert_eq!(cps[3].seq, 20);

        // Rewritten and re-chained: the chain alone is fine, the checkpoint at 20 is not.
        let forged = rechained(&good, 17, "nothing happened");
        assert!(check(&forged).valid, "the chain alone cannot tell");
        let v = check_all(&forged, &cps, &k);
        assert!(!v.valid);
        assert_eq!(v.first_invalid_id, Some(16));
        assert_eq!(v.checkpoints, 3);
        assert_eq!(v.root_hash, hex(&good[14].entry_hash.0));
        let error = v.error.unwrap();
        assert!(
            error.starts_with("entry 20 differs from the signed checkpoint at seq 20"),
            "{error}"
        );
        assert!(
            error.contains("the rewrite is in entries 16 to 20"),
            "{error}"
        );
        // A rewrite of the checkpointed entry itself is named exactly.
        let v = check_all(&rechained(&good, 20, "x"), &cps, &k);
        assert_eq!(v.first_invalid_id, Some(16));
        let v = check_all(&rechained(&good, 16, "x"), &cps, &k);
        assert_eq!(v.first_invalid_id, Some(16));
        let v = check_all(&rechained(&good, 5, "x"), &cps, &k);
        assert_eq!(v.first_invalid_id, Some(1));
        // After the last checkpoint: nothing to tell (the next checkpoint will sign it).
        assert!(check_all(&rechained(&good, 22, "x"), &cps, &k).valid);

        // The tail cut: the log ends before the latest checkpoint.
        let v = check_all(&good[..12], &cps, &k);
        assert!(!v.valid);
        assert_eq!(v.first_invalid_id, Some(13));
        assert_eq!(
            v.error.as_deref(),
            Some("the log ends at seq 12 but a checkpoint signed seq 20")
        );
        let v = check_all(&[], &cps, &k);
        assert_eq!(
            v.error.as_deref(),
            Some("the log ends at seq 0 but a checkpoint signed seq 20")
        );

        // Re-signed with another key.
        let other = key(9);
        let mut resigned = cps.clone();
        resigned[3] = sign(&other, &good[19], good[19].timestamp);
        let v = check_all(&good, &resigned, &k);
        assert_eq!(
            v.error.as_deref(),
            Some("checkpoint 20's signature does not verify")
        );
        assert_eq!(v.first_invalid_id, Some(20));
        // A forged checkpoint beyond the end is named as forged, not as a cut tail.
        let mut beyond = cps.clone();
        let mut far = sign(&other, &good[19], 2000);
        far.seq = 40;
        beyond.push(far);
        let v = check_all(&good, &beyond, &k);
        assert_eq!(
            v.error.as_deref(),
            Some("checkpoint 40's signature does not verify")
        );
        // Without the key, signatures are not checked (the rest is).
        let v = verify_with_checkpoints(
            good.iter().map(|e| (e.seq, Some(e.clone()))),
            resigned.iter().map(|c| (c.seq, Some(c.clone()))),
            None,
        );
        assert!(v.valid);

        // Dated out of order.
        let mut dated = cps.clone();
        dated[2] = sign(&k, &good[14], 5000);
        let v = check_all(&good, &dated, &k);
        assert_eq!(
            v.error.as_deref(),
            Some(
                "checkpoint 20 is dated before checkpoint 15 (checkpoint seqs must increase with time)"
            )
        );
        // One that does not decode, or is stored under another seq.
        let v = verify_with_checkpoints(
            good.iter().map(|e| (e.seq, Some(e.clone()))),
            [(10, None)],
            Some(k.verifying_key()),
        );
        assert_eq!(v.error.as_deref(), Some("checkpoint 10 does not decode"));
        let v = verify_with_checkpoints(
            good.iter().map(|e| (e.seq, Some(e.clone()))),
            [(10, Some(cps[2].clone()))],
            Some(k.verifying_key()),
        );
        assert_eq!(
            v.error.as_deref(),
            Some("checkpoint 10 is stored under the wrong seq (15)")
        );

        let bytes = encode_checkpoint(&cps[0]);
        assert_eq!(decode_checkpoint(&bytes), Some(cps[0].clone()));
        assert_eq!(decode_checkpoint(&bytes[1..]), None);
    }
}
