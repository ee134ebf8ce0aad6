//! The registry the service works against: machines, approvals, used nonces, stale marks
//! and the audit log, behind two traits (`Registry` and the write side of one transaction,
//! `RegistryTx`), as fido-device-onboard-rs keeps its stores. redb is the embedded default
//! (`store::redb`); a second backend (PostgreSQL, for replicas: DESIGN.md §7) implements
//! the same traits and keeps the same contract:
//!
//! - **Serializable transactions.** [`Registry::write`] runs its closure as one
//!   transaction that sees every earlier committed write and none that commits later; two
//!   writes never interleave their reads and writes (redb has a single writer; PostgreSQL
//!   uses `SERIALIZABLE` and retries on conflict: the closure may then run again, so it must
//!   not have effects outside the transaction other than [`RegistryTx::log`]).
//! - **The audit chain links under the same transaction as the change.**
//!   [`RegistryTx::audit`] reads the chain head and appends the next entry in the caller's
//!   transaction: a change never commits without its entry, an entry never without its change,
//!   and the chain stays one line however many writers there are.
//! - **Nothing is acknowledged before it is durable.** `write` and `write_batched` return
//!   only once the transaction is on disk (group commit shares one fsync among many callers,
//!   it never answers early); a rolled-back transaction leaves nothing, not even its log lines.
//! - **Checkpoints sign the chain head they read, in the same transaction.** A checkpoint
//!   ([`RegistryTx::put_checkpoint`]) vouches for the entry [`RegistryTx::audit_head`] read in
//!   the transaction that writes it, so it never names an entry that is not (yet) committed;
//!   and when a [`CheckpointSigner`] is installed, [`RegistryTx::audit`] writes the checkpoint
//!   of every entry whose seq is a multiple of its interval in the entry's own transaction.
//!   Checkpoints are append-only: one at or below the latest is refused, never replaced (a
//!   log cut short and grown again must not erase the checkpoint that shows it).
//! - **Reads outside a transaction see committed data only** (`machine`, `each_machine`,
//!   `audit_page`, ...); a scan may span several snapshots (see `each_machine`).
//!
//! Nothing above these traits knows a table, a key layout or the backend's name.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use attest_common::nonce::VerifyingKey;

use crate::audit::{AuditEntry, Checkpoint, NewEntry, Verification};
use crate::record::MachineRecord;

use super::{BackupSummary, ConfigGrant, StoreError, Vote};

/// The write side of one transaction (see the module's contract).
pub trait RegistryTx {
    /// A log line to emit once (and only if) the transaction commits.
    fn log(&self, line: String) {
        self.log_at(crate::log::Level::Info, line)
    }

    /// A log line at `level`, written once the transaction has committed.
    fn log_at(&self, level: crate::log::Level, line: String);

    fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError>;
    fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError>;
    /// The machine whose long-lived config token has this hash (`store::token_key`).
    fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError>;
    /// The machine whose EK key has this canonical id (`MachineRecord::ek_key_id`).
    fn machine_by_ek_key(&self, key_id: &str) -> Result<Option<MachineRecord>, StoreError>;
    /// Stores a record and indexes its EK fingerprint and config token.
    fn put_machine(&self, record: &MachineRecord) -> Result<(), StoreError>;
    /// Stores a record whose indexed fields (EK fingerprint, config token) are unchanged.
    fn update_machine(&self, record: &MachineRecord) -> Result<(), StoreError>;
    /// Removes a record, its indexes, its stale mark and its approval votes.
    fn delete_machine(&self, record: &MachineRecord) -> Result<(), StoreError>;

    /// Whether a challenge nonce has been used.
    fn nonce_used(&self, id: &str) -> Result<bool, StoreError>;
    /// Records a challenge nonce as used; false when it already was.
    fn use_nonce(&self, id: &str, now: u64) -> Result<bool, StoreError>;
    /// Forgets used nonces whose id says they expired before `before` (an expired nonce is
    /// refused for its expiry alone).
    fn purge_nonces(&self, before: u64) -> Result<usize, StoreError>;

    /// Whether a machine's staleness has been audited (and not cleared since).
    fn is_stale(&self, id: &str) -> Result<bool, StoreError>;
    /// Marks a machine stale; false when it already was.
    fn mark_stale(&self, id: &str, now: u64) -> Result<bool, StoreError>;
    /// Clears a machine's stale mark; true when it had one.
    fn clear_stale(&self, id: &str) -> Result<bool, StoreError>;

    /// The dual-control votes still pending for a machine, oldest first.
    fn pending_votes(&self, id: &str) -> Result<Vec<Vote>, StoreError>;
    /// Replaces them (empty: none pending).
    fn put_pending_votes(&self, id: &str, votes: &[Vote]) -> Result<(), StoreError>;
    /// The votes that approved a machine, oldest first.
    fn approving_votes(&self, id: &str) -> Result<Vec<Vote>, StoreError>;
    /// Replaces them.
    fn put_approving_votes(&self, id: &str, votes: &[Vote]) -> Result<(), StoreError>;

