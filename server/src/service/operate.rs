//! Operator state changes (DESIGN.md §2): reject, lock, unlock, revoke (with wipe), delete,
//! and forgetting a PCR baseline. The record stays (except on delete); the reason goes to the
//! audit log with the change.

use attest_common::lifecycle::{Event, transition};

use super::{Actor, Change, Service, ServiceError, not_found};
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

/// The audit action of an operator event.
fn action_of(event: Event) -> AuditAction {
    match event {
        Event::Approve => AuditAction::Approve,
        Event::Reject => AuditAction::Reject,
        Event::Lock => AuditAction::Lock,
        Event::Unlock => AuditAction::Unlock,
        Event::Revoke { .. } => AuditAction::Revoke,
        Event::Delete => AuditAction::Delete,
        Event::Register => AuditAction::Register,
        Event::SelfRegister => AuditAction::SelfRegister,
        Event::Attest => AuditAction::Attest,
        Event::Enroll => AuditAction::Enroll,
    }
}

/// Runs the lifecycle transition for `event` on machine `id` inside `tx`, `update` applied
/// to the record, with its audit entry; `None` when the event deletes the record.
pub(super) fn apply_event(
    tx: &impl RegistryTx,
    id: &str,
    event: Event,
    actor: &Actor,
    detail: String,
    now: u64,
    update: impl FnOnce(&mut MachineRecord),
) -> Result<Option<MachineRecord>, ServiceError> {
    let mut record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
    let t = transition(Some(record.state), event)?;
    let prev = record.state.status;
    let action = action_of(event);
    match t.to {
        Some(state) => {
            record.state = state;
            record.updated_at = now;
            update(&mut record);
            tx.put_machine(&record)?;
            Change::of(action, &record, Some(prev), detail).record(tx, actor, now)?;
            Ok(Some(record))
        }
        None => {
            tx.delete_machine(&record)?;
            Change::of(action, &record, Some(prev), detail)
                .deleted()
                .record(tx, actor, now)?;
            Ok(None)
        }
    }
}

impl<R: Registry> Service<R> {
    /// Reject, lock, unlock or revoke: the record stays, the reason goes to the audit log.
    fn change_state(
        &self,
        id: &str,
        event: Event,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        let (verb, extra) = match event {
            Event::Reject => ("rejected", String::new()),
            Event::Lock => ("locked", String::new()),
            Event::Unlock => ("unlocked", String::new()),
            Event::Revoke { wipe } => ("revoked", format!(" wipe={wipe}")),
            other => unreachable!("{} is not an operator state change", other.name()),
        };
        let detail = format!("Machine {verb}: id={id}{extra} reason={reason}");
        let now = self.platform.now();
        let changed = self
            .registry
            .write(|tx| apply_event(tx, id, event, actor, detail, now, |_| {}))
            .map(|r| r.expect("these events keep the record"));
        // A rejected machine no longer waits for approval.
        self.unverified_quota.forget();
        changed
    }

    pub fn reject(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Reject, reason, actor)
    }

    pub fn lock(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Lock, reason, actor)
    }

    pub fn unlock(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Unlock, reason, actor)
    }

    pub fn revoke(
        &self,
        id: &str,
        wipe: bool,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Revoke { wipe }, reason, actor)
    }

    /// Deletes a revoked or rejected record (its audit entries stay).
    pub fn delete(&self, id: &str, actor: &Actor) -> Result<(), ServiceError> {
        let detail = format!("Machine record deleted: id={id}");
        let now = self.platform.now();
        let deleted = self
            .registry
            .write(|tx| apply_event(tx, id, Event::Delete, actor, detail, now, |_| {}))
            .map(|_| ());
        self.unverified_quota.forget();
        deleted
    }

    /// Forgets a machine's PCR baseline and TPM clock reference: its next verified
    /// attestation pins new ones (after a deliberate firmware or boot-chain change, a TPM
    /// cleared or its firmware updated).
    pub fn reset_baseline(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        let now = self.platform.now();
        self.registry.write(|tx| {
            let mut record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
            let had = record.pcr_baseline.take().is_some();
            // The TPM clock reference too: after a TPM was cleared or re-flashed on
            // purpose, its next accepted quote is the new reference (`service::tpm_clock`).
            let had_clock = record.tpm_clock.take().is_some();
            record.updated_at = now;
            tx.put_machine(&record)?;
            let detail = format!(
                "PCR baseline reset: id={id} had_baseline={had} had_tpm_clock={had_clock} reason={reason}"
            );
            Change::about(AuditAction::PcrBaselineReset, &record, detail).record(tx, actor, now)?;
            Ok(record)
        })
    }
}
