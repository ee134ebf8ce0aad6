//! The few ASN.1 pieces certificate reading needs on top of `attest_common::der`'s walker:
//! iterating a SEQUENCE, object identifiers, times, small integers.
//!
//! Lengths come from `attest_common::der::read_tlv` (definite only, at most four length
//! bytes, never past the input); nothing here indexes without a bound check, so no input
//! makes it panic (the property tests of `tests/mutation.rs` feed it mutated certificates).

use std::str::FromStr as _;

use attest_common::der::{DerError, Tlv, read_tlv};
use attest_common::wire::Timestamp;
use x509_cert::der::oid::ObjectIdentifier;

/// Universal tags used below (constructed where applicable).
pub(crate) const BOOLEAN: u8 = 0x01;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const SET: u8 = 0x31;
pub(crate) const UTC_TIME: u8 = 0x17;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;

macro_rules! oids {
    ($($name:ident = $dotted:literal;)*) => {
        $(pub(crate) const $name: ObjectIdentifier = ObjectIdentifier::new_unwrap($dotted);)*
    };
}

oids! {
    COMMON_NAME = "2.5.4.3";
    SUBJECT_DIRECTORY_ATTRIBUTES = "2.5.29.9";
    SUBJECT_KEY_IDENTIFIER = "2.5.29.14";
    KEY_USAGE = "2.5.29.15";
    SUBJECT_ALT_NAME = "2.5.29.17";
    BASIC_CONSTRAINTS = "2.5.29.19";
    CRL_DISTRIBUTION_POINTS = "2.5.29.31";
    CERTIFICATE_POLICIES = "2.5.29.32";
    AUTHORITY_KEY_IDENTIFIER = "2.5.29.35";
    EXTENDED_KEY_USAGE = "2.5.29.37";
    AUTHORITY_INFO_ACCESS = "1.3.6.1.5.5.7.1.1";
    CA_ISSUERS = "1.3.6.1.5.5.7.48.2";
    RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
    SHA1_WITH_RSA = "1.2.840.113549.1.1.5";
    MGF1 = "1.2.840.113549.1.1.8";
    RSASSA_PSS = "1.2.840.113549.1.1.10";
    SHA256_WITH_RSA = "1.2.840.113549.1.1.11";
    SHA384_WITH_RSA = "1.2.840.113549.1.1.12";
    SHA512_WITH_RSA = "1.2.840.113549.1.1.13";
    EC_PUBLIC_KEY = "1.2.840.10045.2.1";
    SECP256R1 = "1.2.840.10045.3.1.7";
    SECP384R1 = "1.3.132.0.34";
    ECDSA_WITH_SHA1 = "1.2.840.10045.4.1";
    ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
    ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3";
    SHA256 = "2.16.840.1.101.3.4.2.1";
    SHA384 = "2.16.840.1.101.3.4.2.2";
    SHA512 = "2.16.840.1.101.3.4.2.3";
}

/// Whether the content bytes of an OBJECT IDENTIFIER are `oid`.
pub(crate) fn is(content: &[u8], oid: &ObjectIdentifier) -> bool {
    content == oid.as_bytes()
}

/// Dotted form of OBJECT IDENTIFIER content bytes, for messages.
pub(crate) fn dotted(content: &[u8]) -> String {
    ObjectIdentifier::from_bytes(content).map_or_else(
        |_| format!("(bad OID {})", crate::audit::hex(content)),
        |o| o.to_string(),
    )
}

/// The TLVs of a SEQUENCE or SET value, in order; an error if they do not fill it exactly.
pub(crate) fn items(mut value: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (tlv, rest) = read_tlv(value)?;
        out.push(tlv);
        value = rest;
    }
    Ok(out)
}

/// Why bytes are not the structure expected: a DER error, or what else was wrong.
#[derive(Debug)]
pub(crate) enum Bad {
    Der(DerError),
    Other(&'static str),
}

impl From<DerError> for Bad {
    fn from(e: DerError) -> Bad {
        Bad::Der(e)
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Der(e) => e.fmt(f),
            Bad::Other(why) => f.write_str(why),
        }
    }
}

