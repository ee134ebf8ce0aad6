//! Whole-table reads: machines page by page, audit pages, the checkpoints and the chain's
//! verification, each holding a page or one entry in memory, never the table (the
//! checkpoints, one per many entries, are answered whole).

use std::ops::{Bound, ControlFlow};

use ::redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::tx::{approved_key, decode_votes};
use super::{APPROVALS, AUDIT, AUDIT_CHECKPOINTS, MACHINES, RedbRegistry, STALE};
use crate::audit::{self, AuditEntry, Checkpoint};
use crate::record::MachineRecord;
use crate::store::{StoreError, Vote};

/// Machines read per read transaction by [`RedbRegistry::each_machine`].
pub const SCAN_PAGE: usize = 256;

/// One page of a scan.
struct Page {
    /// The records that decode, with their stale marks.
    records: Vec<(MachineRecord, bool)>,
    /// The last id read (damaged or not): the next page starts after it.
    last: Option<String>,
    /// No record follows.
    end: bool,
}

impl RedbRegistry {
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
            for (m, marked) in page.records {
                if f(m, marked).is_break() {
                    return Ok(());
                }
            }
            match page.last {
                Some(id) if !page.end => after = Some(id),
                _ => return Ok(()),
            }
        }
    }

    /// Up to [`SCAN_PAGE`] machines with ids after `after`, from one short read transaction.
    fn machine_page(&self, after: Option<&str>) -> Result<Page, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(MACHINES)?;
        let stale = txn.open_table(STALE)?;
        let range = match after {
            Some(id) => table.range::<&str>((Bound::Excluded(id), Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let mut page = Page {
            records: Vec::with_capacity(SCAN_PAGE),
            last: None,
            end: true,
        };
        for (read, item) in range.enumerate() {
            if read == SCAN_PAGE {
                page.end = false;
                break;
            }
            let (k, v) = item?;
            let marked = stale.get(k.value())?.is_some();
            let record = MachineRecord::decode(v.value());
            self.damaged(k.value(), record.as_ref().err());
            // A damaged record is skipped (counted and logged by `damaged`), not an error.
            if let Ok(record) = record {
                page.records.push((record, marked));
            }
            page.last = Some(k.value().to_owned());
        }
        Ok(page)
    }

    /// The pending dual-control votes for a machine, and those that approved it.
    pub fn votes(&self, id: &str) -> Result<(Vec<Vote>, Vec<Vote>), StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(APPROVALS)?;
        let read = |key: &str| match table.get(key)? {
            Some(v) => decode_votes(v.value()),
            None => Ok(Vec::new()),
        };
        Ok((read(id)?, read(&approved_key(id))?))
    }

    /// Audit entries, newest last, optionally for one machine; `page` counts from 1.
    pub fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), StoreError> {
        // Only the page is kept: the log grows by every change to every machine.
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let wanted = start..start.saturating_add(per_page);
        let decode = |k: u64, v: &[u8]| {
            AuditEntry::decode(v)
                .ok_or_else(|| StoreError::new(format!("audit entry {k} does not decode")))
        };
        // Newest first: page 1 is the most recent (the seed's "most recent 50").
        let mut out = Vec::new();
        let Some(machine_id) = machine_id else {
            let total = usize::try_from(table.len()?).unwrap_or(usize::MAX);
            for item in table.iter()?.rev().skip(start).take(per_page) {
                let (k, v) = item?;
                out.push(decode(k.value(), v.value())?);
            }
            return Ok((out, total));
        };
        let mut total = 0;
        for item in table.iter()?.rev() {
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

    /// The chain checked against the checkpoints (signatures with `key`, when given), from
    /// one read transaction.
    pub fn audit_verify_with(
        &self,
        key: Option<&attest_common::nonce::VerifyingKey>,
    ) -> Result<audit::Verification, StoreError> {
        audit_verify_in(&self.db()?.begin_read()?, key)
    }

    /// The chain checked against the checkpoints, signatures not checked.
    pub fn audit_verify(&self) -> Result<audit::Verification, StoreError> {
        self.audit_verify_with(None)
    }

    /// Every checkpoint, oldest first.
    pub fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(AUDIT_CHECKPOINTS)?;
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

pub(super) fn audit_verify_in(
    txn: &::redb::ReadTransaction,
    key: Option<&attest_common::nonce::VerifyingKey>,
) -> Result<audit::Verification, StoreError> {
    // One entry and one checkpoint at a time: the log can outgrow memory.
    let table = txn.open_table(AUDIT)?;
    // A file from before checkpoints has no such table: no checkpoints.
    let checkpoints = match txn.open_table(AUDIT_CHECKPOINTS) {
        Ok(t) => Some(t),
        Err(::redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut failed = None;
    let entries = table.iter()?.map_while(|item| match item {
        Ok((k, v)) => Some((k.value(), AuditEntry::decode(v.value()))),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let mut failed_checkpoints = None;
    let checkpoint_items = match &checkpoints {
        Some(t) => Some(t.iter()?),
        None => None,
    };
    let checkpoints = checkpoint_items
        .into_iter()
        .flatten()
        .map_while(|item| match item {
            Ok((k, v)) => Some((k.value(), audit::decode_checkpoint(v.value()))),
            Err(e) => {
                failed_checkpoints = Some(e);
                None
            }
        });
    let verification = audit::verify_with_checkpoints(entries, checkpoints, key);
    match failed.or(failed_checkpoints) {
        Some(e) => Err(e.into()),
        None => Ok(verification),
    }
}
