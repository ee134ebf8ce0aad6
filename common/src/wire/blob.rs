//! Bounded byte fields: base64 in JSON, raw bytes in postcard.
//!
//! Every binary field on the wire has a capacity fixed at compile time, so an oversized field
//! fails to decode instead of allocating. JSON is for people and the seed's scripts (base64,
//! PEM); postcard is for the firmware link (raw bytes, no text encoding to carry around).

use core::fmt;

use base64ct::{Base64, Encoding};
use heapless::Vec;

use crate::fingerprint::{self, EkSource, MAX_EK_DER};

/// Up to `N` bytes.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Blob<const N: usize>(pub Vec<u8, N>);

impl<const N: usize> Blob<N> {
    /// Copies `bytes`; `None` when they exceed the capacity.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Vec::from_slice(bytes).ok().map(Blob)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> core::ops::Deref for Blob<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Blob<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

/// Writes standard base64 in 48-byte chunks (a multiple of 3, so chunks concatenate).
struct Base64Display<'a>(&'a [u8]);

impl fmt::Display for Base64Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(48) {
            let s = Base64::encode(chunk, &mut buf).map_err(|_| fmt::Error)?;
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl<const N: usize> serde::Serialize for Blob<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&Base64Display(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Blob<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for V<N> {
            type Value = Blob<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {N} bytes (base64 in JSON)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Blob<N>, E> {
                // Reject by length before decoding: base64 of N bytes is at most 4⌈N/3⌉.
                if v.len() > N.div_ceil(3) * 4 {
                    return Err(E::invalid_length(v.len() / 4 * 3, &self));
                }
                let mut buf = [0u8; N];
                let bytes = Base64::decode(v, &mut buf)
                    .map_err(|_| E::custom("invalid base64 (standard alphabet, padded)"))?;
                Blob::from_slice(bytes).ok_or_else(|| E::invalid_length(bytes.len(), &self))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob<N>, E> {
                Blob::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V::<N>)
        } else {
            d.deserialize_bytes(V::<N>)
        }
    }
}

/// A DER X.509 certificate; in JSON the base64 of its PEM (the seed's `ek_cert_pem`).
/// Decoding checks that it is one well-formed certificate.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct CertificateDer(pub Blob<MAX_EK_DER>);

impl fmt::Debug for CertificateDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateDer({} bytes)", self.0.len())
    }
}

/// Characters of the PEM of a `MAX_EK_DER` certificate (64-character lines plus armour).
const MAX_PEM: usize = MAX_EK_DER.div_ceil(3) * 4 + MAX_EK_DER / 48 + 64;
/// Characters of the base64 of that PEM.
const MAX_PEM_B64: usize = MAX_PEM.div_ceil(3) * 4;

impl CertificateDer {
    /// Checks the DER and copies it.
    pub fn from_der(der: &[u8]) -> Result<Self, fingerprint::FingerprintError> {
        match fingerprint::der_source(der)? {
            EkSource::Cert => Vec::from_slice(der)
                .map(|v| CertificateDer(Blob(v)))
                .map_err(|_| fingerprint::FingerprintError::TooLarge { max: MAX_EK_DER }),
            EkSource::Pub => Err(fingerprint::FingerprintError::NotCertificateOrPublicKey),
        }
    }

    /// Accepts PEM or DER of a certificate (not a bare public key).
    pub fn from_pem_or_der(
        input: &[u8],
        buf: &mut [u8; MAX_EK_DER],
    ) -> Result<Self, fingerprint::FingerprintError> {
        match fingerprint::decode_ek(input, buf)? {
            (der, EkSource::Cert) => Ok(CertificateDer(Blob(
                Vec::from_slice(der)
                    .map_err(|_| fingerprint::FingerprintError::TooLarge { max: MAX_EK_DER })?,
            ))),
            (_, EkSource::Pub) => Err(fingerprint::FingerprintError::NotCertificateOrPublicKey),
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The PEM text, written into `buf`.
    pub fn to_pem<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, pem_rfc7468::Error> {
        pem_rfc7468::encode("CERTIFICATE", pem_rfc7468::LineEnding::LF, &self.0, buf)
    }
}

impl serde::Serialize for CertificateDer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_bytes(&self.0);
        }
        let mut pem = [0u8; MAX_PEM];
        let pem = self.to_pem(&mut pem).map_err(serde::ser::Error::custom)?;
        s.collect_str(&Base64Display(pem.as_bytes()))
    }
}

