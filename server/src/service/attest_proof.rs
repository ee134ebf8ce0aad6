//! Whether an attestation proves its TPM (DESIGN.md §3.2, §3.8): which AK its quote must
//! verify with (the bound one, or a new one the same EK has just activated: rotation), and
//! whether the evidence holds for it. What fails here writes nothing durable (`refusals`).

use attest_common::lifecycle::Status;
use attest_common::tpm::public::TpmPublic;
use attest_common::wire::AttestRequest;

use super::evidence::Checked;
use super::refusals::Refusal;
use super::{ErrorKind, Service, ServiceError};
use crate::record::{MachineRecord, TpmClock};
use crate::store::Registry;

/// What a verified attestation proved: the AK it was made with, and the TPM clock its
/// quote signed.
pub(super) struct Proof<'a> {
    pub candidate: &'a Candidate,
    pub clock: Option<TpmClock>,
}

/// The AK an attestation is checked against: the bound one, or a new one to rotate to.
pub(super) struct Candidate {
    pub ak: Vec<u8>,
    pub secret: Option<Vec<u8>>,
    pub rotation: bool,
}

impl<R: Registry> Service<R> {
    /// The AK the request's quote must verify with, and the secret its activation proof is
    /// for.
    pub(super) fn candidate(
        &self,
        record: &MachineRecord,
        req: &AttestRequest,
    ) -> Result<Candidate, ServiceError> {
        let now = self.platform.now();
        let secret_for = |ak: &[u8]| {
            TpmPublic::from_tpm2b(ak).ok().map(|k| {
                self.activation_key
                    .activation_secret(&record.ek_fingerprint, &k.name)
                    .to_vec()
            })
        };
        let bound = |ak: &Vec<u8>| Candidate {
            ak: ak.clone(),
            // A secret stored by an older release is still the one its agent holds.
            secret: record.activation_secret.clone().or_else(|| secret_for(ak)),
            rotation: false,
        };
        let rejudged = |ak: &[u8]| {
            if self.ak_policy_rejudges() {
                self.check_ak(ak)
                    .map_err(|e| self.unauthenticated(Refusal::RefusedAk, now, || e))?;
            }
            Ok::<_, ServiceError>(())
        };
        match (&req.ak_public, &record.ak_public) {
            (Some(new), Some(ak)) if new.as_slice() == ak.as_slice() => {
                rejudged(ak)?;
                Ok(bound(ak))
            }
            (Some(new), _) => {
                // A new AK is judged by the AK policy before anything else (a bound one was
                // judged when it was offered): refused, it writes nothing.
                self.check_ak(new)
                    .map_err(|e| self.unauthenticated(Refusal::RefusedAk, now, || e))?;
                Ok(Candidate {
                    ak: new.to_vec(),
                    secret: secret_for(new),
                    rotation: true,
                })
            }
            (None, Some(ak)) => {
                rejudged(ak)?;
                Ok(bound(ak))
            }
            (None, None) => Err(self.unauthenticated(Refusal::NoActivation, now, || {
                ServiceError::new(
                    ErrorKind::Unprocessable,
                    "no_ak",
                    "no AK on record: register or self-register with ak_public first",
                )
            })),
        }
    }

    /// Whether the evidence proves the TPM: quote by the candidate AK over the challenge,
    /// and the activation proof where the AK is not yet bound. Refusals write nothing.
    pub(super) fn proven(
        &self,
        record: &MachineRecord,
        candidate: &Candidate,
        evidence: &Checked,
        now: u64,
    ) -> Result<(), ServiceError> {
        if record.state.status == Status::Rejected {
            return Err(self.unauthenticated(Refusal::RefusedState, now, || {
                ServiceError::forbidden(
                    "machine_refused",
                    format!("machine {} is rejected", record.id),
                )
            }));
        }
        if let Err(why) = &evidence.quote
            && why == super::evidence::OUTDATED
        {
            return Err(self.unauthenticated(Refusal::BadQuote, now, || {
                ServiceError::bad_request("agent_outdated", why.clone())
            }));
        }
        if let Err(why) = &evidence.quote {
            let refusal = match evidence.selection_ok {
                false => Refusal::WrongPcrSelection,
                true => Refusal::BadQuote,
            };
            return Err(self.unauthenticated(refusal, now, || {
                ServiceError::forbidden(
                    match evidence.selection_ok {
                        false => "pcr_selection_mismatch",
                        true => "quote_invalid",
                    },
                    format!("attestation for machine {}: {why}", record.id),
                )
            }));
        }
        if (candidate.rotation || !record.ak_activated) && !evidence.proven {
            return Err(self.unauthenticated(Refusal::NoActivation, now, || {
                ServiceError::forbidden(
                    "activation_failed",
                    "credential activation not proven (activation_proof missing or wrong)",
                )
            }));
        }
        Ok(())
    }
}
