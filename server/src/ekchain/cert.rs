//! Reading a certificate well enough to build and check a chain with it.
//!
//! This is a walker over the DER (`attest_common::der`), not a full X.509 decoder, by
//! choice: EK certificates in the wild carry encoding quirks a strict DER decoder refuses
//! (`x509-cert`/`der` refuse non-minimal INTEGERs, serial numbers with leading zero bytes
//! among them; `tests/quirks.rs` shows which), and refusing them would refuse real TPMs. What
//! is read leniently, and why that is safe:
//! - the serial number is never interpreted (negative, zero, over-long or non-minimally
//!   encoded serials are all accepted), nor the version beyond its presence;
//! - small integers (pathLenConstraint) may carry leading zero bytes; BOOLEANs are true when
//!   non-zero (BER);
//! - lengths, though, are DER everywhere (`attest_common::der`: definite, shortest form, at
//!   most four bytes), and every structure must fill its parent exactly: no trailing bytes
//!   anywhere, none after the certificate. One EK certificate has one encoding, so it has
//!   one fingerprint (DESIGN.md §3.1);
//! - an unreadable validity time is kept as unknown (validity is reported, not enforced).
//!
//! Every signature is checked over the exact `tbsCertificate` bytes, so reading leniently
//! cannot change what an issuer signed; and the inner and outer signature algorithms must be
//! byte-identical (as Go's crypto/x509 requires). What is refused: indefinite lengths, wrong
//! tags, duplicate extensions, malformed values of the extensions we use (basicConstraints,
//! keyUsage, key identifiers, Authority Information Access).

use attest_common::der::{self, BIT_STRING, CONTEXT_0, INTEGER, OID, SEQUENCE, expect};

use super::asn1::{self, BOOLEAN, Bad, OCTET_STRING};
use super::name::Name;

/// The parts of a certificate chain building uses (owned: certificates are kept in the trust
/// store and the AIA cache).
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    /// The whole certificate DER.
    pub der: Vec<u8>,
    /// `tbsCertificate`, whole TLV: the signed bytes.
    pub tbs: Vec<u8>,
    /// `signatureAlgorithm`, whole TLV (equal to the TBS's `signature` field).
    pub signature_algorithm: Vec<u8>,
    /// The signature BIT STRING's bits.
    pub signature: Vec<u8>,
    pub issuer: Name,
    pub subject: Name,
    /// `subjectPublicKeyInfo`, whole TLV.
    pub spki: Vec<u8>,
    /// Validity, seconds since 1970 (`None`: unreadable).
    pub not_before: Option<u64>,
    pub not_after: Option<u64>,
    pub ext: Extensions,
}

/// The extensions chain building reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extensions {
    /// basicConstraints: `Some((cA, pathLenConstraint))` when present.
    pub basic_constraints: Option<(bool, Option<u32>)>,
    /// keyUsage keyCertSign, when keyUsage is present.
    pub key_cert_sign: Option<bool>,
    pub subject_key_id: Option<Vec<u8>>,
    /// authorityKeyIdentifier keyIdentifier.
    pub authority_key_id: Option<Vec<u8>>,
    /// Authority Information Access caIssuers URIs (http/https only, at most four).
    pub ca_issuers: Vec<String>,
    /// Critical extensions other than those listed in [`UNDERSTOOD`], dotted.
    pub unknown_critical: Vec<String>,
}

/// Extensions a CA certificate may mark critical without being refused: those read here,
/// and those that constrain only what a leaf may be used for or name.
const UNDERSTOOD: [x509_cert::der::oid::ObjectIdentifier; 10] = [
    asn1::BASIC_CONSTRAINTS,
    asn1::KEY_USAGE,
    asn1::SUBJECT_KEY_IDENTIFIER,
    asn1::AUTHORITY_KEY_IDENTIFIER,
    asn1::AUTHORITY_INFO_ACCESS,
    asn1::SUBJECT_ALT_NAME,
    asn1::SUBJECT_DIRECTORY_ATTRIBUTES,
    asn1::CERTIFICATE_POLICIES,
    asn1::EXTENDED_KEY_USAGE,
    asn1::CRL_DISTRIBUTION_POINTS,
];

