//! The AK's form (DESIGN.md §3.2): which attestation keys a verifier takes.
//!
//! An AK is pinned to one signing scheme: ECDSA for ECC keys, RSASSA or RSAPSS for RSA keys,
//! with the hash of its algorithm (SHA-384; SHA-256 for P-256), and named with that same
//! hash. A key whose scheme is TPM_ALG_NULL lets the signer pick the hash of every quote (a
//! real TPM refuses to create such a restricted signing key), and ECDAA, SM2 and ECSCHNORR
//! are schemes no provider here verifies: all are refused by name, not filed as "no scheme".
//! Which algorithms a verifier accepts is its policy ([`AkAlgorithm`]; the server's
//! `ITL_AK_ALGORITHMS`).
//!
//! The scheme is read from the bytes before the full parse: `tpm2-protocol` 1.2.3 reads
//! TPMS_SCHEME_ECDAA without its `count` field, so a genuine ECDAA key would otherwise fail
//! as "unsupported curve" and its refusal would name the wrong field.

use core::fmt;

use super::hash::HashAlg;
use super::public::{EccCurve, PublicError, PublicKey, SigScheme, TpmPublic};

/// TPM_ALG_IDs of the asymmetric schemes a TPMT_PUBLIC can declare.
pub mod scheme_id {
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001a;
    pub const SM2: u16 = 0x001b;
    pub const ECSCHNORR: u16 = 0x001c;
    pub const ECMQV: u16 = 0x001d;
    pub const NULL: u16 = 0x0010;
}

/// A scheme's name as the TPM specification spells it.
pub fn scheme_name(id: u16) -> &'static str {
    use scheme_id::*;
    match id {
        RSASSA => "RSASSA",
        RSAES => "RSAES",
        RSAPSS => "RSAPSS",
        OAEP => "OAEP",
        ECDSA => "ECDSA",
        ECDH => "ECDH",
        ECDAA => "ECDAA",
        SM2 => "SM2",
        ECSCHNORR => "ECSCHNORR",
        ECMQV => "ECMQV",
        NULL => "TPM_ALG_NULL",
        _ => "unknown",
    }
}

/// The scheme a TPMT_PUBLIC of an RSA or ECC key declares (the `scheme` of its
/// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME), read from the raw bytes; `None` when the bytes end
/// first or the key is neither RSA nor ECC.
pub fn declared_scheme(tpmt: &[u8]) -> Option<u16> {
    let u16_at = |at: usize| {
        tpmt.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    // type, nameAlg, objectAttributes, authPolicy (TPM2B).
    let key_type = u16_at(0)?;
    if key_type != 0x0001 && key_type != 0x0023 {
        return None;
    }
    let mut at = 2 + 2 + 4;
    at += 2 + usize::from(u16_at(at)?);
    // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless it is NULL.
    let symmetric = u16_at(at)?;
    at += if symmetric == scheme_id::NULL { 2 } else { 6 };
    u16_at(at)
}

/// An AK algorithm a verifier may accept, with its one signing hash and name algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AkAlgorithm {
    /// `ecc-p384`: NIST P-384, ECDSA with SHA-384, named with SHA-384 (the default; CNSA).
    EccP384,
    /// `ecc-p256`: NIST P-256, ECDSA with SHA-256, named with SHA-256.
    EccP256,
    /// `rsa-2048`: RSA-2048, RSASSA or RSAPSS with SHA-384, named with SHA-384.
    Rsa2048,
    /// `rsa-3072`: the same with a 3072-bit modulus.
    Rsa3072,
    /// `rsa-4096`: the same with a 4096-bit modulus.
    Rsa4096,
}

impl AkAlgorithm {
    pub const ALL: [AkAlgorithm; 5] = [
        AkAlgorithm::EccP384,
        AkAlgorithm::EccP256,
        AkAlgorithm::Rsa2048,
        AkAlgorithm::Rsa3072,
        AkAlgorithm::Rsa4096,
    ];

