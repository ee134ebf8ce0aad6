//! Signing and verifying a nonce, the one primitive behind enrollment and signed actions.
//!
//! A signature always covers a *domain label*, the nonce and a context, so a signature that a
//! node made to enroll can never be replayed as a server action or the other way round, and a
//! signed `none` cannot be turned into a signed `wipe`. The same code runs in the firmware,
//! the host agent and the server; the signed message is plain bytes so that OpenSSL
//! (`openssl dgst -sha384 -verify`) checks it too:
//!
//! ```text
//! message = "itl-attestation/v1/" ‖ label ‖ 0x00 ‖ u32be(len nonce) ‖ nonce ‖ u32be(len ctx) ‖ ctx
//! signature = ECDSA-P384(SHA-384(message)), deterministic k (RFC 6979)
//! ```

use core::fmt;

pub use p384::ecdsa::VerifyingKey;
use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha384};

use crate::der;

/// Bytes in a server nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in a fixed-size signature (r ‖ s, 48 bytes each).
pub const SIGNATURE_LEN: usize = 96;
/// Largest DER encoding of a P-384 ECDSA signature (two 49-byte INTEGERs in a SEQUENCE).
pub const MAX_DER_SIGNATURE_LEN: usize = 2 + 2 * (2 + 49);
/// Bytes in the DER SubjectPublicKeyInfo of an uncompressed P-384 key.
pub const SPKI_LEN: usize = 120;

const PREFIX: &[u8] = b"itl-attestation/v1/";

/// What a signature is for. Each has its own label in the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Domain {
    /// A node proves possession of its enrollment key over a server nonce.
    Enroll,
    /// The server authenticates an action (apply-config, lock, wipe) over the agent's nonce.
    Action,
    /// The server vouches for the head of its audit chain (DESIGN.md §6): the "nonce" is the
    /// entry hash, the context `u64be(seq) ‖ u64be(timestamp)` (`attest_api::AuditCheckpoint`).
    AuditCheckpoint,
}

impl Domain {
    pub fn label(self) -> &'static str {
        match self {
            Domain::Enroll => "enroll",
            Domain::Action => "action",
            Domain::AuditCheckpoint => "audit-checkpoint",
        }
    }
}

/// Feeds the signed message to `f`, part by part (no buffer needed).
pub fn message_parts(domain: Domain, nonce: &[u8], context: &[u8], mut f: impl FnMut(&[u8])) {
    f(PREFIX);
    f(domain.label().as_bytes());
    f(&[0]);
    f(&(nonce.len() as u32).to_be_bytes());
    f(nonce);
    f(&(context.len() as u32).to_be_bytes());
    f(context);
}

/// SHA-384 of the signed message.
pub fn message_digest(domain: Domain, nonce: &[u8], context: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    message_parts(domain, nonce, context, |part| h.update(part));
    h.finalize().into()
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NonceError {
    /// The signature does not verify for this key, domain, nonce and context.
    BadSignature,
    /// Not a DER ECDSA signature of P-384 size, or r or s out of range.
    MalformedSignature,
    /// Not a P-384 public key (SPKI or SEC1), or not a point on the curve.
    MalformedKey,
}

impl fmt::Display for NonceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NonceError::BadSignature => "signature does not verify",
            NonceError::MalformedSignature => "malformed P-384 ECDSA signature",
            NonceError::MalformedKey => "not a P-384 public key",
        })
    }
}

impl core::error::Error for NonceError {}

/// An ECDSA P-384 signature as r ‖ s (the fixed-size form used on the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NonceSignature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for NonceSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 * SIGNATURE_LEN];
        write!(
            f,
            "NonceSignature({})",
            crate::hex::encode(&self.0, &mut buf)
        )
    }
}

/// A DER-encoded signature, as OpenSSL writes and reads it.
pub type DerSignature = heapless::Vec<u8, MAX_DER_SIGNATURE_LEN>;

