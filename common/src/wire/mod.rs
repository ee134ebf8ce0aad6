//! Agent-facing messages of DESIGN.md §4, for JSON (HTTP API) and postcard (firmware link).
//!
//! Every field has a fixed capacity, so decoding never allocates and an oversized field is a
//! decode error. Field names are the seed's (`ek_fingerprint`, `ek_cert_pem`, `machine_id`,
//! `config_url`, `action`, ...) so its users' scripts keep working. With the `std` feature,
//! [`from_json`] and [`from_postcard`] report the path of the field that failed.

mod attest;
mod blob;
mod enroll;
mod link;
#[cfg(feature = "std")]
mod path;
mod register;
mod timestamp;

use heapless::String;
use serde::{Deserialize, Serialize};

pub use attest::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, HashAlg, PcrBank,
    PcrSelection, PcrValue,
};
pub use blob::{Blob, CertificateDer, Hex, HexVec};
pub use enroll::{EnrollRequest, EnrollResponse};
pub use link::{LinkRequest, LinkRequestBody, LinkResponse, LinkResponseBody};
#[cfg(feature = "std")]
pub use path::{DecodeError, from_json, from_postcard, to_postcard};
pub use register::{
    CredentialChallenge, HwField, RegisterRequest, RegisterResponse, Role, TpmReceipt,
};
pub use timestamp::{BadTimestamp, Timestamp};

/// Machine identifiers (UUIDs in practice).
pub const MACHINE_ID_LEN: usize = 64;
/// Hardware identity strings (`hw_uuid`, `hw_mac`, `hw_serial`, `hw_product`).
pub const HW_FIELD_LEN: usize = 128;
/// Cluster identifiers (a DNS label).
pub const CLUSTER_ID_LEN: usize = 63;
/// URLs (ISO and config URLs).
pub const URL_LEN: usize = 512;
/// Config tokens.
pub const TOKEN_LEN: usize = 128;
/// Nonce identifiers.
pub const NONCE_ID_LEN: usize = 64;
/// Agent version strings.
pub const VERSION_LEN: usize = 32;
/// TPM2B_PUBLIC of an EK without a certificate (the L-1 template's, RSA-2048, is 316 bytes).
pub const MAX_EK_PUBLIC: usize = 600;
/// TPM2B_PUBLIC of an AK (RSA-4096 with a policy digest stays under 600 bytes).
pub const MAX_TPM2B_PUBLIC: usize = 640;
/// TPM2B_ID_OBJECT from MakeCredential (HMAC + encrypted 64-byte secret).
pub const MAX_CREDENTIAL_BLOB: usize = 256;
/// TPM2B_ENCRYPTED_SECRET (RSA-4096 OAEP is 514 bytes).
pub const MAX_ENCRYPTED_SECRET: usize = 520;
/// TPMS_ATTEST of a quote.
pub const MAX_QUOTE: usize = 1024;
/// TPMT_SIGNATURE (RSA-4096 is 518 bytes).
pub const MAX_TPMT_SIGNATURE: usize = 600;
/// PCR values in one attestation (24 PCRs in two banks).
pub const MAX_PCR_VALUES: usize = 48;
/// Error codes.
pub const ERROR_CODE_LEN: usize = 32;
/// Error messages.
pub const ERROR_MESSAGE_LEN: usize = 512;

/// The body of every error answer: `{error: <code>, message: <human sentence>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String<ERROR_CODE_LEN>,
    pub message: String<ERROR_MESSAGE_LEN>,
}

impl ErrorBody {
    /// Builds an error body, cutting an over-long message at a character boundary.
    pub fn new(code: &str, message: &str) -> Self {
        fn cut<const N: usize>(s: &str) -> String<N> {
            let mut end = s.len().min(N);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            String::try_from(&s[..end]).unwrap_or_default()
        }
        ErrorBody {
            error: cut(code),
            message: cut(message),
        }
    }
}
