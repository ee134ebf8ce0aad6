//! The air-gapped half (DESIGN.md §3.6): offline bundles with an enrollment certificate,
//! `/enroll` with it, and TPM receipts imported by an operator.
//!
//! A machine that never reaches the server before it boots gets everything on a stick: its
//! ISO URL, its full MachineConfig with an enrollment certificate and key as Talos
//! `machine.files`, the Enrollment CA and the server's response key. When it does reach the
//! server it proves it holds that key over a server nonce; the certificate names its id and
//! its TPM, so a bundle copied elsewhere proves nothing for another machine.

use serde_json::{Value, json};

use attest_common::lifecycle::{Event, Status, transition};
use attest_common::nonce::{Domain, verify};
use attest_common::wire::{EnrollRequest, Timestamp, TpmReceipt};

use super::{Actor, ErrorKind, Service, ServiceError, new_machine_id, now};
use crate::audit::NewEntry;
use crate::machineconfig::BaseConfigs;
use crate::record::MachineRecord;

/// Where the bundle's files land on the node (Talos lets machine.files write under /var).
pub const FILES_DIR: &str = "/var/lib/itl";

/// What `GET /machines/{id}/offline-bundle` answers (the API's view, `attest-api`).
pub use attest_api::OfflineBundle;

/// The answer to an enrolment or import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub machine: MachineRecord,
    /// False when nothing new was created (an import of a known EK).
    pub created: bool,
}

fn file(path: &str, mode: u32, content: &str) -> Value {
    json!({ "op": "create", "path": format!("{FILES_DIR}/{path}"), "permissions": mode, "content": content })
}

impl Service {
    fn enrollment(&self) -> Result<&super::Enrollment, ServiceError> {
        self.enrollment.as_ref().ok_or_else(|| {
            ServiceError::new(
                ErrorKind::Unavailable,
                "enrollment_unavailable",
                "the Enrollment CA is not loaded",
            )
        })
    }

