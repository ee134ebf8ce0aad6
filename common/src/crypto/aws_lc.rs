//! aws-lc-rs provider: the server's hot path.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::{CryptoProvider, VerifyError};
use crate::tpm::hash::HashAlg;
use crate::tpm::public::{EccCurve, PublicKey, SigScheme};
use crate::tpm::signature::Signature;

/// The aws-lc-rs provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

/// `SEQUENCE { INTEGER r, INTEGER s }` for the ASN.1 verification algorithms (the hashes
/// aws-lc has no fixed-size form for).
fn ecdsa_der(r: &[u8], s: &[u8]) -> heapless::Vec<u8, 110> {
    fn int(v: &[u8], out: &mut heapless::Vec<u8, 110>) {
        let skip = v
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(v.len().saturating_sub(1));
        let v = &v[skip..];
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        let _ = out.push(0x02);
        let _ = out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            let _ = out.push(0);
        }
        let _ = out.extend_from_slice(v);
    }
    let mut body = heapless::Vec::<u8, 110>::new();
    int(r, &mut body);
    int(s, &mut body);
    let mut out = heapless::Vec::new();
    let _ = out.push(0x30);
    let _ = out.push(body.len() as u8);
    let _ = out.extend_from_slice(&body);
    out
}

impl CryptoProvider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn verify(&self, key: &PublicKey, sig: &Signature, message: &[u8]) -> Result<(), VerifyError> {
        match (key, sig.ecdsa(), sig.rsa()) {
            (PublicKey::Ecc { curve, point }, Some((sig_curve, rs)), _) if *curve == sig_curve => {
                // Canonical (`Signature::parse`): r ‖ s, each exactly the curve's size.
                let fixed = match (curve, sig.hash()) {
                    (EccCurve::P256, HashAlg::Sha256) => Some(&signature::ECDSA_P256_SHA256_FIXED),
                    (EccCurve::P384, HashAlg::Sha384) => Some(&signature::ECDSA_P384_SHA384_FIXED),
                    _ => None,
                };
                if let Some(alg) = fixed {
                    return UnparsedPublicKey::new(alg, point.as_slice())
                        .verify(message, rs)
                        .map_err(|_| VerifyError::BadSignature);
                }
                let alg = match (curve, sig.hash()) {
                    (EccCurve::P256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                    (EccCurve::P384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                    (EccCurve::P384, HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                    (EccCurve::P256, HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                    _ => return Err(VerifyError::Unsupported),
                };
                let (r, s) = rs.split_at(curve.coordinate_len());
                UnparsedPublicKey::new(alg, point.as_slice())
                    .verify(message, &ecdsa_der(r, s))
                    .map_err(|_| VerifyError::BadSignature)
            }
            (PublicKey::Rsa { modulus, exponent }, _, Some(rsa_sig)) => {
                let alg = match (sig.scheme(), sig.hash()) {
                    (SigScheme::Rsassa, HashAlg::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                    (SigScheme::Rsassa, HashAlg::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                    (SigScheme::Rsassa, HashAlg::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
                    (SigScheme::Rsapss, HashAlg::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
                    (SigScheme::Rsapss, HashAlg::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
                    (SigScheme::Rsapss, HashAlg::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(VerifyError::Unsupported),
                };
                let e = exponent.to_be_bytes();
                let skip = e.iter().take_while(|b| **b == 0).count();
                let m_skip = modulus.iter().take_while(|b| **b == 0).count();
                RsaPublicKeyComponents {
                    n: &modulus[m_skip..],
                    e: &e[skip..],
                }
                .verify(alg, message, rsa_sig)
                .map_err(|_| VerifyError::BadSignature)
            }
            _ => Err(VerifyError::Unsupported),
        }
    }
}
