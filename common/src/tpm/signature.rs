//! TPMT_SIGNATURE: what a TPM signs a quote with, parsed once into the one form every
//! crypto provider verifies.
//!
//! The providers read signatures differently: RustCrypto took r and s with any number of
//! leading zeros, aws-lc refused a P-256 r longer than 32 bytes, so the same quote could
//! pass on one and fail on the other (review finding 6). Nothing but this parser reads the
//! wire form now: it checks the signature against the key it is for and makes a
//! [`Signature`] that is canonical by construction (its fields are private): ECDSA r and s
//! with leading zeros removed, refused when longer than the curve's size, zero, or not below
//! the curve order, then left-padded to exactly the curve's size; RSA signatures exactly as
//! long as the modulus and below it. A provider then only does arithmetic, and two providers
//! that do it correctly give one verdict (`tests/signatures.rs`).

use heapless::Vec;
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{TpmtSignature, TpmuSignature};

use super::hash::HashAlg;
use super::public::{EccCurve, MAX_RSA_BYTES, PublicKey, SigScheme};

/// Largest ECDSA scalar (P-384).
pub const MAX_SCALAR: usize = 48;

/// A TPM signature in canonical form, made only by [`Signature::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    scheme: SigScheme,
    hash: HashAlg,
    /// ECDSA: the curve; RSA: `None`.
    curve: Option<EccCurve>,
    /// ECDSA: `r ‖ s`, each exactly the curve's size; RSA: the signature, exactly the
    /// modulus' size.
    bytes: Vec<u8, MAX_RSA_BYTES>,
}

impl Signature {
    pub fn scheme(&self) -> SigScheme {
        self.scheme
    }

    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// ECDSA: the curve and `r ‖ s` (each exactly the curve's size, in [1, n−1]).
    pub fn ecdsa(&self) -> Option<(EccCurve, &[u8])> {
        self.curve.map(|curve| (curve, self.bytes.as_slice()))
    }

    /// RSASSA / RSAPSS: the signature, exactly as long as the modulus and below it.
    pub fn rsa(&self) -> Option<&[u8]> {
        self.curve.is_none().then_some(self.bytes.as_slice())
    }
}

/// Why a TPMT_SIGNATURE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Malformed(tpm2_protocol::TpmError),
    /// Bytes after the structure.
    TrailingBytes,
    /// A scheme other than ECDSA, RSASSA or RSAPSS (ECDAA, SM2, Schnorr, HMAC, NULL).
    UnsupportedScheme,
    /// SHA-1 or an unknown hash.
    UnsupportedHash,
    /// An ECDSA signature for an RSA key, or the reverse.
    KeyMismatch,
    /// ECDSA r or s longer than the curve's size once leading zeros are removed.
    ScalarTooLong,
    /// ECDSA r or s zero, or not below the curve order.
    ScalarOutOfRange,
    /// An RSA signature not exactly as long as the modulus.
    RsaLength,
    /// An RSA signature not below the modulus.
    RsaOutOfRange,
}

impl core::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SignatureError::Malformed(e) => write!(f, "malformed TPMT_SIGNATURE: {e:?}"),
            SignatureError::TrailingBytes => f.write_str("bytes after the TPMT_SIGNATURE"),
            SignatureError::UnsupportedScheme => {
                f.write_str("signature scheme is not ECDSA, RSASSA or RSAPSS")
            }
            SignatureError::UnsupportedHash => f.write_str("signature hash is not SHA-256/384/512"),
            SignatureError::KeyMismatch => {
                f.write_str("signature algorithm does not fit the key (ECDSA and RSA mixed)")
            }
            SignatureError::ScalarTooLong => {
                f.write_str("ECDSA r or s is longer than the curve's size")
            }
            SignatureError::ScalarOutOfRange => {
                f.write_str("ECDSA r or s is zero or not below the curve order")
            }
            SignatureError::RsaLength => {
                f.write_str("RSA signature is not exactly as long as the modulus")
            }
            SignatureError::RsaOutOfRange => f.write_str("RSA signature is not below the modulus"),
        }
    }
}

impl core::error::Error for SignatureError {}

/// `scalar` without its leading zeros, left-padded to the curve's size into `out`, when it
/// is in [1, n−1].
fn scalar_into(
    curve: EccCurve,
    scalar: &[u8],
    out: &mut Vec<u8, MAX_RSA_BYTES>,
) -> Result<(), SignatureError> {
    let len = curve.coordinate_len();
    let skip = scalar.iter().take_while(|b| **b == 0).count();
    let scalar = &scalar[skip..];
    if scalar.len() > len {
        return Err(SignatureError::ScalarTooLong);
    }
    let mut fixed = [0u8; MAX_SCALAR];
    fixed[len - scalar.len()..len].copy_from_slice(scalar);
    let fixed = &fixed[..len];
    let in_range = match curve {
        EccCurve::P256 => p256::NonZeroScalar::try_from(fixed).is_ok(),
        EccCurve::P384 => p384::NonZeroScalar::try_from(fixed).is_ok(),
    };
    if !in_range {
        return Err(SignatureError::ScalarOutOfRange);
    }
    out.extend_from_slice(fixed)
        .map_err(|_| SignatureError::ScalarTooLong)
}

