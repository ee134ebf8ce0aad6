//! Registration (DESIGN.md §2, §3.1–3.2): `/register` (USB path, pre-registration) and
//! `/self-register` (zero-touch). The EK material must be what the fingerprint names; an AK
//! must be a restricted signing key, and it gets a credential (MakeCredential, in software)
//! that only the TPM holding both keys can activate.

use attest_common::fingerprint::{EkSource, ek_fingerprint};
use attest_common::lifecycle::{Event, State, Status, transition};
use attest_common::tpm::credential::{Credential, EkKey, make_credential};
use attest_common::tpm::public::TpmPublic;
use attest_common::wire::{RegisterRequest, Role};

use super::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

/// The result of register / self-register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub machine: MachineRecord,
    /// The ISO to boot (`/register` only, when ISO URLs are configured).
    pub iso_url: Option<String>,
    /// False when the EK was already known (idempotent re-registration).
    pub created: bool,
    /// MakeCredential for the AK the request carried: activate it to prove the TPM.
    pub credential: Option<Credential>,
}

/// Checks the EK material against the claimed fingerprint and the AK's form.
pub(super) fn check_identity(req: &RegisterRequest) -> Result<Option<TpmPublic>, ServiceError> {
    let missing = |m: &str| ServiceError::bad_request("missing_ek_material", m);
    let material = match (&req.ek_cert_pem, &req.ek_public, req.ek_source) {
        (Some(cert), _, EkSource::Cert) => cert.der().to_vec(),
        (_, Some(public), EkSource::Pub) => public.as_slice().to_vec(),
        (None, _, EkSource::Cert) => {
            return Err(missing("ek_cert_pem is required when ek_source is cert"));
        }
        (_, None, EkSource::Pub) => {
            return Err(missing("ek_public is required when ek_source is pub"));
        }
    };
    let computed = ek_fingerprint(&material)
        .map_err(|e| ServiceError::bad_request("invalid_ek", format!("EK material: {e}")))?;
    if computed.fingerprint != req.ek_fingerprint || computed.source != req.ek_source {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "fingerprint_mismatch",
            format!(
                "ek_fingerprint {} does not match the EK material (its fingerprint is {})",
                req.ek_fingerprint, computed.fingerprint
            ),
        ));
    }
    let Some(ak) = &req.ak_public else {
        return Ok(None);
    };
    let ak = TpmPublic::from_tpm2b(ak)
        .map_err(|e| ServiceError::bad_request("invalid_ak", format!("ak_public: {e}")))?;
    if !ak.is_restricted_signing() {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "invalid_ak",
            "ak_public is not a restricted signing key",
        ));
    }
    Ok(Some(ak))
}

/// What a machine says about itself (hardware identity, wanted role, cluster), onto its
/// record.
pub(super) fn describe(record: &mut MachineRecord, req: &RegisterRequest) {
    let text = |s: &Option<heapless::String<_>>| s.as_ref().map(|s| s.to_string());
    record.hw_uuid = text(&req.hw_uuid);
    record.hw_mac = text(&req.hw_mac);
    record.hw_serial = text(&req.hw_serial);
    record.hw_product = text(&req.hw_product);
    record.desired_role = req.desired_role;
    record.cluster_id = req.cluster_id.to_string();
}

impl<R: Registry> Service<R> {
    /// The credential (and its secret) binding the (checked) AK to the request's EK.
    fn make_ak_credential(
        &self,
        req: &RegisterRequest,
        ak: &TpmPublic,
    ) -> Result<(Credential, Vec<u8>), ServiceError> {
        let unprocessable =
            |m: String| ServiceError::new(ErrorKind::Unprocessable, "unsupported_ek", m);
        let spki = match (&req.ek_cert_pem, &req.ek_public) {
            (Some(cert), _) => attest_common::der::parse_certificate(cert.der())
                .map_err(|e| unprocessable(format!("EK certificate: {e}")))?
                .spki
                .to_vec(),
            (None, Some(public)) => public.to_vec(),
            (None, None) => {
                return Err(ServiceError::bad_request(
                    "missing_ek_material",
                    "ek_cert_pem or ek_public is required with ak_public",
                ));
            }
        };
        let ek = EkKey::from_spki(&spki).map_err(|e| unprocessable(format!("EK: {e}")))?;
        let secret = self.platform.bytes::<32>().to_vec();
        let credential = make_credential(&ek, &ak.name, &secret, &mut self.platform.entropy())
            .map_err(|e| unprocessable(format!("MakeCredential: {e}")))?;
        Ok((credential, secret))
    }

