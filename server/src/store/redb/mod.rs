//! The registry on redb (DESIGN.md §7): one file, one write transaction per change, the
//! audit entry inside the same transaction, so there is never a change without its entry or
//! an entry without its change. Tables: `machines` (id → versioned record), `by_ek`,
//! `by_token` (SHA-256 of the token), `config_grants` (single-use config URLs, by the
//! SHA-256 of their token), `approvals` (pending votes under the id, approving
//! ones under `id#approved`), `used_nonces`, `stale`, `audit`, `audit_checkpoints` (seq →
//! signed checkpoint of the chain), `meta` (the challenge key).
//!
//! `commit` holds group commit and batching, `tx` the write side of a transaction, `scan`
//! the whole-table reads, `backup` the logical copy.

mod backup;
mod commit;
mod scan;
mod tx;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use scan::SCAN_PAGE;
pub use tx::RedbTx;

use super::{BackupSummary, CheckpointSigner, Registry, StoreError, Vote};
use crate::audit::{AuditEntry, Checkpoint, Verification};
use crate::record::MachineRecord;

const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");
const BY_EK: TableDefinition<&str, &str> = TableDefinition::new("by_ek");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Signed checkpoints of the audit chain (DESIGN.md §6): seq → versioned postcard
/// `crate::audit::Checkpoint`.
const AUDIT_CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_checkpoints");
const APPROVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("approvals");
/// Used challenge nonces (crate::challenge): id (hex expiry ‖ random, so the table is ordered
/// by expiry) → when it was used. Purged once expired.
const USED_NONCES: TableDefinition<&str, u64> = TableDefinition::new("used_nonces");
/// Challenge nonces as stored before they were derived (crate::challenge); dropped on open.
const OLD_NONCES: TableDefinition<&str, &[u8]> = TableDefinition::new("nonces");
/// Marks of one-time migrations (`ek-key-index`); no secret (the challenge key of earlier
/// releases is removed on open).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Machines whose staleness has been audited → when (cleared when they attest again).
const STALE: TableDefinition<&str, u64> = TableDefinition::new("stale");
/// Canonical id of an EK key (`MachineRecord::ek_key_id`) → machine id: one EK key, one
/// machine, whatever encoding brought it.
const BY_EK_KEY: TableDefinition<&str, &str> = TableDefinition::new("by_ek_key");
/// SHA-256 (hex) of a config token → machine id.
const BY_TOKEN: TableDefinition<&str, &str> = TableDefinition::new("by_token");
/// SHA-256 (hex) of a single-use config URL's token → its grant (postcard `ConfigGrant`).
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("config_grants");

/// redb's page cache. Its default (1 GiB) lets the cache grow to the whole registry as
/// scans touch it (100,000 machines are ≈ 135 MB of pages); the operating system's page
/// cache already keeps the file's hot pages, so ours stays small. Scans run on several
/// threads (the liveness sweep, `/metrics` on the blocking pool), and each thread's malloc
/// arena kept a cache's worth: *measured* with 100,000 machines, sweeps and scrapes, 16 MiB
/// gave 41 MiB RSS, 4 MiB gives 17 MiB, at the same attestation rate (`ci/bench.sh`).
pub const CACHE_BYTES: usize = 4 << 20;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError(e.to_string())
            }
        }
    )*};
}
from_redb!(
    ::redb::Error,
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);

/// How every registry file is opened: redb's default cache (1 GiB) lets one full read pull
/// the whole file into the process (a backup of 100,000 machines peaked at 111 MiB).
fn builder() -> ::redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// The registry in one redb file.
pub struct RedbRegistry {
    db: Database,
    /// Transactions committed (non-durably) so far; see `commit`.
    committed: AtomicU64,
    sync: Mutex<commit::Sync>,
    synced: Condvar,
    /// The transaction routine writes are gathered in; see `commit`.
    batch: Mutex<Option<commit::Batch>>,
    /// Callers of `write_batched` waiting to add their write to the batch.
    batch_waiting: AtomicUsize,
    /// Batches committed and the writes they held, since the registry was opened.
    batches: AtomicU64,
    batched_writes: AtomicU64,
    /// Signs the checkpoints audit appends make (`RegistryTx::audit`); none until installed.
    checkpoint_signer: Option<Arc<dyn CheckpointSigner>>,
}

