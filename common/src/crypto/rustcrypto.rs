//! RustCrypto provider: `p256`/`p384` ECDSA everywhere; RSA (`rsa` crate, public-key
//! operations only) with the `verifier` feature.

use p384::ecdsa::signature::hazmat::PrehashVerifier;

use super::{CryptoProvider, VerifyError};
use crate::tpm::hash;
use crate::tpm::public::{EccCurve, PublicKey};
use crate::tpm::signature::Signature;

/// The RustCrypto provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

/// `rs`: r ‖ s, each exactly the curve's size (canonical, `Signature::parse`).
fn ecdsa(curve: EccCurve, point: &[u8], rs: &[u8], prehash: &[u8]) -> Result<(), VerifyError> {
    match curve {
        EccCurve::P384 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| VerifyError::Unsupported)?;
            let sig =
                p384::ecdsa::Signature::from_slice(rs).map_err(|_| VerifyError::BadSignature)?;
            key.verify_prehash(prehash, &sig)
                .map_err(|_| VerifyError::BadSignature)
        }
        EccCurve::P256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| VerifyError::Unsupported)?;
            let sig =
                p256::ecdsa::Signature::from_slice(rs).map_err(|_| VerifyError::BadSignature)?;
            key.verify_prehash(prehash, &sig)
                .map_err(|_| VerifyError::BadSignature)
        }
    }
}

#[cfg(feature = "verifier")]
fn rsa_verify(
    modulus: &[u8],
    exponent: u32,
    scheme: crate::tpm::public::SigScheme,
    hash_alg: hash::HashAlg,
    prehash: &[u8],
    sig: &[u8],
) -> Result<(), VerifyError> {
    extern crate alloc;
    use crate::tpm::public::SigScheme;
    use hash::HashAlg;
    use rsa::traits::SignatureScheme;
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|_| VerifyError::Unsupported)?;
    let result = match (scheme, hash_alg) {
        (SigScheme::Rsassa, HashAlg::Sha256) => {
            rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>().verify(&key, prehash, sig)
        }
        (SigScheme::Rsassa, HashAlg::Sha384) => {
            rsa::Pkcs1v15Sign::new::<sha2_010::Sha384>().verify(&key, prehash, sig)
        }
        (SigScheme::Rsassa, HashAlg::Sha512) => {
            rsa::Pkcs1v15Sign::new::<sha2_010::Sha512>().verify(&key, prehash, sig)
        }
        (SigScheme::Rsapss, HashAlg::Sha256) => {
            rsa::Pss::new::<sha2_010::Sha256>().verify(&key, prehash, sig)
        }
        (SigScheme::Rsapss, HashAlg::Sha384) => {
            rsa::Pss::new::<sha2_010::Sha384>().verify(&key, prehash, sig)
        }
        (SigScheme::Rsapss, HashAlg::Sha512) => {
            rsa::Pss::new::<sha2_010::Sha512>().verify(&key, prehash, sig)
        }
        _ => return Err(VerifyError::Unsupported),
    };
    result.map_err(|_| VerifyError::BadSignature)
}

impl CryptoProvider for RustCrypto {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn verify(
        &self,
        key: &PublicKey,
        signature: &Signature,
        message: &[u8],
    ) -> Result<(), VerifyError> {
        let prehash =
            hash::digest(signature.hash(), &[message]).map_err(|_| VerifyError::Unsupported)?;
        match (key, signature.ecdsa(), signature.rsa()) {
            (PublicKey::Ecc { curve, point }, Some((sig_curve, rs)), _) if *curve == sig_curve => {
                ecdsa(*curve, point, rs, &prehash)
            }
            #[cfg(feature = "verifier")]
            (PublicKey::Rsa { modulus, exponent }, _, Some(sig)) => rsa_verify(
                modulus,
                *exponent,
                signature.scheme(),
                signature.hash(),
                &prehash,
                sig,
            ),
            _ => Err(VerifyError::Unsupported),
        }
    }
}
