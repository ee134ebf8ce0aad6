//! TPM public areas (TPMT_PUBLIC): the AK that signs quotes and the EK that credentials are
//! made for, and the TPM Name that binds them.
//!
//! Parsing is done by `tpm2-protocol`; what we keep is the small part the trust model needs
//! (key, name algorithm, attributes, scheme, symmetric definition) in fixed-size buffers,
//! plus the Name computed over the exact bytes received, so it matches what the TPM computed.

use core::fmt;

use heapless::Vec;
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{
    TpmAlgId, TpmEccCurve, TpmtPublic, TpmuAsymScheme, TpmuPublicId, TpmuPublicParms,
    TpmuSymKeyBits,
};

use super::hash::{self, HashAlg, MAX_DIGEST};

/// Largest RSA modulus accepted (4096 bits).
pub const MAX_RSA_BYTES: usize = 512;
/// SEC1 uncompressed point of the largest curve (P-384).
pub const MAX_SEC1_POINT: usize = 1 + 2 * 48;
/// A TPM Name: 2-byte algorithm id and a digest.
pub const MAX_NAME: usize = 2 + MAX_DIGEST;

/// `TPMA_OBJECT` bits.
pub mod attributes {
    pub const FIXED_TPM: u32 = 0x0000_0002;
    pub const FIXED_PARENT: u32 = 0x0000_0010;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 0x0000_0020;
    pub const USER_WITH_AUTH: u32 = 0x0000_0040;
    pub const ADMIN_WITH_POLICY: u32 = 0x0000_0080;
    pub const RESTRICTED: u32 = 0x0001_0000;
    pub const DECRYPT: u32 = 0x0002_0000;
    pub const SIGN_ENCRYPT: u32 = 0x0004_0000;
}

/// The curves we verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EccCurve {
    P256,
    P384,
}

impl EccCurve {
    /// Bytes per coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            EccCurve::P256 => 32,
            EccCurve::P384 => 48,
        }
    }
}

/// A public key.
// No allocator: RSA and ECC live side by side in one fixed-size value by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// SEC1 uncompressed point `04 ‖ x ‖ y`, coordinates left-padded to the curve size.
    Ecc {
        curve: EccCurve,
        point: Vec<u8, MAX_SEC1_POINT>,
    },
    /// Big-endian modulus and public exponent.
    Rsa {
        modulus: Vec<u8, MAX_RSA_BYTES>,
        exponent: u32,
    },
}

/// Signature schemes a quote can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SigScheme {
    Ecdsa,
    Rsassa,
    Rsapss,
}

/// A symmetric definition (the EK's inner wrapper for credentials): AES-CFB only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AesCfb {
    /// 128 or 256.
    pub key_bits: u16,
}

/// A TPM Name (`nameAlg ‖ H(TPMT_PUBLIC)`).
pub type Name = Vec<u8, MAX_NAME>;

/// What we keep of a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    pub key: PublicKey,
    pub name_alg: HashAlg,
    /// `TPMA_OBJECT` bits; see [`attributes`].
    pub attributes: u32,
    /// The key's own signing scheme, when fixed (`None`: TPM_ALG_NULL, chosen per command).
    pub scheme: Option<(SigScheme, HashAlg)>,
    /// The symmetric definition of a storage/EK key (`None`: TPM_ALG_NULL).
    pub symmetric: Option<AesCfb>,
    pub name: Name,
}

/// Why a public area was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicError {
    /// Not a TPMT_PUBLIC (offset and reason from the unmarshaler).
    Malformed(tpm2_protocol::TpmError),
    /// Bytes after the structure, or a TPM2B size that does not match.
    SizeMismatch,
    /// Neither RSA nor ECC.
    UnsupportedType,
    /// A curve other than NIST P-256 or P-384.
    UnsupportedCurve,
    /// RSA other than 2048–4096 bits, or coordinates of the wrong size.
    UnsupportedKeySize,
    /// An ECC point that is not on its curve, or an RSA modulus or exponent no key has.
    InvalidKey,
    /// Name algorithm or scheme hash other than SHA-256/384/512.
    UnsupportedHash,
    /// A symmetric definition other than AES-CFB.
    UnsupportedSymmetric,
}

