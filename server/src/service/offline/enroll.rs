//! `POST /enroll`: a node proves it holds the key of its enrollment certificate over a
//! server nonce; the certificate names its machine and its TPM.

use attest_common::lifecycle::{Event, transition};
use attest_common::nonce::{Domain, verify};
use attest_common::wire::EnrollRequest;

use super::Admitted;
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::service::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// `POST /enroll`: the node signed a server nonce (domain `enroll`, context its machine
    /// id) with the key of its enrollment certificate. The certificate must chain to the
    /// Enrollment CA, be valid now and name the machine's EK; the machine must be approved
    /// and not locked, revoked or rejected. The nonce is used up by every attempt; failures
    /// are audited and change nothing else.
    pub fn enroll(&self, req: &EnrollRequest, actor: &Actor) -> Result<Admitted, ServiceError> {
        let enrollment = self.enrollment()?;
        let now = self.platform.now();
        let committed: Result<Admitted, ServiceError> = self.registry.write(|tx| {
            let cert = enrollment.ca.verify(req.cert_pem.der(), now);
            // For a refused certificate, the id it claims (unverified) names the attempt.
            let machine_id = match &cert {
                Ok(c) => Some(c.machine_id.clone()),
                Err(_) => crate::enrollment::claimed_machine_id(req.cert_pem.der()),
            };
            let record = match &machine_id {
                Some(m) => tx.machine(m)?,
                None => None,
            };
            let fail = |record: Option<&MachineRecord>, e: ServiceError| {
                let detail = format!(
                    "Enrollment failed: id={} reason={}",
                    machine_id.as_deref().unwrap_or("unknown"),
                    e.message
                );
                Change::about_any(AuditAction::EnrollFailed, record, detail)
                    .record(tx, actor, now)?;
                Ok::<_, ServiceError>(Err(e))
            };
            let nonce = match self.use_nonce(tx, &req.nonce_id, now) {
                Ok(n) => n,
                Err(e) if e.kind != ErrorKind::Internal => return fail(record.as_ref(), e),
                Err(e) => return Err(e),
            };
            let cert = match cert {
                Ok(c) => c,
                Err(refusal) => {
                    return fail(
                        record.as_ref(),
                        ServiceError::new(
                            ErrorKind::Forbidden,
                            "certificate_refused",
                            format!("enrollment certificate refused: {refusal}"),
                        ),
                    );
                }
            };
            if verify(
                &cert.key,
                Domain::Enroll,
                &nonce,
                cert.machine_id.as_bytes(),
                &req.signature,
            )
            .is_err()
            {
                return fail(
                    record.as_ref(),
                    ServiceError::new(
                        ErrorKind::Forbidden,
                        "signature_invalid",
                        "the signature is not the certified key's over this challenge nonce",
                    ),
                );
            }
            let Some(mut record) = record else {
                return fail(
                    None,
                    ServiceError::new(
                        ErrorKind::NotFound,
                        "not_found",
                        format!(
                            "no machine '{}' (named by the certificate)",
                            cert.machine_id
                        ),
                    ),
                );
            };
            if record.ek_fingerprint != cert.ek_fingerprint {
                return fail(
                    Some(&record),
                    ServiceError::new(
                        ErrorKind::Forbidden,
                        "ek_mismatch",
                        format!(
                            "the certificate names EK {} but machine {} has EK {}",
                            cert.ek_fingerprint, record.id, record.ek_fingerprint
                        ),
                    ),
                );
            }
            let prev = record.state.status;
            if prev.is_refused() {
                return fail(
                    Some(&record),
                    ServiceError::new(
                        ErrorKind::Forbidden,
                        "machine_refused",
                        format!("machine {} is {prev}", record.id),
                    ),
                );
            }
            let t = match transition(Some(record.state), Event::Enroll) {
                Ok(t) => t,
                Err(refused) => return fail(Some(&record), refused.into()),
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
        })?;
        committed
    }
}
