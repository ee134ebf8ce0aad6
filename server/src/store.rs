//! The registry on redb (DESIGN.md §7): one file, one write transaction per change, the
//! audit entry inside the same transaction, so there is never a change without its entry or
//! an entry without its change.

use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::audit::{self, AuditEntry, NewEntry};
use crate::challenge::ChallengeKey;
use crate::record::{MachineRecord, RecordError};

const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");
const BY_EK: TableDefinition<&str, &str> = TableDefinition::new("by_ek");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const APPROVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("approvals");
/// Used challenge nonces (crate::challenge): id (hex expiry ‖ random, so the table is ordered
/// by expiry) → when it was used. Purged once expired.
const USED_NONCES: TableDefinition<&str, u64> = TableDefinition::new("used_nonces");
/// Challenge nonces as stored before they were derived (crate::challenge); dropped on open.
const OLD_NONCES: TableDefinition<&str, &[u8]> = TableDefinition::new("nonces");
/// Server secrets that live with the registry (the challenge key).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Machines whose staleness has been audited → when (cleared when they attest again).
const STALE: TableDefinition<&str, u64> = TableDefinition::new("stale");
/// SHA-256 (hex) of a config token → machine id.
const BY_TOKEN: TableDefinition<&str, &str> = TableDefinition::new("by_token");

/// redb's page cache. Its default (1 GiB) lets the cache grow to the whole registry as
/// scans touch it (100,000 machines are ≈ 135 MB of pages); the operating system's page
/// cache already keeps the file's hot pages, so ours stays small. Scans run on several
/// threads (the liveness sweep, `/metrics` on the blocking pool), and each thread's malloc
/// arena kept a cache's worth: *measured* with 100,000 machines, sweeps and scrapes, 16 MiB
/// gave 41 MiB RSS, 4 MiB gives 17 MiB, at the same attestation rate (`ci/bench.sh`).
pub const CACHE_BYTES: usize = 4 << 20;

/// The `by_token` key of a config token.
pub fn token_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::audit::hex(&Sha256::digest(token.as_bytes()))
}

/// One operator's vote toward a dual-control approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    pub identity: String,
    pub role: attest_common::wire::Role,
    pub hostname: String,
    pub assigned_ip: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// A storage failure: the request cannot be served and nothing was written.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

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
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    RecordError
);

pub struct Store {
    db: Database,
    /// Transactions committed (non-durably) so far; see [`Store::write`].
    committed: AtomicU64,
    sync: Mutex<Sync>,
    synced: Condvar,
    /// The transaction routine writes are gathered in; see [`Store::write_batched`].
    batch: Mutex<Option<Batch>>,
    /// Callers of [`Store::write_batched`] waiting to add their write to the batch.
    batch_waiting: AtomicUsize,
    /// Batches committed and the writes they held, since the store was opened.
    batches: AtomicU64,
    batched_writes: AtomicU64,
    challenge_key: ChallengeKey,
}

/// Most writes in one batch: a bound on how long the first of them waits under load.
const BATCH_MAX: usize = 64;

/// Machines read per read transaction by [`Store::each_machine`].
pub const SCAN_PAGE: usize = 256;

/// One open batch: a write transaction shared by several callers, committed once.
struct Batch {
    txn: redb::WriteTransaction,
    members: usize,
    /// Why the batch will be aborted (a member's write failed), if it will.
    failed: Option<String>,
    outcome: Arc<BatchOutcome>,
}

/// How a batch ended, for its members to wait on.
#[derive(Default)]
struct BatchOutcome {
    committed: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    pub machines: u64,
    pub audit_entries: u64,
}

/// Group commit: how far the file is durable, and whether someone is making it so.
#[derive(Default)]
struct Sync {
    durable: u64,
    syncing: bool,
}

/// The write side of one transaction.
pub struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    logs: std::cell::RefCell<Vec<String>>,
}