/// Longest URL taken from an AIA extension.
const MAX_URL: usize = 512;

impl Cert {
    /// Reads one certificate that fills `input` exactly.
    pub(crate) fn parse(input: &[u8]) -> Result<Cert, String> {
        Self::parse_der(input).map_err(|e| format!("not an X.509 certificate: {e}"))
    }

    fn parse_der(input: &[u8]) -> Result<Cert, Bad> {
        let cert = asn1::only(input, SEQUENCE)?;
        let [tbs, sig_alg, sig] = asn1::items(cert.value)?[..] else {
            return Err(Bad::Other(
                "not SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING }",
            ));
        };
        if tbs.tag != SEQUENCE || sig_alg.tag != SEQUENCE || sig.tag != BIT_STRING {
            return Err(Bad::Other(
                "not SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING }",
            ));
        }
        let signature = match sig.value.split_first() {
            Some((0, bits)) => bits.to_vec(),
            _ => return Err(Bad::Other("signature is not a whole number of bytes")),
        };
        let mut fields = tbs.value;
        if fields.first() == Some(&CONTEXT_0) {
            let (version, rest) = der::read_tlv(fields)?;
            asn1::only(version.value, INTEGER)?;
            fields = rest;
        }
        let (_serial, fields) = expect(fields, INTEGER)?;
        let (inner_alg, fields) = expect(fields, SEQUENCE)?;
        if inner_alg.raw != sig_alg.raw {
            return Err(Bad::Other(
                "the signature algorithms inside and outside tbsCertificate differ",
            ));
        }
        let (issuer, fields) = der::read_tlv(fields)?;
        let (validity, fields) = expect(fields, SEQUENCE)?;
        let (subject, fields) = der::read_tlv(fields)?;
        let (spki, mut fields) = expect(fields, SEQUENCE)?;
        der::parse_spki(spki.raw)?;
        let [not_before, not_after] = asn1::items(validity.value)?[..] else {
            return Err(Bad::Other("validity is not two times"));
        };
        let mut ext = Extensions::default();
        // issuerUniqueID [1], subjectUniqueID [2] (skipped), extensions [3].
        let mut last = 0u8;
        while !fields.is_empty() {
            let (field, rest) = der::read_tlv(fields)?;
            let order = match field.tag {
                0x81 | 0xa1 => 1,
                0x82 | 0xa2 => 2,
                0xa3 => 3,
                _ => 0,
            };
            if order <= last {
                return Err(Bad::Other("unexpected field after subjectPublicKeyInfo"));
            }
            last = order;
            if order == 3 {
                ext = Extensions::parse(asn1::only(field.value, SEQUENCE)?.value)?;
            }
            fields = rest;
        }
        Ok(Cert {
            der: cert.raw.to_vec(),
            tbs: tbs.raw.to_vec(),
            signature_algorithm: sig_alg.raw.to_vec(),
            signature,
            issuer: Name::parse(&issuer)?,
            subject: Name::parse(&subject)?,
            spki: spki.raw.to_vec(),
            not_before: asn1::time(&not_before),
            not_after: asn1::time(&not_after),
            ext,
        })
    }

    /// basicConstraints cA.
    pub(crate) fn is_ca(&self) -> bool {
        matches!(self.ext.basic_constraints, Some((true, _)))
    }

    /// Issuer and subject are the same name (a root, or a self-issued key rollover).
    pub(crate) fn is_self_issued(&self) -> bool {
        self.issuer.matches(&self.subject)
    }

    /// Why this certificate cannot issue certificates, if it cannot.
    pub(crate) fn ca_refusal(&self) -> Option<String> {
        let who = self.subject.label();
        if !self.is_ca() {
            return Some(format!(
                "'{who}' is not a CA certificate (basicConstraints cA is not set)"
            ));
        }
        if self.ext.key_cert_sign == Some(false) {
            return Some(format!(
                "'{who}' may not sign certificates (keyUsage without keyCertSign)"
            ));
        }
        if let Some(oid) = self.ext.unknown_critical.first() {
            return Some(format!(
                "'{who}' carries a critical extension this verifier does not process ({oid})"
            ));
        }
        None
    }
}

