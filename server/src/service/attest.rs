//! `POST /attest` (DESIGN.md §2, §3.2–3.4): the challenge nonce is used, the evidence
//! checked, and the lifecycle answers. Every attempt uses its nonce; every refusal is
//! audited with its reason and changes nothing else (except a PCR policy that locks). The
//! routine heartbeat of an attested machine takes the batched path (`heartbeat`).

use attest_common::crypto::CryptoProvider;
use attest_common::lifecycle::{Action, Event, State, Status, Transition, transition};
use attest_common::wire::AttestRequest;

use super::evidence::Checked;
use super::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::policy::OnViolation;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

/// What an attestation achieved: the lifecycle's answer for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestOutcome {
    pub machine_id: String,
    pub status: Status,
    pub action: Action,
    /// The config token, with `apply-config`.
    pub config_token: Option<String>,
}

/// Inner error: a refusal to commit (nonce used, failure audited) and then answer.
type Answer = Result<AttestOutcome, ServiceError>;

impl<R: Registry> Service<R> {
    /// Uses the challenge nonce, then applies the lifecycle. For registered and attested
    /// machines the AK must have been activated (the first attestation carries the proof),
    /// the quote must verify with `provider`, and the PCRs must satisfy the policy.
    pub fn attest(
        &self,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
        actor: &Actor,
    ) -> Result<AttestOutcome, ServiceError> {
        let now = self.platform.now();
        let fp = req.ek_fingerprint.to_string();
        // The signature check is the expensive part: do it before the write transaction,
        // on a snapshot, so that attestations verify in parallel and the (serial) write
        // only re-checks that the snapshot still holds. If it does not (the machine changed
        // in between), the evidence is checked again inside.
        let nonce = self.registry.challenge_key().open(&req.nonce_id, now).ok();
        let snapshot = match nonce {
            Some(_) => self.registry.machine_by_ek(&fp)?,
            None => None,
        };
        let checked = nonce
            .zip(snapshot.as_ref())
            .and_then(|((nonce, _), record)| {
                let ak = record.ak_public.as_deref()?;
                let secret = record.activation_secret.as_deref();
                Some(Checked::new(&nonce, ak, secret, req, provider))
            });
        if let (Some(record), Some(evidence)) = (snapshot, &checked)
            && let Some(done) = self.heartbeat(req, record, evidence, now)?
        {
            return Ok(done);
        }
        self.registry
            .write(|tx| self.attest_in(tx, req, checked.as_ref(), provider, actor, now))?
    }