impl fmt::Display for PublicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicError::Malformed(e) => write!(f, "malformed TPMT_PUBLIC: {e:?}"),
            PublicError::SizeMismatch => {
                f.write_str("TPM2B_PUBLIC size does not match its content")
            }
            PublicError::UnsupportedType => f.write_str("public area is neither RSA nor ECC"),
            PublicError::UnsupportedCurve => f.write_str("curve is neither NIST P-256 nor P-384"),
            PublicError::UnsupportedKeySize => f.write_str("unsupported key size"),
            PublicError::UnsupportedHash => f.write_str("hash algorithm is not SHA-256/384/512"),
            PublicError::InvalidKey => {
                f.write_str("not a valid public key (point off the curve or bad RSA modulus)")
            }
            PublicError::UnsupportedSymmetric => f.write_str("symmetric definition is not AES-CFB"),
        }
    }
}

impl core::error::Error for PublicError {}

fn hash_of(id: TpmAlgId) -> Result<HashAlg, PublicError> {
    match HashAlg::from_tpm(id.value()) {
        Some(HashAlg::Sha1) | None => Err(PublicError::UnsupportedHash),
        Some(h) => Ok(h),
    }
}

fn scheme_of(
    scheme: TpmAlgId,
    details: &TpmuAsymScheme,
) -> Result<Option<(SigScheme, HashAlg)>, PublicError> {
    let kind = match scheme {
        TpmAlgId::Null => return Ok(None),
        TpmAlgId::Ecdsa => SigScheme::Ecdsa,
        TpmAlgId::Rsassa => SigScheme::Rsassa,
        TpmAlgId::Rsapss => SigScheme::Rsapss,
        // Decryption schemes (OAEP, ECDH) do not sign; keep them as "no signing scheme".
        _ => return Ok(None),
    };
    match details {
        TpmuAsymScheme::Hash(h) => Ok(Some((kind, hash_of(h.hash_alg)?))),
        TpmuAsymScheme::Null => Err(PublicError::UnsupportedHash),
    }
}

fn left_pad(
    out: &mut Vec<u8, MAX_SEC1_POINT>,
    coord: &[u8],
    len: usize,
) -> Result<(), PublicError> {
    let coord = &coord[coord
        .iter()
        .take_while(|b| **b == 0)
        .count()
        .min(coord.len())..];
    if coord.len() > len {
        return Err(PublicError::UnsupportedKeySize);
    }
    for _ in coord.len()..len {
        out.push(0).map_err(|_| PublicError::UnsupportedKeySize)?;
    }
    out.extend_from_slice(coord)
        .map_err(|_| PublicError::UnsupportedKeySize)
}