impl Extensions {
    fn parse(list: &[u8]) -> Result<Extensions, Bad> {
        let mut ext = Extensions::default();
        let mut seen: Vec<&[u8]> = Vec::new();
        for e in asn1::items(list)? {
            if e.tag != SEQUENCE {
                return Err(Bad::Other("an extension is not a SEQUENCE"));
            }
            let (oid, rest) = expect(e.value, OID)?;
            let (critical, rest) = match rest.first() {
                Some(&BOOLEAN) => {
                    let (b, rest) = der::read_tlv(rest)?;
                    (b.value.iter().any(|x| *x != 0), rest)
                }
                _ => (false, rest),
            };
            let value = asn1::only(rest, OCTET_STRING)?.value;
            if seen.contains(&oid.value) {
                return Err(Bad::Other("an extension appears twice"));
            }
            seen.push(oid.value);
            let id = oid.value;
            if asn1::is(id, &asn1::BASIC_CONSTRAINTS) {
                ext.basic_constraints = Some(basic_constraints(value)?);
            } else if asn1::is(id, &asn1::KEY_USAGE) {
                let bits = asn1::only(value, BIT_STRING)?.value;
                ext.key_cert_sign = Some(bits.get(1).is_some_and(|b| b & 0x04 != 0));
            } else if asn1::is(id, &asn1::SUBJECT_KEY_IDENTIFIER) {
                ext.subject_key_id = Some(asn1::only(value, OCTET_STRING)?.value.to_vec());
            } else if asn1::is(id, &asn1::AUTHORITY_KEY_IDENTIFIER) {
                let aki = asn1::only(value, SEQUENCE)?;
                ext.authority_key_id = asn1::items(aki.value)?
                    .iter()
                    .find(|t| t.tag == 0x80)
                    .map(|t| t.value.to_vec());
            } else if asn1::is(id, &asn1::AUTHORITY_INFO_ACCESS) {
                ext.ca_issuers = ca_issuers(value)?;
            } else if critical && !UNDERSTOOD.iter().any(|u| asn1::is(id, u)) {
                ext.unknown_critical.push(asn1::dotted(id));
            }
        }
        Ok(ext)
    }
}

fn basic_constraints(value: &[u8]) -> Result<(bool, Option<u32>), Bad> {
    let seq = asn1::only(value, SEQUENCE)?;
    let mut ca = false;
    let mut path_len = None;
    for item in asn1::items(seq.value)? {
        match item.tag {
            BOOLEAN if path_len.is_none() => ca = item.value.iter().any(|b| *b != 0),
            INTEGER => {
                path_len = Some(
                    asn1::small_uint(item.value).ok_or(Bad::Other("negative pathLenConstraint"))?,
                );
            }
            _ => return Err(Bad::Other("malformed basicConstraints")),
        }
    }
    Ok((ca, path_len))
}

/// `AuthorityInfoAccessSyntax ::= SEQUENCE OF SEQUENCE { accessMethod, accessLocation }`:
/// the caIssuers locations that are http(s) URIs.
fn ca_issuers(value: &[u8]) -> Result<Vec<String>, Bad> {
    let mut out = Vec::new();
    for desc in asn1::items(asn1::only(value, SEQUENCE)?.value)? {
        let (method, rest) = expect(desc.value, OID)?;
        let (location, _) = der::read_tlv(rest)?;
        // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String.
        if !asn1::is(method.value, &asn1::CA_ISSUERS) || location.tag != 0x86 {
            continue;
        }
        let Ok(url) = std::str::from_utf8(location.value) else {
            continue;
        };
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if scheme_ok && url.len() <= MAX_URL && url.bytes().all(|b| b.is_ascii_graphic()) {
            out.push(url.to_owned());
        }
        out.truncate(4);
    }
    Ok(out)
}