/// Exactly one TLV with tag `tag` fills `input`.
pub(crate) fn only(input: &[u8], tag: u8) -> Result<Tlv<'_>, Bad> {
    let (tlv, rest) = read_tlv(input)?;
    if tlv.tag != tag {
        return Err(Bad::Der(DerError::UnexpectedTag {
            expected: tag,
            found: tlv.tag,
        }));
    }
    if !rest.is_empty() {
        return Err(Bad::Other("trailing bytes"));
    }
    Ok(tlv)
}

/// A non-negative INTEGER's value, saturating at `u32::MAX`; leading zero bytes (a
/// non-minimal encoding) are accepted. `None` for a negative or empty integer.
pub(crate) fn small_uint(content: &[u8]) -> Option<u32> {
    if content.first()? & 0x80 != 0 {
        return None;
    }
    let significant = content.iter().skip_while(|b| **b == 0).count();
    if significant > 4 {
        return Some(u32::MAX);
    }
    Some(content.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since 1970; `None` for any other form or a time before 1970 (validity is only
/// reported, never enforced, so an unreadable time is a note, not a refusal).
pub(crate) fn time(tlv: &Tlv<'_>) -> Option<u64> {
    let v = tlv.value;
    let full: String = match (tlv.tag, v.len()) {
        (UTC_TIME, 13) => {
            let yy = std::str::from_utf8(v.get(..2)?).ok()?.parse::<u32>().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{}", std::str::from_utf8(v).ok()?)
        }
        (GENERALIZED_TIME, 15) => std::str::from_utf8(v).ok()?.to_owned(),
        _ => return None,
    };
    let b = full.as_bytes();
    if b.len() != 15 || b[14] != b'Z' || !b[..14].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[0..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    Timestamp::from_str(&rfc3339).ok().map(|t| t.0)
}

/// `YYYY-MM-DD` of a time, for messages.
pub(crate) fn date(seconds: u64) -> String {
    let mut s = Timestamp(seconds).to_string();
    s.truncate(10);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = |tag, s: &str| {
            time(&Tlv {
                tag,
                value: s.as_bytes(),
                raw: &[],
            })
        };
        assert_eq!(t(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(
            t(UTC_TIME, "491231235959Z").map(date).unwrap(),
            "2049-12-31"
        );
        assert_eq!(t(UTC_TIME, "500101000000Z"), None, "1950: before 1970");
        let end = t(GENERALIZED_TIME, "99991231235959Z").unwrap();
        assert_eq!(date(end), "9999-12-31");
        assert_eq!(
            t(GENERALIZED_TIME, "20251020134743Z").map(date).unwrap(),
            "2025-10-20"
        );
        assert_eq!(t(GENERALIZED_TIME, "2025102013474Z"), None);
        assert_eq!(t(UTC_TIME, "25102013474+Z"), None);
        assert_eq!(t(UTC_TIME, "251320134743Z"), None, "month 13");
    }

    #[test]
    fn integers_and_oids() {
        assert_eq!(small_uint(&[0]), Some(0));
        assert_eq!(small_uint(&[0, 0, 1]), Some(1), "non-minimal accepted");
        assert_eq!(small_uint(&[0xff]), None, "negative");
        assert_eq!(small_uint(&[]), None);
        assert_eq!(small_uint(&[1, 0, 0, 0, 0]), Some(u32::MAX));
        assert_eq!(dotted(BASIC_CONSTRAINTS.as_bytes()), "2.5.29.19");
        assert!(dotted(&[0x80]).starts_with("(bad OID"));
        assert!(items(&[0x05, 0x00, 0x05]).is_err());
        assert_eq!(items(&[0x05, 0x00, 0x05, 0x00]).unwrap().len(), 2);
        assert!(only(&[0x05, 0x00, 0x05, 0x00], NULL).is_err());
        // The reader is DER only (`attest_common::der`): lengths in their shortest form.
        assert!(read_tlv(&[0x04, 0x01, 0xaa]).is_ok());
        assert!(read_tlv(&[0x04, 0x81, 0x01, 0xaa]).is_err());
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        assert!(read_tlv(&long).is_ok());
    }
}
