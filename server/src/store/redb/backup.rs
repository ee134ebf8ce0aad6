//! The logical backup (DESIGN.md §7): every table copied from one read transaction into a
//! new file while writes go on (copying the raw file under a writer gave corrupt copies).

use std::path::Path;

use ::redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::scan::audit_verify_in;
use super::{
    APPROVALS, AUDIT, AUDIT_CHECKPOINTS, BY_EK, BY_EK_KEY, BY_TOKEN, GRANTS, MACHINES, META,
    RedbRegistry, STALE, USED_NONCES, builder,
};
use crate::audit;
use crate::store::{BackupSummary, StoreError};

impl RedbRegistry {
    /// A consistent logical copy of this registry into a new file `to`, from one read
    /// transaction, while requests keep writing (DESIGN.md §7).
    pub fn backup(&self, to: &Path) -> Result<BackupSummary, StoreError> {
        copy_registry(&self.db()?.begin_read()?, to)
    }

    /// The same from a registry file no process has open (the service is stopped); `None`
    /// when a running service holds it (ask the service: `GET /api/v1/backup`).
    pub fn backup_file(path: &Path, to: &Path) -> Result<Option<BackupSummary>, StoreError> {
        let cannot = |e: ::redb::DatabaseError| {
            StoreError::new(format!("cannot open {}: {e}", path.display()))
        };
        match builder().open_read_only(path) {
            Ok(source) => copy_registry(&source.begin_read()?, to).map(Some),
            Err(::redb::DatabaseError::DatabaseAlreadyOpen) => Ok(None),
            // Not shut down cleanly: repaired as the next start would, then copied.
            Err(::redb::DatabaseError::RepairAborted) => {
                let source = builder().open(path).map_err(cannot)?;
                copy_registry(&source.begin_read()?, to).map(Some)
            }
            Err(e) => Err(cannot(e)),
        }
    }

    /// Names of the tables in the file (for checking that a backup copies them all).
    pub fn table_names(&self) -> Result<Vec<String>, StoreError> {
        use ::redb::TableHandle as _;
        let txn = self.db()?.begin_read()?;
        Ok(txn.list_tables()?.map(|t| t.name().to_owned()).collect())
    }

    /// Machines in a registry file no process has open (a backup copy).
    pub fn machines_in_file(path: &Path) -> Result<u64, StoreError> {
        let db = builder().open_read_only(path)?;
        let txn = db.begin_read()?;
        Ok(txn.open_table(MACHINES)?.len()?)
    }

    /// Verifies the audit chain of a registry file no process has open (a backup copy)
    /// against its checkpoints, their signatures not checked.
    pub fn audit_verify_file(path: &Path) -> Result<audit::Verification, StoreError> {
        Self::audit_verify_file_with(path, None)
    }

    /// The same, the checkpoints' signatures checked with `key` when it is given.
    pub fn audit_verify_file_with(
        path: &Path,
        key: Option<&attest_common::nonce::VerifyingKey>,
    ) -> Result<audit::Verification, StoreError> {
        audit_verify_in(&builder().open_read_only(path)?.begin_read()?, key)
    }

    /// The checkpoints of a registry file no process has open, oldest first.
    pub fn audit_checkpoints_file(path: &Path) -> Result<Vec<audit::Checkpoint>, StoreError> {
        let db = builder().open_read_only(path)?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(AUDIT_CHECKPOINTS) {
            Ok(t) => t,
            Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(audit::decode_checkpoint(v.value()).ok_or_else(|| {
                StoreError::new(format!("audit checkpoint {} does not decode", k.value()))
            })?);
        }
        Ok(out)
    }
}

/// Copies every table seen by `read` into a new redb file at `to` (via `to.partial`, made
/// durable, then renamed, so `to` is only ever a complete copy). A failure removes the
/// partial copy, and is a fault of the copy, not of the registry (it must not close it).
fn copy_registry(read: &::redb::ReadTransaction, to: &Path) -> Result<BackupSummary, StoreError> {
    let partial = to.with_extension("partial");
    copy_into(read, to, &partial).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        StoreError::new(format!("the backup copy {}: {}", to.display(), e.message))
    })
}

fn copy_into(
    read: &::redb::ReadTransaction,
    to: &Path,
    partial: &Path,
) -> Result<BackupSummary, StoreError> {
    if to.exists() {
        return Err(StoreError::new(format!(
            "{} exists: choose a new file",
            to.display()
        )));
    }
    let _ = std::fs::remove_file(partial);
    let copy = builder().create(partial)?;
    let write = copy.begin_write()?;
    fn table<K: ::redb::Key + 'static, V: ::redb::Value + 'static>(
        read: &::redb::ReadTransaction,
        write: &::redb::WriteTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<u64, StoreError>
    where
        for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
        for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
    {
        let mut to = write.open_table(def)?;
        let from = match read.open_table(def) {
            Ok(t) => t,
            Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(0),
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
    table(read, &write, BY_EK_KEY)?;
    table(read, &write, BY_TOKEN)?;
    table(read, &write, GRANTS)?;
    table(read, &write, APPROVALS)?;
    let audit_entries = table(read, &write, AUDIT)?;
    table(read, &write, AUDIT_CHECKPOINTS)?;
    table(read, &write, USED_NONCES)?;
    table(read, &write, STALE)?;
    table(read, &write, META)?;
    write.commit()?;
    drop(copy);
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(partial, to))
        .map_err(|e| StoreError::new(format!("cannot put the copy at {}: {e}", to.display())))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(BackupSummary {
        machines,
        audit_entries,
    })
}
