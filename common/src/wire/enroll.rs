//! Enrollment on the air-gapped path: a node proves it holds its enrollment key.

use heapless::String;
use serde::{Deserialize, Serialize};

use super::blob::CertificateDer;
use super::{MACHINE_ID_LEN, NONCE_ID_LEN};
use crate::lifecycle::Status;
use crate::nonce::NonceSignature;

/// `POST /api/v1/enroll`: the enrollment certificate and a signature (domain `enroll`) over
/// a server nonce obtained from the challenge endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The machine's enrollment certificate (base64 of PEM in JSON).
    pub cert_pem: CertificateDer,
    pub nonce_id: String<NONCE_ID_LEN>,
    pub signature: NonceSignature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub machine_id: String<MACHINE_ID_LEN>,
    pub status: Status,
    /// Server response key, domain `action`, over the request's digest and
    /// [`EnrollResponse::signed_context_for`] it (DESIGN.md §3.7); `None` only from a server
    /// before protocol v2.
    #[serde(default)]
    pub signature: Option<NonceSignature>,
}
