//! TPMT_SIGNATURE: what a TPM signs a quote with.

use heapless::Vec;
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{TpmtSignature, TpmuSignature};

use super::hash::HashAlg;
use super::public::{MAX_RSA_BYTES, SigScheme};

/// Largest ECDSA scalar (P-384).
pub const MAX_SCALAR: usize = 48;

/// A parsed TPM signature.
// No allocator: RSA and ECC live side by side in one fixed-size value by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// r and s as the TPM wrote them (big-endian, possibly shorter than the curve size).
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8, MAX_SCALAR>,
        s: Vec<u8, MAX_SCALAR>,
    },
    /// RSASSA-PKCS1-v1_5 or RSASSA-PSS.
    Rsa {
        scheme: SigScheme,
        hash: HashAlg,
        sig: Vec<u8, MAX_RSA_BYTES>,
    },
}

impl Signature {
    pub fn scheme(&self) -> SigScheme {
        match self {
            Signature::Ecdsa { .. } => SigScheme::Ecdsa,
            Signature::Rsa { scheme, .. } => *scheme,
        }
    }

    pub fn hash(&self) -> HashAlg {
        match self {
            Signature::Ecdsa { hash, .. } | Signature::Rsa { hash, .. } => *hash,
        }
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
    /// A component larger than the largest supported key.
    TooLarge,
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
            SignatureError::TooLarge => f.write_str("signature component too large"),
        }
    }
}

impl core::error::Error for SignatureError {}

impl Signature {
    /// Parses a TPMT_SIGNATURE (exactly; no trailing bytes).
    pub fn parse(bytes: &[u8]) -> Result<Signature, SignatureError> {
        let (sig, rest) = TpmtSignature::unmarshal(bytes).map_err(SignatureError::Malformed)?;
        if !rest.is_empty() {
            return Err(SignatureError::TrailingBytes);
        }
        let hash = |id: tpm2_protocol::data::TpmAlgId| match HashAlg::from_tpm(id.value()) {
            Some(HashAlg::Sha1) | None => Err(SignatureError::UnsupportedHash),
            Some(h) => Ok(h),
        };
        match &sig.signature {
            TpmuSignature::Ecdsa(e) => Ok(Signature::Ecdsa {
                hash: hash(e.hash)?,
                r: Vec::from_slice(&e.signature_r).map_err(|_| SignatureError::TooLarge)?,
                s: Vec::from_slice(&e.signature_s).map_err(|_| SignatureError::TooLarge)?,
            }),
            TpmuSignature::Rsassa(r) | TpmuSignature::Rsapss(r) => Ok(Signature::Rsa {
                scheme: if matches!(sig.signature, TpmuSignature::Rsassa(_)) {
                    SigScheme::Rsassa
                } else {
                    SigScheme::Rsapss
                },
                hash: hash(r.hash)?,
                sig: Vec::from_slice(&r.sig).map_err(|_| SignatureError::TooLarge)?,
            }),
            _ => Err(SignatureError::UnsupportedScheme),
        }
    }
}