impl RedbRegistry {
    /// Opens the store, creating the file (and its directory) on first use. A file that was
    /// not closed (the process was killed, or the machine lost power) is repaired by redb as
    /// it opens, which reads the whole file; that is logged as a warning. A registry that is
    /// dropped closes its file cleanly.
    pub fn open(path: &Path) -> Result<RedbRegistry, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = repaired.clone();
        let db = builder()
            .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::Relaxed))
            .create(path)?;
        if repaired.load(std::sync::atomic::Ordering::Relaxed) {
            crate::log::warn(&format!(
                "registry was not closed cleanly; repaired ({})",
                path.display()
            ));
        }
        let txn = db.begin_write()?;
        txn.open_table(MACHINES)?;
        txn.open_table(BY_EK)?;
        txn.open_table(AUDIT)?;
        txn.open_table(AUDIT_CHECKPOINTS)?;
        txn.open_table(APPROVALS)?;
        txn.open_table(BY_TOKEN)?;
        index_ek_keys(&txn)?;
        txn.open_table(GRANTS)?;
        txn.open_table(USED_NONCES)?;
        txn.open_table(STALE)?;
        txn.delete_table(OLD_NONCES)?;
        // Earlier releases kept the challenge key here, so every backup carried it (and with
        // it the power to mint challenge ids for any future minute): it now lives in a file
        // beside the registry (`ITL_DATA_DIR/challenge-key`), and the stored one is dropped.
        txn.open_table(META)?.remove("challenge-key")?;
        txn.commit()?;
        Ok(RedbRegistry {
            db,
            committed: AtomicU64::new(0),
            sync: Mutex::new(commit::Sync::default()),
            synced: Condvar::new(),
            batch: Mutex::new(None),
            batch_waiting: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            batched_writes: AtomicU64::new(0),
            checkpoint_signer: None,
        })
    }

    pub fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MACHINES)?;
        let found = table.get(id)?;
        Ok(match found {
            Some(v) => Some(MachineRecord::decode(v.value())?),
            None => None,
        })
    }

    /// The machine of an EK (as of the last commit).
    pub fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.machine_by_index(BY_EK, fingerprint)
    }

    /// The machine of a long-lived config token's hash (as of the last commit).
    pub fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.machine_by_index(BY_TOKEN, hash)
    }

    /// The machine an index (`by_ek`, `by_token`) names under `key`, in one read snapshot.
    fn machine_by_index(
        &self,
        index: TableDefinition<&str, &str>,
        key: &str,
    ) -> Result<Option<MachineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let id = match txn.open_table(index)?.get(key)? {
            Some(v) => v.value().to_owned(),
            None => return Ok(None),
        };
        let machines = txn.open_table(MACHINES)?;
        let found = machines.get(id.as_str())?;
        Ok(match found {
            Some(v) => Some(MachineRecord::decode(v.value())?),
            None => None,
        })
    }
}

/// Fills the EK key index once, for a registry written before it existed (proven records
/// only, as `RegistryTx::put_machine` keeps it). Two proven records of one key (possible
/// before the index: a re-encoded certificate) are logged, the later one indexed.
fn index_ek_keys(txn: &::redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get("ek-key-index-v2")?.is_some() {
        return Ok(());
    }
    // The first index (every record, proven or not) is rebuilt.
    txn.delete_table(BY_EK_KEY)?;
    let mut index = txn.open_table(BY_EK_KEY)?;
    let machines = txn.open_table(MACHINES)?;
    for item in machines.iter()? {
        let (id, bytes) = item?;
        // An undecodable record is reported where it is read; it has no key to index.
        let Ok(record) = MachineRecord::decode(bytes.value()) else {
            continue;
        };
        if !record.ak_activated {
            continue;
        }
        let Some(key) = record.ek_key_id() else {
            continue;
        };
        if let Some(other) = index.insert(key.as_str(), id.value())? {
            crate::log::warn(&format!(
                "EK key of machine {} is also machine {}'s (registered before the EK key index \
                 existed): one of them should be revoked and deleted",
                crate::log::escape(id.value()),
                crate::log::escape(other.value())
            ));
        }
    }
    meta.remove("ek-key-index")?;
    meta.insert("ek-key-index-v2", [1u8].as_slice())?;
    Ok(())
}

impl Registry for RedbRegistry {
    type Tx<'t> = RedbTx<'t>;

    fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&RedbTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write(f)
    }

    fn write_batched<T>(
        &self,
        f: impl FnOnce(&RedbTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_batched(f)
    }

    fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.machine(id)
    }

    fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.machine_by_ek(fingerprint)
    }

    fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.machine_by_token_hash(hash)
    }

    fn each_machine(
        &self,
        f: impl FnMut(MachineRecord, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.each_machine(f)
    }

    fn votes(&self, id: &str) -> Result<(Vec<Vote>, Vec<Vote>), StoreError> {
        self.votes(id)
    }

    fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), StoreError> {
        self.audit_page(machine_id, page, per_page)
    }

    fn audit_verify_with(
        &self,
        key: Option<&attest_common::nonce::VerifyingKey>,
    ) -> Result<Verification, StoreError> {
        self.audit_verify_with(key)
    }

    fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.audit_checkpoints()
    }

    fn set_checkpoint_signer(&mut self, signer: Option<Arc<dyn CheckpointSigner>>) {
        self.checkpoint_signer = signer;
    }

    fn backup(&self, to: &Path) -> Result<BackupSummary, StoreError> {
        self.backup(to)
    }

    fn batch_counts(&self) -> (u64, u64) {
        self.batch_counts()
    }

    fn ready(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        txn.open_table(MACHINES)?.first()?;
        Ok(())
    }
}
