//! The write side of one redb transaction: every read and write the service makes inside
//! a change, and the audit append that links the chain (and, when due, signs a checkpoint of
//! it) in the same transaction.

use ::redb::ReadableTable;

use super::{
    APPROVALS, AUDIT, AUDIT_CHECKPOINTS, BY_EK, BY_EK_KEY, BY_TOKEN, GRANTS, MACHINES, STALE,
    USED_NONCES,
};
use crate::audit::{self, AuditEntry, Checkpoint, NewEntry};
use crate::record::MachineRecord;
use crate::store::{CheckpointSigner, ConfigGrant, RegistryTx, StoreError, Vote};

/// The write side of one redb write transaction.
pub struct RedbTx<'a> {
    pub(super) txn: &'a ::redb::WriteTransaction,
    pub(super) logs: std::cell::RefCell<Vec<(crate::log::Level, String)>>,
    signer: Option<&'a dyn CheckpointSigner>,
}

impl<'a> RedbTx<'a> {
    pub(super) fn new(
        txn: &'a ::redb::WriteTransaction,
        signer: Option<&'a dyn CheckpointSigner>,
    ) -> RedbTx<'a> {
        RedbTx {
            txn,
            logs: Default::default(),
            signer,
        }
    }
}

impl RegistryTx for RedbTx<'_> {
    /// A log line to emit once (and only if) the transaction commits.
    fn log_at(&self, level: crate::log::Level, line: String) {
        self.logs.borrow_mut().push((level, line));
    }

    fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let table = self.txn.open_table(MACHINES)?;
        let found = table.get(id)?;
        Ok(match found {
            Some(v) => Some(MachineRecord::decode(v.value())?),
            None => None,
        })
    }

    fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
        let id = {
            let table = self.txn.open_table(BY_EK)?;
            let found = table.get(fingerprint)?;
            found.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.machine(&id),
            None => Ok(None),
        }
    }

    fn put_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        let before = self.machine(&record.id)?;
        let mut by_token = self.txn.open_table(BY_TOKEN)?;
        if let Some(old) = before.and_then(|b| b.config_token_hash)
            && record.config_token_hash.as_ref() != Some(&old)
        {
            // A new long-lived token replaces the old one: the old one stops working.
            by_token.remove(old.as_str())?;
        }
        if let Some(hash) = &record.config_token_hash {
            by_token.insert(hash.as_str(), record.id.as_str())?;
        }
        self.txn
            .open_table(MACHINES)?
            .insert(record.id.as_str(), record.encode().as_slice())?;
        self.txn
            .open_table(BY_EK)?
            .insert(record.ek_fingerprint.as_str(), record.id.as_str())?;
        // Only a key its TPM has proven (credential activated) names a machine: an unproven
        // registration (anyone can send a public EK certificate) must not hold the key
        // against the machine that really has it.
        if record.ak_activated
            && let Some(key) = record.ek_key_id()
        {
            self.txn
                .open_table(BY_EK_KEY)?
                .insert(key.as_str(), record.id.as_str())?;
        }
        Ok(())
    }

    fn machine_by_ek_key(&self, key_id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let id = {
            let table = self.txn.open_table(BY_EK_KEY)?;
            let found = table.get(key_id)?;
            found.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.machine(&id),
            None => Ok(None),
        }
    }

    /// Stores a record whose indexed fields (EK fingerprint, config token) are unchanged.
    fn update_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(MACHINES)?
            .insert(record.id.as_str(), record.encode().as_slice())?;
        Ok(())
    }

    /// Whether a challenge nonce has been used.
    fn nonce_used(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.txn.open_table(USED_NONCES)?.get(id)?.is_some())
    }

    /// Whether a machine is marked stale.
    fn is_stale(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.txn.open_table(STALE)?.get(id)?.is_some())
    }

    fn delete_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        self.txn.open_table(MACHINES)?.remove(record.id.as_str())?;
        self.txn.open_table(STALE)?.remove(record.id.as_str())?;
        self.txn
            .open_table(BY_EK)?
            .remove(record.ek_fingerprint.as_str())?;
        if let Some(key) = record.ek_key_id() {
            let mut index = self.txn.open_table(BY_EK_KEY)?;
            // Only the entry that names this record: another machine may hold the key.
            let ours = index
                .get(key.as_str())?
                .is_some_and(|v| v.value() == record.id);
            if ours {
                index.remove(key.as_str())?;
            }
        }
        if let Some(hash) = &record.config_token_hash {
            self.txn.open_table(BY_TOKEN)?.remove(hash.as_str())?;
        }
        self.put_votes_under(&record.id, &[])?;
        self.put_votes_under(&approved_key(&record.id), &[])?;
        Ok(())
    }

    /// Records a challenge nonce as used; false when it already was.
    fn use_nonce(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(USED_NONCES)?;
        let was = table.insert(id, now)?.is_some();
        Ok(!was)
    }

    /// Forgets used nonces whose id says they expired before `before` (ids sort by expiry):
    /// an expired nonce is refused for its expiry alone.
    fn purge_nonces(&self, before: u64) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(USED_NONCES)?;
        let bound = format!("{before:016x}");
        let stale: Vec<String> = table
            .range::<&str>(..bound.as_str())?
            .map(|item| item.map(|(k, _)| k.value().to_owned()))
            .collect::<Result<_, _>>()?;
        for id in &stale {
            table.remove(id.as_str())?;
        }
        Ok(stale.len())
    }

    /// Marks a machine stale; false when it already was.
    fn mark_stale(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(STALE)?;
        let was = table.insert(id, now)?.is_some();
        Ok(!was)
    }

    /// Clears a machine's stale mark; true when it had one.
    fn clear_stale(&self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(STALE)?;
        let had = table.remove(id)?.is_some();
        Ok(had)
    }

    fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError> {
        let id = {
            let table = self.txn.open_table(BY_TOKEN)?;
            let found = table.get(hash)?;
            found.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.machine(&id),
            None => Ok(None),
        }
    }

    fn pending_votes(&self, id: &str) -> Result<Vec<Vote>, StoreError> {
        self.votes_under(id)
    }

    fn put_pending_votes(&self, id: &str, votes: &[Vote]) -> Result<(), StoreError> {
        self.put_votes_under(id, votes)
    }

    fn approving_votes(&self, id: &str) -> Result<Vec<Vote>, StoreError> {
        self.votes_under(&approved_key(id))
    }

    fn put_approving_votes(&self, id: &str, votes: &[Vote]) -> Result<(), StoreError> {
        self.put_votes_under(&approved_key(id), votes)
    }

    /// Appends an audit entry, linked to the last one.
    fn put_grant(&self, token_hash: &str, grant: &ConfigGrant) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(grant)
            .map_err(|e| StoreError::new(format!("config grant: {e}")))?;
        self.txn
            .open_table(GRANTS)?
            .insert(token_hash, bytes.as_slice())?;
        Ok(())
    }

    fn take_grant(&self, token_hash: &str) -> Result<Option<ConfigGrant>, StoreError> {
        let mut table = self.txn.open_table(GRANTS)?;
        let taken = table.remove(token_hash)?.map(|v| v.value().to_vec());
        match taken {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| StoreError::new(format!("config grant: {e}"))),
            None => Ok(None),
        }
    }

    fn purge_grants(&self, now: u64, superseded: &str) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(GRANTS)?;
        let mut expired = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let grant: Option<ConfigGrant> = postcard::from_bytes(v.value()).ok();
            if grant.is_none_or(|g| g.expires_at < now || g.machine_id == superseded) {
                expired.push(k.value().to_owned());
            }
        }
        for k in &expired {
            table.remove(k.as_str())?;
        }
        Ok(expired.len())
    }

    fn audit(&self, entry: NewEntry, now: u64) -> Result<AuditEntry, StoreError> {
        let mut table = self.txn.open_table(AUDIT)?;
        let (seq, prev) = match table.last()? {
            Some((k, v)) => {
                let last = AuditEntry::decode(v.value()).ok_or_else(|| {
                    StoreError::new(format!("audit entry {} does not decode", k.value()))
                })?;
                (k.value() + 1, last.entry_hash.0)
            }
            None => (1, audit::GENESIS),
        };
        let sealed = AuditEntry::seal(entry, seq, now, prev);
        table.insert(seq, sealed.encode().as_slice())?;
        drop(table);
        if let Some(signer) = self.signer
            && seq % signer.interval().max(1) == 0
        {
            // Dated no earlier than the latest checkpoint, whatever the clock did (one that
            // does not decode is for verification to report, not a reason to refuse changes).
            let latest = self.latest_checkpoint().ok().flatten();
            let at = latest.map_or(now, |c| c.timestamp.max(now));
            self.put_checkpoint(&signer.sign(seq, &sealed.entry_hash.0, at))?;
        }
        Ok(sealed)
    }

    fn audit_head(&self) -> Result<Option<AuditEntry>, StoreError> {
        let table = self.txn.open_table(AUDIT)?;
        let last = table.last()?;
        match last {
            Some((k, v)) => AuditEntry::decode(v.value()).map(Some).ok_or_else(|| {
                StoreError::new(format!("audit entry {} does not decode", k.value()))
            }),
            None => Ok(None),
        }
    }

    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let table = self.txn.open_table(AUDIT_CHECKPOINTS)?;
        let last = table.last()?;
        match last {
            Some((k, v)) => audit::decode_checkpoint(v.value())
                .map(Some)
                .ok_or_else(|| {
                    StoreError::new(format!("audit checkpoint {} does not decode", k.value()))
                }),
            None => Ok(None),
        }
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(AUDIT_CHECKPOINTS)?;
        let latest = table.last()?.map(|(k, _)| k.value());
        if latest.is_some_and(|l| l >= checkpoint.seq) {
            return Ok(false);
        }
        table.insert(
            checkpoint.seq,
            audit::encode_checkpoint(checkpoint).as_slice(),
        )?;
        Ok(true)
    }
}

