//! What operators read: machines (one or all, each with its staleness), the audit log (its
//! verification and checkpoints are in `checkpoints`), the `/metrics` text, and a live
//! backup of the registry.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use attest_common::lifecycle::Status;

use super::{Actor, Change, Service, ServiceError, not_found};
use crate::audit::AuditEntry;
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{BackupSummary, Registry};

impl<R: Registry> Service<R> {
    pub fn machine(&self, id: &str) -> Result<MachineRecord, ServiceError> {
        self.registry.machine(id)?.ok_or_else(|| not_found(id))
    }

    /// Every machine (of one status), in memory: for tests and small registries; listings
    /// use [`Service::each_machine`].
    pub fn machines(&self, status: Option<Status>) -> Result<Vec<MachineRecord>, ServiceError> {
        let mut all = Vec::new();
        self.each_machine(status, |m, _| {
            all.push(m);
            ControlFlow::Continue(())
        })?;
        Ok(all)
    }

    /// The machines (of one status), each with whether it is stale now, one at a time
    /// until `f` breaks: a listing of the whole registry that holds one record in memory.
    pub fn each_machine(
        &self,
        status: Option<Status>,
        mut f: impl FnMut(MachineRecord, bool) -> ControlFlow<()>,
    ) -> Result<(), ServiceError> {
        let now = self.platform.now();
        self.registry.each_machine(|m, _| {
            if status.is_some_and(|s| m.state.status != s) {
                return ControlFlow::Continue(());
            }
            let stale = self.is_stale_at(&m, now);
            f(m, stale)
        })?;
        Ok(())
    }

    /// Audit entries, oldest first, optionally for one machine; `page` counts from 1.
    pub fn audit_page(
        &self,
        machine_id: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<AuditEntry>, usize), ServiceError> {
        Ok(self.registry.audit_page(machine_id, page, per_page)?)
    }

    /// The `/metrics` exposition text.
    pub fn metrics(&self) -> Result<String, ServiceError> {
        crate::metrics::render(self, self.platform.now())
    }

    /// Whether the registry answers a read (`/readyz`).
    pub fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.registry.ready()?)
    }

    /// A consistent copy of the registry in a new file in `dir` (DESIGN.md §7), audited
    /// after the copy was taken; the caller streams it out and removes it.
    pub fn backup(
        &self,
        dir: &Path,
        actor: &Actor,
    ) -> Result<(PathBuf, BackupSummary), ServiceError> {
        let tag = crate::audit::hex(&self.platform.bytes::<8>());
        let path = dir.join(format!(".backup-{tag}"));
        let summary = self.registry.backup(&path)?;
        let now = self.platform.now();
        let detail = format!(
            "Backup taken: machines={} audit_entries={}",
            summary.machines, summary.audit_entries
        );
        let audited = self
            .registry
            .write(|tx| Change::global(AuditAction::Backup, detail).record(tx, actor, now));
        if let Err(e) = audited {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok((path, summary))
    }

    /// Audits an intended replacement of a server key or the Enrollment CA
    /// (`attestation-server rotate`, run while the service is stopped).
    pub fn audit_rotation(&self, detail: String, actor: &Actor) -> Result<(), ServiceError> {
        let now = self.platform.now();
        Ok(self
            .registry
            .write(|tx| Change::global(AuditAction::KeyRotated, detail).record(tx, actor, now))?)
    }
}
