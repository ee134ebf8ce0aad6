//! The hash algorithms a TPM names by `TPM_ALG_ID`, computed without an allocator.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};

pub use crate::wire::HashAlg;

/// Largest digest (SHA-512).
pub const MAX_DIGEST: usize = 64;

/// A digest of any supported algorithm.
pub type Digest = heapless::Vec<u8, MAX_DIGEST>;

pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_SHA256: u16 = 0x000b;
pub const TPM_ALG_SHA384: u16 = 0x000c;
pub const TPM_ALG_SHA512: u16 = 0x000d;

impl HashAlg {
    /// From a `TPM_ALG_ID`.
    pub fn from_tpm(id: u16) -> Option<HashAlg> {
        match id {
            TPM_ALG_SHA1 => Some(HashAlg::Sha1),
            TPM_ALG_SHA256 => Some(HashAlg::Sha256),
            TPM_ALG_SHA384 => Some(HashAlg::Sha384),
            TPM_ALG_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The `TPM_ALG_ID`.
    pub fn tpm_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => TPM_ALG_SHA1,
            HashAlg::Sha256 => TPM_ALG_SHA256,
            HashAlg::Sha384 => TPM_ALG_SHA384,
            HashAlg::Sha512 => TPM_ALG_SHA512,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }
}

/// SHA-1 is refused everywhere: a TPM quote or name over SHA-1 proves nothing today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsupportedHash(pub HashAlg);

fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Digest {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    Digest::from_slice(&h.finalize()).unwrap_or_default()
}

/// Hash of the concatenation of `parts`.
pub fn digest(alg: HashAlg, parts: &[&[u8]]) -> Result<Digest, UnsupportedHash> {
    Ok(match alg {
        HashAlg::Sha256 => run::<Sha256>(parts),
        HashAlg::Sha384 => run::<Sha384>(parts),
        HashAlg::Sha512 => run::<Sha512>(parts),
        HashAlg::Sha1 => return Err(UnsupportedHash(alg)),
    })
}

fn run_hmac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Digest {
    // HMAC accepts keys of any length.
    let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
        return Digest::new();
    };
    for p in parts {
        m.update(p);
    }
    Digest::from_slice(&m.finalize().into_bytes()).unwrap_or_default()
}

/// HMAC of the concatenation of `parts`.
pub fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Result<Digest, UnsupportedHash> {
    Ok(match alg {
        HashAlg::Sha256 => run_hmac::<Hmac<Sha256>>(key, parts),
        HashAlg::Sha384 => run_hmac::<Hmac<Sha384>>(key, parts),
        HashAlg::Sha512 => run_hmac::<Hmac<Sha512>>(key, parts),
        HashAlg::Sha1 => return Err(UnsupportedHash(alg)),
    })
}
