//! The DER SubjectPublicKeyInfo of a TPM public key, without an allocator.
//!
//! A TPM without an EK certificate is named by the SHA-384 of its EK's SubjectPublicKeyInfo
//! (DESIGN.md §3.1, `ek_source = pub`). The EK reaches the server as its TPM public area, so
//! the SPKI is computed here, in one place, byte for byte as OpenSSL (`openssl pkey -pubin
//! -outform der`) and the manufacturers' certificates write it:
//!
//! ```text
//! RSA: SEQUENCE { SEQUENCE { rsaEncryption, NULL },
//!                 BIT STRING { SEQUENCE { INTEGER n, INTEGER e } } }
//! ECC: SEQUENCE { SEQUENCE { id-ecPublicKey, namedCurve },
//!                 BIT STRING { 04 ‖ x ‖ y } }
//! ```
//!
//! Integers are minimal (a leading zero only before a set top bit); coordinates are the
//! curve's size, left-padded (as [`PublicKey::Ecc`] holds them).

use heapless::Vec;

use super::public::{EccCurve, PublicKey};
use crate::der;

/// Largest SPKI encoded: RSA-4096 takes 550 bytes.
pub const MAX_SPKI: usize = 560;

/// A DER SubjectPublicKeyInfo.
pub type Spki = Vec<u8, MAX_SPKI>;

/// `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// `AlgorithmIdentifier { id-ecPublicKey, secp384r1 }`.
const P384_ALGORITHM: [u8; 18] = [
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];
/// `AlgorithmIdentifier { id-ecPublicKey, prime256v1 }`.
const P256_ALGORITHM: [u8; 21] = [
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];

/// Bytes of a TLV whose value is `len` bytes long.
fn tlv_len(len: usize) -> usize {
    1 + header_len(len) + len
}

/// Bytes of a DER length field for `len` (definite, minimal).
fn header_len(len: usize) -> usize {
    match len {
        0..0x80 => 1,
        0x80..0x100 => 2,
        _ => 3,
    }
}

/// Every SPKI fits in [`MAX_SPKI`], so nothing written here can overflow; writes report it
/// anyway instead of panicking.
struct Writer(Spki, bool);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.1 &= self.0.extend_from_slice(b).is_ok();
    }

    fn header(&mut self, tag: u8, len: usize) {
        self.bytes(&[tag]);
        match len {
            0..0x80 => self.bytes(&[len as u8]),
            0x80..0x100 => self.bytes(&[0x81, len as u8]),
            _ => self.bytes(&[0x82, (len >> 8) as u8, len as u8]),
        }
    }

    /// An unsigned INTEGER from big-endian magnitude bytes.
    fn uint(&mut self, magnitude: &[u8]) {
        let m = strip(magnitude);
        let pad = m.first().is_none_or(|b| b & 0x80 != 0);
        self.header(der::INTEGER, m.len() + usize::from(pad));
        if pad {
            self.bytes(&[0]);
        }
        self.bytes(m);
    }
}

/// The magnitude without leading zero bytes.
fn strip(magnitude: &[u8]) -> &[u8] {
    let start = magnitude.iter().take_while(|b| **b == 0).count();
    &magnitude[start..]
}

/// Content bytes of the INTEGER for `magnitude`.
fn uint_len(magnitude: &[u8]) -> usize {
    let m = strip(magnitude);
    m.len() + usize::from(m.first().is_none_or(|b| b & 0x80 != 0))
}