impl NonceSignature {
    /// Encodes as `SEQUENCE { INTEGER r, INTEGER s }`.
    pub fn to_der(&self) -> DerSignature {
        let (r, s) = self.0.split_at(48);
        let mut out = DerSignature::new();
        let ints = [trim_int(r), trim_int(s)];
        let body: usize = ints.iter().map(|(pad, v)| 2 + pad + v.len()).sum();
        // Capacity is sized for the largest case; pushes cannot fail.
        let _ = out.extend_from_slice(&[der::SEQUENCE, body as u8]);
        for (pad, v) in ints {
            let _ = out.extend_from_slice(&[der::INTEGER, (pad + v.len()) as u8]);
            if pad == 1 {
                let _ = out.push(0);
            }
            let _ = out.extend_from_slice(v);
        }
        out
    }

    /// Decodes `SEQUENCE { INTEGER r, INTEGER s }` with r and s positive and ≤ 48 bytes.
    pub fn from_der(bytes: &[u8]) -> Result<Self, NonceError> {
        let bad = |_| NonceError::MalformedSignature;
        let (seq, rest) = der::expect(bytes, der::SEQUENCE).map_err(bad)?;
        if !rest.is_empty() {
            return Err(NonceError::MalformedSignature);
        }
        let (r, after_r) = der::expect(seq.value, der::INTEGER).map_err(bad)?;
        let (s, after_s) = der::expect(after_r, der::INTEGER).map_err(bad)?;
        if !after_s.is_empty() {
            return Err(NonceError::MalformedSignature);
        }
        let mut out = [0u8; SIGNATURE_LEN];
        place_int(r.value, &mut out[..48])?;
        place_int(s.value, &mut out[48..])?;
        Ok(NonceSignature(out))
    }
}

/// Strips leading zeros; says whether a 0x00 pad is needed to keep the INTEGER positive.
fn trim_int(v: &[u8]) -> (usize, &[u8]) {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
    let v = &v[start..];
    (usize::from(v[0] & 0x80 != 0), v)
}

fn place_int(v: &[u8], out: &mut [u8]) -> Result<(), NonceError> {
    if v.is_empty() || v[0] & 0x80 != 0 {
        return Err(NonceError::MalformedSignature);
    }
    let v = match v {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => v,
    };
    if v.len() > out.len() {
        return Err(NonceError::MalformedSignature);
    }
    let start = out.len() - v.len();
    out[start..].copy_from_slice(v);
    Ok(())
}

/// Signs `nonce` and `context` for `domain`.
pub fn sign(key: &SigningKey, domain: Domain, nonce: &[u8], context: &[u8]) -> NonceSignature {
    let digest = message_digest(domain, nonce, context);
    // A 48-byte prehash is exactly the curve size: signing cannot fail.
    let sig: Signature = key
        .sign_prehash(&digest)
        .unwrap_or_else(|_| unreachable!("P-384 signing of a 48-byte prehash"));
    NonceSignature(sig.to_bytes().into())
}

