//! Registration (DESIGN.md §2, §3.1–3.2): `/register` (USB path, pre-registration) and
//! `/self-register` (zero-touch). The EK material must be what the fingerprint names; an AK
//! must be a restricted signing key of an algorithm the server accepts (`ak_policy`), and it
//! gets a credential (MakeCredential, in software)
//! that only the TPM holding both keys can activate.

use attest_common::fingerprint::{EkSource, ek_fingerprint};
use attest_common::lifecycle::{Event, State, Status, transition};
use attest_common::tpm::credential::{Credential, EkKey, make_credential};
use attest_common::tpm::ek_template::check_ek_public;
use attest_common::tpm::public::TpmPublic;
use attest_common::wire::{RegisterRequest, Role};

use super::refusals::Refusal;
use super::{Actor, AkPolicy, Change, ErrorKind, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::ekchain::ChainVerdict;
use crate::record::{EkChainStatus, MachineRecord};
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
    /// The long-lived config token, made only when `/register` creates the machine (the
    /// registry keeps its hash).
    pub config_token: Option<String>,
}

/// The EK material a request's fingerprint names: exactly one DER (a certificate, or a
/// SubjectPublicKeyInfo), the only EK anything else (the chain check, MakeCredential, the
/// record) may use (DESIGN.md §3.1: the credential is made for exactly the key that was
/// fingerprinted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EkMaterial {
    pub source: EkSource,
    /// What the fingerprint is computed over: the certificate (`cert`), or the
    /// SubjectPublicKeyInfo of the EK's key (`pub`).
    pub der: Vec<u8>,
    /// `pub`: the EK's TPM2B_PUBLIC, exactly a TCG EK template's; the SPKI in `der` is its
    /// key's. `None` for `cert`, and for a `pub` record from before record version 4.
    pub public_area: Option<Vec<u8>>,
}

impl EkMaterial {
    /// The material as a record keeps it.
    pub fn of(record: &MachineRecord) -> Option<EkMaterial> {
        let der = match record.ek_source {
            EkSource::Cert => record.ek_cert_der.clone()?,
            EkSource::Pub => record.ek_public_der.clone()?,
        };
        Some(EkMaterial {
            source: record.ek_source,
            der,
            public_area: match record.ek_source {
                EkSource::Cert => None,
                EkSource::Pub => record.ek_public_area.clone(),
            },
        })
    }

    /// Puts it on a record (and nothing else: the other field is cleared).
    pub fn store(&self, record: &mut MachineRecord) {
        record.ek_source = self.source;
        (record.ek_cert_der, record.ek_public_der) = match self.source {
            EkSource::Cert => (Some(self.der.clone()), None),
            EkSource::Pub => (None, Some(self.der.clone())),
        };
        record.ek_public_area = self.public_area.clone();
    }
}

