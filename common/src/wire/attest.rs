//! Challenge and attestation: the push model's two round trips.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use super::blob::{Blob, Hex, HexVec};
use super::timestamp::Timestamp;
use super::{
    MACHINE_ID_LEN, MAX_PCR_VALUES, MAX_QUOTE, MAX_TPM2B_PUBLIC, MAX_TPMT_SIGNATURE, NONCE_ID_LEN,
    URL_LEN,
};
use crate::fingerprint::Fingerprint;
use crate::lifecycle::{Action, Status};
use crate::nonce::{NONCE_LEN, NonceSignature};

/// TPM hash algorithms that PCR banks and quotes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// PCRs of one bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrBank {
    pub hash_alg: HashAlg,
    /// PCR indices, 0–23.
    pub pcrs: Vec<u8, 24>,
}

pub type PcrSelection = Vec<PcrBank, 4>;

/// `POST /api/v1/attest/challenge` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChallengeRequest {
    #[serde(default)]
    pub ek_fingerprint: Option<Fingerprint>,
}

/// A single-use server nonce with its lifetime and what to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    pub nonce_id: String<NONCE_ID_LEN>,
    pub nonce: Hex<NONCE_LEN>,
    pub expires_at: Timestamp,
    pub pcr_selection: PcrSelection,
    /// Hash algorithm of the quote signature.
    pub hash_alg: HashAlg,
}

/// One PCR value (hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrValue {
    pub hash_alg: HashAlg,
    pub index: u8,
    pub value: HexVec<64>,
}

/// `POST /api/v1/attest`: TPM2_Quote output over the challenge nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestRequest {
    pub ek_fingerprint: Fingerprint,
    pub nonce_id: String<NONCE_ID_LEN>,
    /// The agent's own nonce: the server signs its answer over it, and the TPM quotes over
    /// it (`binding::qualifying_data`).
    pub agent_nonce: Hex<NONCE_LEN>,
    /// TPMS_ATTEST bytes (base64 in JSON).
    pub quote: Blob<MAX_QUOTE>,
    /// TPMT_SIGNATURE bytes (base64 in JSON).
    pub signature: Blob<MAX_TPMT_SIGNATURE>,
    pub pcr_values: Vec<PcrValue, MAX_PCR_VALUES>,
    /// HMAC-SHA384(activated secret, challenge nonce), on the first attestation after
    /// registration with an AK.
    #[serde(default)]
    pub activation_proof: Option<Hex<48>>,
    /// The AK (TPM2B_PUBLIC) that made the quote, when it is not the one the server has
    /// bound to this EK: a new AK after a reinstall or reset, registered again and activated
    /// by the same EK (the proof above is then for it). The server rotates to it only with
    /// that proof and a quote it signed (DESIGN.md §3.8).
    #[serde(default)]
    pub ak_public: Option<Blob<MAX_TPM2B_PUBLIC>>,
    /// SHA-384 of the config the agent applied last: the server stops offering
    /// `apply-config` once an attestation reports the digest of the machine's current
    /// config (fetching it is not enough: a changed body is refused by the agent).
    #[serde(default)]
    pub config_applied: Option<Hex<48>>,
    /// The wipe the server ordered has run (its hook exited 0): the server then clears
    /// `wipe_pending` (DESIGN.md §3.7). Part of the quote's claims
    /// (`binding::claims`): no one on the way can say it for the machine.
    #[serde(default)]
    pub wipe_done: bool,
}

/// The answer to an attestation; `signature` covers everything else in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    pub machine_id: String<MACHINE_ID_LEN>,
    pub status: Status,
    pub action: Action,
    #[serde(default)]
    pub config_url: Option<String<URL_LEN>>,
    /// With `apply-config`: SHA-384 of the exact config `config_url` serves. Agents apply
    /// no config but the one with this digest (DESIGN.md §3.7).
    #[serde(default)]
    pub config_sha384: Option<Hex<48>>,
    pub seconds_to_next_attestation: u32,
    /// Server response key over (agent nonce, [`AttestResponse::signed_context_for`] the
    /// request it answers), domain `action`.
    pub signature: NonceSignature,
}
