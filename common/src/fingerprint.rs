//! The EK fingerprint: the one identifier every part of the system agrees on for a TPM.
//!
//! `ek_fingerprint = hex(SHA-384(DER))`, where the DER is the EK certificate, or, for a TPM
//! without one, the SubjectPublicKeyInfo of its EK public key (then `ek_source = pub`). It
//! equals `openssl x509 -noout -fingerprint -sha384` with the colons removed, lower case, so
//! operators can check it by hand. The fingerprint names a TPM; it proves nothing by itself
//! (an EK certificate is public): proof of possession is credential activation.

use core::fmt;
use core::str::FromStr;

use sha2::{Digest, Sha384};

use crate::der::{self, DerError};
use crate::hex;

/// Bytes in a fingerprint (SHA-384).
pub const DIGEST_LEN: usize = 48;
/// Characters in its hex form.
pub const HEX_LEN: usize = 2 * DIGEST_LEN;
/// Characters of the SHA-256 fingerprints older agents send; recognised only to say so.
pub const LEGACY_SHA256_HEX_LEN: usize = 64;
/// Largest EK certificate or public key accepted, in DER bytes. Real EK certificates are
/// 0.8–1.6 KiB; RSA-4096 with long extensions stays under 2.5 KiB.
pub const MAX_EK_DER: usize = 3072;

/// What the fingerprint was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "lowercase")]
pub enum EkSource {
    /// The DER of the EK certificate.
    Cert,
    /// The DER SubjectPublicKeyInfo of the EK public key (the TPM has no EK certificate;
    /// its public area is checked against the TCG EK templates, `tpm::ek_template`).
    Pub,
}

impl EkSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EkSource::Cert => "cert",
            EkSource::Pub => "pub",
        }
    }
}

impl fmt::Display for EkSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-384 of the EK certificate (or EK public key) DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; DIGEST_LEN]);

impl Fingerprint {
    /// Fingerprint of exactly these DER bytes (no parsing).
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha384::digest(der).into())
    }

    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// The lower-case hex form, written into `buf`.
    pub fn to_hex<'b>(&self, buf: &'b mut [u8; HEX_LEN]) -> &'b str {
        hex::encode(&self.0, buf)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; HEX_LEN];
        f.write_str(self.to_hex(&mut buf))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseFingerprintError {
    /// 64 hex characters: a SHA-256 fingerprint from an agent that predates SHA-384.
    LegacySha256,
    /// Not 96 hex characters.
    Hex(hex::HexError),
}

impl fmt::Display for ParseFingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseFingerprintError::LegacySha256 => write!(
                f,
                "this is a 64-character SHA-256 fingerprint; the server identifies TPMs by \
                 SHA-384 ({HEX_LEN} hex characters): upgrade the agent"
            ),
            ParseFingerprintError::Hex(e) => write!(f, "not a SHA-384 EK fingerprint: {e}"),
        }
    }
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == LEGACY_SHA256_HEX_LEN && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ParseFingerprintError::LegacySha256);
        }
        let mut out = [0u8; DIGEST_LEN];
        hex::decode_into(s, &mut out).map_err(ParseFingerprintError::Hex)?;
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0u8; HEX_LEN];
            s.serialize_str(self.to_hex(&mut buf))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Fingerprint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a SHA-384 EK fingerprint ({HEX_LEN} hex characters)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Fingerprint, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Fingerprint, E> {
                let arr: [u8; DIGEST_LEN] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Fingerprint(arr))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// A fingerprint and what it was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EkFingerprint {
    pub fingerprint: Fingerprint,
    pub source: EkSource,
}

/// Why EK material was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FingerprintError {
    /// No bytes, or only whitespace.
    Empty,
    /// Starts like PEM but does not decode as PEM (bad armour or base64).
    MalformedPem,
    /// A PEM block other than `CERTIFICATE` or `PUBLIC KEY`.
    UnsupportedPemLabel,
    /// Larger than [`MAX_EK_DER`].
    TooLarge { max: usize },
    /// Not DER (BER length forms, a child running past its parent), at this offset.
    Encoding(der::DerFault),
    /// DER, but not the structure expected.
    Der(DerError),
    /// Bytes after the first DER object.
    TrailingData { object_len: usize, input_len: usize },
    /// Well-formed DER, but neither an X.509 certificate nor a SubjectPublicKeyInfo.
    NotCertificateOrPublicKey,
}

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FingerprintError::Empty => {
                f.write_str("no EK certificate or public key given (empty input)")
            }
            FingerprintError::MalformedPem => {
                f.write_str("input looks like PEM but does not decode")
            }
            FingerprintError::UnsupportedPemLabel => {
                f.write_str("PEM block is neither CERTIFICATE nor PUBLIC KEY")
            }
            FingerprintError::TooLarge { max } => {
                write!(f, "EK material larger than {max} bytes of DER")
            }
            FingerprintError::Encoding(e) => write!(f, "not valid DER: {e}"),
            FingerprintError::Der(e) => write!(f, "not valid DER: {e}"),
            FingerprintError::TrailingData {
                object_len,
                input_len,
            } => write!(
                f,
                "{} bytes after the {object_len}-byte DER object ({input_len} bytes in all)",
                input_len - object_len
            ),
            FingerprintError::NotCertificateOrPublicKey => {
                f.write_str("DER is neither an X.509 certificate nor a SubjectPublicKeyInfo")
            }
        }
    }
}