    /// The full path, in one write transaction.
    fn attest_in(
        &self,
        tx: &R::Tx<'_>,
        req: &AttestRequest,
        checked: Option<&Checked>,
        provider: &dyn CryptoProvider,
        actor: &Actor,
        now: u64,
    ) -> Result<Answer, ServiceError> {
        let fp = req.ek_fingerprint.to_string();
        let nonce = match self.use_nonce(tx, &req.nonce_id, now) {
            Ok(n) => n,
            Err(e) if e.kind != ErrorKind::Internal => {
                // Replayed, expired or unknown challenge: refused and audited, and the
                // machine (if the EK is known) is left as it was.
                let known = tx.machine_by_ek(&fp)?;
                let detail = format!(
                    "Attestation failed: id={} ek={fp} reason={}",
                    known.as_ref().map_or("unknown", |m| m.id.as_str()),
                    e.message
                );
                Change::about_any(AuditAction::AttestFailed, known.as_ref(), detail)
                    .record(tx, actor, now)?;
                return Ok(Err(e));
            }
            Err(e) => return Err(e),
        };
        let Some(mut record) = tx.machine_by_ek(&fp)? else {
            // First attestation of an unknown EK: pending approval, nothing trusted yet.
            let t = transition(None, Event::Attest)?;
            let record = MachineRecord::new(
                self.platform.machine_id(),
                fp.clone(),
                attest_common::EkSource::Cert,
                t.to.unwrap_or(State::new(Status::PendingApproval)),
                now,
            );
            tx.put_machine(&record)?;
            let detail = format!(
                "New machine registered: id={} role=none ek={fp} (first attestation of an unknown EK)",
                record.id
            );
            Change::of(AuditAction::FirstAttest, &record, None, detail).record(tx, actor, now)?;
            return Ok(Ok(AttestOutcome {
                machine_id: record.id,
                status: Status::PendingApproval,
                action: Action::Pending,
                config_token: None,
            }));
        };
        let prev = record.state.status;
        let fail = |record: &MachineRecord, code: &'static str, why: String| {
            let detail = format!("Attestation failed: id={} reason={why}", record.id);
            Change::of(AuditAction::AttestFailed, record, Some(prev), detail)
                .record(tx, actor, now)?;
            Ok::<_, ServiceError>(Err(ServiceError::forbidden(code, why)))
        };
        let t = match transition(Some(record.state), Event::Attest) {
            Ok(t) => t,
            Err(refused) => return fail(&record, "machine_refused", refused.to_string()),
        };
        let action = t.action.unwrap_or(Action::None);
        // A heartbeat that changes nothing but the time of the last attestation: kept on
        // the record, not appended to the audit log (which would otherwise grow by one
        // entry per machine per interval and drown the changes it is there to show).
        let mut routine = false;
        if matches!(prev, Status::Registered | Status::Attested) {
            let Some(ak_bytes) = record.ak_public.clone() else {
                let why = "no AK on record: register or self-register with ak_public first";
                let detail = format!("Attestation failed: id={} reason={why}", record.id);
                Change::of(AuditAction::AttestFailed, &record, Some(prev), detail)
                    .record(tx, actor, now)?;
                return Ok(Err(ServiceError::new(
                    ErrorKind::Unprocessable,
                    "no_ak",
                    why,
                )));
            };
            let secret = record.activation_secret.as_deref();
            let evidence = match checked {
                Some(c) if c.holds(&nonce, &ak_bytes, secret) => c.clone(),
                _ => Checked::new(&nonce, &ak_bytes, secret, req, provider),
            };
            routine = self.routine(&record, &t, &evidence, req);
            if !record.ak_activated {
                if !evidence.proven {
                    return fail(
                        &record,
                        "activation_failed",
                        "credential activation not proven (activation_proof missing or wrong)"
                            .into(),
                    );
                }
                record.ak_activated = true;
                record.activation_secret = None;
            }
            if let Err(e) = evidence.quote {
                return fail(&record, "quote_invalid", e);
            }
            let policy = self.policies.for_role(record.role);
            match policy.check(record.pcr_baseline.as_deref(), &req.pcr_values) {
                Ok(true) => record.pcr_baseline = Some(req.pcr_values.to_vec()),
                Ok(false) => {}
                Err(v) => {
                    let locks = policy.on_violation == OnViolation::Lock;
                    let lock = locks
                        .then(|| transition(Some(record.state), Event::Lock).ok())
                        .flatten();
                    let Some(Transition {
                        to: Some(locked), ..
                    }) = lock
                    else {
                        return fail(&record, "pcr_policy_violation", v.to_string());
                    };
                    // The policy locks: the refusal and the lock are one change.
                    record.state = locked;
                    record.updated_at = now;
                    tx.put_machine(&record)?;
                    return fail(
                        &record,
                        "pcr_policy_violation",
                        format!("{v}; machine locked by the PCR policy"),
                    );
                }
            }
            record.last_attested_at = Some(now);
            if tx.clear_stale(&record.id)? {
                tx.log(format!("Machine fresh again: id={}", record.id));
                routine = false;
            }
        }
        if let Some(to) = t.to {
            record.state = to;
        }
        record.updated_at = now;
        tx.put_machine(&record)?;
        if !routine {
            let id = &record.id;
            let detail = match action {
                Action::Lock => format!("Locked machine contacted: id={id}"),
                Action::Wipe => format!("Wipe sent to revoked machine: id={id}"),
                Action::Pending => format!("Pending machine contacted: id={id}"),
                Action::ApplyConfig => format!("Machine attested: id={id} action=apply-config"),
                Action::None => format!("Machine attested: id={id}"),
            };
            Change::of(AuditAction::Attest, &record, Some(prev), detail).record(tx, actor, now)?;
        }
        let config_token = match action {
            Action::ApplyConfig if !routine => record.config_token.clone(),
            _ => None,
        };
        Ok(Ok(AttestOutcome {
            machine_id: record.id,
            status: record.state.status,
            action,
            config_token,
        }))
    }
}
