//! Quote verification: the one check that turns TPM output into evidence.
//!
//! A quote is trusted only if a restricted signing key (the AK, bound to the EK by credential
//! activation) signed it, it carries our nonce, and the PCR values the agent submitted hash to
//! the digest the TPM signed. Each failure is its own error, so the audit log says which.

use heapless::Vec;
use subtle::ConstantTimeEq;

use super::attest::{AttestError, QuoteInfo};
use super::hash::{self, HashAlg};
use super::public::TpmPublic;
use super::signature::{Signature, SignatureError};
use crate::crypto::{CryptoProvider, VerifyError};
use crate::wire::{MAX_PCR_VALUES, PcrValue};

/// A quote that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub info: QuoteInfo,
    /// The hash the signature (and the PCR digest) used.
    pub hash: HashAlg,
}

impl VerifiedQuote {
    /// Whether the quote selected exactly `want`: the same banks in the same order, the
    /// same PCRs in each (DESIGN.md §3.4: the challenge binds its selection, so a quote over
    /// other PCRs proves nothing about the ones asked for).
    pub fn selects(&self, want: &crate::wire::PcrSelection) -> bool {
        self.info.pcr_selection.len() == want.len()
            && self.info.pcr_selection.iter().zip(want).all(|(got, want)| {
                let mask = want
                    .pcrs
                    .iter()
                    .try_fold(0u32, |m, &i| (i < 32).then(|| m | (1 << i)));
                got.hash == want.hash_alg && Some(got.mask) == mask
            })
    }
}

/// Why a quote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteError {
    /// The AK is not a restricted signing key: it could sign forged attestations.
    AkNotRestrictedSigning,
    /// The AK has no fixed signing scheme (TPM_ALG_NULL): the signer would pick the hash of
    /// every quote (a TPM refuses to make such a restricted signing key).
    AkSchemeNotFixed,
    /// The signature bytes are not a TPMT_SIGNATURE we accept.
    MalformedSignature(SignatureError),
    /// The signature's scheme or hash does not fit the AK (wrong key type, or not the AK's
    /// fixed scheme).
    SchemeMismatch,
    /// The signature does not verify with the AK.
    BadSignature,
    /// The provider cannot verify this key/scheme/hash combination.
    Unsupported,
    /// Not TPM-generated (bad magic).
    BadMagic,
    /// A TPMS_ATTEST, but not a quote.
    NotAQuote,
    /// The attest bytes are otherwise malformed.
    MalformedAttest(AttestError),
    /// The qualifying data is not our nonce (replay or wrong challenge).
    NonceMismatch,
    /// The submitted PCR values are not exactly the PCRs the quote selected.
    PcrSelectionMismatch,
    /// The submitted PCR values do not hash to the digest the TPM signed.
    PcrDigestMismatch,
}

impl core::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QuoteError::AkNotRestrictedSigning => {
                f.write_str("the AK is not a restricted signing key")
            }
            QuoteError::AkSchemeNotFixed => f.write_str("the AK has no fixed signing scheme"),
            QuoteError::MalformedSignature(e) => write!(f, "quote signature: {e}"),
            QuoteError::SchemeMismatch => f.write_str("quote signature scheme does not fit the AK"),
            QuoteError::BadSignature => f.write_str("quote signature does not verify with the AK"),
            QuoteError::Unsupported => f.write_str("unsupported AK/signature algorithm"),
            QuoteError::BadMagic => f.write_str("quote is not TPM-generated (bad magic)"),
            QuoteError::NotAQuote => f.write_str("attestation is not a quote"),
            QuoteError::MalformedAttest(e) => write!(f, "quote: {e}"),
            QuoteError::NonceMismatch => f.write_str("quote does not carry the challenge nonce"),
            QuoteError::PcrSelectionMismatch => {
                f.write_str("submitted PCR values do not match the quoted PCR selection")
            }
            QuoteError::PcrDigestMismatch => {
                f.write_str("submitted PCR values do not match the quoted PCR digest")
            }
        }
    }
}

impl core::error::Error for QuoteError {}

/// Verifies a TPM2_Quote: AK attributes and fixed scheme, signature, nonce, PCR digest.
pub fn verify_quote(
    provider: &dyn CryptoProvider,
    ak: &TpmPublic,
    attest: &[u8],
    signature: &[u8],
    expected_nonce: &[u8],
    pcr_values: &[PcrValue],
) -> Result<VerifiedQuote, QuoteError> {
    if !ak.is_restricted_signing() {
        return Err(QuoteError::AkNotRestrictedSigning);
    }
    let fixed = ak.scheme.ok_or(QuoteError::AkSchemeNotFixed)?;
    let sig = Signature::parse(signature, &ak.key).map_err(|e| match e {
        SignatureError::KeyMismatch => QuoteError::SchemeMismatch,
        e => QuoteError::MalformedSignature(e),
    })?;
    if fixed != (sig.scheme(), sig.hash()) {
        return Err(QuoteError::SchemeMismatch);
    }
    provider
        .verify(&ak.key, &sig, attest)
        .map_err(|e| match e {
            VerifyError::BadSignature => QuoteError::BadSignature,
            VerifyError::Unsupported => QuoteError::Unsupported,
        })?;

    let info = QuoteInfo::parse(attest).map_err(|e| match e {
        AttestError::BadMagic => QuoteError::BadMagic,
        AttestError::NotAQuote => QuoteError::NotAQuote,
        e => QuoteError::MalformedAttest(e),
    })?;
    if !bool::from(info.extra_data.as_slice().ct_eq(expected_nonce)) {
        return Err(QuoteError::NonceMismatch);
    }

    // Each (bank, index) once: a second value for one PCR would not be in the digest, and
    // whoever reads the values later must not find it.
    for (i, v) in pcr_values.iter().enumerate() {
        if pcr_values[..i]
            .iter()
            .any(|w| w.hash_alg == v.hash_alg && w.index == v.index)
        {
            return Err(QuoteError::PcrSelectionMismatch);
        }
    }
    // The PCR values in selection order: banks as listed, indices ascending.
    let mut ordered: Vec<&[u8], MAX_PCR_VALUES> = Vec::new();
    for bank in &info.pcr_selection {
        for index in bank.indices() {
            let value = pcr_values
                .iter()
                .find(|v| v.hash_alg == bank.hash && v.index == index)
                .filter(|v| v.value.len() == bank.hash.digest_len())
                .ok_or(QuoteError::PcrSelectionMismatch)?;
            ordered
                .push(&value.value)
                .map_err(|_| QuoteError::PcrSelectionMismatch)?;
        }
    }
    if ordered.len() != pcr_values.len() {
        return Err(QuoteError::PcrSelectionMismatch);
    }
    let digest = hash::digest(sig.hash(), &ordered).map_err(|_| QuoteError::Unsupported)?;
    if !bool::from(digest.as_slice().ct_eq(&info.pcr_digest)) {
        return Err(QuoteError::PcrDigestMismatch);
    }
    Ok(VerifiedQuote {
        info,
        hash: sig.hash(),
    })
}
