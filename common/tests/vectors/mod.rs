//! Test signatures: TPMT_SIGNATURE encodings, ECC test keys that sign prehashes, and a
//! deterministic generator for the RSA key (`signatures.rs`).

#![allow(dead_code)]

use attest_common::tpm::hash::{self, HashAlg};
use attest_common::tpm::public::{EccCurve, PublicKey};
use p384::ecdsa::signature::hazmat::PrehashSigner;

const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;

/// TPMT_SIGNATURE with ECDSA: sigAlg, hash, TPM2B r, TPM2B s.
pub fn tpmt_ecdsa(hash: HashAlg, r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&TPM_ALG_ECDSA.to_be_bytes());
    out.extend_from_slice(&hash.tpm_id().to_be_bytes());
    for v in [r, s] {
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// TPMT_SIGNATURE with RSASSA or RSAPSS: sigAlg, hash, TPM2B sig.
pub fn tpmt_rsa(alg: u16, hash: HashAlg, sig: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&alg.to_be_bytes());
    out.extend_from_slice(&hash.tpm_id().to_be_bytes());
    out.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    out.extend_from_slice(sig);
    out
}

pub fn prehash(alg: HashAlg, message: &[u8]) -> Vec<u8> {
    hash::digest(alg, &[message]).unwrap().to_vec()
}

/// An ECC test key.
pub enum EccKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

pub fn p256_key(seed: u8) -> EccKey {
    EccKey::P256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
}

pub fn p384_key(seed: u8) -> EccKey {
    EccKey::P384(p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap())
}

impl EccKey {
    /// The public key as the AK parser keeps it.
    pub fn public(&self) -> PublicKey {
        let (curve, point) = match self {
            EccKey::P256(k) => (
                EccCurve::P256,
                k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            ),
            EccKey::P384(k) => (
                EccCurve::P384,
                k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            ),
        };
        PublicKey::Ecc {
            curve,
            point: heapless::Vec::from_slice(&point).unwrap(),
        }
    }

    /// r and s (fixed size, big-endian) of a signature over `digest`.
    pub fn sign(&self, digest: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (r, s) = match self {
            EccKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).unwrap();
                let (r, s) = sig.split_bytes();
                (r.to_vec(), s.to_vec())
            }
            EccKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).unwrap();
                let (r, s) = sig.split_bytes();
                (r.to_vec(), s.to_vec())
            }
        };
        (r, s)
    }

    /// The other valid s: n − s.
    pub fn negate(&self, s: &[u8]) -> Vec<u8> {
        match self {
            EccKey::P256(_) => (-p256::NonZeroScalar::try_from(s).unwrap())
                .to_bytes()
                .to_vec(),
            EccKey::P384(_) => (-p384::NonZeroScalar::try_from(s).unwrap())
                .to_bytes()
                .to_vec(),
        }
    }

    /// The curve order, big-endian.
    pub fn order(&self) -> Vec<u8> {
        hex(match self {
            EccKey::P256(_) => "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
            EccKey::P384(_) => {
                "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973"
            }
        })
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn pad(v: &[u8], zeros: usize) -> Vec<u8> {
    [vec![0; zeros], v.to_vec()].concat()
}

pub fn plus_one(v: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    for b in v.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            break;
        }
    }
    v
}

/// A deterministic rand_core 0.6 generator for the RSA test key and PSS salts.
pub struct TestRng(pub u64);

impl rand_core_06::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core_06::CryptoRng for TestRng {}
