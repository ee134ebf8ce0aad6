//! Distinguished names: matching an issuer to a subject, and a label for people.
//!
//! Two names match when their DER is equal or, failing that, when they are equal after the
//! comparison rules of RFC 5280 §7.1 in the simple form most verifiers use: the same RDNs in
//! the same order, each a *set* of attributes (order inside an RDN does not count), string
//! values compared after trimming, collapsing inner white space and case folding, whatever
//! the string type (PrintableString, UTF8String, ...). EK certificates and their CAs were not
//! always encoded by the same software, so byte equality alone would miss real issuers; the
//! signature check that follows every match keeps a loose match from trusting anything.

use attest_common::der::{DerError, SEQUENCE, Tlv};

use super::asn1::{self, COMMON_NAME, SET};

/// A Name as read from a certificate.
#[derive(Debug, Clone)]
pub(crate) struct Name {
    /// The DER of the Name.
    pub raw: Vec<u8>,
    /// The comparison form: RDNs in order, each a sorted list of (OID bytes, value).
    pub key: NameKey,
    /// The first common name, if any.
    pub cn: Option<String>,
    /// `CN=..., O=...` (for names without a CN and for messages).
    pub display: String,
}

/// What [`Name`]s are compared (and the trust store indexed) by.
pub(crate) type NameKey = Vec<Vec<(Vec<u8>, Value)>>;

/// An attribute value in comparison form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Value {
    /// A string, normalised.
    Text(String),
    /// Anything else: the whole TLV.
    Other(Vec<u8>),
}

impl Name {
    /// Reads `Name ::= SEQUENCE OF SET OF SEQUENCE { OID, ANY }` from its TLV.
    pub(crate) fn parse(tlv: &Tlv<'_>) -> Result<Name, DerError> {
        if tlv.tag != SEQUENCE {
            return Err(DerError::UnexpectedTag {
                expected: SEQUENCE,
                found: tlv.tag,
            });
        }
        let mut key = Vec::new();
        let mut cn = None;
        let mut parts = Vec::new();
        for rdn in asn1::items(tlv.value)? {
            if rdn.tag != SET {
                return Err(DerError::UnexpectedTag {
                    expected: SET,
                    found: rdn.tag,
                });
            }
            let mut set = Vec::new();
            let mut shown = Vec::new();
            for atv in asn1::items(rdn.value)? {
                let [oid, value] = asn1::items(atv.value)?[..] else {
                    return Err(DerError::BadLength);
                };
                if atv.tag != SEQUENCE || oid.tag != attest_common::der::OID {
                    return Err(DerError::UnexpectedTag {
                        expected: SEQUENCE,
                        found: atv.tag,
                    });
                }
                let text = text(&value);
                if cn.is_none() && asn1::is(oid.value, &COMMON_NAME) {
                    cn.clone_from(&text);
                }
                shown.push(format!(
                    "{}={}",
                    short_name(oid.value),
                    text.as_deref().unwrap_or("#…")
                ));
                let v = match text {
                    Some(t) => Value::Text(normalise(&t)),
                    None => Value::Other(value.raw.to_vec()),
                };
                set.push((oid.value.to_vec(), v));
            }
            set.sort();
            key.push(set);
            parts.push(shown.join("+"));
        }
        // Most significant last in DER; people read CN first (RFC 4514 order).
        parts.reverse();
        Ok(Name {
            raw: tlv.raw.to_vec(),
            key,
            cn,
            display: parts.join(", "),
        })
    }

    /// Whether this name and `other` name the same entity.
    pub(crate) fn matches(&self, other: &Name) -> bool {
        self.raw == other.raw || self.key == other.key
    }

    /// The common name, else the whole name, else `(empty name)`.
    pub(crate) fn label(&self) -> String {
        match (&self.cn, self.display.is_empty()) {
            (Some(cn), _) if !cn.trim().is_empty() => cn.clone(),
            (_, false) => self.display.clone(),
            _ => "(empty name)".into(),
        }
    }
}

/// A directory string's text: UTF8String, PrintableString, IA5String, TeletexString (read
/// as Latin-1), BMPString (UTF-16BE), UniversalString (UTF-32BE); `None` for other types or
/// bad encodings. Control characters become U+FFFD (labels end up in logs and pages).
fn text(value: &Tlv<'_>) -> Option<String> {
    let v = value.value;
    let s = match value.tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(v.to_vec()).ok()?,
        0x14 => v.iter().map(|b| char::from(*b)).collect(),
        0x1e => {
            if !v.len().is_multiple_of(2) {
                return None;
            }
            let units = v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()?
        }
        0x1c => {
            if !v.len().is_multiple_of(4) {
                return None;
            }
            v.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()?
        }
        _ => return None,
    };
    Some(
        s.chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect(),
    )
}

/// Trimmed, inner white space collapsed to one space, lower case.
fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn short_name(oid: &[u8]) -> String {
    let known = [
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "serialNumber"),
        ("2.5.4.6", "C"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
    ];
    let dotted = asn1::dotted(oid);
    known
        .iter()
        .find(|(d, _)| *d == dotted)
        .map_or(dotted.clone(), |(_, s)| (*s).to_owned())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use x509_cert::der::Encode as _;

    use super::*;

    fn name(s: &str) -> Name {
        let der = x509_cert::name::Name::from_str(s)
            .unwrap()
            .to_der()
            .unwrap();
        let (tlv, _) = attest_common::der::read_tlv(&der).unwrap();
        Name::parse(&tlv).unwrap()
    }

    #[test]
    fn label_and_matching() {
        let a = name("CN=STM TPM EK Root CA,O=STMicroelectronics NV,C=CH");
        assert_eq!(a.label(), "STM TPM EK Root CA");
        assert_eq!(
            a.display,
            "CN=STM TPM EK Root CA, O=STMicroelectronics NV, C=CH"
        );
        assert!(a.matches(&name(
            "CN=stm  tpm EK root CA ,O=STMicroelectronics NV,C=CH"
        )));
        assert!(!a.matches(&name("CN=STM TPM EK Root CA,O=STMicroelectronics,C=CH")));
        assert!(!a.matches(&name("O=STMicroelectronics NV,CN=STM TPM EK Root CA,C=CH")));
        // Attribute order inside one RDN does not count.
        assert!(name("CN=x+O=y,C=TW").matches(&name("O=y+CN=x,C=TW")));
        let no_cn = name("O=Acme,C=DE");
        assert_eq!(no_cn.label(), "O=Acme, C=DE");
        let empty = Name::parse(&attest_common::der::read_tlv(&[0x30, 0]).unwrap().0).unwrap();
        assert_eq!(empty.label(), "(empty name)");
    }

    #[test]
    fn string_types() {
        let t = |tag, v: &[u8]| {
            text(&Tlv {
                tag,
                value: v,
                raw: &[],
            })
        };
        assert_eq!(t(0x1e, &[0, b'A', 0, b'b']).as_deref(), Some("Ab"));
        assert_eq!(t(0x1e, &[0, b'A', 0]), None);
        assert_eq!(t(0x14, &[0xe9]).as_deref(), Some("é"));
        assert_eq!(t(0x1c, &[0, 0, 0, b'z']).as_deref(), Some("z"));
        assert_eq!(t(0x0c, b"a\nb").as_deref(), Some("a\u{fffd}b"));
        assert_eq!(t(0x04, b"x"), None);
    }
}
