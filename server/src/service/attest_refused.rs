//! A proven attestation that its machine's role policy refuses (DESIGN.md §3.4): PCRs
//! that are not the baseline or the reference values, or TPM clock information that went
//! back. The TPM did prove itself, so the refusal is audited (`attest-failed`) in the
//! transaction that used the nonce; nothing the attestation carried (an AK rotation, an
//! activation, new clock values) takes effect, and a PCR violation locks the machine when
//! the policy says so.

use attest_common::lifecycle::{Action, Event, Transition, transition};
use attest_common::wire::AttestRequest;

use super::attest::AttestOutcome;
use super::tpm_clock::ClockChange;
use super::{Actor, Change, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::policy::OnViolation;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// A proven attestation whose PCRs the role's policy refuses: audited, and the machine
    /// (`record` as it was before this attestation: no AK rotation or activation it
    /// carried takes effect) locked in the same transaction when the policy says so.
    pub(super) fn violation(
        &self,
        tx: &R::Tx<'_>,
        mut record: MachineRecord,
        why: String,
        actor: &Actor,
        now: u64,
    ) -> Result<Result<AttestOutcome, ServiceError>, ServiceError> {
        let prev = record.state.status;
        let policy = self.policies.for_role(record.role);
        let lock = (policy.on_violation == OnViolation::Lock)
            .then(|| transition(Some(record.state), Event::Lock).ok())
            .flatten();
        let why = match lock {
            Some(Transition {
                to: Some(locked), ..
            }) => {
                record.state = locked;
                format!("{why}; machine locked by the PCR policy")
            }
            _ => why,
        };
        record.updated_at = now;
        tx.put_machine(&record)?;
        let detail = format!("Attestation failed: id={} reason={why}", record.id);
        Change::of(AuditAction::AttestFailed, &record, Some(prev), detail)
            .record(tx, actor, now)?;
        Ok(Err(ServiceError::forbidden("pcr_policy_violation", why)))
    }

    /// A proven attestation whose TPM clock information the role's policy refuses (counters
    /// or clock gone back, a firmware change when the policy says so): audited, refused,
    /// and nothing about the machine changes (`record` as it was before this attestation).
    pub(super) fn clock_refused(
        &self,
        tx: &R::Tx<'_>,
        record: MachineRecord,
        change: &ClockChange,
        actor: &Actor,
        now: u64,
    ) -> Result<Result<AttestOutcome, ServiceError>, ServiceError> {
        let code = match change {
            ClockChange::Rollback(_) => "tpm_clock_rollback",
            _ => "tpm_firmware_changed",
        };
        let detail = format!(
            "Attestation failed: id={} reason={}",
            record.id,
            change.describe()
        );
        Change::about(AuditAction::AttestFailed, &record, detail).record(tx, actor, now)?;
        Ok(Err(ServiceError::forbidden(
            code,
            format!(
                "attestation of machine {} refused by its role's policy: {}",
                record.id,
                change.describe()
            ),
        )))
    }

    /// Another machine whose TPM proved this EK key already (the key index holds proven
    /// keys only): the first proof of this record is then not a new machine but that one
    /// under another encoding or certificate (DESIGN.md §3.1).
    pub(super) fn proven_elsewhere(
        &self,
        tx: &R::Tx<'_>,
        record: &MachineRecord,
    ) -> Result<Option<MachineRecord>, ServiceError> {
        let Some(key) = record.ek_key_id() else {
            return Ok(None);
        };
        Ok(tx.machine_by_ek_key(&key)?.filter(|o| o.id != record.id))
    }

    /// A first proof refused because another machine holds the EK key: audited on this
    /// record, which stays unproven.
    pub(super) fn key_refused(
        &self,
        tx: &R::Tx<'_>,
        record: MachineRecord,
        other: &MachineRecord,
        actor: &Actor,
        now: u64,
    ) -> Result<Result<AttestOutcome, ServiceError>, ServiceError> {
        let why = format!(
            "this EK key is already machine {}'s ({}, ek_fingerprint {}): one EK key is one \
             machine; delete that record first",
            other.id, other.state.status, other.ek_fingerprint
        );
        let detail = format!("Attestation failed: id={} reason={why}", record.id);
        Change::about(AuditAction::AttestFailed, &record, detail).record(tx, actor, now)?;
        Ok(Err(ServiceError::conflict("ek_key_known", why)))
    }

    /// A revoked machine that proved itself (DESIGN.md §3.7): told `wipe` while its wipe is
    /// pending (every contact, until it confirms), its confirmation (`wipe_done`, bound into
    /// its quote) clears the pending wipe (audited `wipe-confirmed`), and otherwise a signed
    /// answer that it is revoked, so its agent stops. Nothing else about it changes: an AK
    /// rotation or activation it carried does not take effect.
    pub(super) fn revoked_contact(
        &self,
        tx: &R::Tx<'_>,
        mut record: MachineRecord,
        req: &AttestRequest,
        actor: &Actor,
        now: u64,
    ) -> Result<Result<AttestOutcome, ServiceError>, ServiceError> {
        let told = |record: &MachineRecord, action| AttestOutcome {
            machine_id: record.id.clone(),
            status: record.state.status,
            action,
            config: None,
        };
        if !record.state.wipe_pending {
            crate::log::warn(&format!(
                "Revoked machine contacted: id={} action=none",
                record.id
            ));
            return Ok(Ok(told(&record, Action::None)));
        }
        if req.wipe_done {
            record.state.wipe_pending = false;
            record.updated_at = now;
            tx.put_machine(&record)?;
            // The machine's own word, bound to its TPM's quote: it says its wipe hook ran.
            // Whoever holds the TPM could say it without wiping; nothing but the re-telling
            // stops (the machine stays revoked and is served nothing).
            let detail = format!(
                "Wipe confirmed by revoked machine: id={} (the machine's quote-bound claim \
                 that its wipe hook exited 0)",
                record.id
            );
            Change::about(AuditAction::WipeConfirmed, &record, detail).record(tx, actor, now)?;
            return Ok(Ok(told(&record, Action::None)));
        }
        // Audited as sent; logged as the seed's operators alert on it.
        let detail = format!("Wipe sent to revoked machine: id={}", record.id);
        Change::about(AuditAction::Attest, &record, detail).record(tx, actor, now)?;
        tx.log_at(
            crate::log::Level::Warning,
            format!("Revoked machine contacted: id={} action=wipe", record.id),
        );
        Ok(Ok(told(&record, Action::Wipe)))
    }
}