impl Tx<'_> {
    /// A log line to emit once (and only if) the transaction commits.
    pub fn log(&self, line: String) {
        self.logs.borrow_mut().push(line);
    }

    pub fn machine(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let table = self.txn.open_table(MACHINES)?;
        let found = table.get(id)?;
        Ok(match found {
            Some(v) => Some(MachineRecord::decode(v.value())?),
            None => None,
        })
    }

    pub fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
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

    pub fn put_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(MACHINES)?
            .insert(record.id.as_str(), record.encode().as_slice())?;
        self.txn
            .open_table(BY_EK)?
            .insert(record.ek_fingerprint.as_str(), record.id.as_str())?;
        if let Some(token) = &record.config_token {
            self.txn
                .open_table(BY_TOKEN)?
                .insert(token_key(token).as_str(), record.id.as_str())?;
        }
        Ok(())
    }

    /// Stores a record whose indexed fields (EK fingerprint, config token) are unchanged.
    pub fn update_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(MACHINES)?
            .insert(record.id.as_str(), record.encode().as_slice())?;
        Ok(())
    }

    /// Whether a challenge nonce has been used.
    pub fn nonce_used(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.txn.open_table(USED_NONCES)?.get(id)?.is_some())
    }

    /// Whether a machine is marked stale.
    pub fn is_stale(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.txn.open_table(STALE)?.get(id)?.is_some())
    }

    pub fn delete_machine(&self, record: &MachineRecord) -> Result<(), StoreError> {
        self.txn.open_table(MACHINES)?.remove(record.id.as_str())?;
        self.txn.open_table(STALE)?.remove(record.id.as_str())?;
        self.txn
            .open_table(BY_EK)?
            .remove(record.ek_fingerprint.as_str())?;
        if let Some(token) = &record.config_token {
            self.txn
                .open_table(BY_TOKEN)?
                .remove(token_key(token).as_str())?;
        }
        Ok(())
    }

    /// Records a challenge nonce as used; false when it already was.
    pub fn use_nonce(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(USED_NONCES)?;
        let was = table.insert(id, now)?.is_some();
        Ok(!was)
    }

    /// Forgets used nonces whose id says they expired before `before` (ids sort by expiry):
    /// an expired nonce is refused for its expiry alone.
    pub fn purge_nonces(&self, before: u64) -> Result<usize, StoreError> {
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
    pub fn mark_stale(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(STALE)?;
        let was = table.insert(id, now)?.is_some();
        Ok(!was)
    }

    /// Clears a machine's stale mark; true when it had one.
    pub fn clear_stale(&self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(STALE)?;
        let had = table.remove(id)?.is_some();
        Ok(had)
    }

    /// The machine a config token belongs to.
    pub fn machine_by_token(&self, token: &str) -> Result<Option<MachineRecord>, StoreError> {
        let id = {
            let table = self.txn.open_table(BY_TOKEN)?;
            let found = table.get(token_key(token).as_str())?;
            found.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.machine(&id),
            None => Ok(None),
        }
    }

    /// The pending dual-control votes for a machine (oldest first).
    pub fn votes(&self, id: &str) -> Result<Vec<Vote>, StoreError> {
        let table = self.txn.open_table(APPROVALS)?;
        let found = table.get(id)?;
        match found {
            Some(v) => decode_votes(v.value()),
            None => Ok(Vec::new()),
        }
    }

    pub fn put_votes(&self, id: &str, votes: &[Vote]) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(APPROVALS)?;
        if votes.is_empty() {
            table.remove(id)?;
        } else {
            table.insert(id, encode_votes(votes).as_slice())?;
        }
        Ok(())
    }

    /// Appends an audit entry, linked to the last one.
    pub fn audit(&self, entry: NewEntry, now: u64) -> Result<AuditEntry, StoreError> {
        let mut table = self.txn.open_table(AUDIT)?;
        let (seq, prev) = match table.last()? {
            Some((k, v)) => {
                let last = AuditEntry::decode(v.value()).ok_or_else(|| {
                    StoreError(format!("audit entry {} does not decode", k.value()))
                })?;
                (k.value() + 1, last.entry_hash.0)
            }
            None => (1, audit::GENESIS),
        };
        let sealed = AuditEntry::seal(entry, seq, now, prev);
        table.insert(seq, sealed.encode().as_slice())?;
        Ok(sealed)
    }
}

