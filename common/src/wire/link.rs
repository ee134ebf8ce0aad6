//! The firmware link envelope: the same requests as the JSON API, in postcard.
//!
//! The boot-time agent has no TCP stack; it speaks over a serial line to `attest-agent
//! relay`, which posts the envelope to `/api/v1/link`. The server answers with the response
//! of the same service function the JSON API calls. `seq` pairs answers with requests.

use serde::{Deserialize, Serialize};

use super::ErrorBody;
use super::attest::{AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse};
use super::enroll::{EnrollRequest, EnrollResponse};
use super::register::{RegisterRequest, RegisterResponse, TpmReceipt};

// No allocator to box into: the envelope is one fixed-size value by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRequestBody {
    Challenge(ChallengeRequest),
    Register(RegisterRequest),
    SelfRegister(RegisterRequest),
    Attest(AttestRequest),
    Enroll(EnrollRequest),
    /// An offline receipt (firmware receipt mode): kept by the relay (`--receipt-out`), never
    /// sent to the server, which answers it with an error.
    Receipt(TpmReceipt),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    pub seq: u32,
    pub body: LinkRequestBody,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkResponseBody {
    Challenge(ChallengeResponse),
    Register(RegisterResponse),
    Attest(AttestResponse),
    Enroll(EnrollResponse),
    /// The request failed; `status` is the HTTP status the JSON API would have answered.
    Error {
        status: u16,
        body: ErrorBody,
    },
    /// The relay wrote the receipt where the operator asked.
    ReceiptSaved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkResponse {
    pub seq: u32,
    pub body: LinkResponseBody,
}