/// The DER SubjectPublicKeyInfo of `key`; `None` only for a key larger than any
/// [`PublicKey`] holds (an RSA modulus over 4096 bits).
pub fn encode(key: &PublicKey) -> Option<Spki> {
    let mut w = Writer(Vec::new(), true);
    match key {
        PublicKey::Rsa { modulus, exponent } => {
            let e = exponent.to_be_bytes();
            let rsa_key = tlv_len(uint_len(modulus)) + tlv_len(uint_len(&e));
            let bits = 1 + tlv_len(rsa_key);
            w.header(der::SEQUENCE, RSA_ALGORITHM.len() + tlv_len(bits));
            w.bytes(&RSA_ALGORITHM);
            w.header(der::BIT_STRING, bits);
            w.bytes(&[0]);
            w.header(der::SEQUENCE, rsa_key);
            w.uint(modulus);
            w.uint(&e);
        }
        PublicKey::Ecc { curve, point } => {
            let algorithm: &[u8] = match curve {
                EccCurve::P256 => &P256_ALGORITHM,
                EccCurve::P384 => &P384_ALGORITHM,
            };
            let bits = 1 + point.len();
            w.header(der::SEQUENCE, algorithm.len() + tlv_len(bits));
            w.bytes(algorithm);
            w.header(der::BIT_STRING, bits);
            w.bytes(&[0]);
            w.bytes(point);
        }
    }
    w.1.then_some(w.0)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec as StdVec;

    use super::*;

    /// The key an SPKI holds, read with the DER walker (independently of [`encode`]).
    fn key_of_spki(spki: &[u8]) -> PublicKey {
        let parsed = der::parse_spki(spki).unwrap();
        match parsed.parameters.map(|p| p.value) {
            Some([0x2b, 0x81, 0x04, 0x00, 0x22]) => PublicKey::Ecc {
                curve: EccCurve::P384,
                point: Vec::from_slice(parsed.key).unwrap(),
            },
            _ => {
                assert_eq!(parsed.algorithm, &RSA_ALGORITHM[4..13]);
                let (seq, _) = der::expect(parsed.key, der::SEQUENCE).unwrap();
                let (n, rest) = der::expect(seq.value, der::INTEGER).unwrap();
                let (e, _) = der::expect(rest, der::INTEGER).unwrap();
                PublicKey::Rsa {
                    modulus: Vec::from_slice(strip(n.value)).unwrap(),
                    exponent: e.value.iter().fold(0, |a, b| (a << 8) | u32::from(*b)),
                }
            }
        }
    }

    fn cert_spki(pem: &str) -> StdVec<u8> {
        let mut buf = [0u8; crate::fingerprint::MAX_EK_DER];
        let (der, _) = crate::fingerprint::decode_ek(pem.as_bytes(), &mut buf).unwrap();
        der::parse_certificate(der).unwrap().spki.to_vec()
    }

    /// The SPKIs of swtpm's EK certificates (written by its manufacturer CA, read back by
    /// OpenSSL in `tests/openssl.rs`) are re-encoded from their keys byte for byte.
    #[test]
    fn re_encodes_the_spki_of_ek_certificates() {
        for pem in [
            include_str!("../../tests/fixtures/swtpm-ek-rsa2048.pem"),
            include_str!("../../tests/fixtures/swtpm-ek-p384.pem"),
        ] {
            let spki = cert_spki(pem);
            let key = key_of_spki(&spki);
            assert_eq!(encode(&key).unwrap().as_slice(), spki.as_slice());
        }
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let mut modulus = [0u8; 512];
        modulus[0] = 0x80;
        modulus[511] = 1;
        let spki = encode(&PublicKey::Rsa {
            modulus: Vec::from_slice(&modulus).unwrap(),
            exponent: 3,
        })
        .unwrap();
        assert_eq!(spki.len(), 4 + 15 + 4 + 1 + 4 + (4 + 513) + 3);
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x02, 0x20]);
        assert_eq!(&spki[spki.len() - 3..], &[0x02, 0x01, 0x03]);
        assert_eq!(der::check_strict(&spki), Ok(()));
        let parsed = der::parse_spki(&spki).unwrap();
        let (seq, _) = der::expect(parsed.key, der::SEQUENCE).unwrap();
        let (n, _) = der::expect(seq.value, der::INTEGER).unwrap();
        assert_eq!((n.value[0], n.value[1], n.value.len()), (0, 0x80, 513));

        // A modulus without its top bit set needs no padding byte.
        modulus[0] = 0x7f;
        let spki = encode(&PublicKey::Rsa {
            modulus: Vec::from_slice(&modulus[..256]).unwrap(),
            exponent: 65_537,
        })
        .unwrap();
        assert_eq!(der::check_strict(&spki), Ok(()));
        assert_eq!(&spki[spki.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn p256_points_name_their_curve() {
        let key = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key();
        use p256::elliptic_curve::sec1::ToSec1Point as _;
        let point = key.to_sec1_point(false);
        let spki = encode(&PublicKey::Ecc {
            curve: EccCurve::P256,
            point: Vec::from_slice(point.as_bytes()).unwrap(),
        })
        .unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(der::check_strict(&spki), Ok(()));
        assert_eq!(&spki[spki.len() - 65..], point.as_bytes());
    }
}