impl RedbTx<'_> {
    fn votes_under(&self, key: &str) -> Result<Vec<Vote>, StoreError> {
        let table = self.txn.open_table(APPROVALS)?;
        let found = table.get(key)?;
        match found {
            Some(v) => decode_votes(v.value()),
            None => Ok(Vec::new()),
        }
    }

    fn put_votes_under(&self, key: &str, votes: &[Vote]) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(APPROVALS)?;
        if votes.is_empty() {
            table.remove(key)?;
        } else {
            table.insert(key, encode_votes(votes).as_slice())?;
        }
        Ok(())
    }
}

/// Where the votes that approved a machine are kept (beside its pending votes, which are
/// under the plain id).
pub(super) fn approved_key(id: &str) -> String {
    format!("{id}#approved")
}

/// Votes as version 1 stored them (before principals): read, never written.
#[derive(serde::Deserialize)]
struct VoteV1 {
    identity: String,
    role: attest_common::wire::Role,
    hostname: String,
    assigned_ip: String,
    at: u64,
}

fn encode_votes(votes: &[Vote]) -> Vec<u8> {
    let mut out = vec![2u8];
    out.extend(postcard::to_allocvec(votes).unwrap_or_default());
    out
}

pub(super) fn decode_votes(bytes: &[u8]) -> Result<Vec<Vote>, StoreError> {
    match bytes.split_first() {
        Some((&1, body)) => postcard::from_bytes::<Vec<VoteV1>>(body)
            .map(|votes| {
                votes
                    .into_iter()
                    .map(|v| Vote {
                        // Before principals, the display name was what counted.
                        principal: format!("{}{}", crate::store::LEGACY_PRINCIPAL, v.identity),
                        identity: v.identity,
                        role: v.role,
                        hostname: v.hostname,
                        assigned_ip: v.assigned_ip,
                        at: v.at,
                    })
                    .collect()
            })
            .map_err(|e| StoreError::new(format!("approval votes: {e}"))),
        Some((&2, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError::new(format!("approval votes: {e}")))
        }
        _ => Err(StoreError::new("approval votes: unknown record version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_common::wire::Role;

    /// Votes pending when the previous release stopped are read, each counted under its
    /// display name (the only identity it had), and written back as version 2.
    #[test]
    fn version_1_votes_are_read_with_a_legacy_principal() {
        #[derive(serde::Serialize)]
        struct V1<'a>(&'a str, Role, &'a str, &'a str, u64);
        let mut stored = vec![1u8];
        stored.extend(
            postcard::to_allocvec(&vec![V1(
                "alice",
                Role::Controlplane,
                "cp-1",
                "10.0.0.5/24",
                7,
            )])
            .unwrap(),
        );
        let votes = decode_votes(&stored).unwrap();
        assert_eq!(votes[0].identity, "alice");
        assert_eq!(votes[0].principal, "legacy:alice");
        assert_eq!((votes[0].role, votes[0].at), (Role::Controlplane, 7));
        let written = encode_votes(&votes);
        assert_eq!(written[0], 2);
        assert_eq!(decode_votes(&written).unwrap(), votes);
        assert!(decode_votes(&[3, 0]).is_err());
    }
}
