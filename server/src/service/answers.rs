//! The agent's answers, as the wire types of `attest-common` carry them: built, converted
//! and signed here, so that the JSON API, the firmware link (postcard) and any later
//! transport only decode requests and encode these.

use attest_common::binding;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::nonce::{Domain, NonceSignature};
use attest_common::wire::{
    AttestRequest, AttestResponse, Blob, CredentialChallenge, EnrollRequest, EnrollResponse, Hex,
    RegisterRequest, RegisterResponse,
};

use super::{Actor, ErrorKind, Service, ServiceError};
use crate::metrics::Counters;
use crate::responsekey::ResponseSigner;
use crate::store::Registry;

/// The response key (DESIGN.md §3.7): signs agent answers and the audit chain's checkpoints
/// (DESIGN.md §6); its public half is pinned by agents and operators.
pub struct ResponseKey {
    pub signer: ResponseSigner,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The public half, to check checkpoints with.
    pub public: attest_common::nonce::VerifyingKey,
}

impl ResponseKey {
    pub fn new(key: &p384::ecdsa::SigningKey) -> Result<ResponseKey, String> {
        Ok(ResponseKey {
            signer: ResponseSigner::new(key)?,
            spki: attest_common::nonce::verifying_key_to_spki(key.verifying_key()).to_vec(),
            public: *key.verifying_key(),
        })
    }

    /// The signed checkpoint of audit entry `seq` with hash `entry_hash`, dated `timestamp`:
    /// the message `attest_api::AuditCheckpoint::verify` checks.
    pub fn sign_checkpoint(
        &self,
        seq: u64,
        entry_hash: &[u8; 48],
        timestamp: u64,
    ) -> crate::audit::Checkpoint {
        use crate::audit::Checkpoint;
        Checkpoint {
            seq,
            entry_hash: Hex(*entry_hash),
            timestamp,
            signature: self.signer.sign(
                Checkpoint::DOMAIN,
                entry_hash,
                &Checkpoint::context(seq, timestamp),
            ),
        }
    }

    /// The public half, PEM.
    pub fn pem(&self) -> String {
        let mut pem = vec![0u8; 400];
        pem_rfc7468::encode(
            "PUBLIC KEY",
            pem_rfc7468::LineEnding::LF,
            &self.spki,
            &mut pem,
        )
        .unwrap_or_default()
        .to_owned()
    }
}

/// `GET /api/v1/server-key`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerKey {
    pub algorithm: &'static str,
    pub public_key_der: String,
    pub public_key_pem: String,
}

/// Copies a string into a bounded wire string; `None` when it does not fit.
fn bounded<const N: usize>(s: &str) -> Option<heapless::String<N>> {
    heapless::String::try_from(s).ok()
}

impl<R: Registry> Service<R> {
    pub(super) fn response_key(&self) -> Result<&ResponseKey, ServiceError> {
        self.response_key.as_deref().ok_or_else(|| {
            ServiceError::new(
                ErrorKind::Unavailable,
                "no_response_key",
                "the response key is not loaded",
            )
        })
    }

    /// The response key's public half, for agents to pin.
    pub fn server_key(&self) -> Result<ServerKey, ServiceError> {
        use base64ct::Encoding;
        let key = self.response_key()?;
        Ok(ServerKey {
            algorithm: "ECDSA P-384 / SHA-384",
            public_key_der: base64ct::Base64::encode_string(&key.spki),
            public_key_pem: key.pem(),
        })
    }

    /// Register or self-register, answered: whether the machine is new, and the answer.
    pub fn register_answer(
        &self,
        req: &RegisterRequest,
        self_register: bool,
        actor: &Actor,
    ) -> Result<(bool, RegisterResponse), ServiceError> {
        let key = self.response_key()?;
        let done = self.register(req, self_register, actor)?;
        let m = &done.machine;
        let config_url = done.config_token.as_ref().and_then(|t| self.config_url(t));
        let mut answer = RegisterResponse {
            // A known EK's answer names no machine (DESIGN.md §3.7): anyone may hold its
            // public EK certificate; the machine id comes with the first verified quote.
            machine_id: match done.created {
                true => bounded(&m.id).unwrap_or_default(),
                false => heapless::String::new(),
            },
            role: done.created.then(|| m.role.or(m.desired_role)).flatten(),
            status: m.state.status,
            iso_url: done.iso_url.as_deref().and_then(bounded),
            config_token: done.config_token.as_deref().and_then(bounded),
            config_url: config_url.as_deref().and_then(bounded),
            credential: done.credential.as_ref().and_then(|c| {
                Some(CredentialChallenge {
                    credential_blob: Blob::from_slice(&c.credential_blob)?,
                    encrypted_secret: Blob::from_slice(&c.encrypted_secret)?,
                })
            }),
            signature: None,
        };
        let digest = req.digest();
        answer.signature = Some(key.signer.sign(
            Domain::Action,
            &digest,
            &binding::register_answer_context(&answer, &digest),
        ));
        Ok((done.created, answer))
    }

    /// An attestation, answered and signed over the agent's nonce; counted for `/metrics`.
    pub fn attest_answer(
        &self,
        req: &AttestRequest,
        actor: &Actor,
    ) -> Result<AttestResponse, ServiceError> {
        let key = self.response_key()?;
        let outcome = self.attest(req, &AwsLc, actor);
        Counters::count(match outcome {
            Ok(_) => &self.counters.attest_accepted,
            Err(_) => &self.counters.attest_refused,
        });
        let outcome = outcome?;
        let config_url = outcome
            .config
            .as_ref()
            .and_then(|(token, _)| self.config_url(token));
        let mut answer = AttestResponse {
            machine_id: bounded(&outcome.machine_id).unwrap_or_default(),
            status: outcome.status,
            action: outcome.action,
            config_url: config_url.as_deref().and_then(bounded),
            config_sha384: outcome.config.map(|(_, sha)| Hex(sha)),
            seconds_to_next_attestation: self.challenges.interval_seconds,
            signature: NonceSignature([0; 96]),
        };
        answer.signature = key.signer.sign(
            Domain::Action,
            &req.agent_nonce.0,
            &answer.signed_context_for(req),
        );
        Ok(answer)
    }

    /// An enrolment, answered.
    pub fn enroll_answer(
        &self,
        req: &EnrollRequest,
        actor: &Actor,
    ) -> Result<EnrollResponse, ServiceError> {
        let key = self.response_key()?;
        let done = self.enroll(req, actor)?;
        let mut answer = EnrollResponse {
            machine_id: bounded(&done.machine.id).unwrap_or_default(),
            status: done.machine.state.status,
            signature: None,
        };
        let digest = req.digest();
        answer.signature = Some(key.signer.sign(
            Domain::Action,
            &digest,
            &binding::enroll_answer_context(&answer, &digest),
        ));
        Ok(answer)
    }
}
