//! Register, self-register and the TPM receipt: a machine introduces its TPM.

use heapless::String;
use serde::{Deserialize, Serialize};

use super::Hex;
use super::blob::{Blob, CertificateDer};
use super::timestamp::Timestamp;
use super::{
    CLUSTER_ID_LEN, HW_FIELD_LEN, MACHINE_ID_LEN, MAX_CREDENTIAL_BLOB, MAX_EK_PUBLIC,
    MAX_ENCRYPTED_SECRET, MAX_TPM2B_PUBLIC, TOKEN_LEN, URL_LEN, VERSION_LEN,
};
use crate::fingerprint::{EkSource, Fingerprint};
use crate::lifecycle::Status;
use crate::nonce::{NONCE_LEN, NonceSignature};

/// The role a machine plays in the cluster; selects its base config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Controlplane,
    WorkerInfra,
    WorkerApp,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Controlplane, Role::WorkerInfra, Role::WorkerApp];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::WorkerInfra => "worker-infra",
            Role::WorkerApp => "worker-app",
        }
    }
}

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Role {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or("unknown role (expected controlplane, worker-infra or worker-app)")
    }
}

pub type HwField = String<HW_FIELD_LEN>;

fn default_cluster() -> String<CLUSTER_ID_LEN> {
    String::try_from("default").unwrap_or_default()
}

fn default_source() -> EkSource {
    EkSource::Cert
}

/// `POST /api/v1/register` (pre-registration, USB agent) and `POST /api/v1/self-register`
/// (zero-touch). Field names are the seed's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub ek_fingerprint: Fingerprint,
    /// The EK certificate (base64 of its PEM in JSON); absent when `ek_source = pub`.
    #[serde(default)]
    pub ek_cert_pem: Option<CertificateDer>,
    /// The EK's public area (TPM2B_PUBLIC, as `ak_public`; base64 in JSON), for TPMs
    /// without an EK certificate: it must be exactly a TCG EK template's
    /// (`tpm::ek_template`), and the fingerprint is that of its key's DER
    /// SubjectPublicKeyInfo.
    #[serde(default)]
    pub ek_public: Option<Blob<MAX_EK_PUBLIC>>,
    #[serde(default = "default_source")]
    pub ek_source: EkSource,
    #[serde(default)]
    pub hw_uuid: Option<HwField>,
    #[serde(default)]
    pub hw_mac: Option<HwField>,
    #[serde(default)]
    pub hw_serial: Option<HwField>,
    #[serde(default)]
    pub hw_product: Option<HwField>,
    #[serde(default)]
    pub desired_role: Option<Role>,
    #[serde(default = "default_cluster")]
    pub cluster_id: String<CLUSTER_ID_LEN>,
    /// The AK public area (TPM2B_PUBLIC; base64 in JSON), for credential activation.
    #[serde(default)]
    pub ak_public: Option<Blob<MAX_TPM2B_PUBLIC>>,
    /// A fresh random value of the agent's: the signed answer covers the request's digest,
    /// and with it this nonce, so no earlier answer can be replayed for this request
    /// (`binding::register_answer_context`). Absent from receipts and from hand-made requests
    /// (the answer is signed all the same).
    #[serde(default)]
    pub agent_nonce: Option<Hex<NONCE_LEN>>,
}

/// A MakeCredential result for the agent's TPM to activate (TPM 2.0 Part 1 §24).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialChallenge {
    /// TPM2B_ID_OBJECT.
    pub credential_blob: Blob<MAX_CREDENTIAL_BLOB>,
    /// TPM2B_ENCRYPTED_SECRET.
    pub encrypted_secret: Blob<MAX_ENCRYPTED_SECRET>,
}

/// The answer to register and self-register. For an EK the server knew already, it names
/// no machine (`machine_id` empty, no role): whoever holds a machine's public EK certificate
/// learns nothing of it; the machine id comes with the first verified attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub machine_id: String<MACHINE_ID_LEN>,
    #[serde(default)]
    pub role: Option<Role>,
    pub status: Status,
    #[serde(default)]
    pub iso_url: Option<String<URL_LEN>>,
    #[serde(default)]
    pub config_token: Option<String<TOKEN_LEN>>,
    #[serde(default)]
    pub config_url: Option<String<URL_LEN>>,
    /// Present when the request carried an AK: activate it to prove the TPM holds the EK.
    #[serde(default)]
    pub credential: Option<CredentialChallenge>,
    /// Server response key, domain `action`, over the request's digest and
    /// [`RegisterResponse::signed_context_for`] it (DESIGN.md §3.7). `None` only from a
    /// server before protocol v2; agents refuse such an answer.
    #[serde(default)]
    pub signature: Option<NonceSignature>,
}

/// What `attest-agent receipt` writes without any network, for `POST /machines/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmReceipt {
    /// Receipt format; this is version 1.
    pub format: u8,
    /// The same identity a register request carries.
    pub identity: RegisterRequest,
    pub agent_version: String<VERSION_LEN>,
    pub created_at: Timestamp,
}

impl TpmReceipt {
    pub const FORMAT: u8 = 1;
}
