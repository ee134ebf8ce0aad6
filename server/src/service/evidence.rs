//! The evidence of one attestation checked against a nonce, an AK and an activation secret
//! (DESIGN.md §3.2, §3.4): whether the activation proof matches and whether the quote
//! verifies. Checked once, outside the write transaction where it can (the signature is the
//! expensive part), and valid inside it only while those three are still the same.

use attest_common::crypto::CryptoProvider;
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::verify_quote;
use attest_common::wire::{AttestRequest, HashAlg};

#[derive(Clone)]
pub(super) struct Checked {
    nonce: [u8; 32],
    ak: Vec<u8>,
    secret: Option<Vec<u8>>,
    /// The activation proof matches the secret.
    pub proven: bool,
    /// `verify_quote`'s verdict.
    pub quote: Result<(), String>,
}

impl Checked {
    pub fn new(
        nonce: &[u8; 32],
        ak: &[u8],
        secret: Option<&[u8]>,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
    ) -> Checked {
        let proven = match (secret, &req.activation_proof) {
            (Some(secret), Some(proof)) => {
                attest_common::tpm::hash::hmac(HashAlg::Sha384, secret, &[nonce]).is_ok_and(
                    |want| bool::from(subtle::ConstantTimeEq::ct_eq(want.as_slice(), &proof.0[..])),
                )
            }
            _ => false,
        };
        let quote = match TpmPublic::from_tpm2b(ak) {
            Ok(key) => verify_quote(
                provider,
                &key,
                &req.quote,
                &req.signature,
                nonce,
                &req.pcr_values,
            )
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Err(e) => Err(format!("the stored AK does not parse: {e}")),
        };
        Checked {
            nonce: *nonce,
            ak: ak.to_vec(),
            secret: secret.map(<[u8]>::to_vec),
            proven,
            quote,
        }
    }

    /// Whether this was checked against exactly these.
    pub fn holds(&self, nonce: &[u8; 32], ak: &[u8], secret: Option<&[u8]>) -> bool {
        &self.nonce == nonce && self.ak == ak && self.secret.as_deref() == secret
    }
}
