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

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use scan::SCAN_PAGE;
pub use tx::RedbTx;

use super::{BackupSummary, CheckpointSigner, Fault, Registry, StoreError, Vote};
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
                classify(e.into())
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

/// redb's I/O errors are faults of the disk (full, or failing); after one, redb answers
/// `PreviousIo` to everything until the file is opened again (`RedbRegistry::reopen`).
fn classify(e: ::redb::Error) -> StoreError {
    match &e {
        ::redb::Error::Io(io) => StoreError::io("the registry file", io),
        ::redb::Error::PreviousIo | ::redb::Error::DatabaseClosed => StoreError::with_fault(
            "the registry file had an I/O error and is being reopened",
            Fault::Io,
        ),
        _ => StoreError::new(e.to_string()),
    }
}

/// How every registry file is opened: redb's default cache (1 GiB) lets one full read pull
/// the whole file into the process (a backup of 100,000 machines peaked at 111 MiB).
fn builder() -> ::redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// The registry in one redb file.
///
/// After an I/O error (a full disk, a failing one) redb refuses everything until its file is
/// opened again: the registry then closes it and opens it again at the next request (at
/// most once a second while that fails: 503 `storage_unavailable` meanwhile; writes refused
/// for a full disk are 507), so freeing space heals it without a restart. `/readyz` fails
/// while it is closed.
pub struct RedbRegistry {
    path: PathBuf,
    /// `None` while closed after an I/O error; with the generation of the file's opening
    /// (a late error from an earlier opening must not close a newer one).
    db: RwLock<Option<(u64, Arc<Database>)>>,
    /// When it last tried to open the file again (at most once a second).
    reopen_tried: Mutex<Option<Instant>>,
    /// The last generation handed out.
    next_generation: AtomicU64,
    /// Ids of records found damaged (`Registry::damaged_records`).
    damaged: Mutex<BTreeSet<String>>,
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
                .map_err(|e| StoreError::io(&format!("cannot create {}", dir.display()), &e))?;
        }
        Ok(RedbRegistry {
            path: path.to_owned(),
            db: RwLock::new(Some((0, Arc::new(open_file(path)?)))),
            reopen_tried: Mutex::new(None),
            next_generation: AtomicU64::new(0),
            damaged: Mutex::new(BTreeSet::new()),
            batch: Mutex::new(None),
            batch_waiting: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            batched_writes: AtomicU64::new(0),
            checkpoint_signer: None,
        })
    }

    /// Refuses a file that is there but is no registry (empty, or without redb's header),
    /// reading it only; `open` does too.
    pub fn check_file(path: &Path) -> Result<(), StoreError> {
        refuse_non_registry(path)
    }

    /// The open database, opened again first if an I/O error closed it.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        Ok(self.db_and_generation()?.1)
    }

    fn db_and_generation(&self) -> Result<(u64, Arc<Database>), StoreError> {
        if let Some(open) = &*self.db.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(open.clone());
        }
        self.reopen()
    }

    /// The generation now open (`u64::MAX` while closed).
    fn generation(&self) -> u64 {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(u64::MAX, |(g, _)| *g)
    }

    /// Opens the file again: one caller at a time, the others answered at once (503) while
    /// it does (redb repairs the file as it opens: that takes a while, and space); at most
    /// once a second.
    fn reopen(&self) -> Result<(u64, Arc<Database>), StoreError> {
        let closed = || {
            StoreError::with_fault(
                format!(
                    "the registry file {} is closed after an I/O error; it is opened again \
                     once it can be (free disk space, check the disk)",
                    self.path.display()
                ),
                Fault::Io,
            )
        };
        let Ok(mut tried) = self.reopen_tried.try_lock() else {
            return Err(closed());
        };
        if let Some(open) = &*self.db.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(open.clone());
        }
        if tried.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Err(closed());
        }
        *tried = Some(Instant::now());
        // Opened without holding `db`: readers are answered meanwhile.
        match open_file(&self.path) {
            Ok(db) => {
                crate::log::warn(&format!(
                    "registry file {} opened again after an I/O error",
                    self.path.display()
                ));
                let generation = self.next_generation.fetch_add(1, Ordering::SeqCst) + 1;
                let open = (generation, Arc::new(db));
                *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(open.clone());
                Ok(open)
            }
            Err(e) => {
                crate::log::error(&format!("registry file {}: {e}", self.path.display()));
                Err(closed())
            }
        }
    }

    /// Runs a registry operation and closes the file if it met an I/O error (redb answers
    /// nothing more until it is opened again) — the opening it used, not a newer one.
    fn guarded<T>(&self, op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let generation = self.generation();
        let result = op();
        self.noted(generation, result)
    }

    /// Notes whether the record of `id` decoded: a damaged one is logged the first time it
    /// is seen and counted until it is found whole again (restored from a backup).
    fn damaged(&self, id: &str, error: Option<&crate::record::RecordError>) {
        let mut damaged = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) if damaged.insert(id.to_owned()) => crate::log::warn(&format!(
                "Machine record damaged: id={id} ({e}); skipped in listings and sweeps \
                 (restore the registry from a backup)"
            )),
            Some(_) => {}
            None if !damaged.is_empty() => {
                damaged.remove(id);
            }
            None => {}
        }
    }

    /// Closes the file after an I/O error met by an operation on opening `generation`;
    /// `result` is passed through.
    fn noted<T>(&self, generation: u64, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && e.fault != Fault::Data
        {
            let taken = {
                let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
                match &*slot {
                    Some((g, _)) if *g == generation => slot.take(),
                    _ => None,
                }
            };
            if let Some((_, db)) = taken {
                crate::log::error(&format!(
                    "registry file {}: {}; closed, opened again at the next request",
                    self.path.display(),
                    e.message
                ));
                // Closed (its last holder gone) outside the lock.
                drop(db);
            }
        }
        result
    }

    pub fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(MACHINES)?;
        let found = table.get(id)?;
        let Some(bytes) = found else {
            return Ok(None);
        };
        let record = MachineRecord::decode(bytes.value());
        self.damaged(id, record.as_ref().err());
        record.map(Some).map_err(|e| {
            StoreError::new(format!(
                "the record of machine {} is damaged ({e}): restore the registry from a backup",
                crate::log::escape(id)
            ))
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
        let txn = self.db()?.begin_read()?;
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

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// A file that is there but is no registry is refused, never turned into an empty one (redb
/// would initialise a 0-byte file): the registry was lost, and starting empty would hide it.
fn refuse_non_registry(path: &Path) -> Result<(), StoreError> {
    use std::io::Read as _;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::io(
                &format!("cannot read {}", path.display()),
                &e,
            ));
        }
    };
    let mut head = [0u8; REDB_MAGIC.len()];
    let read = file
        .read(&mut head)
        .map_err(|e| StoreError::io(&format!("cannot read {}", path.display()), &e))?;
    let what = match read {
        0 => "is empty (0 bytes)",
        _ if head[..read] != REDB_MAGIC[..read] || read < head.len() => {
            "is not a registry (no redb header)"
        }
        _ => return Ok(()),
    };
    Err(StoreError::new(format!(
        "{} {what}: refusing to start rather than begin an empty registry over it. Restore \
         the registry from a backup (attestation-server backup --to FILE made it), or move the \
         file away to start with an empty registry",
        path.display()
    )))
}