    /// The name configuration uses (`ecc-p384`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AkAlgorithm::EccP384 => "ecc-p384",
            AkAlgorithm::EccP256 => "ecc-p256",
            AkAlgorithm::Rsa2048 => "rsa-2048",
            AkAlgorithm::Rsa3072 => "rsa-3072",
            AkAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    pub fn from_name(name: &str) -> Option<AkAlgorithm> {
        AkAlgorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The hash it signs with, and is named with.
    pub fn hash(self) -> HashAlg {
        match self {
            AkAlgorithm::EccP256 => HashAlg::Sha256,
            _ => HashAlg::Sha384,
        }
    }

    /// The algorithm of a key (`None`: an RSA modulus of another size).
    pub fn of(key: &PublicKey) -> Option<AkAlgorithm> {
        match key {
            PublicKey::Ecc {
                curve: EccCurve::P384,
                ..
            } => Some(AkAlgorithm::EccP384),
            PublicKey::Ecc {
                curve: EccCurve::P256,
                ..
            } => Some(AkAlgorithm::EccP256),
            PublicKey::Rsa { modulus, .. } => match modulus.len() * 8 {
                2048 => Some(AkAlgorithm::Rsa2048),
                3072 => Some(AkAlgorithm::Rsa3072),
                4096 => Some(AkAlgorithm::Rsa4096),
                _ => None,
            },
        }
    }

    fn signs_with(self, scheme: SigScheme) -> bool {
        match self {
            AkAlgorithm::EccP384 | AkAlgorithm::EccP256 => scheme == SigScheme::Ecdsa,
            _ => matches!(scheme, SigScheme::Rsassa | SigScheme::Rsapss),
        }
    }
}

/// Why an AK was refused. Every message names `ak_public` and the part of it at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkError {
    /// Not a TPM2B_PUBLIC we can read.
    Malformed(PublicError),
    /// Not a restricted signing key (fixedTPM, fixedParent, sensitiveDataOrigin).
    NotRestrictedSigning,
    /// A scheme other than ECDSA, RSASSA or RSAPSS (by its TPM_ALG_ID), NULL included.
    Scheme(u16),
    /// The key's scheme is not its family's (ECDSA for ECC, RSASSA/RSAPSS for RSA).
    SchemeForKey(SigScheme, AkAlgorithm),
    /// An algorithm outside `allowed` (`None`: an RSA size no AK has).
    NotAllowed(Option<AkAlgorithm>),
    /// The scheme's hash is not the algorithm's.
    SchemeHash {
        got: HashAlg,
        algorithm: AkAlgorithm,
    },
    /// The name algorithm is not the algorithm's hash.
    NameAlg {
        got: HashAlg,
        algorithm: AkAlgorithm,
    },
}

impl fmt::Display for AkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AkError::Malformed(e) => write!(f, "ak_public: {e}"),
            AkError::NotRestrictedSigning => {
                f.write_str("ak_public is not a restricted signing key")
            }
            AkError::Scheme(scheme_id::NULL) => f.write_str(
                "ak_public scheme is TPM_ALG_NULL: an AK needs a fixed signing scheme \
                 (ECDSA; RSASSA or RSAPSS for RSA)",
            ),
            AkError::Scheme(id) => write!(
                f,
                "ak_public scheme {} (0x{id:04x}) is refused: an AK signs with ECDSA, or \
                 RSASSA or RSAPSS for RSA",
                scheme_name(*id)
            ),
            AkError::SchemeForKey(scheme, algorithm) => write!(
                f,
                "ak_public scheme {scheme:?} does not fit its {} key",
                algorithm.name()
            ),
            AkError::NotAllowed(Some(algorithm)) => {
                write!(f, "ak_public is an {} key", algorithm.name())
            }
            AkError::NotAllowed(None) => f.write_str("ak_public is an RSA key of no AK size"),
            AkError::SchemeHash { got, algorithm } => write!(
                f,
                "ak_public scheme hash is {}: {} AKs sign with {}",
                got.name(),
                algorithm.name(),
                algorithm.hash().name()
            ),
            AkError::NameAlg { got, algorithm } => write!(
                f,
                "ak_public nameAlg is {}: {} AKs are named with {}",
                got.name(),
                algorithm.name(),
                algorithm.hash().name()
            ),
        }
    }
}

impl core::error::Error for AkError {}

/// Checks an AK's TPM2B_PUBLIC against the algorithms `allowed` and answers it parsed.
pub fn check_ak(tpm2b: &[u8], allowed: &[AkAlgorithm]) -> Result<TpmPublic, AkError> {
    if let Some(id) = tpm2b.get(2..).and_then(declared_scheme)
        && !matches!(id, scheme_id::ECDSA | scheme_id::RSASSA | scheme_id::RSAPSS)
    {
        return Err(AkError::Scheme(id));
    }
    let ak = TpmPublic::from_tpm2b(tpm2b).map_err(AkError::Malformed)?;
    if !ak.is_restricted_signing() {
        return Err(AkError::NotRestrictedSigning);
    }
    let algorithm = AkAlgorithm::of(&ak.key);
    let Some(algorithm) = algorithm.filter(|a| allowed.contains(a)) else {
        return Err(AkError::NotAllowed(algorithm));
    };
    // The declared scheme was ECDSA, RSASSA or RSAPSS: the parser kept it.
    let (scheme, hash) = ak.scheme.ok_or(AkError::Scheme(scheme_id::NULL))?;
    if !algorithm.signs_with(scheme) {
        return Err(AkError::SchemeForKey(scheme, algorithm));
    }
    if hash != algorithm.hash() {
        return Err(AkError::SchemeHash {
            got: hash,
            algorithm,
        });
    }
    if ak.name_alg != algorithm.hash() {
        return Err(AkError::NameAlg {
            got: ak.name_alg,
            algorithm,
        });
    }
    Ok(ak)
}