/// Checks the EK material against the claimed fingerprint and the AK's form: the material
/// (exactly the one `ek_source` names; a request carrying the other as well is refused; a
/// `pub` EK's public area must be exactly a TCG EK template's, 422 `not_an_ek` naming what
/// differs, and is fingerprinted by its key's SubjectPublicKeyInfo) and the AK (`ak_policy`).
pub(super) fn check_identity(
    req: &RegisterRequest,
    ak_policy: &AkPolicy,
) -> Result<(EkMaterial, Option<TpmPublic>), ServiceError> {
    let missing = |m: &str| ServiceError::bad_request("missing_ek_material", m);
    let ambiguous = |m: &str| ServiceError::bad_request("ambiguous_ek_material", m);
    let (material, public_area) = match (&req.ek_cert_pem, &req.ek_public, req.ek_source) {
        (Some(cert), None, EkSource::Cert) => (cert.der().to_vec(), None),
        (None, Some(public), EkSource::Pub) => {
            let ek = check_ek_public(public).map_err(|e| {
                ServiceError::new(
                    ErrorKind::Unprocessable,
                    "not_an_ek",
                    format!("ek_public: {e}"),
                )
            })?;
            (ek.spki().to_vec(), Some(public.to_vec()))
        }
        (Some(_), Some(_), EkSource::Cert) => {
            return Err(ambiguous("ek_public must not accompany ek_source cert"));
        }
        (Some(_), Some(_), EkSource::Pub) => {
            return Err(ambiguous("ek_cert_pem must not accompany ek_source pub"));
        }
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
    let material = EkMaterial {
        source: req.ek_source,
        der: material,
        public_area,
    };
    let Some(ak) = &req.ak_public else {
        return Ok((material, None));
    };
    Ok((material, Some(ak_policy.check(ak)?)))
}

/// Refuses a new record whose EK key another machine's TPM has proven under another
/// fingerprint (a re-encoded or re-issued certificate, a self-made certificate over a known
/// key, or the public area of a machine registered by its certificate): one EK key is one
/// machine (DESIGN.md §3.1), and a revoked TPM comes back only after an operator deletes its
/// record. Only proven keys are indexed, so a registration nobody proved (anyone can send a
/// public EK certificate) never blocks the machine that holds the key; its first proof is
/// checked again (`Service::proven_elsewhere`). The other machine is named to an operator
/// (`to_operator`, an import) only: an agent's request proves nothing, and whoever holds a
/// public EK certificate learns no machine from it.
pub(super) fn refuse_known_key(
    tx: &impl RegistryTx,
    record: &MachineRecord,
    to_operator: bool,
) -> Result<(), ServiceError> {
    let Some(key) = record.ek_key_id() else {
        return Ok(());
    };
    match tx.machine_by_ek_key(&key)? {
        Some(other) if other.id != record.id => Err(ServiceError::conflict(
            "ek_key_known",
            match to_operator {
                true => format!(
                    "this EK key is already machine {}'s ({}, registered with ek_fingerprint \
                     {} from its {}): one EK key is one machine; register with that material, \
                     or delete that record first",
                    other.id,
                    other.state.status,
                    other.ek_fingerprint,
                    match other.ek_source {
                        EkSource::Cert => "EK certificate",
                        EkSource::Pub => "EK public key",
                    }
                ),
                false => "this EK key is already another machine's, proven by its TPM under \
                          other EK material: one EK key is one machine; register with that \
                          material (an operator finds the machine by its EK)"
                    .to_owned(),
            },
        )),
        _ => Ok(()),
    }
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
    /// The EK chain verdict for a registration's EK material (DESIGN.md §3.1): refused
    /// under `ITL_EK_CHAIN=strict` when it does not chain to a trusted CA (nothing written),
    /// recorded for the approver otherwise.
    pub(super) fn ek_chain_verdict(
        &self,
        req: &RegisterRequest,
        ek: &EkMaterial,
        now: u64,
    ) -> Result<EkChainStatus, ServiceError> {
        let Some((chain, policy)) = &self.ek_chain else {
            return Ok(EkChainStatus::Unchecked);
        };
        let verdict = match ek.source {
            EkSource::Cert => chain.verify(&ek.der, now),
            EkSource::Pub => ChainVerdict::Unverified {
                reason: "no EK certificate (EK public key only)".into(),
            },
        };
        if policy.refuses(&verdict) {
            let ChainVerdict::Unverified { reason } = &verdict else {
                unreachable!("only an unverified chain is refused")
            };
            return Err(self.unauthenticated(Refusal::UntrustedEk, now, || {
                ServiceError::forbidden(
                    "ek_untrusted",
                    format!(
                        "the EK certificate of {} does not chain to a trusted TPM vendor CA \
                         (ITL_EK_CHAIN=strict): {reason}",
                        req.ek_fingerprint
                    ),
                )
            }));
        }
        Ok(match verdict {
            ChainVerdict::Verified { by, .. } => EkChainStatus::Verified { by },
            ChainVerdict::Unverified { reason } => EkChainStatus::Unverified { reason },
        })
    }

    /// A credential binding `ak` to the request's EK: MakeCredential of the pair's
    /// activation secret (derived, `ChallengeKey::activation_secret`, unless `secret` is a
    /// secret an older release stored for it).
    fn ak_credential(
        &self,
        ek: &EkMaterial,
        fingerprint: &str,
        ak: &TpmPublic,
        secret: Option<&[u8]>,
    ) -> Result<Credential, ServiceError> {
        let unprocessable =
            |m: String| ServiceError::new(ErrorKind::Unprocessable, "unsupported_ek", m);
        let key = match (ek.source, &ek.public_area) {
            // The checked public area itself: its name algorithm and symmetric definition.
            (EkSource::Pub, Some(area)) => {
                let ek = check_ek_public(area).map_err(|e| unprocessable(format!("EK: {e}")))?;
                EkKey::from_public(&ek.public)
            }
            // A `pub` record from before record version 4: its bare SPKI.
            (EkSource::Pub, None) => EkKey::from_spki(&ek.der),
            // The certificate's key; the TCG template's defaults for its type.
            (EkSource::Cert, _) => EkKey::from_spki(
                attest_common::der::parse_certificate(&ek.der)
                    .map_err(|e| unprocessable(format!("EK certificate: {e}")))?
                    .spki,
            ),
        }
        .map_err(|e| unprocessable(format!("EK: {e}")))?;
        let derived = self.activation_key.activation_secret(fingerprint, &ak.name);
        let secret = secret.unwrap_or(&derived);
        make_credential(&key, &ak.name, secret, &mut self.platform.entropy())
            .map_err(|e| unprocessable(format!("MakeCredential: {e}")))
    }

    /// `POST /register` (pre-registration) or `/self-register` (zero-touch). A new EK gets
    /// a record (and, on `/register`, the long-lived config token of its ISO). A known EK
    /// changes nothing: its answer carries no token, and a credential for the AK it sent
    /// (the bound one, or a new one it may rotate to by activating it, `attest`).
    pub fn register(
        &self,
        req: &RegisterRequest,
        self_register: bool,
        actor: &Actor,
    ) -> Result<Registered, ServiceError> {
        let (ek, ak) = check_identity(req, &self.ak_policy)?;
        let event = if self_register {
            Event::SelfRegister
        } else {
            Event::Register
        };
        let fp = req.ek_fingerprint.to_string();
        let now = self.platform.now();
        if let Some(known) = self.registry.machine_by_ek(&fp)? {
            return self.reregister(req, ak.as_ref(), known, event, now);
        }
        let ek_chain = self.ek_chain_verdict(req, &ek, now)?;
        let unverified = !matches!(ek_chain, EkChainStatus::Verified { .. });
        if unverified && let Err(limit) = self.unverified_quota.check(&self.registry, now)? {
            return Err(self.unauthenticated(Refusal::RegistrationQuota, now, || {
                ServiceError::new(
                    ErrorKind::Unavailable,
                    "registration_quota",
                    format!(
                        "{limit} machines with an EK no TPM vendor vouches for are waiting for \
                         approval (ITL_MAX_UNVERIFIED_PENDING={limit}): an operator must \
                         approve, reject or delete some before more are accepted"
                    ),
                )
            }));
        }
        let credential = match &ak {
            Some(ak) => Some(self.ak_credential(&ek, &fp, ak, None)?),
            None => None,
        };
        // USB path: the ISO boots with this machine's config URL, so its token exists from
        // registration on, and the factory is asked before anything is written (down →
        // 503, nothing changed).
        let token = (!self_register).then(|| self.platform.token());
        let iso_url = match &token {
            Some(t) => self.iso_url(t)?,
            None => None,
        };
        let created = self.registry.write(|tx| {
            if tx.machine_by_ek(&fp)?.is_some() {
                // Registered meanwhile by a concurrent request: answered as a known EK.
                return Ok::<_, ServiceError>(None);
            }
            let t = transition(None, event)?;
            let mut record = MachineRecord::new(
                self.platform.machine_id(),
                fp.clone(),
                req.ek_source,
                t.to.unwrap_or(State::new(Status::PendingApproval)),
                now,
            );
            ek.store(&mut record);
            record.ak_public = req.ak_public.as_ref().map(|p| p.to_vec());
            describe(&mut record, req);
            record.ek_chain = ek_chain.clone();
            record.config_token_hash = token.as_deref().map(crate::store::token_key);
            refuse_known_key(tx, &record, false)?;
            tx.put_machine(&record)?;
            let action = match self_register {
                true => AuditAction::SelfRegister,
                false => AuditAction::Register,
            };
            let detail = format!(
                "New machine registered: id={} role={} ek={fp}",
                record.id,
                req.desired_role.map_or("none", Role::as_str)
            );
            Change::of(action, &record, None, detail).record(tx, actor, now)?;
            Ok(Some(record))
        })?;
        match created {
            Some(machine) => {
                if unverified {
                    self.unverified_quota.added();
                }
                Ok(Registered {
                    machine,
                    iso_url,
                    created: true,
                    credential,
                    config_token: token,
                })
            }
            None => {
                let known = self.registry.machine_by_ek(&fp)?.ok_or_else(|| {
                    ServiceError::conflict("registration_race", "the machine vanished; retry")
                })?;
                self.reregister(req, ak.as_ref(), known, event, now)
            }
        }
    }

    /// A known EK registered again: nothing written (it proves nothing), logged at a
    /// bounded rate; refused for revoked and rejected machines.
    fn reregister(
        &self,
        req: &RegisterRequest,
        ak: Option<&TpmPublic>,
        known: MachineRecord,
        event: Event,
        now: u64,
    ) -> Result<Registered, ServiceError> {
        transition(Some(known.state), event)?;
        self.refusals.note(Refusal::Reregistration, now, || {
            format!(
                "Re-registration of machine {} (ek={})",
                known.id, known.ek_fingerprint
            )
        });
        // MakeCredential for the EK the machine was registered with, never for material the
        // request brings (the fingerprint matched, but only the stored key is the machine's).
        let ek = EkMaterial::of(&known).ok_or_else(|| {
            ServiceError::conflict(
                "no_ek_material",
                format!("machine {} has no stored EK material", known.id),
            )
        })?;
        let credential = match (ak, &req.ak_public) {
            (Some(ak), Some(bytes)) => {
                let bound = known.ak_public.as_deref() == Some(bytes.as_slice());
                let legacy = known.activation_secret.as_deref().filter(|_| bound);
                Some(self.ak_credential(&ek, &known.ek_fingerprint, ak, legacy)?)
            }
            _ => None,
        };
        Ok(Registered {
            machine: known,
            iso_url: None,
            created: false,
            credential,
            config_token: None,
        })
    }
}