impl core::error::Error for FingerprintError {}

impl core::error::Error for ParseFingerprintError {}

/// Decodes EK material (PEM or DER; a certificate or a SubjectPublicKeyInfo) into `buf` and
/// returns the DER and its source. PEM is decoded into `buf`; DER is returned as given.
pub fn decode_ek<'a>(
    input: &'a [u8],
    buf: &'a mut [u8; MAX_EK_DER],
) -> Result<(&'a [u8], EkSource), FingerprintError> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(FingerprintError::Empty);
    }
    if trimmed.starts_with(b"-----BEGIN ") {
        let (label, der) = pem_rfc7468::decode(trimmed, buf).map_err(|e| match e {
            pem_rfc7468::Error::Base64(base64ct::Error::InvalidLength) => {
                FingerprintError::TooLarge { max: MAX_EK_DER }
            }
            _ => FingerprintError::MalformedPem,
        })?;
        let source = match label {
            "CERTIFICATE" => EkSource::Cert,
            "PUBLIC KEY" => EkSource::Pub,
            _ => return Err(FingerprintError::UnsupportedPemLabel),
        };
        check_der(der, Some(source))?;
        return Ok((der, source));
    }
    Ok((input, der_source(input)?))
}

/// Whether DER input is exactly one certificate or SPKI, and which.
pub fn der_source(der: &[u8]) -> Result<EkSource, FingerprintError> {
    if der.len() > MAX_EK_DER {
        return Err(FingerprintError::TooLarge { max: MAX_EK_DER });
    }
    check_der(der, None)
}

/// Checks that `der` is exactly one certificate or SPKI (of the expected kind, if given).
fn check_der(der: &[u8], expected: Option<EkSource>) -> Result<EkSource, FingerprintError> {
    // One key, one encoding: a re-encoded certificate must not be a new fingerprint.
    if let Err(fault) = der::check_strict(der) {
        return Err(match der::object_len(der) {
            Ok(len) if len < der.len() && fault.offset == len => FingerprintError::TrailingData {
                object_len: len,
                input_len: der.len(),
            },
            _ => FingerprintError::Encoding(fault),
        });
    }
    let as_cert = || der::parse_certificate(der).map(|_| EkSource::Cert);
    let as_pub = || der::parse_spki(der).map(|_| EkSource::Pub);
    match expected {
        Some(EkSource::Cert) => as_cert().map_err(FingerprintError::Der),
        Some(EkSource::Pub) => as_pub().map_err(FingerprintError::Der),
        None => as_cert().or_else(|cert| {
            as_pub().map_err(|_| match cert {
                // Shaped like a certificate, with a field too many: say so.
                DerError::ExtraData => FingerprintError::Der(cert),
                _ => FingerprintError::NotCertificateOrPublicKey,
            })
        }),
    }
}

/// The EK fingerprint of a certificate or public key given as PEM or DER.
pub fn ek_fingerprint(input: &[u8]) -> Result<EkFingerprint, FingerprintError> {
    let mut buf = [0u8; MAX_EK_DER];
    let (der, source) = decode_ek(input, &mut buf)?;
    Ok(EkFingerprint {
        fingerprint: Fingerprint::of_der(der),
        source,
    })
}

/// The EK fingerprint of a DER certificate or public key, as a TPM's NV holds it: no PEM
/// decoder (and none of its code or buffer) for callers that never see PEM, the firmware.
pub fn ek_fingerprint_der(der: &[u8]) -> Result<EkFingerprint, FingerprintError> {
    let source = der_source(der)?;
    Ok(EkFingerprint {
        fingerprint: Fingerprint::of_der(der),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_malformed_strings() {
        let sha256 = "ab".repeat(32);
        assert_eq!(
            sha256.parse::<Fingerprint>(),
            Err(ParseFingerprintError::LegacySha256)
        );
        assert!(matches!(
            "zz".repeat(48).parse::<Fingerprint>(),
            Err(ParseFingerprintError::Hex(hex::HexError::Digit {
                position: 0
            }))
        ));
        let fp: Fingerprint = "AB".repeat(48).parse().unwrap();
        assert_eq!(fp.to_hex(&mut [0; HEX_LEN]), "ab".repeat(48));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(ek_fingerprint(b"  \n"), Err(FingerprintError::Empty));
        assert_eq!(
            ek_fingerprint(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(FingerprintError::MalformedPem)
        );
        assert_eq!(
            ek_fingerprint(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(FingerprintError::UnsupportedPemLabel)
        );
        assert_eq!(
            ek_fingerprint(&[0x30, 0x03, 0x02, 0x01, 0x01, 0xff]),
            Err(FingerprintError::TrailingData {
                object_len: 5,
                input_len: 6
            })
        );
        assert_eq!(
            ek_fingerprint(&[0x30, 0x03, 0x02, 0x01, 0x01]),
            Err(FingerprintError::NotCertificateOrPublicKey)
        );
        assert_eq!(
            ek_fingerprint(&[0u8; MAX_EK_DER + 1]),
            Err(FingerprintError::TooLarge { max: MAX_EK_DER })
        );
        assert!(matches!(
            ek_fingerprint(b"hello"),
            Err(FingerprintError::Encoding(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = ek_fingerprint(&bytes);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            let _ = s.parse::<Fingerprint>();
        }
    }
}