impl Store {
    /// Opens the store, creating the file (and its directory) on first use.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = builder().create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(MACHINES)?;
        txn.open_table(BY_EK)?;
        txn.open_table(AUDIT)?;
        txn.open_table(APPROVALS)?;
        txn.open_table(BY_TOKEN)?;
        txn.open_table(USED_NONCES)?;
        txn.open_table(STALE)?;
        txn.delete_table(OLD_NONCES)?;
        let challenge_key = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get("challenge-key")?.map(|v| v.value().to_vec());
            match stored {
                Some(key) if key.len() == 48 => key,
                Some(key) => {
                    return Err(StoreError(format!(
                        "the challenge key in the registry has {} bytes, not 48",
                        key.len()
                    )));
                }
                None => {
                    let mut key = vec![0u8; 48];
                    getrandom::fill(&mut key).map_err(|e| {
                        StoreError(format!("no randomness for the challenge key: {e}"))
                    })?;
                    meta.insert("challenge-key", key.as_slice())?;
                    key
                }
            }
        };
        txn.commit()?;
        Ok(Store {
            db,
            committed: AtomicU64::new(0),
            sync: Mutex::new(Sync::default()),
            synced: Condvar::new(),
            batch: Mutex::new(None),
            batch_waiting: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            batched_writes: AtomicU64::new(0),
            challenge_key: ChallengeKey::new(&challenge_key),
        })
    }

    /// Runs `f` in one write transaction: committed durably when it returns `Ok`, rolled
    /// back (nothing written) when it returns `Err`. Returns only once the change is on disk.
    ///
    /// Group commit (DESIGN.md §7): each transaction commits without fsync, then waits until
    /// a durable commit covers it. One waiter at a time makes that durable commit (redb
    /// persists every earlier non-durable commit with it) for everyone who committed before
    /// it began, so concurrent requests share one fsync, and no answer is sent for a change
    /// that a crash could still lose.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut txn = self.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError(e.to_string()))?;
        let tx = Tx {
            txn: &txn,
            logs: Default::default(),
        };
        let out = f(&tx)?;
        let logs = tx.logs.into_inner();
        txn.commit().map_err(StoreError::from)?;
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        self.wait_durable(mine)?;
        for line in logs {
            crate::log::info(&line);
        }
        Ok(out)
    }

    /// Runs `f` in a write transaction shared with the other routine writes that arrive
    /// while it is open, and returns once that transaction has committed durably: one commit
    /// and one fsync for a whole batch instead of one per write (the attestation heartbeat,
    /// DESIGN.md §7).
    ///
    /// `f` must check before it writes: it cannot be rolled back alone, so it returns `Err`
    /// only for a storage failure, which aborts the whole batch (every member gets the
    /// error; nothing of the batch is written). A write that might have to be refused after
    /// writing belongs in [`Store::write`].
    ///
    /// The member that finds nobody else waiting to join commits; others wait for it. While
    /// it commits, the next callers queue on the writer lock and form the next batch.
    pub fn write_batched<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock = || self.batch.lock().unwrap_or_else(|p| p.into_inner());
        self.batch_waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = lock();
        self.batch_waiting.fetch_sub(1, Ordering::SeqCst);
        let batch = match &mut *open {
            Some(batch) => batch,
            empty => empty.insert(Batch {
                txn: self.db.begin_write()?,
                members: 0,
                failed: None,
                outcome: Arc::default(),
            }),
        };
        let (mine, logs) = match &batch.failed {
            Some(why) => (Ok(Err(StoreError(why.clone()))), Vec::new()),
            None => {
                let tx = Tx {
                    txn: &batch.txn,
                    logs: Default::default(),
                };
                // A member that panics must not leave the others waiting for a commit.
                let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&tx)));
                match &mine {
                    Ok(Err(e)) => batch.failed = Some(e.0.clone()),
                    Err(_) => batch.failed = Some("a write in the batch panicked".into()),
                    Ok(Ok(_)) => {}
                }
                (mine, tx.logs.into_inner())
            }
        };
        batch.members += 1;
        let outcome = batch.outcome.clone();
        let last = self.batch_waiting.load(Ordering::SeqCst) == 0 || batch.members >= BATCH_MAX;
        if last && let Some(batch) = open.take() {
            drop(open);
            let committed = match batch.failed {
                Some(why) => {
                    let _ = batch.txn.abort();
                    Err(why)
                }
                None => batch.txn.commit().map_err(|e| e.to_string()),
            };
            if committed.is_ok() {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.batched_writes
                    .fetch_add(batch.members as u64, Ordering::Relaxed);
            }
            *outcome.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
            outcome.done.notify_all();
        } else {
            drop(open);
        }
        let committed = {
            let mut committed = outcome.committed.lock().unwrap_or_else(|p| p.into_inner());
            while committed.is_none() {
                committed = outcome
                    .done
                    .wait(committed)
                    .unwrap_or_else(|p| p.into_inner());
            }
            committed.clone().expect("set above")
        };
        let mine = mine.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match committed {
            Ok(()) => {
                for line in logs {
                    crate::log::info(&line);
                }
                mine
            }
            Err(why) => Err(StoreError(format!("batch not committed: {why}"))),
        }
    }

    /// Batches committed by [`Store::write_batched`] and the writes they held, since open.
    pub fn batch_counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.batched_writes.load(Ordering::Relaxed),
        )
    }

    /// Blocks until transaction number `mine` is durable, making it so if nobody is.
    fn wait_durable(&self, mine: u64) -> Result<(), StoreError> {
        let lock = || self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lock();
        loop {
            if state.durable >= mine {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            // Every transaction counted here has committed: the durable commit below
            // begins after them and persists them.
            let target = self.committed.load(Ordering::SeqCst);
            drop(state);
            let result = self
                .db
                .begin_write()
                .map_err(StoreError::from)
                .and_then(|t| t.commit().map_err(StoreError::from));
            state = lock();
            state.syncing = false;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.synced.notify_all();
            result?;
        }
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

    /// The key challenge nonces are derived with (kept in the registry).
    pub fn challenge_key(&self) -> &ChallengeKey {
        &self.challenge_key
    }

    /// The machine of an EK (as of the last commit).
    pub fn machine_by_ek(&self, fingerprint: &str) -> Result<Option<MachineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let id = match txn.open_table(BY_EK)?.get(fingerprint)? {
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

    /// Every machine, in id order.
    pub fn machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        let mut out = Vec::new();
        self.each_machine(|m, _| {
            out.push(m);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Every machine in id order, one at a time, with whether it carries a stale mark,
    /// until `f` breaks: a scan that keeps only what it needs (the liveness sweep,
    /// `/metrics`, a streamed listing) holds a page of records in memory, not the registry.
    ///
    /// The registry is read [`SCAN_PAGE`] records per read transaction and `f` runs outside
    /// any: a redb reader pins every page that later commits free, so a listing paused by a
    /// slow client would grow the file with each heartbeat for as long as it is paused
    /// (measured: 3,000 heartbeats, 4 → 67 MB). The price is that a scan is not one snapshot:
    /// each id is seen at most once, a machine that exists throughout is seen exactly once,
    /// one added or removed meanwhile may or may not be.
    pub fn each_machine(
        &self,
        mut f: impl FnMut(MachineRecord, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.machine_page(after.as_deref())?;
            let last = page.len() < SCAN_PAGE;
            for (id, m, marked) in page {
                after = Some(id);
                if f(m, marked).is_break() {
                    return Ok(());
                }
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Up to [`SCAN_PAGE`] machines with ids after `after`, from one short read transaction.
    fn machine_page(
        &self,
        after: Option<&str>,
    ) -> Result<Vec<(String, MachineRecord, bool)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MACHINES)?;
        let stale = txn.open_table(STALE)?;
        let range = match after {
            Some(id) => table.range::<&str>((Bound::Excluded(id), Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let mut page = Vec::with_capacity(SCAN_PAGE);
        for item in range.take(SCAN_PAGE) {
            let (k, v) = item?;
            let marked = stale.get(k.value())?.is_some();
            page.push((
                k.value().to_owned(),
                MachineRecord::decode(v.value())?,
                marked,
            ));
        }
        Ok(page)
    }

    /// The pending dual-control votes for a machine.
    pub fn votes(&self, id: &str) -> Result<Vec<Vote>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(APPROVALS)?;
        let found = table.get(id)?;
        match found {
            Some(v) => decode_votes(v.value()),
            None => Ok(Vec::new()),
        }
    }

    /// Audit entries, newest last, optionally for one machine; `page` counts from 1.
    pub fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), StoreError> {
        // Only the page is kept: the log grows by every change to every machine.
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let wanted = start..start.saturating_add(per_page);
        let decode = |k: u64, v: &[u8]| {
            AuditEntry::decode(v)
                .ok_or_else(|| StoreError(format!("audit entry {k} does not decode")))
        };
        let mut out = Vec::new();
        let Some(machine_id) = machine_id else {
            let total = usize::try_from(table.len()?).unwrap_or(usize::MAX);
            for item in table.iter()?.skip(start).take(per_page) {
                let (k, v) = item?;
                out.push(decode(k.value(), v.value())?);
            }
            return Ok((out, total));
        };
        let mut total = 0;
        for item in table.iter()? {
            let (k, v) = item?;
            let entry = decode(k.value(), v.value())?;
            if entry.machine_id.as_deref() == Some(machine_id) {
                if wanted.contains(&total) {
                    out.push(entry);
                }
                total += 1;
            }
        }
        Ok((out, total))
    }

    /// Recomputes the whole chain.
    /// A consistent logical copy of this registry into a new file `to`, from one read
    /// transaction, while requests keep writing (DESIGN.md §7).
    pub fn backup(&self, to: &Path) -> Result<BackupSummary, StoreError> {
        copy_registry(&self.db.begin_read()?, to)
    }

    /// The same from a registry file no process has open (the service is stopped); `None`
    /// when a running service holds it (ask the service: `GET /api/v1/backup`).
    pub fn backup_file(path: &Path, to: &Path) -> Result<Option<BackupSummary>, StoreError> {
        let cannot =
            |e: redb::DatabaseError| StoreError(format!("cannot open {}: {e}", path.display()));
        match builder().open_read_only(path) {
            Ok(source) => copy_registry(&source.begin_read()?, to).map(Some),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Ok(None),
            // Not shut down cleanly: repaired as the next start would, then copied.
            Err(redb::DatabaseError::RepairAborted) => {
                let source = builder().open(path).map_err(cannot)?;
                copy_registry(&source.begin_read()?, to).map(Some)
            }
            Err(e) => Err(cannot(e)),
        }
    }

    /// Names of the tables in the file (for checking that a backup copies them all).
    pub fn table_names(&self) -> Result<Vec<String>, StoreError> {
        use redb::TableHandle as _;
        let txn = self.db.begin_read()?;
        Ok(txn.list_tables()?.map(|t| t.name().to_owned()).collect())
    }

    pub fn audit_verify(&self) -> Result<audit::Verification, StoreError> {
        audit_verify_in(&self.db.begin_read()?)
    }

    /// Machines in a registry file no process has open (a backup copy).
    pub fn machines_in_file(path: &Path) -> Result<u64, StoreError> {
        let db = builder().open_read_only(path)?;
        let txn = db.begin_read()?;
        Ok(txn.open_table(MACHINES)?.len()?)
    }

    /// Verifies the audit chain of a registry file no process has open (a backup copy).
    pub fn audit_verify_file(path: &Path) -> Result<audit::Verification, StoreError> {
        audit_verify_in(&builder().open_read_only(path)?.begin_read()?)
    }
}

/// Copies every table seen by `read` into a new redb file at `to` (via `to.partial`, made
/// durable, then renamed, so `to` is only ever a complete copy).
/// How every registry file is opened: redb's default cache (1 GiB) lets one full read pull
/// the whole file into the process (a backup of 100,000 machines peaked at 111 MiB).
fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

fn copy_registry(read: &redb::ReadTransaction, to: &Path) -> Result<BackupSummary, StoreError> {
    if to.exists() {
        return Err(StoreError(format!(
            "{} exists: choose a new file",
            to.display()
        )));
    }
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let copy = builder().create(&partial)?;
    let write = copy.begin_write()?;
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        read: &redb::ReadTransaction,
        write: &redb::WriteTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<u64, StoreError>
    where
        for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
        for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
    {
        let mut to = write.open_table(def)?;
        let from = match read.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        for item in from.iter()? {
            let (k, v) = item?;
            to.insert(k.value(), v.value())?;
            n += 1;
        }
        Ok(n)
    }
    let machines = table(read, &write, MACHINES)?;
    table(read, &write, BY_EK)?;
    table(read, &write, BY_TOKEN)?;
    table(read, &write, APPROVALS)?;
    let audit_entries = table(read, &write, AUDIT)?;
    table(read, &write, USED_NONCES)?;
    table(read, &write, STALE)?;
    table(read, &write, META)?;
    write.commit()?;
    drop(copy);
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(&partial, to))
        .map_err(|e| StoreError(format!("cannot put the copy at {}: {e}", to.display())))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(BackupSummary {
        machines,
        audit_entries,
    })
}

fn audit_verify_in(txn: &redb::ReadTransaction) -> Result<audit::Verification, StoreError> {
    {
        // One entry at a time: the log can outgrow memory.
        let table = txn.open_table(AUDIT)?;
        let mut failed = None;
        let entries = table.iter()?.map_while(|item| match item {
            Ok((k, v)) => Some((k.value(), AuditEntry::decode(v.value()))),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let verification = audit::verify(entries);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(verification),
        }
    }
}

fn encode_votes(votes: &[Vote]) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend(postcard::to_allocvec(votes).unwrap_or_default());
    out
}

fn decode_votes(bytes: &[u8]) -> Result<Vec<Vote>, StoreError> {
    match bytes.split_first() {
        Some((&1, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("approval votes: {e}")))
        }
        _ => Err(StoreError("approval votes: unknown record version".into())),
    }
}
