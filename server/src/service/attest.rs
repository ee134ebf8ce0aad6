//! `POST /attest` (DESIGN.md §2, §3.2–3.4, §3.8): nothing for a machine without its TPM.
//!
//! Before anything is written or answered, the attestation must prove itself: a challenge
//! this server issued and that has not expired, a known EK, a quote over exactly the
//! challenge's PCR selection with the challenge nonce, signed by the AK bound to that EK —
//! activated by the EK (credential activation) — or by a new AK the same EK has just
//! activated (AK rotation, the reinstall path). What fails there writes nothing durable
//! (`refusals`: counted, logged at a bounded rate). Only then is the nonce used, the
//! lifecycle applied and its answer given: `pending` (not approved), `apply-config` with a
//! single-use config URL and the digest of that config, `lock`, `wipe`, `none`. A verified
//! attestation refused by the role's policy (PCRs, TPM clock) is audited
//! (`attest_refused`). The routine heartbeat of an attested machine takes the batched path
//! (`heartbeat`). Which AK must have signed, and whether the evidence proves the TPM:
//! `attest_proof`; the single-use config URL an answer carries: `config_delivery`.

use attest_common::crypto::CryptoProvider;
use attest_common::lifecycle::{Action, Event, Status, Transition, transition};
use attest_common::wire::AttestRequest;

use super::attest_proof::Proof;
use super::evidence::Checked;
use super::refusals::Refusal;
use super::tpm_clock;
use super::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

/// What an attestation achieved: the lifecycle's answer for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestOutcome {
    pub machine_id: String,
    pub status: Status,
    pub action: Action,
    /// With `apply-config`: the single-use config token and the SHA-384 of its config.
    pub config: Option<(String, [u8; 48])>,
}