    /// `POST /register` (pre-registration) or `/self-register` (zero-touch).
    pub fn register(
        &self,
        req: &RegisterRequest,
        self_register: bool,
        actor: &Actor,
    ) -> Result<Registered, ServiceError> {
        let ak = check_identity(req)?;
        let credential = match &ak {
            Some(ak) => Some(self.make_ak_credential(req, ak)?),
            None => None,
        };
        let event = if self_register {
            Event::SelfRegister
        } else {
            Event::Register
        };
        let fp = req.ek_fingerprint.to_string();
        let now = self.platform.now();
        // USB path: the ISO boots with this machine's config URL, so its config token
        // exists from registration on, and the factory is asked before anything is written
        // (down → 503, nothing changed).
        let planned = match self_register {
            true => None,
            false => {
                let token = self
                    .registry
                    .machine_by_ek(&fp)?
                    .and_then(|m| m.config_token)
                    .unwrap_or_else(|| self.platform.token());
                let iso_url = self.iso_url(&token)?;
                Some((token, iso_url))
            }
        };
        let mut done = self
            .registry
            .write(|tx| -> Result<Registered, ServiceError> {
                let existing = tx.machine_by_ek(&fp)?;
                let prev = existing.as_ref().map(|m| m.state.status);
                let t = transition(existing.as_ref().map(|m| m.state), event)?;
                let mut record = match existing {
                    Some(m) => m,
                    None => MachineRecord::new(
                        self.platform.machine_id(),
                        fp.clone(),
                        req.ek_source,
                        State::new(Status::PendingApproval),
                        now,
                    ),
                };
                record.ek_cert_der = req.ek_cert_pem.as_ref().map(|c| c.der().to_vec());
                record.ek_public_der = req.ek_public.as_ref().map(|p| p.to_vec());
                record.ak_public = req
                    .ak_public
                    .as_ref()
                    .map(|p| p.to_vec())
                    .or(record.ak_public);
                if let Some((_, secret)) = &credential {
                    // A new AK must prove itself again.
                    record.activation_secret = Some(secret.clone());
                    record.ak_activated = false;
                }
                describe(&mut record, req);
                record.updated_at = now;
                if let Some(to) = t.to {
                    record.state = to;
                }
                if let (None, Some((token, _))) = (&record.config_token, &planned) {
                    record.config_token = Some(token.clone());
                }
                tx.put_machine(&record)?;
                let change = if t.reregistration {
                    Change::of(
                        AuditAction::ReRegister,
                        &record,
                        prev,
                        format!("Re-registration of machine {} (ek={fp})", record.id),
                    )
                } else {
                    Change::of(
                        if self_register {
                            AuditAction::SelfRegister
                        } else {
                            AuditAction::Register
                        },
                        &record,
                        prev,
                        format!(
                            "New machine registered: id={} role={} ek={fp}",
                            record.id,
                            req.desired_role.map_or("none", Role::as_str)
                        ),
                    )
                };
                change.record(tx, actor, now)?;
                Ok(Registered {
                    machine: record,
                    iso_url: None,
                    created: !t.reregistration,
                    credential: credential.map(|(c, _)| c),
                })
            })?;
        if let Some((token, iso_url)) = planned {
            done.iso_url = match &done.machine.config_token {
                Some(t) if *t == token => iso_url,
                // A concurrent registration of the same EK set the token first.
                Some(t) => self.iso_url(t)?,
                None => None,
            };
        }
        Ok(done)
    }
}