    /// Keeps a single-use config URL's grant under the hash of its token.
    fn put_grant(&self, token_hash: &str, grant: &ConfigGrant) -> Result<(), StoreError>;
    /// Removes and answers the grant of a token hash (single use), if there is one.
    fn take_grant(&self, token_hash: &str) -> Result<Option<ConfigGrant>, StoreError>;
    /// Forgets grants that expired before `now`, and every grant of machine `superseded`
    /// (a newer one is about to replace them: one live config URL per machine).
    fn purge_grants(&self, now: u64, superseded: &str) -> Result<usize, StoreError>;

    /// Appends an audit entry linked to the chain head, in this transaction; with a
    /// [`CheckpointSigner`] installed, also the checkpoint of the new entry when its seq is a
    /// multiple of the signer's interval (and no checkpoint at or after it exists).
    fn audit(&self, entry: NewEntry, now: u64) -> Result<AuditEntry, StoreError>;

    /// The chain head (the last entry) as this transaction sees it; `None`: the log is empty.
    fn audit_head(&self) -> Result<Option<AuditEntry>, StoreError>;
    /// The checkpoint with the highest seq, as this transaction sees it.
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// Stores a checkpoint of the head this transaction read (see the module's contract);
    /// false, and nothing written, when a checkpoint at or after its seq exists.
    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreError>;
}

/// Signs the checkpoints [`RegistryTx::audit`] makes every `interval` entries: the service's
/// response key (the registry never holds a key of its own).
pub trait CheckpointSigner: Send + Sync {
    /// A checkpoint every this many entries (`ITL_AUDIT_CHECKPOINT_ENTRIES`, at least 1).
    fn interval(&self) -> u64;
    /// The signed checkpoint of entry `seq` with hash `entry_hash`, dated `timestamp`.
    fn sign(&self, seq: u64, entry_hash: &[u8; 48], timestamp: u64) -> Checkpoint;
}

/// A registry (see the module's contract).
pub trait Registry: Send + Sync + 'static {
    type Tx<'t>: RegistryTx
    where
        Self: 't;

    /// Runs `f` in one write transaction: committed durably when it returns `Ok`, rolled
    /// back (nothing written) when it returns `Err`; returns once the change is on disk.
    fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Self::Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>;

    /// Runs `f` in a write transaction shared with other routine writes, committed durably
    /// once for all of them. `f` must check before it writes: it cannot be rolled back alone,
    /// so its `Err` (a storage failure) aborts the whole batch, and every member is told.
    fn write_batched<T>(
        &self,
        f: impl FnOnce(&Self::Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError>;
    fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError>;
    /// The machine whose long-lived config token has this hash (`token_key`).
    fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError>;

    /// Every machine in id order, one at a time, with whether it carries a stale mark,
    /// until `f` breaks. A record that does not decode is skipped, logged once and counted
    /// ([`Registry::damaged_records`]): one damaged record must not hide the others. Not one
    /// snapshot: a machine that exists throughout is seen exactly
    /// once, one added or removed meanwhile may or may not be; `f` runs outside any
    /// transaction (a slow consumer must not pin storage).
    fn each_machine(
        &self,
        f: impl FnMut(MachineRecord, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Ids of the records scans found damaged (they do not decode) since the registry was
    /// opened, and not written or found whole since; in id order.
    fn damaged_records(&self) -> Vec<String> {
        Vec::new()
    }

    /// The dual-control votes still pending for a machine, and those that approved it.
    fn votes(&self, id: &str) -> Result<(Vec<Vote>, Vec<Vote>), StoreError>;

    /// Audit entries, newest first, optionally for one machine; `page` counts from 1 (page 1
    /// is the most recent).
    /// Answers the page and the number of entries matching.
    fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), StoreError>;

    /// Recomputes the whole audit chain, one entry at a time, and checks it against every
    /// stored checkpoint (`crate::audit::verify_with_checkpoints`), from one snapshot;
    /// signatures are checked with `key` when it is given.
    fn audit_verify_with(&self, key: Option<&VerifyingKey>) -> Result<Verification, StoreError>;

    /// [`Registry::audit_verify_with`] without checking signatures.
    fn audit_verify(&self) -> Result<Verification, StoreError> {
        self.audit_verify_with(None)
    }

    /// Every checkpoint, oldest (lowest seq) first. In memory: one per
    /// `ITL_AUDIT_CHECKPOINT_ENTRIES` entries, per `ITL_AUDIT_CHECKPOINT_MINUTES` of activity
    /// and per verification that found new entries (≈ 9,000 a year at one an hour, 1.5 MB).
    fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// Installs (or, `None`, removes) the signer of the checkpoints audit appends make.
    fn set_checkpoint_signer(&mut self, signer: Option<Arc<dyn CheckpointSigner>>);

    /// A consistent copy of the whole registry into a new file `to`, from one snapshot,
    /// while writes go on.
    fn backup(&self, to: &Path) -> Result<BackupSummary, StoreError>;

    /// Batches committed by `write_batched` and the writes they held, since open.
    fn batch_counts(&self) -> (u64, u64);

    /// Whether the registry answers a read now (`/readyz`).
    fn ready(&self) -> Result<(), StoreError>;
}
