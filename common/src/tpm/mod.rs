//! TPM evidence: public areas and names, quotes and signatures, PCR policy, and the software
//! half of credential activation. Parsing sits on `tpm2-protocol` (no_std, no heap);
//! signature checks go through the [`crate::crypto`] provider seam.

pub mod ak;
pub mod attest;
#[cfg(feature = "verifier")]
pub mod credential;
pub mod ek;
pub mod ek_template;
pub mod hash;
pub mod kdf;
pub mod pcr;
pub mod public;
pub mod quote;
pub mod signature;
pub mod spki;

pub use quote::{QuoteError, VerifiedQuote, verify_quote};