    /// `GET /machines/{id}/offline-bundle`: for approved machines (registered or attested)
    /// only. Each call issues a new certificate and key (audited with the serial); the
    /// MachineConfig carries them, the CA and the server key as `machine.files`.
    pub fn offline_bundle(
        &self,
        id: &str,
        server_key_pem: &str,
        actor: &Actor,
    ) -> Result<OfflineBundle, ServiceError> {
        let enrollment = self.enrollment()?;
        let configs = self.configs()?;
        let check = |record: &MachineRecord| -> Result<(), ServiceError> {
            match record.state.status {
                Status::Registered | Status::Attested => Ok(()),
                s if s.is_refused() => Err(ServiceError::new(
                    ErrorKind::Forbidden,
                    "machine_refused",
                    format!("machine {id} is {s}: no offline bundle"),
                )),
                s => Err(ServiceError::new(
                    ErrorKind::Conflict,
                    "not_approved",
                    format!("machine {id} is {s}: approve it first"),
                )),
            }
        };
        // Outside the transaction: the factory call (I/O) and the certificate.
        let record = self.machine(id)?;
        check(&record)?;
        let (Some(role), Some(hostname), Some(ip), Some(token)) = (
            record.role,
            record.hostname.clone(),
            record.assigned_ip.clone(),
            record.config_token.clone(),
        ) else {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                "not_approved",
                format!("machine {id} has no role, hostname or address yet: approve it first"),
            ));
        };
        let iso_url = self.iso_url(&token)?;
        let now = now();
        let issued = enrollment
            .ca
            .issue(
                id,
                role.as_str(),
                &record.ek_fingerprint,
                now,
                enrollment.cert_days,
            )
            .map_err(|e| ServiceError::new(ErrorKind::Internal, "certificate_failed", e))?;
        let mut config = configs.render(role, &hostname, &ip);
        let files = [
            file("enrollment.pem", 0o444, &issued.cert_pem),
            file("enrollment.key", 0o400, &issued.key_pem),
            file("enrollment-ca.pem", 0o444, enrollment.ca.cert_pem()),
            file("server-key.pem", 0o444, server_key_pem),
        ];
        match config["machine"]["files"].as_array_mut() {
            Some(existing) => existing.extend(files),
            None => config["machine"]["files"] = Value::Array(files.to_vec()),
        }
        let machineconfig = BaseConfigs::to_yaml(&config);
        self.store.write(|tx| {
            // Re-checked: the machine may have been locked or revoked meanwhile.
            let current = tx.machine(id)?.ok_or_else(|| super::not_found(id))?;
            check(&current)?;
            let detail = format!(
                "Enrollment cert issued: machine_id={id} role={role} serial={} valid_days={}",
                issued.serial, enrollment.cert_days
            );
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "offline-bundle".into(),
                    machine_id: Some(id.to_owned()),
                    prev_state: Some(current.state.status.to_string()),
                    new_state: Some(current.state.status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok::<_, ServiceError>(())
        })?;
        Ok(OfflineBundle {
            machine_id: id.to_owned(),
            role,
            hostname,
            iso_url,
            config_url: self.config_url(&token),
            config_token: token,
            machineconfig,
            enrollment_cert_pem: issued.cert_pem.clone(),
            enrollment_cert_serial: issued.serial.clone(),
            enrollment_cert_not_after: Timestamp(issued.not_after),
            enrollment_ca_pem: enrollment.ca.cert_pem().to_owned(),
            server_key_pem: server_key_pem.to_owned(),
        })
    }

    /// `POST /enroll`: the node signed a server nonce (domain `enroll`, context its machine
    /// id) with the key of its enrollment certificate. The certificate must chain to the
    /// Enrollment CA, be valid now and name the machine's EK; the machine must be approved
    /// and not locked, revoked or rejected. The nonce is used up by every attempt; failures
    /// are audited and change nothing else.
    pub fn enroll(&self, req: &EnrollRequest, actor: &Actor) -> Result<Admitted, ServiceError> {
        let enrollment = self.enrollment()?;
        let now = now();
        let committed: Result<Admitted, ServiceError> = self.store.write(|tx| {
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
                tx.audit(
                    NewEntry {
                        operator_cn: actor.identity.clone(),
                        action: "enroll-failed".into(),
                        machine_id: record.map(|r| r.id.clone()),
                        prev_state: record.map(|r| r.state.status.to_string()),
                        new_state: record.map(|r| r.state.status.to_string()),
                        detail: detail.clone(),
                        source_ip: actor.source_ip.clone(),
                    },
                    now,
                )?;
                tx.log(detail);
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
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "enroll".into(),
                    machine_id: Some(record.id.clone()),
                    prev_state: Some(prev.to_string()),
                    new_state: Some(record.state.status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok(Ok(Admitted {
                machine: record,
                created: false,
            }))
        })?;
        committed
    }

    /// `POST /machines/import` (operator): a TPM receipt made offline by `attest-agent
    /// receipt`. The fingerprint must match the EK material (422 otherwise); a known EK
    /// answers its machine unchanged; a new one is `registered`. An AK in the receipt is
    /// kept; its credential is made when the agent first registers online.
    pub fn import(&self, receipt: &TpmReceipt, actor: &Actor) -> Result<Admitted, ServiceError> {
        if receipt.format != TpmReceipt::FORMAT {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                "unsupported_receipt",
                format!(
                    "receipt format {} (this server reads format {})",
                    receipt.format,
                    TpmReceipt::FORMAT
                ),
            ));
        }
        let req = &receipt.identity;
        Self::check_identity(req)?;
        let fp = req.ek_fingerprint.to_string();
        let now = now();
        self.store.write(|tx| {
            if let Some(existing) = tx.machine_by_ek(&fp)? {
                return Ok(Admitted {
                    machine: existing,
                    created: false,
                });
            }
            let t = transition(None, Event::Register)?;
            let mut record = MachineRecord::new(
                new_machine_id(),
                fp.clone(),
                req.ek_source,
                t.to.unwrap_or(attest_common::lifecycle::State::new(Status::Registered)),
                now,
            );
            record.ek_cert_der = req.ek_cert_pem.as_ref().map(|c| c.der().to_vec());
            record.ek_public_der = req.ek_public.as_ref().map(|p| p.to_vec());
            record.ak_public = req.ak_public.as_ref().map(|p| p.to_vec());
            record.hw_uuid = req.hw_uuid.as_ref().map(|s| s.to_string());
            record.hw_mac = req.hw_mac.as_ref().map(|s| s.to_string());
            record.hw_serial = req.hw_serial.as_ref().map(|s| s.to_string());
            record.hw_product = req.hw_product.as_ref().map(|s| s.to_string());
            record.desired_role = req.desired_role;
            record.cluster_id = req.cluster_id.to_string();
            tx.put_machine(&record)?;
            let detail = format!(
                "New machine imported: id={} ek={fp} agent={} receipt_created_at={}",
                record.id, receipt.agent_version, receipt.created_at
            );
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "import".into(),
                    machine_id: Some(record.id.clone()),
                    prev_state: None,
                    new_state: Some(record.state.status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok(Admitted {
                machine: record,
                created: true,
            })
        })
    }
}
