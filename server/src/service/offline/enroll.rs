//! `POST /enroll`: a node proves it holds the key of its enrollment certificate over a
//! server nonce; the certificate names its machine and its TPM. Until that proof holds,
//! nothing is written (a refused attempt is counted and logged at a bounded rate).

use attest_common::lifecycle::{Event, transition};
use attest_common::nonce::{Domain, verify};
use attest_common::wire::EnrollRequest;

use super::Admitted;
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::service::refusals::Refusal;
use crate::service::{Actor, Change, Service, ServiceError, not_found};
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// The node signed a server nonce (domain `enroll`, context its machine id) with the key
    /// of its enrollment certificate. The certificate must chain to the Enrollment CA, be
    /// valid now and name the machine's EK; the machine must be approved and not locked,
    /// revoked or rejected. A proven attempt uses its nonce and is audited, refused or not.
    /// It does not change the machine's state: the enrollment key is a file, not the TPM,
    /// and only a verified quote makes a machine attested (DESIGN.md §3.8).
    pub fn enroll(&self, req: &EnrollRequest, actor: &Actor) -> Result<Admitted, ServiceError> {
        let enrollment = self.enrollment()?;
        let now = self.platform.now();
        let nonce = self.open_nonce(&req.nonce_id, now)?;
        let cert = enrollment
            .ca
            .verify(req.cert_pem.der(), now)
            .map_err(|refusal| {
                self.unauthenticated(Refusal::BadEnrollment, now, || {
                    ServiceError::forbidden(
                        "certificate_refused",
                        format!("enrollment certificate refused: {refusal}"),
                    )
                })
            })?;
        let signed = verify(
            &cert.key,
            Domain::Enroll,
            &nonce,
            cert.machine_id.as_bytes(),
            &req.signature,
        );
        if signed.is_err() {
            return Err(self.unauthenticated(Refusal::BadEnrollment, now, || {
                ServiceError::forbidden(
                    "signature_invalid",
                    format!(
                        "enrollment of machine {}: the signature is not the certified key's \
                         over this challenge nonce",
                        cert.machine_id
                    ),
                )
            }));
        }
        self.registry.write(|tx| {
            self.mark_used(tx, &req.nonce_id, now)?;
            let mut record = tx
                .machine(&cert.machine_id)?
                .ok_or_else(|| not_found(&cert.machine_id))?;
            let fail = |record: &MachineRecord, e: ServiceError| {
                let detail = format!(
                    "Enrollment failed: id={} serial={} reason={}",
                    record.id, cert.serial, e.message
                );
                Change::about(AuditAction::EnrollFailed, record, detail).record(tx, actor, now)?;
                Ok::<_, ServiceError>(Err(e))
            };
            if record.ek_fingerprint != cert.ek_fingerprint {
                let why = format!(
                    "the certificate names EK {} but machine {} has EK {}",
                    cert.ek_fingerprint, record.id, record.ek_fingerprint
                );
                return fail(&record, ServiceError::forbidden("ek_mismatch", why));
            }
            let prev = record.state.status;
            if prev.is_refused() {
                let why = format!("machine {} is {prev}", record.id);
                return fail(&record, ServiceError::forbidden("machine_refused", why));
            }
            let t = match transition(Some(record.state), Event::Enroll) {
                Ok(t) => t,
                Err(refused) => return fail(&record, refused.into()),
            };
            if let Some(to) = t.to {
                record.state = to;
            }
            record.updated_at = now;
            tx.put_machine(&record)?;
            let detail = format!(
                "Machine enrolled: id={} serial={} ek={}",
                record.id, cert.serial, record.ek_fingerprint
            );
            Change::of(AuditAction::Enroll, &record, Some(prev), detail).record(tx, actor, now)?;
            Ok(Ok(Admitted {
                machine: record,
                created: false,
            }))
        })?
    }
}
