//! The crypto-provider seam (as in rustls): every signature verification goes through one
//! small trait, so the firmware verifies with RustCrypto (no_std, no heap) and the server's
//! hot path with aws-lc-rs (about four times faster for P-384), and tests run both and
//! require that they agree.

pub mod rustcrypto;

#[cfg(feature = "aws-lc")]
pub mod aws_lc;

use crate::tpm::public::PublicKey;
use crate::tpm::signature::Signature;

/// Why a provider did not accept a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VerifyError {
    /// The signature does not verify.
    BadSignature,
    /// This provider does not do this key/scheme/hash combination (or the key is invalid).
    Unsupported,
}

/// Signature verification over a message (the provider hashes it with the signature's hash).
pub trait CryptoProvider: Send + Sync {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Verifies `signature` over `message` with `key`. The signature is canonical
    /// ([`Signature::parse`] made it for this key): a provider never sees leading zeros,
    /// scalars out of range or RSA signatures of the wrong length, so it has nothing to
    /// decide about the encoding that another provider could decide differently.
    fn verify(
        &self,
        key: &PublicKey,
        signature: &Signature,
        message: &[u8],
    ) -> Result<(), VerifyError>;
}

/// The default provider: RustCrypto, available everywhere (RSA only with `verifier`).
pub fn default_provider() -> &'static dyn CryptoProvider {
    &rustcrypto::RustCrypto
}
