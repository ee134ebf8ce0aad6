//! The routine attestation (DESIGN.md §7): an attested machine whose evidence verified and
//! whose PCRs satisfy its policy changes nothing but the time of its last attestation and
//! the nonce it used, so it is written in a batch with the others (`Registry::write_batched`)
//! and not audited. Anything else takes the full path, which decides, audits and refuses.

use attest_common::lifecycle::{Action, Transition};
use attest_common::wire::AttestRequest;

use super::attest::AttestOutcome;
use super::evidence::Checked;
use super::{Service, ServiceError};
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// The batched write of a routine attestation checked against `snapshot`; `None` when
    /// anything differs from that (the machine changed since `snapshot` was read, the nonce
    /// was used, the machine is marked stale, ...).
    pub(super) fn heartbeat(
        &self,
        req: &AttestRequest,
        snapshot: MachineRecord,
        evidence: &Checked,
        now: u64,
    ) -> Result<Option<AttestOutcome>, ServiceError> {
        let routine = self
            .attest_transition(&snapshot)
            .is_ok_and(|t| self.routine(&snapshot, &t, evidence, req));
        if !routine {
            return Ok(None);
        }
        let done = self.registry.write_batched(|tx| {
            if tx.nonce_used(&req.nonce_id)? || tx.is_stale(&snapshot.id)? {
                return Ok(None);
            }
            match tx.machine(&snapshot.id)? {
                Some(current) if current == snapshot => {}
                _ => return Ok(None),
            }
            let mut record = snapshot;
            record.last_attested_at = Some(now);
            record.tpm_clock = evidence.clock;
            record.updated_at = now;
            tx.use_nonce(&req.nonce_id, now)?;
            tx.purge_nonces(now)?;
            tx.update_machine(&record)?;
            Ok(Some(AttestOutcome {
                machine_id: record.id,
                status: record.state.status,
                action: Action::None,
                config: None,
            }))
        })?;
        Ok(done)
    }

    /// Whether attesting `record` (taking transition `t`) with this evidence is routine: an
    /// attested, activated machine whose quote verified, whose TPM neither rebooted nor
    /// changed its counters or firmware since, whose PCRs equal its baseline and
    /// which has its config, told no action and left in its state. Such an attestation changes nothing but the
    /// time of the last one (and clears a stale mark, which the callers check). One
    /// predicate for both paths, so that the batched heartbeat never takes an attestation
    /// the full path would have audited.
    pub(super) fn routine(
        &self,
        record: &MachineRecord,
        t: &Transition,
        evidence: &Checked,
        req: &AttestRequest,
    ) -> bool {
        use attest_common::lifecycle::Status;
        record.state.status == Status::Attested
            && record.ak_activated
            && evidence.quote.is_ok()
            && evidence.clock.is_some_and(|c| {
                super::tpm_clock::changes(record.tpm_clock.as_ref(), &c).is_empty()
            })
            && (record.config_delivered_at.is_some() || self.configs.is_none())
            && t.action.unwrap_or(Action::None) == Action::None
            && t.to.is_none_or(|to| to == record.state)
            && self
                .policies
                .for_role(record.role)
                .check(record.pcr_baseline.as_deref(), &req.pcr_values)
                == Ok(false)
    }
}