impl TpmPublic {
    /// Parses a TPM2B_PUBLIC (2-byte size, then TPMT_PUBLIC), the form tss-esapi and
    /// tpm2-tools write and our wire types carry.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<TpmPublic, PublicError> {
        let (size, body) = bytes.split_at_checked(2).ok_or(PublicError::SizeMismatch)?;
        if usize::from(u16::from_be_bytes([size[0], size[1]])) != body.len() {
            return Err(PublicError::SizeMismatch);
        }
        Self::from_tpmt(body)
    }

    /// Parses a TPMT_PUBLIC; the Name is computed over exactly these bytes.
    pub fn from_tpmt(bytes: &[u8]) -> Result<TpmPublic, PublicError> {
        let (public, rest) = TpmtPublic::unmarshal(bytes).map_err(PublicError::Malformed)?;
        if !rest.is_empty() {
            return Err(PublicError::SizeMismatch);
        }
        let name_alg = hash_of(public.name_alg)?;
        let (key, scheme, symmetric) = match (&public.parameters, &public.unique) {
            (TpmuPublicParms::Ecc(params), TpmuPublicId::Ecc(point)) => {
                let curve = match params.curve_id {
                    TpmEccCurve::NistP256 => EccCurve::P256,
                    TpmEccCurve::NistP384 => EccCurve::P384,
                    _ => return Err(PublicError::UnsupportedCurve),
                };
                let len = curve.coordinate_len();
                let mut sec1 = Vec::new();
                let _ = sec1.push(0x04);
                left_pad(&mut sec1, &point.x, len)?;
                left_pad(&mut sec1, &point.y, len)?;
                // A point off the curve is refused here, once, not at every quote.
                let on_curve = match curve {
                    EccCurve::P256 => p256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
                    EccCurve::P384 => p384::PublicKey::from_sec1_bytes(&sec1).is_ok(),
                };
                if !on_curve {
                    return Err(PublicError::InvalidKey);
                }
                let scheme = scheme_of(params.scheme.scheme, &params.scheme.details)?;
                let sym = symmetric_of(&params.symmetric)?;
                (PublicKey::Ecc { curve, point: sec1 }, scheme, sym)
            }
            (TpmuPublicParms::Rsa(params), TpmuPublicId::Rsa(modulus)) => {
                let bits = params.key_bits.value();
                if !(2048..=4096).contains(&bits) || modulus.len() * 8 != usize::from(bits) {
                    return Err(PublicError::UnsupportedKeySize);
                }
                let exponent = match params.exponent.value() {
                    0 => 65_537,
                    e => e,
                };
                // A modulus of the stated size (top bit set), odd, and an odd exponent ≥ 3.
                let top_bit = modulus.first().is_some_and(|b| b & 0x80 != 0);
                let odd = modulus.last().is_some_and(|b| b & 1 == 1);
                if !top_bit || !odd || exponent < 3 || exponent % 2 == 0 {
                    return Err(PublicError::InvalidKey);
                }
                let modulus =
                    Vec::from_slice(modulus).map_err(|_| PublicError::UnsupportedKeySize)?;
                let scheme = scheme_of(params.scheme.scheme, &params.scheme.details)?;
                let sym = symmetric_of(&params.symmetric)?;
                (PublicKey::Rsa { modulus, exponent }, scheme, sym)
            }
            _ => return Err(PublicError::UnsupportedType),
        };
        let digest = hash::digest(name_alg, &[bytes]).map_err(|_| PublicError::UnsupportedHash)?;
        let mut name = Name::new();
        let _ = name.extend_from_slice(&name_alg.tpm_id().to_be_bytes());
        let _ = name.extend_from_slice(&digest);
        Ok(TpmPublic {
            key,
            name_alg,
            attributes: public.object_attributes.bits(),
            scheme,
            symmetric,
            name,
        })
    }

    /// A restricted signing key (an AK): it signs only what the TPM itself generated.
    pub fn is_restricted_signing(&self) -> bool {
        use attributes::*;
        self.attributes & (RESTRICTED | SIGN_ENCRYPT | DECRYPT) == RESTRICTED | SIGN_ENCRYPT
            && self.attributes & (FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN)
                == FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN
    }

    /// A restricted decryption key (an EK or storage key): what credentials are made for.
    pub fn is_restricted_decryption(&self) -> bool {
        use attributes::*;
        self.attributes & (RESTRICTED | SIGN_ENCRYPT | DECRYPT) == RESTRICTED | DECRYPT
    }
}

fn symmetric_of(
    sym: &tpm2_protocol::data::TpmtSymDefObject,
) -> Result<Option<AesCfb>, PublicError> {
    match (sym.algorithm, sym.key_bits, sym.mode) {
        (TpmAlgId::Null, ..) => Ok(None),
        (
            TpmAlgId::Aes,
            TpmuSymKeyBits::Aes(bits),
            tpm2_protocol::data::TpmuSymMode::Aes(TpmAlgId::Cfb),
        ) if matches!(bits.value(), 128 | 256) => Ok(Some(AesCfb {
            key_bits: bits.value(),
        })),
        _ => Err(PublicError::UnsupportedSymmetric),
    }
}
