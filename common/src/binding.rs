//! Binding an attestation and its answer to the machine that asked (DESIGN.md §3.7).
//!
//! The TPM quote's qualifying data is not the server's nonce alone but
//! `SHA-384("itl-attest/v2\0" ‖ server nonce ‖ agent nonce ‖ claims)`, where `claims` is
//! the SHA-384 of what the request says about itself (its EK fingerprint, its challenge id,
//! the config it reports applied, whether the ordered wipe ran). So the agent's nonce — over which the server signs
//! its answer — and those claims are vouched for by the machine's AK: a man in the middle
//! can neither give one machine's quote another's nonce, nor make a genuine request claim a
//! config it did not apply. (DESIGN §3.7 names the two nonces; the claims are one step
//! further, for what a request asserts.)
//!
//! The answer is signed over the agent's nonce and a context that names the request it
//! answers — the EK fingerprint, the challenge id and the SHA-384 of the request's postcard
//! encoding — before the answer's own fields: an answer is good for exactly one request.
//! Register and enroll answers are signed the same way, over the request's digest (which
//! holds the agent's fresh nonce) as the signature's nonce. The same code runs in the firmware, the host agent and the server; nothing here
//! allocates (digests go through a hashing postcard flavor).

use serde::Serialize;
use sha2::{Digest as _, Sha384};

use crate::fingerprint::Fingerprint;
use crate::wire::{
    AttestRequest, AttestResponse, EnrollRequest, EnrollResponse, Hex, RegisterRequest,
    RegisterResponse,
};

/// The label of the quote's qualifying data, version 2 (version 1 was the bare nonce).
pub const QUALIFYING_LABEL: &[u8] = b"itl-attest/v2\0";
/// The label that starts an attest answer's signed context.
pub const ANSWER_LABEL: &str = "attest-answer/v2";

/// The label that starts a register answer's signed context.
pub const REGISTER_ANSWER_LABEL: &str = "register-answer/v2";
/// The label that starts an enroll answer's signed context.
pub const ENROLL_ANSWER_LABEL: &str = "enroll-answer/v2";

/// SHA-384 of the postcard encoding of `value`, without a buffer.
pub fn digest_of<T: Serialize + ?Sized>(value: &T) -> [u8; 48] {
    postcard::serialize_with_flavor(value, Hashing(Sha384::new())).unwrap_or([0; 48])
}

/// A postcard flavor that hashes what would be written.
struct Hashing(Sha384);

impl postcard::ser_flavors::Flavor for Hashing {
    type Output = [u8; 48];

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<[u8; 48]> {
        Ok(self.0.finalize().into())
    }
}

/// The quote's qualifying data for a challenge nonce, the agent's nonce and the request's
/// claims ([`AttestRequest::claims`]).
pub fn qualifying_data(server_nonce: &[u8], agent_nonce: &[u8], claims: &[u8; 48]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(QUALIFYING_LABEL);
    h.update(server_nonce);
    h.update(agent_nonce);
    h.update(claims);
    h.finalize().into()
}

/// What a request asserts about itself, hashed: EK fingerprint, challenge id, the config it
/// reports applied, whether the ordered wipe ran. (The AK it names need not be: a quote
/// verifies only with the AK that made it.)
pub fn claims(
    ek_fingerprint: &Fingerprint,
    nonce_id: &str,
    config_applied: Option<&Hex<48>>,
    wipe_done: bool,
) -> [u8; 48] {
    digest_of(&(ek_fingerprint, nonce_id, config_applied, wipe_done))
}

/// The digest an answer's signature covers (with the agent's nonce): the label, the request
/// it answers (EK fingerprint, challenge id, SHA-384 of the request) and every field of the
/// answer but the signature.
pub fn answer_context(
    answer: &AttestResponse,
    ek_fingerprint: &Fingerprint,
    nonce_id: &str,
    request_digest: &[u8; 48],
) -> [u8; 48] {
    digest_of(&(
        ANSWER_LABEL,
        ek_fingerprint,
        nonce_id,
        &request_digest[..],
        (
            &answer.machine_id,
            answer.status,
            answer.action,
            &answer.config_url,
            &answer.config_sha384,
            answer.seconds_to_next_attestation,
        ),
    ))
}

/// The context a register answer's signature covers: the label, the digest of the request
/// it answers (with the agent's nonce in it) and every field of the answer but the
/// signature. The signature's nonce is that digest too: an answer is good for one request.
pub fn register_answer_context(answer: &RegisterResponse, request_digest: &[u8; 48]) -> [u8; 48] {
    digest_of(&(
        REGISTER_ANSWER_LABEL,
        &request_digest[..],
        (
            &answer.machine_id,
            answer.role,
            answer.status,
            &answer.iso_url,
            &answer.config_token,
            &answer.config_url,
            &answer.credential,
        ),
    ))
}

/// The context an enroll answer's signature covers, as [`register_answer_context`].
pub fn enroll_answer_context(answer: &EnrollResponse, request_digest: &[u8; 48]) -> [u8; 48] {
    digest_of(&(
        ENROLL_ANSWER_LABEL,
        &request_digest[..],
        (&answer.machine_id, answer.status),
    ))
}

impl RegisterRequest {
    /// SHA-384 of the whole request (postcard): the nonce its answer is signed over.
    pub fn digest(&self) -> [u8; 48] {
        digest_of(self)
    }
}

impl RegisterResponse {
    /// [`register_answer_context`] for the request this answers.
    pub fn signed_context_for(&self, request: &RegisterRequest) -> [u8; 48] {
        register_answer_context(self, &request.digest())
    }
}

impl EnrollRequest {
    /// SHA-384 of the whole request (postcard): the nonce its answer is signed over.
    pub fn digest(&self) -> [u8; 48] {
        digest_of(self)
    }
}

impl EnrollResponse {
    /// [`enroll_answer_context`] for the request this answers.
    pub fn signed_context_for(&self, request: &EnrollRequest) -> [u8; 48] {
        enroll_answer_context(self, &request.digest())
    }
}

impl AttestRequest {
    /// [`claims`] of this request.
    pub fn claims(&self) -> [u8; 48] {
        claims(
            &self.ek_fingerprint,
            &self.nonce_id,
            self.config_applied.as_ref(),
            self.wipe_done,
        )
    }

    /// The quote's qualifying data for this request and the challenge's nonce.
    pub fn qualifying_data(&self, server_nonce: &[u8]) -> [u8; 48] {
        qualifying_data(server_nonce, &self.agent_nonce.0, &self.claims())
    }

    /// SHA-384 of the whole request (postcard): what its answer names.
    pub fn digest(&self) -> [u8; 48] {
        digest_of(self)
    }
}

impl AttestResponse {
    /// [`answer_context`] for the request this answers.
    pub fn signed_context_for(&self, request: &AttestRequest) -> [u8; 48] {
        answer_context(
            self,
            &request.ek_fingerprint,
            &request.nonce_id,
            &request.digest(),
        )
    }
}