impl Signature {
    /// Parses a TPMT_SIGNATURE (exactly; no trailing bytes) made by `key` into its
    /// canonical form.
    pub fn parse(bytes: &[u8], key: &PublicKey) -> Result<Signature, SignatureError> {
        let (sig, rest) = TpmtSignature::unmarshal(bytes).map_err(SignatureError::Malformed)?;
        if !rest.is_empty() {
            return Err(SignatureError::TrailingBytes);
        }
        let hash = |id: tpm2_protocol::data::TpmAlgId| match HashAlg::from_tpm(id.value()) {
            Some(HashAlg::Sha1) | None => Err(SignatureError::UnsupportedHash),
            Some(h) => Ok(h),
        };
        let mut out = Vec::new();
        match (&sig.signature, key) {
            (TpmuSignature::Ecdsa(e), PublicKey::Ecc { curve, .. }) => {
                let hash = hash(e.hash)?;
                scalar_into(*curve, &e.signature_r, &mut out)?;
                scalar_into(*curve, &e.signature_s, &mut out)?;
                Ok(Signature {
                    scheme: SigScheme::Ecdsa,
                    hash,
                    curve: Some(*curve),
                    bytes: out,
                })
            }
            (
                TpmuSignature::Rsassa(r) | TpmuSignature::Rsapss(r),
                PublicKey::Rsa { modulus, .. },
            ) => {
                let hash = hash(r.hash)?;
                let scheme = match sig.signature {
                    TpmuSignature::Rsassa(_) => SigScheme::Rsassa,
                    _ => SigScheme::Rsapss,
                };
                if r.sig.len() != modulus.len() {
                    return Err(SignatureError::RsaLength);
                }
                // Equal lengths: big-endian bytes compare as the numbers do.
                if &r.sig[..] >= modulus.as_slice() {
                    return Err(SignatureError::RsaOutOfRange);
                }
                out.extend_from_slice(&r.sig)
                    .map_err(|_| SignatureError::RsaLength)?;
                Ok(Signature {
                    scheme,
                    hash,
                    curve: None,
                    bytes: out,
                })
            }
            (TpmuSignature::Ecdsa(_) | TpmuSignature::Rsassa(_) | TpmuSignature::Rsapss(_), _) => {
                Err(SignatureError::KeyMismatch)
            }
            _ => Err(SignatureError::UnsupportedScheme),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_key() -> PublicKey {
        let key = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        PublicKey::Ecc {
            curve: EccCurve::P256,
            point: Vec::from_slice(point.as_bytes()).unwrap(),
        }
    }

    fn ecdsa(r: &[u8], s: &[u8]) -> Vec<u8, 200> {
        let mut out = Vec::new();
        out.extend_from_slice(&[0x00, 0x18, 0x00, 0x0b]).unwrap();
        for v in [r, s] {
            out.extend_from_slice(&(v.len() as u16).to_be_bytes())
                .unwrap();
            out.extend_from_slice(v).unwrap();
        }
        out
    }

    #[test]
    fn scalars_are_stripped_padded_and_range_checked() {
        let key = p256_key();
        let canonical = Signature::parse(&ecdsa(&[1], &[2]), &key).unwrap();
        let (curve, rs) = canonical.ecdsa().unwrap();
        assert_eq!((curve, rs.len()), (EccCurve::P256, 64));
        assert_eq!((rs[31], rs[63]), (1, 2));
        assert!(rs[..31].iter().chain(&rs[32..63]).all(|b| *b == 0));
        // However many leading zeros: the same signature.
        for zeros in [1, 31, 40, 65] {
            let r = [&[0u8; 66][..zeros], &[1]].concat();
            assert_eq!(
                Signature::parse(&ecdsa(&r, &[2]), &key),
                Ok(canonical.clone())
            );
        }
        let cases: [(&[u8], &[u8], SignatureError); 5] = [
            (&[], &[2], SignatureError::ScalarOutOfRange),
            (&[0, 0], &[2], SignatureError::ScalarOutOfRange),
            (&[1], &[0xff; 32], SignatureError::ScalarOutOfRange),
            (&[1; 33], &[2], SignatureError::ScalarTooLong),
            (&[1], &[0xff; 48], SignatureError::ScalarTooLong),
        ];
        for (r, s, want) in cases {
            assert_eq!(
                Signature::parse(&ecdsa(r, s), &key),
                Err(want),
                "{r:?} {s:?}"
            );
        }
        let rsa = PublicKey::Rsa {
            modulus: Vec::from_slice(&[0xc1; 256]).unwrap(),
            exponent: 65537,
        };
        assert_eq!(
            Signature::parse(&ecdsa(&[1], &[2]), &rsa),
            Err(SignatureError::KeyMismatch)
        );
    }
}