/// Opens (creating) a registry file and its tables, repairing it if it was not closed.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    refuse_non_registry(path)?;
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    Ok(db)
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
        self.guarded(|| self.write_batched(f))
    }

    fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.guarded(|| self.machine(id))
    }

    fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.guarded(|| self.machine_by_ek(fingerprint))
    }

    fn machine_by_token_hash(&self, hash: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.guarded(|| self.machine_by_token_hash(hash))
    }

    fn each_machine(
        &self,
        f: impl FnMut(MachineRecord, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.guarded(|| self.each_machine(f))
    }

    fn damaged_records(&self) -> Vec<String> {
        let damaged = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        damaged.iter().cloned().collect()
    }

    fn votes(&self, id: &str) -> Result<(Vec<Vote>, Vec<Vote>), StoreError> {
        self.guarded(|| self.votes(id))
    }

    fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), StoreError> {
        self.guarded(|| self.audit_page(machine_id, page, per_page))
    }

    fn audit_verify_with(
        &self,
        key: Option<&attest_common::nonce::VerifyingKey>,
    ) -> Result<Verification, StoreError> {
        self.guarded(|| self.audit_verify_with(key))
    }

    fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.guarded(|| self.audit_checkpoints())
    }

    fn set_checkpoint_signer(&mut self, signer: Option<Arc<dyn CheckpointSigner>>) {
        self.checkpoint_signer = signer;
    }

    fn backup(&self, to: &Path) -> Result<BackupSummary, StoreError> {
        self.guarded(|| self.backup(to))
    }

    fn batch_counts(&self) -> (u64, u64) {
        self.batch_counts()
    }

    fn ready(&self) -> Result<(), StoreError> {
        self.guarded(|| {
            let txn = self.db()?.begin_read()?;
            txn.open_table(MACHINES)?.first()?;
            Ok(())
        })
    }
}