impl<'de> serde::Deserialize<'de> for CertificateDer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CertificateDer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an X.509 certificate of at most {MAX_EK_DER} DER bytes (base64 of PEM in JSON)"
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CertificateDer, E> {
                let mut der = [0u8; MAX_EK_DER];
                // Plain PEM is accepted too: people paste it.
                if v.trim_start().starts_with("-----BEGIN") {
                    return CertificateDer::from_pem_or_der(v.as_bytes(), &mut der)
                        .map_err(E::custom);
                }
                if v.len() > MAX_PEM_B64 {
                    return Err(E::custom(fingerprint::FingerprintError::TooLarge {
                        max: MAX_EK_DER,
                    }));
                }
                let mut pem = [0u8; MAX_PEM];
                let pem = Base64::decode(v, &mut pem).map_err(|_| {
                    E::custom("invalid base64 (expected the base64 of a PEM certificate)")
                })?;
                CertificateDer::from_pem_or_der(pem, &mut der).map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<CertificateDer, E> {
                if v.len() > MAX_EK_DER {
                    return Err(E::invalid_length(v.len(), &self));
                }
                CertificateDer::from_der(v).map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// Exactly `N` bytes: hex in JSON (nonces, HMACs), raw bytes in postcard.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

/// Up to `N` bytes: hex in JSON (PCR values), raw bytes in postcard.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HexVec<const N: usize>(pub Vec<u8, N>);

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hex({})", HexDisplay(&self.0))
    }
}

impl<const N: usize> fmt::Debug for HexVec<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexVec({})", HexDisplay(&self.0))
    }
}

impl<const N: usize> core::ops::Deref for HexVec<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

struct HexDisplay<'a>(&'a [u8]);

impl fmt::Display for HexDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(32) {
            f.write_str(crate::hex::encode(chunk, &mut buf))?;
        }
        Ok(())
    }
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.collect_str(&HexDisplay(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

/// Visits hex text (JSON) or bytes (postcard) of at most `N` bytes, exactly `N` if `EXACT`.
struct HexVisitor<const N: usize, const EXACT: bool>;

impl<const N: usize, const EXACT: bool> serde::de::Visitor<'_> for HexVisitor<N, EXACT> {
    type Value = Vec<u8, N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if EXACT {
            write!(f, "exactly {N} bytes ({} hex characters in JSON)", 2 * N)
        } else {
            write!(f, "at most {N} bytes (hex in JSON)")
        }
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8, N>, E> {
        if !v.len().is_multiple_of(2) || v.len() > 2 * N || (EXACT && v.len() != 2 * N) {
            return Err(E::invalid_length(v.len() / 2, &self));
        }
        let mut out = Vec::new();
        // Cannot fail: the length was checked against the capacity.
        let _ = out.resize(v.len() / 2, 0);
        crate::hex::decode_into(v, &mut out).map_err(E::custom)?;
        Ok(out)
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8, N>, E> {
        if EXACT && v.len() != N {
            return Err(E::invalid_length(v.len(), &self));
        }
        Vec::from_slice(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

fn deserialize_hex<'de, D: serde::Deserializer<'de>, const N: usize, const EXACT: bool>(
    d: D,
) -> Result<Vec<u8, N>, D::Error> {
    if d.is_human_readable() {
        d.deserialize_str(HexVisitor::<N, EXACT>)
    } else {
        d.deserialize_bytes(HexVisitor::<N, EXACT>)
    }
}

impl<const N: usize> serde::Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Hex<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = deserialize_hex::<D, N, true>(d)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(Hex(out))
    }
}

impl<const N: usize> serde::Serialize for HexVec<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for HexVec<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex::<D, N, false>(d).map(HexVec)
    }
}

impl serde::Serialize for crate::nonce::NonceSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&Base64Display(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for crate::nonce::NonceSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::nonce::SIGNATURE_LEN;
        let blob = Blob::<SIGNATURE_LEN>::deserialize(d)?;
        let arr: [u8; SIGNATURE_LEN] = blob.as_slice().try_into().map_err(|_| {
            serde::de::Error::invalid_length(
                blob.len(),
                &"a 96-byte P-384 signature (r ‖ s; base64 in JSON)",
            )
        })?;
        Ok(crate::nonce::NonceSignature(arr))
    }
}