/// Verifies a signature made by [`sign`] (or by OpenSSL over the same message).
pub fn verify(
    key: &VerifyingKey,
    domain: Domain,
    nonce: &[u8],
    context: &[u8],
    signature: &NonceSignature,
) -> Result<(), NonceError> {
    let sig = Signature::from_slice(&signature.0).map_err(|_| NonceError::MalformedSignature)?;
    let digest = message_digest(domain, nonce, context);
    key.verify_prehash(&digest, &sig)
        .map_err(|_| NonceError::BadSignature)
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// Loads a P-384 public key from its DER SubjectPublicKeyInfo (what `openssl pkey -pubout`
/// writes and what the server publishes for pinning).
pub fn verifying_key_from_spki(spki: &[u8]) -> Result<VerifyingKey, NonceError> {
    let parsed = der::parse_spki(spki).map_err(|_| NonceError::MalformedKey)?;
    let curve = parsed.parameters.map(|p| (p.tag, p.value));
    if der::object_len(spki) != Ok(spki.len())
        || parsed.algorithm != OID_EC_PUBLIC_KEY
        || curve != Some((der::OID, OID_SECP384R1))
    {
        return Err(NonceError::MalformedKey);
    }
    VerifyingKey::from_sec1_bytes(parsed.key).map_err(|_| NonceError::MalformedKey)
}

/// The DER SubjectPublicKeyInfo of a P-384 public key (uncompressed point).
pub fn verifying_key_to_spki(key: &VerifyingKey) -> [u8; SPKI_LEN] {
    const HEADER: [u8; 23] = [
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    let point = key.to_sec1_point(false);
    let mut out = [0u8; SPKI_LEN];
    out[..HEADER.len()].copy_from_slice(&HEADER);
    out[HEADER.len()..].copy_from_slice(point.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut bytes = [seed; 48];
        bytes[0] = 1;
        SigningKey::from_slice(&bytes).unwrap()
    }

    #[test]
    fn sign_verify_and_domain_separation() {
        let sk = key(7);
        let vk = *sk.verifying_key();
        let nonce = [42u8; NONCE_LEN];
        let sig = sign(&sk, Domain::Enroll, &nonce, b"ctx");
        assert_eq!(verify(&vk, Domain::Enroll, &nonce, b"ctx", &sig), Ok(()));
        assert_eq!(
            verify(&vk, Domain::Action, &nonce, b"ctx", &sig),
            Err(NonceError::BadSignature)
        );
        assert_eq!(
            verify(&vk, Domain::Enroll, &nonce, b"ctx2", &sig),
            Err(NonceError::BadSignature)
        );
        let mut other = nonce;
        other[31] ^= 1;
        assert_eq!(
            verify(&vk, Domain::Enroll, &other, b"ctx", &sig),
            Err(NonceError::BadSignature)
        );
        let wrong_key = *key(8).verifying_key();
        assert_eq!(
            verify(&wrong_key, Domain::Enroll, &nonce, b"ctx", &sig),
            Err(NonceError::BadSignature)
        );
        assert_eq!(
            verify(
                &vk,
                Domain::Enroll,
                &nonce,
                b"ctx",
                &NonceSignature([0; SIGNATURE_LEN])
            ),
            Err(NonceError::MalformedSignature)
        );
    }

    #[test]
    fn nonce_and_context_boundary_is_unambiguous() {
        let sk = key(3);
        let sig = sign(&sk, Domain::Action, b"ab", b"c");
        assert_eq!(
            verify(sk.verifying_key(), Domain::Action, b"a", b"bc", &sig),
            Err(NonceError::BadSignature)
        );
    }

    #[test]
    fn spki_round_trip_and_refusals() {
        let vk = *key(5).verifying_key();
        let spki = verifying_key_to_spki(&vk);
        assert_eq!(verifying_key_from_spki(&spki), Ok(vk));
        let mut bad_curve = spki;
        bad_curve[19] = 0x23; // secp521r1
        assert_eq!(
            verifying_key_from_spki(&bad_curve),
            Err(NonceError::MalformedKey)
        );
        let mut off_curve = spki;
        off_curve[60] ^= 1;
        assert_eq!(
            verifying_key_from_spki(&off_curve),
            Err(NonceError::MalformedKey)
        );
        assert_eq!(
            verifying_key_from_spki(&spki[..100]),
            Err(NonceError::MalformedKey)
        );
    }

    #[test]
    fn der_edge_cases() {
        // r with a high bit needs a pad byte; s with leading zeros is trimmed.
        let mut raw = [0u8; SIGNATURE_LEN];
        raw[0] = 0x80;
        raw[95] = 5;
        let sig = NonceSignature(raw);
        let der = sig.to_der();
        assert_eq!(&der[..5], &[0x30, 51 + 3, 0x02, 49, 0x00]);
        assert_eq!(NonceSignature::from_der(&der), Ok(sig));
        assert_eq!(
            NonceSignature::from_der(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]),
            Err(NonceError::MalformedSignature),
            "negative INTEGER"
        );
        let mut trailing = der.clone();
        trailing.push(0).unwrap();
        assert_eq!(
            NonceSignature::from_der(&trailing),
            Err(NonceError::MalformedSignature)
        );
    }

    proptest::proptest! {
        #[test]
        fn der_round_trip(raw in proptest::array::uniform32(proptest::num::u8::ANY),
                          raw2 in proptest::array::uniform32(proptest::num::u8::ANY),
                          lead in 0usize..20) {
            let mut bytes = [0u8; SIGNATURE_LEN];
            bytes[16 + lead.min(16)..48].copy_from_slice(&raw[lead.min(16)..]);
            bytes[64..].copy_from_slice(&raw2);
            let sig = NonceSignature(bytes);
            proptest::prop_assert_eq!(NonceSignature::from_der(&sig.to_der()), Ok(sig));
        }

        #[test]
        fn from_der_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = NonceSignature::from_der(&bytes);
            let _ = verifying_key_from_spki(&bytes);
        }
    }
}