impl<R: Registry> Service<R> {
    /// Checks the attestation, uses its nonce, applies the lifecycle.
    pub fn attest(
        &self,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
        actor: &Actor,
    ) -> Result<AttestOutcome, ServiceError> {
        let now = self.platform.now();
        let fp = req.ek_fingerprint.to_string();
        let nonce = self.open_nonce(&req.nonce_id, now)?;
        // The signature check is the expensive part: done on a snapshot, outside the
        // (serial) write transaction, which re-checks that the snapshot still holds.
        let Some(snapshot) = self.registry.machine_by_ek(&fp)? else {
            return Err(self.unauthenticated(Refusal::UnknownEk, now, || {
                ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_machine",
                    format!("Attestation from unknown EK {fp}: register or self-register first"),
                )
            }));
        };
        let candidate = self.candidate(&snapshot, req)?;
        let evidence = Checked::new(
            &nonce,
            &candidate.ak,
            candidate.secret.as_deref(),
            req,
            provider,
            &self.challenges.pcr_selection,
        );
        self.proven(&snapshot, &candidate, &evidence, now)?;
        if !candidate.rotation
            && let Some(done) = self.heartbeat(req, snapshot.clone(), &evidence, now)?
        {
            return Ok(done);
        }
        self.registry.write(|tx| {
            let Some(record) = tx.machine_by_ek(&fp)? else {
                return Err(ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_machine",
                    format!("no machine has EK {fp}"),
                ));
            };
            // Changed since the snapshot (an operator acted, another attestation rotated the
            // AK): checked again against what is there now.
            let (candidate, clock) = if record == snapshot {
                (candidate, evidence.clock)
            } else {
                let c = self.candidate(&record, req)?;
                let e = Checked::new(
                    &nonce,
                    &c.ak,
                    c.secret.as_deref(),
                    req,
                    provider,
                    &self.challenges.pcr_selection,
                );
                self.proven(&record, &c, &e, now)?;
                (c, e.clock)
            };
            // Opened above (`open_nonce`): only its single use is left to record.
            self.mark_used(tx, &req.nonce_id, now)?;
            let proof = Proof {
                candidate: &candidate,
                clock,
            };
            self.apply(tx, record, &proof, req, actor, now)
        })?
    }

    /// The lifecycle for a proven attestation, in the transaction that used its nonce.
    fn apply(
        &self,
        tx: &R::Tx<'_>,
        mut record: MachineRecord,
        proof: &Proof<'_>,
        req: &AttestRequest,
        actor: &Actor,
        now: u64,
    ) -> Result<Result<AttestOutcome, ServiceError>, ServiceError> {
        let candidate = proof.candidate;
        let prev = record.state.status;
        // What a refusal below leaves: the record as it was (a rotation or an activation
        // takes effect only with an accepted attestation).
        let before = record.clone();
        let mut changes: Vec<String> = Vec::new();
        let mut rotated = None;
        if candidate.rotation {
            // No AK was ever activated: the one on record was registered without proof (by
            // the machine itself, or by someone who knew its EK certificate).
            let first = !record.ak_activated;
            record.ak_public = Some(candidate.ak.clone());
            record.ak_activated = true;
            record.activation_secret = None;
            // A new AK is a reinstalled or reset machine: it needs its config again.
            record.config_delivered_at = None;
            let detail = format!(
                "AK rotated: id={} ek={} (a new AK activated by the same EK{})",
                record.id,
                record.ek_fingerprint,
                if first {
                    "; the AK registered before was never activated"
                } else {
                    ""
                }
            );
            rotated = Some(detail);
        } else if !record.ak_activated {
            record.ak_activated = true;
            record.activation_secret = None;
            changes.push("AK activated".into());
        }
        if !before.ak_activated
            && let Some(other) = self.proven_elsewhere(tx, &record)?
        {
            return self.key_refused(tx, before, &other, actor, now);
        }
        if record.state.status == Status::Revoked {
            return self.revoked_contact(tx, before, req, actor, now);
        }
        let t = match self.attest_transition(&record) {
            Ok(t) => t,
            Err(refused) => {
                return Ok(Err(ServiceError::forbidden(
                    "machine_refused",
                    refused.to_string(),
                )));
            }
        };
        let mut action = t.action.unwrap_or(Action::None);
        let clock_changes = proof.clock.as_ref().map_or_else(Vec::new, |c| {
            tpm_clock::changes(record.tpm_clock.as_ref(), c)
        });
        let attesting = matches!(prev, Status::Registered | Status::Attested)
            && t.to.is_some_and(|s| s.status == Status::Attested);
        // Told and audited in every state (a locked or pending machine's too); a refusal
        // below discards them with everything else.
        changes.extend(clock_changes.iter().map(|c| c.describe().to_owned()));
        if attesting {
            let policy = self.policies.for_role(record.role);
            if let Some(change) = clock_changes.iter().find(|c| c.refused_by(policy)) {
                return self.clock_refused(tx, before, change, actor, now);
            }
            match policy.check(record.pcr_baseline.as_deref(), &req.pcr_values) {
                Ok(true) => {
                    record.pcr_baseline = Some(req.pcr_values.to_vec());
                    changes.push("PCR baseline pinned".into());
                }
                Ok(false) => {}
                Err(v) => return self.violation(tx, before, v.to_string(), actor, now),
            }
            record.last_attested_at = Some(now);
            if tx.clear_stale(&record.id)? {
                changes.push("fresh again".into());
            }
        }
        if let Some(to) = t.to {
            record.state = to;
        }
        // An accepted quote's clock is the reference for the next one, but for one that went
        // back outside an attestation the role's policy let through (a locked or pending
        // machine is still told its action): that must not launder the rollback.
        let went_back = clock_changes
            .iter()
            .any(tpm_clock::ClockChange::is_rollback);
        if proof.clock.is_some() && (attesting || !went_back) {
            record.tpm_clock = proof.clock;
        }
        if record.state.status == Status::Attested
            && record.config_delivered_at.is_none()
            && let Some(applied) = &req.config_applied
            && self.full_config(&record).map(|y| sha384(y.as_bytes())) == Some(applied.0)
        {
            record.config_delivered_at = Some(now);
            changes.push("config applied".into());
        }
        let mut config = None;
        if record.state.status == Status::Attested
            && matches!(action, Action::None | Action::ApplyConfig)
        {
            action = Action::None;
            if let Some(grant) = self.grant(tx, &record, now)? {
                action = Action::ApplyConfig;
                config = Some(grant);
            }
        }
        record.updated_at = now;
        tx.put_machine(&record)?;
        if let Some(detail) = rotated {
            Change::about(AuditAction::AkRotated, &record, detail).record(tx, actor, now)?;
        }
        let eventful = prev != record.state.status
            || !changes.is_empty()
            || !matches!(action, Action::None | Action::Pending);
        if eventful {
            let id = &record.id;
            let role = record.role.map_or("none", |r| r.as_str());
            let mut detail = match action {
                Action::Lock => format!("Locked machine contacted: id={id}"),
                Action::Wipe => format!("Wipe sent to revoked machine: id={id}"),
                Action::Pending => format!("Pending machine contacted: id={id}"),
                Action::ApplyConfig => {
                    format!("Machine attested: id={id} role={role} action=apply-config")
                }
                Action::None => format!("Machine attested: id={id} role={role}"),
            };
            if !changes.is_empty() {
                detail.push_str(&format!(" ({})", changes.join(", ")));
            }
            let change = Change::of(AuditAction::Attest, &record, Some(prev), detail);
            // The seed's levels: a locked or revoked machine's contact is a warning.
            let change = match action {
                Action::Lock | Action::Wipe => change.warning(),
                _ => change,
            };
            change.record(tx, actor, now)?;
        }
        Ok(Ok(AttestOutcome {
            machine_id: record.id,
            status: record.state.status,
            action,
            config,
        }))
    }

    /// The lifecycle's transition for an attestation of `record`: a registered machine
    /// that no operator has approved stays registered and is told `pending`.
    pub(super) fn attest_transition(
        &self,
        record: &MachineRecord,
    ) -> Result<Transition, attest_common::lifecycle::Refused> {
        if record.state.status == Status::Registered && !record.approved() {
            return Ok(Transition {
                to: Some(record.state),
                action: Some(Action::Pending),
                reregistration: false,
            });
        }
        transition(Some(record.state), Event::Attest)
    }
}

/// SHA-384 of `bytes`.
pub(super) fn sha384(bytes: &[u8]) -> [u8; 48] {
    use sha2::{Digest, Sha384};
    let mut out = [0u8; 48];
    out.copy_from_slice(&Sha384::digest(bytes));
    out
}
