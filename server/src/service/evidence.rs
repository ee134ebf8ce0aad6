//! The evidence of one attestation checked against a nonce, an AK and an activation secret
//! (DESIGN.md §3.2, §3.4): whether the activation proof matches and whether the quote
//! verifies. Checked once, outside the write transaction where it can (the signature is the
//! expensive part), and checked again inside it when the record changed meanwhile.

use attest_common::crypto::CryptoProvider;
use attest_common::tpm::attest::QuoteInfo;
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::quote::QuoteError;
use attest_common::tpm::verify_quote;
use attest_common::wire::{AttestRequest, HashAlg, PcrSelection};

use crate::record::TpmClock;

#[derive(Clone)]
pub(super) struct Checked {
    /// The activation proof matches the secret.
    pub proven: bool,
    /// `verify_quote`'s verdict, and that the quote selected the challenge's PCRs.
    pub quote: Result<(), String>,
    /// False when the quote verified but over another PCR selection than the challenge's.
    pub selection_ok: bool,
    /// The clock information the verified quote carries.
    pub clock: Option<TpmClock>,
}

impl Checked {
    pub fn new(
        nonce: &[u8; 32],
        ak: &[u8],
        secret: Option<&[u8]>,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
        selection: &PcrSelection,
    ) -> Checked {
        let proven = match (secret, &req.activation_proof) {
            (Some(secret), Some(proof)) => {
                attest_common::tpm::hash::hmac(HashAlg::Sha384, secret, &[nonce]).is_ok_and(
                    |want| bool::from(subtle::ConstantTimeEq::ct_eq(want.as_slice(), &proof.0[..])),
                )
            }
            _ => false,
        };
        let mut selection_ok = true;
        let mut clock = None;
        // The quote is over the request's qualifying data (`attest_common::binding`), which
        // commits to the agent's nonce and the request's claims too.
        let qualifying = req.qualifying_data(nonce);
        let quote = match TpmPublic::from_tpm2b(ak) {
            Ok(key) => verify_quote(
                provider,
                &key,
                &req.quote,
                &req.signature,
                &qualifying,
                &req.pcr_values,
            )
            .map_err(|e| match e {
                QuoteError::NonceMismatch if quoted_bare_nonce(&req.quote, nonce) => {
                    OUTDATED.to_owned()
                }
                e => e.to_string(),
            })
            .and_then(|q| {
                clock = Some(TpmClock::of(&q.info));
                selection_ok = q.selects(selection);
                match selection_ok {
                    true => Ok(()),
                    false => Err("the quote's PCR selection is not the challenge's".into()),
                }
            }),
            Err(e) => Err(format!("the AK does not parse: {e}")),
        };
        Checked {
            proven,
            quote,
            selection_ok,
            clock,
        }
    }
}

/// Why the quote of an agent from before protocol v2 is refused (`attest` answers it 400
/// `agent_outdated`, not a bare "quote invalid").
pub(super) const OUTDATED: &str = "the quote's qualifying data is the bare challenge nonce: \
     this agent predates attestation protocol v2 (qualifying data bound to the agent's \
     nonce and the request); upgrade the agent";

/// Whether `quote` (signature already verified) carries the bare challenge nonce, as agents
/// of protocol v1 quote.
fn quoted_bare_nonce(quote: &[u8], nonce: &[u8]) -> bool {
    QuoteInfo::parse(quote).is_ok_and(|q| q.extra_data.as_slice() == nonce)
}
