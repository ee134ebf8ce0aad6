//! Is this public area an endorsement key? The TCG EK templates (EK Credential Profile 2.5,
//! Annex B), checked on the bytes a TPM without an EK certificate sends (DESIGN.md §3.1,
//! `ek_source = pub`).
//!
//! Without a certificate nothing vouches for the key, but its public area says what it is: an
//! EK is a primary key of the endorsement hierarchy made from one of the TCG templates, so it
//! is a restricted decryption key that never leaves the TPM (fixedTPM, fixedParent,
//! sensitiveDataOrigin), usable only through the EK policy (adminWithPolicy, the template's
//! authPolicy) and never a signing key. A bare SubjectPublicKeyInfo says none of that, and a
//! non-restricted decryption key or a signing key would let whoever holds it open credentials
//! outside a TPM; both are refused here.
//!
//! The check is exact: the public area must be, byte for byte, the template's with the key
//! filled in ([`EkTemplate::public_area`], what `TPM2_CreatePrimary` returns for it). So no
//! field can be forgotten; when the bytes differ, the fields that differ are named.
//!
//! | template | key            | nameAlg | objectAttributes | authPolicy      | symmetric   |
//! |----------|----------------|---------|------------------|-----------------|-------------|
//! | L-1      | RSA-2048       | SHA-256 | `0x000300b2`     | PolicyA SHA-256 | AES-128-CFB |
//! | H-3      | ECC NIST P-384 | SHA-384 | `0x000300f2`     | PolicyB SHA-384 | AES-256-CFB |
//!
//! Both: restricted, decrypt, fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy;
//! sign, stClear, noDA and encryptedDuplication clear; scheme (and for ECC the KDF)
//! TPM_ALG_NULL; RSA exponent 0 (65537). userWithAuth is clear in L-1 and set in the
//! high-range templates (H-3): there the policy, PolicyB = PolicyOR(PolicyA, PolicyC), is
//! the EK's only authorisation that matters, since adminWithPolicy covers ActivateCredential.

use core::fmt;

use heapless::Vec;

use super::ek::{EkType, POLICY_A_SHA256, POLICY_B_SHA384};
use super::hash::HashAlg;
use super::public::{EccCurve, PublicError, PublicKey, TpmPublic, attributes};
use super::spki::{self, Spki};
use crate::fingerprint::Fingerprint;

/// `TPM_ALG_ID`s and `TPM_ECC_CURVE`s of a template.
mod id {
    pub const RSA: u16 = 0x0001;
    pub const ECC: u16 = 0x0023;
    pub const AES: u16 = 0x0006;
    pub const CFB: u16 = 0x0043;
    pub const NULL: u16 = 0x0010;
    pub const ECDAA: u16 = 0x001a;
    pub const NIST_P384: u16 = 0x0004;
}

/// `TPMA_OBJECT` bits not in [`attributes`], named in refusals.
const ST_CLEAR: u32 = 0x0000_0004;
const NO_DA: u32 = 0x0000_0400;
const ENCRYPTED_DUPLICATION: u32 = 0x0000_0800;
const X509_SIGN: u32 = 0x0008_0000;

/// Largest TPM2B_PUBLIC of a template here: L-1, 2 + 314 bytes.
pub const MAX_EK_PUBLIC_AREA: usize = 316;

/// A TPM2B_PUBLIC of an EK.
pub type EkPublicArea = Vec<u8, MAX_EK_PUBLIC_AREA>;

/// One TCG EK template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EkTemplate {
    pub ek_type: EkType,
    /// Its name in the EK Credential Profile (Annex B).
    pub label: &'static str,
    pub name_alg: HashAlg,
    /// `TPMA_OBJECT`, exactly.
    pub attributes: u32,
    /// The EK policy digest.
    pub auth_policy: &'static [u8],
    /// AES-CFB key size of the symmetric definition.
    pub aes_bits: u16,
}

const BOTH: u32 = attributes::FIXED_TPM
    | attributes::FIXED_PARENT
    | attributes::SENSITIVE_DATA_ORIGIN
    | attributes::ADMIN_WITH_POLICY
    | attributes::RESTRICTED
    | attributes::DECRYPT;

/// Template L-1: RSA-2048, SHA-256, AES-128-CFB, PolicyA.
pub const L1: EkTemplate = EkTemplate {
    ek_type: EkType::Rsa2048,
    label: "L-1",
    name_alg: HashAlg::Sha256,
    attributes: BOTH,
    auth_policy: &POLICY_A_SHA256,
    aes_bits: 128,
};

/// Template H-3: ECC NIST P-384, SHA-384, AES-256-CFB, PolicyB (userWithAuth set).
pub const H3: EkTemplate = EkTemplate {
    ek_type: EkType::EccP384,
    label: "H-3",
    name_alg: HashAlg::Sha384,
    attributes: BOTH | attributes::USER_WITH_AUTH,
    auth_policy: &POLICY_B_SHA384,
    aes_bits: 256,
};

impl EkType {
    /// The TCG template an EK of this type is made from.
    pub fn template(self) -> &'static EkTemplate {
        match self {
            EkType::Rsa2048 => &L1,
            EkType::EccP384 => &H3,
        }
    }

    /// The EK type whose template holds `key`: RSA-2048 or NIST P-384.
    pub fn of_key(key: &PublicKey) -> Option<EkType> {
        match key {
            PublicKey::Rsa { modulus, .. } if modulus.len() == 256 => Some(EkType::Rsa2048),
            PublicKey::Ecc {
                curve: EccCurve::P384,
                ..
            } => Some(EkType::EccP384),
            _ => None,
        }
    }
}

struct Writer(EkPublicArea, bool);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.1 &= self.0.extend_from_slice(b).is_ok();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn tpm2b(&mut self, b: &[u8]) {
        self.u16(b.len() as u16);
        self.bytes(b);
    }
}

impl EkTemplate {
    /// The TPM2B_PUBLIC of this template's EK holding `key`: what `TPM2_CreatePrimary` in
    /// the endorsement hierarchy returns, and what `TPM2_ReadPublic` reports for the EK.
    /// `None` when `key` is not of the template's type.
    pub fn public_area(&self, key: &PublicKey) -> Option<EkPublicArea> {
        if EkType::of_key(key) != Some(self.ek_type) {
            return None;
        }
        let mut w = Writer(Vec::new(), true);
        w.u16(0); // size, filled in below
        w.u16(match key {
            PublicKey::Rsa { .. } => id::RSA,
            PublicKey::Ecc { .. } => id::ECC,
        });
        w.u16(self.name_alg.tpm_id());
        w.bytes(&self.attributes.to_be_bytes());
        w.tpm2b(self.auth_policy);
        w.u16(id::AES);
        w.u16(self.aes_bits);
        w.u16(id::CFB);
        w.u16(id::NULL); // scheme
        match key {
            PublicKey::Rsa { modulus, exponent } => {
                if *exponent != 65_537 {
                    return None;
                }
                w.u16(2048);
                w.bytes(&0u32.to_be_bytes());
                w.tpm2b(modulus);
            }
            PublicKey::Ecc { point, .. } => {
                w.u16(id::NIST_P384);
                w.u16(id::NULL); // KDF
                let (x, y) = point.get(1..)?.split_at(48);
                w.tpm2b(x);
                w.tpm2b(y);
            }
        }
        let size = (w.0.len() - 2) as u16;
        w.0[..2].copy_from_slice(&size.to_be_bytes());
        w.1.then_some(w.0)
    }
}

/// Fields of a public area that differ from its template (bits of [`TemplateMismatch::fields`]).
pub mod field {
    pub const NAME_ALG: u16 = 1 << 0;
    pub const ATTRIBUTES: u16 = 1 << 1;
    pub const AUTH_POLICY: u16 = 1 << 2;
    pub const SYMMETRIC: u16 = 1 << 3;
    pub const SCHEME: u16 = 1 << 4;
    /// RSA: keyBits or exponent; ECC: the KDF.
    pub const KEY_PARAMETERS: u16 = 1 << 5;
    /// The key's encoding (ECC coordinates not of the curve's size).
    pub const UNIQUE: u16 = 1 << 6;
    /// Bytes the fields above do not account for.
    pub const OTHER: u16 = 1 << 7;
}

/// How a public area of an EK's key type differs from the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateMismatch {
    pub ek_type: EkType,
    /// [`field`] bits.
    pub fields: u16,
    /// The `nameAlg` found.
    pub name_alg: u16,
    /// The `objectAttributes` found.
    pub attributes: u32,
    /// The symmetric algorithm, key bits and mode found (0 where absent).
    pub symmetric: (u16, u16, u16),
    /// The scheme found.
    pub scheme: u16,
}

/// Why a public area is not an EK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnEk {
    /// A DER SubjectPublicKeyInfo: a bare key, which shows none of what makes an EK.
    SubjectPublicKeyInfo,
    /// Not a TPM2B_PUBLIC of a key we read.
    Public(PublicError),
    /// An RSA modulus of this many bits: no EK template here has it.
    RsaSize(usize),
    /// NIST P-256: the low-range ECC template (L-2) is not one this system uses.
    Curve(EccCurve),
    /// The key type of a template, with other fields.
    Template(TemplateMismatch),
}

/// `TPMA_OBJECT` bits by name.
const ATTRIBUTE_NAMES: [(u32, &str); 12] = [
    (attributes::FIXED_TPM, "fixedTPM"),
    (ST_CLEAR, "stClear"),
    (attributes::FIXED_PARENT, "fixedParent"),
    (attributes::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    (attributes::USER_WITH_AUTH, "userWithAuth"),
    (attributes::ADMIN_WITH_POLICY, "adminWithPolicy"),
    (NO_DA, "noDA"),
    (ENCRYPTED_DUPLICATION, "encryptedDuplication"),
    (attributes::RESTRICTED, "restricted"),
    (attributes::DECRYPT, "decrypt"),
    (attributes::SIGN_ENCRYPT, "sign"),
    (X509_SIGN, "x509sign"),
];

fn write_bits(f: &mut fmt::Formatter<'_>, bits: u32, first: &mut bool) -> fmt::Result {
    for bit in 0..32 {
        let mask = 1u32 << bit;
        if bits & mask == 0 {
            continue;
        }
        f.write_str(if *first { "" } else { ", " })?;
        *first = false;
        match ATTRIBUTE_NAMES.iter().find(|(m, _)| *m == mask) {
            Some((_, name)) => f.write_str(name)?,
            None => write!(f, "bit {bit}")?,
        }
    }
    Ok(())
}

fn alg_name(id: u16) -> &'static str {
    match id {
        0x0001 => "RSA",
        0x0004 => "SHA-1",
        0x0006 => "AES",
        0x000a => "XOR",
        0x000b => "SHA-256",
        0x000c => "SHA-384",
        0x000d => "SHA-512",
        0x0010 => "TPM_ALG_NULL",
        0x0012 => "SM3-256",
        0x0013 => "SM4",
        0x0014 => "RSASSA",
        0x0015 => "RSAES",
        0x0016 => "RSAPSS",
        0x0017 => "OAEP",
        0x0018 => "ECDSA",
        0x0019 => "ECDH",
        0x001a => "ECDAA",
        0x001b => "SM2",
        0x001c => "ECSCHNORR",
        0x0026 => "Camellia",
        0x0040 => "CTR",
        0x0041 => "OFB",
        0x0042 => "CBC",
        0x0043 => "CFB",
        0x0044 => "ECB",
        _ => "an unknown algorithm",
    }
}

impl fmt::Display for TemplateMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.ek_type.template();
        write!(
            f,
            "not an EK: an {} key that differs from the TCG EK template {} in",
            self.ek_type, t.label
        )?;
        let mut sep = " ";
        let mut next = |f: &mut fmt::Formatter<'_>| {
            let s = sep;
            sep = "; ";
            f.write_str(s)
        };
        if self.fields & field::NAME_ALG != 0 {
            next(f)?;
            write!(
                f,
                "nameAlg ({}, the template's is {})",
                alg_name(self.name_alg),
                alg_name(t.name_alg.tpm_id())
            )?;
        }
        if self.fields & field::ATTRIBUTES != 0 {
            next(f)?;
            f.write_str("objectAttributes (")?;
            let mut first = true;
            let missing = t.attributes & !self.attributes;
            let extra = self.attributes & !t.attributes;
            if missing != 0 {
                write_bits(f, missing, &mut first)?;
                f.write_str(" clear")?;
            }
            if extra != 0 {
                if !first {
                    f.write_str("; ")?;
                    first = true;
                }
                write_bits(f, extra, &mut first)?;
                f.write_str(" set")?;
            }
            write!(
                f,
                ": {:#010x}, the template's is {:#010x})",
                self.attributes, t.attributes
            )?;
        }
        if self.fields & field::AUTH_POLICY != 0 {
            next(f)?;
            write!(
                f,
                "authPolicy (not the EK policy {})",
                match self.ek_type {
                    EkType::Rsa2048 => "PolicyA, SHA-256",
                    EkType::EccP384 => "PolicyB, SHA-384",
                }
            )?;
        }
        if self.fields & field::SYMMETRIC != 0 {
            next(f)?;
            let (alg, bits, mode) = self.symmetric;
            f.write_str("symmetric (")?;
            match alg {
                id::NULL => f.write_str("TPM_ALG_NULL")?,
                _ => write!(f, "{}-{bits}-{}", alg_name(alg), alg_name(mode))?,
            }
            write!(f, ", the template's is AES-{}-CFB)", t.aes_bits)?;
        }
        if self.fields & field::SCHEME != 0 {
            next(f)?;
            write!(
                f,
                "scheme ({}, the template's is TPM_ALG_NULL)",
                alg_name(self.scheme)
            )?;
        }
        if self.fields & field::KEY_PARAMETERS != 0 {
            next(f)?;
            f.write_str(match self.ek_type {
                EkType::Rsa2048 => "keyBits or exponent (the template's are 2048 and 0)",
                EkType::EccP384 => "kdf (the template's is TPM_ALG_NULL)",
            })?;
        }
        if self.fields & field::UNIQUE != 0 {
            next(f)?;
            f.write_str("unique (coordinates not of the curve's size)")?;
        }
        if self.fields & field::OTHER != 0 {
            next(f)?;
            f.write_str("its encoding")?;
        }
        Ok(())
    }
}

impl fmt::Display for NotAnEk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAnEk::SubjectPublicKeyInfo => f.write_str(
                "a DER SubjectPublicKeyInfo, not the EK's public area: send the EK's \
                 TPM2B_PUBLIC (TPMT_PUBLIC) so that its attributes can be checked",
            ),
            NotAnEk::Public(e) => write!(f, "not an EK public area (TPM2B_PUBLIC): {e}"),
            NotAnEk::RsaSize(bits) => write!(
                f,
                "not an EK: an RSA-{bits} key (the EK templates are L-1, RSA-2048, and H-3, \
                 ECC NIST P-384)"
            ),
            NotAnEk::Curve(_) => f.write_str(
                "not an EK: an ECC NIST P-256 key (the EK templates are L-1, RSA-2048, and \
                 H-3, ECC NIST P-384)",
            ),
            NotAnEk::Template(m) => m.fmt(f),
        }
    }
}

impl core::error::Error for NotAnEk {}

/// An EK public area that is exactly its TCG template's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEk {
    pub ek_type: EkType,
    pub public: TpmPublic,
}

impl CheckedEk {
    /// The DER SubjectPublicKeyInfo of the EK (what a `pub` EK is fingerprinted by).
    pub fn spki(&self) -> Spki {
        // RSA-2048 and P-384 keys always fit.
        spki::encode(&self.public.key).unwrap_or_default()
    }

    /// The EK fingerprint: SHA-384 of [`CheckedEk::spki`].
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.spki())
    }
}

/// Checks a TPM2B_PUBLIC against the TCG EK templates.
pub fn check_ek_public(tpm2b: &[u8]) -> Result<CheckedEk, NotAnEk> {
    if tpm2b.first() == Some(&crate::der::SEQUENCE) && crate::der::parse_spki(tpm2b).is_ok() {
        return Err(NotAnEk::SubjectPublicKeyInfo);
    }
    let public = TpmPublic::from_tpm2b(tpm2b).map_err(NotAnEk::Public)?;
    let ek_type = match &public.key {
        PublicKey::Ecc {
            curve: EccCurve::P256,
            ..
        } => return Err(NotAnEk::Curve(EccCurve::P256)),
        key => EkType::of_key(key),
    };
    let Some(ek_type) = ek_type else {
        let bits = match &public.key {
            PublicKey::Rsa { modulus, .. } => modulus.len() * 8,
            PublicKey::Ecc { .. } => 0,
        };
        return Err(NotAnEk::RsaSize(bits));
    };
    let template = ek_type.template();
    if template.public_area(&public.key).as_deref() == Some(tpm2b) {
        return Ok(CheckedEk { ek_type, public });
    }
    Err(NotAnEk::Template(differences(template, &tpm2b[2..])))
}

/// Big-endian reads that never panic (a short read gives 0, and the field then differs).
fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |v| u16::from_be_bytes([v[0], v[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// The fields of a TPMT_PUBLIC (which parsed, and holds a key of `t`'s type) that differ
/// from template `t`.
fn differences(t: &EkTemplate, tpmt: &[u8]) -> TemplateMismatch {
    let mut fields = 0;
    let mut flag = |differs: bool, bit: u16| {
        if differs {
            fields |= bit;
        }
    };
    // type, nameAlg, objectAttributes, authPolicy (TPM2B_DIGEST).
    let name_alg = u16_at(tpmt, 2);
    flag(name_alg != t.name_alg.tpm_id(), field::NAME_ALG);
    let attributes = u32_at(tpmt, 4);
    flag(attributes != t.attributes, field::ATTRIBUTES);
    let mut at = 10 + usize::from(u16_at(tpmt, 8));
    flag(tpmt.get(10..at) != Some(t.auth_policy), field::AUTH_POLICY);
    // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless it is NULL.
    let symmetric = match u16_at(tpmt, at) {
        id::NULL => (id::NULL, 0, 0),
        alg => (alg, u16_at(tpmt, at + 2), u16_at(tpmt, at + 4)),
    };
    at += if symmetric.0 == id::NULL { 2 } else { 6 };
    flag(
        symmetric != (id::AES, t.aes_bits, id::CFB),
        field::SYMMETRIC,
    );
    // The scheme, then its details unless it is NULL (a hash; ECDAA adds a count).
    let scheme = u16_at(tpmt, at);
    at += match scheme {
        id::NULL => 2,
        id::ECDAA => 6,
        _ => 4,
    };
    flag(scheme != id::NULL, field::SCHEME);
    match t.ek_type {
        // keyBits, exponent.
        EkType::Rsa2048 => flag(
            u16_at(tpmt, at) != 2048 || u32_at(tpmt, at + 2) != 0,
            field::KEY_PARAMETERS,
        ),
        // curveID, kdf (and its hash unless NULL), then the point.
        EkType::EccP384 => {
            let kdf = u16_at(tpmt, at + 2);
            flag(
                u16_at(tpmt, at) != id::NIST_P384 || kdf != id::NULL,
                field::KEY_PARAMETERS,
            );
            let x = at + if kdf == id::NULL { 4 } else { 6 };
            let y = x + 2 + usize::from(u16_at(tpmt, x));
            flag(
                u16_at(tpmt, x) != 48 || u16_at(tpmt, y) != 48,
                field::UNIQUE,
            );
        }
    }
    // The template's bytes differ somewhere: never report "no difference".
    if fields == 0 {
        fields = field::OTHER;
    }
    TemplateMismatch {
        ek_type: t.ek_type,
        fields,
        name_alg,
        attributes,
        symmetric,
        scheme,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::{String, ToString};
    use std::vec::Vec as StdVec;

    use super::*;

    /// A valid key of each EK type (the keys of swtpm's EK certificates in the fixtures).
    fn keys() -> [PublicKey; 2] {
        let mut out = StdVec::new();
        for pem in [
            include_str!("../../tests/fixtures/swtpm-ek-rsa2048.pem"),
            include_str!("../../tests/fixtures/swtpm-ek-p384.pem"),
        ] {
            let mut buf = [0u8; crate::fingerprint::MAX_EK_DER];
            let (der, _) = crate::fingerprint::decode_ek(pem.as_bytes(), &mut buf).unwrap();
            let spki = crate::der::parse_certificate(der).unwrap().spki;
            let parsed = crate::der::parse_spki(spki).unwrap();
            out.push(match parsed.parameters.map(|p| p.value) {
                Some(_) if parsed.key.len() == 97 => PublicKey::Ecc {
                    curve: EccCurve::P384,
                    point: Vec::from_slice(parsed.key).unwrap(),
                },
                _ => {
                    let (seq, _) = crate::der::expect(parsed.key, crate::der::SEQUENCE).unwrap();
                    let (n, _) = crate::der::expect(seq.value, crate::der::INTEGER).unwrap();
                    PublicKey::Rsa {
                        modulus: Vec::from_slice(&n.value[1..]).unwrap(),
                        exponent: 65_537,
                    }
                }
            });
        }
        out.try_into().unwrap()
    }

    fn area(t: &EkTemplate, key: &PublicKey) -> StdVec<u8> {
        t.public_area(key).unwrap().to_vec()
    }

    /// Re-frames a TPMT_PUBLIC edited in place as a TPM2B_PUBLIC.
    fn reframe(mut tpm2b: StdVec<u8>) -> StdVec<u8> {
        let size = (tpm2b.len() - 2) as u16;
        tpm2b[..2].copy_from_slice(&size.to_be_bytes());
        tpm2b
    }

    fn mismatch(bytes: &[u8]) -> TemplateMismatch {
        match check_ek_public(bytes) {
            Err(NotAnEk::Template(m)) => m,
            other => panic!("expected a template mismatch, got {other:?}"),
        }
    }

    #[test]
    fn template_public_areas_are_eks_with_the_certificates_fingerprints() {
        let [rsa, ecc] = keys();
        for (t, key, len) in [(&L1, &rsa, 316), (&H3, &ecc, 172)] {
            let bytes = area(t, key);
            assert_eq!(bytes.len(), len);
            let ek = check_ek_public(&bytes).unwrap();
            assert_eq!(ek.ek_type, t.ek_type);
            assert_eq!(&ek.public.key, key);
            assert!(ek.public.is_restricted_decryption());
            assert_eq!(ek.public.name_alg, t.name_alg);
            assert_eq!(ek.spki().as_slice(), spki::encode(key).unwrap().as_slice());
            assert_eq!(ek.fingerprint(), Fingerprint::of_der(&ek.spki()));
            // The other template does not hold this key.
            let other = if t.ek_type == EkType::Rsa2048 {
                &H3
            } else {
                &L1
            };
            assert_eq!(other.public_area(key), None);
        }
        assert_eq!(
            EkType::EccP384.template().attributes,
            0x0003_00f2,
            "H-3 as tss-esapi and swtpm_setup make it"
        );
        assert_eq!(EkType::Rsa2048.template().attributes, 0x0003_00b2);
    }

    #[test]
    fn a_bare_spki_or_a_malformed_area_is_not_an_ek() {
        let [rsa, ecc] = keys();
        for key in [&rsa, &ecc] {
            let spki = spki::encode(key).unwrap();
            assert_eq!(check_ek_public(&spki), Err(NotAnEk::SubjectPublicKeyInfo));
            assert!(
                NotAnEk::SubjectPublicKeyInfo
                    .to_string()
                    .contains("SubjectPublicKeyInfo")
            );
        }
        let good = area(&H3, &ecc);
        assert_eq!(
            check_ek_public(&good[..good.len() - 1]),
            Err(NotAnEk::Public(PublicError::SizeMismatch))
        );
        assert!(matches!(check_ek_public(&[]), Err(NotAnEk::Public(_))));
        // The point moved off the curve.
        let mut off = good.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert_eq!(
            check_ek_public(&off),
            Err(NotAnEk::Public(PublicError::InvalidKey))
        );
    }

    /// One field at a time off the template: refused, and that field named.
    #[test]
    fn every_field_off_the_template_is_named() {
        let [rsa, ecc] = keys();
        let rsa_area = area(&L1, &rsa);
        let ecc_area = area(&H3, &ecc);
        let set = |bytes: &[u8], at: usize, value: &[u8]| {
            let mut b = bytes.to_vec();
            b[at..at + value.len()].copy_from_slice(value);
            b
        };
        let attrs = |a: u32| a.to_be_bytes();
        let cases: StdVec<(&str, StdVec<u8>, u16, &str)> = StdVec::from([
            (
                "RSA, userWithAuth set",
                set(
                    &rsa_area,
                    6,
                    &attrs(L1.attributes | attributes::USER_WITH_AUTH),
                ),
                field::ATTRIBUTES,
                "userWithAuth set",
            ),
            (
                "P-384, userWithAuth clear",
                set(
                    &ecc_area,
                    6,
                    &attrs(H3.attributes & !attributes::USER_WITH_AUTH),
                ),
                field::ATTRIBUTES,
                "userWithAuth clear",
            ),
            (
                "not restricted",
                set(
                    &rsa_area,
                    6,
                    &attrs(L1.attributes & !attributes::RESTRICTED),
                ),
                field::ATTRIBUTES,
                "restricted clear",
            ),
            (
                "a signing key",
                set(
                    &ecc_area,
                    6,
                    &attrs((H3.attributes & !attributes::DECRYPT) | attributes::SIGN_ENCRYPT),
                ),
                field::ATTRIBUTES,
                "decrypt clear; sign set",
            ),
            (
                "not fixedTPM",
                set(&ecc_area, 6, &attrs(H3.attributes & !attributes::FIXED_TPM)),
                field::ATTRIBUTES,
                "fixedTPM clear",
            ),
            (
                "noDA",
                set(&ecc_area, 6, &attrs(H3.attributes | NO_DA)),
                field::ATTRIBUTES,
                "noDA set",
            ),
            (
                "nameAlg",
                set(&rsa_area, 4, &0x000cu16.to_be_bytes()),
                field::NAME_ALG,
                "nameAlg (SHA-384, the template's is SHA-256)",
            ),
            (
                "another policy",
                set(&rsa_area, 12, &[0xff]),
                field::AUTH_POLICY,
                "authPolicy (not the EK policy PolicyA, SHA-256)",
            ),
            (
                "AES-128 on P-384",
                set(&ecc_area, 2 + 10 + 48 + 2, &128u16.to_be_bytes()),
                field::SYMMETRIC,
                "symmetric (AES-128-CFB, the template's is AES-256-CFB)",
            ),
            (
                "exponent written out",
                set(&rsa_area, 2 + 10 + 32 + 10, &65_537u32.to_be_bytes()),
                field::KEY_PARAMETERS,
                "keyBits or exponent",
            ),
        ]);
        for (what, bytes, field, text) in cases {
            let m = mismatch(&bytes);
            assert_eq!(m.fields, field, "{what}");
            let message = m.to_string();
            assert!(message.contains(text), "{what}: {message}");
        }

        // A mode other than CFB is no symmetric definition a credential can use at all.
        let ecb = set(&rsa_area, 2 + 10 + 32 + 4, &0x0044u16.to_be_bytes());
        let refused = check_ek_public(&ecb).unwrap_err();
        assert_eq!(refused, NotAnEk::Public(PublicError::UnsupportedSymmetric));
        assert!(refused.to_string().contains("symmetric"), "{refused}");

        // No policy at all, and no symmetric definition (a plain decryption key's), on
        // the P-384 EK: both named.
        let mut bare = ecc_area[..10].to_vec();
        bare.extend_from_slice(&[0, 0]); // authPolicy: empty
        bare.extend_from_slice(&id::NULL.to_be_bytes()); // symmetric: NULL
        bare.extend_from_slice(&ecc_area[2 + 10 + 48 + 6..]);
        let m = mismatch(&reframe(bare));
        assert_eq!(m.fields, field::AUTH_POLICY | field::SYMMETRIC);
        assert!(m.to_string().contains("symmetric (TPM_ALG_NULL"), "{m}");
    }

    /// A restricted signing key with the AK's form (ECDSA-SHA384, no symmetric) is
    /// refused with its scheme and attributes named.
    #[test]
    fn a_signing_key_is_not_an_ek() {
        let [_, ecc] = keys();
        let ecc_area = area(&H3, &ecc);
        let mut ak = StdVec::from(&ecc_area[2..6]);
        let attrs = attributes::FIXED_TPM
            | attributes::FIXED_PARENT
            | attributes::SENSITIVE_DATA_ORIGIN
            | attributes::USER_WITH_AUTH
            | attributes::RESTRICTED
            | attributes::SIGN_ENCRYPT;
        ak.extend_from_slice(&attrs.to_be_bytes());
        ak.extend_from_slice(&[0, 0]); // no policy
        ak.extend_from_slice(&id::NULL.to_be_bytes()); // symmetric
        ak.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
        ak.extend_from_slice(&0x000cu16.to_be_bytes()); // SHA-384
        ak.extend_from_slice(&ecc_area[2 + 10 + 48 + 8..]); // curve, kdf, point
        let mut tpm2b = StdVec::from([0, 0]);
        tpm2b.extend(ak);
        let m = mismatch(&reframe(tpm2b));
        assert_eq!(
            m.fields,
            field::ATTRIBUTES | field::AUTH_POLICY | field::SYMMETRIC | field::SCHEME
        );
        let message: String = m.to_string();
        assert!(message.contains("scheme (ECDSA"), "{message}");
        assert!(
            message.contains("adminWithPolicy, decrypt clear; sign set"),
            "{message}"
        );
    }

    #[test]
    fn keys_of_no_template_are_named() {
        let key = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key();
        use p256::elliptic_curve::sec1::ToSec1Point as _;
        let point = key.to_sec1_point(false);
        // An L-2-shaped area (P-256) built by hand.
        let mut b = StdVec::from([0u8, 0]);
        b.extend_from_slice(&id::ECC.to_be_bytes());
        b.extend_from_slice(&0x000bu16.to_be_bytes());
        b.extend_from_slice(&L1.attributes.to_be_bytes());
        b.extend_from_slice(&32u16.to_be_bytes());
        b.extend_from_slice(&POLICY_A_SHA256);
        for v in [id::AES, 128, id::CFB, id::NULL, 0x0003, id::NULL, 32] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&point.as_bytes()[1..33]);
        b.extend_from_slice(&32u16.to_be_bytes());
        b.extend_from_slice(&point.as_bytes()[33..]);
        assert_eq!(
            check_ek_public(&reframe(b)),
            Err(NotAnEk::Curve(EccCurve::P256))
        );
    }

    proptest::proptest! {
        /// Any single byte changed in a template's public area: refused, never a panic.
        #[test]
        fn no_other_bytes_pass(which in 0usize..2, at in 0usize..316, xor in 1u8..=255) {
            let [rsa, ecc] = keys();
            let mut bytes = match which {
                0 => area(&L1, &rsa),
                _ => area(&H3, &ecc),
            };
            // Not in an RSA modulus: another modulus is another key, in the template.
            let at = at % if which == 0 { 60 } else { bytes.len() };
            bytes[at] ^= xor;
            proptest::prop_assert!(check_ek_public(&bytes).is_err());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = check_ek_public(&bytes);
        }
    }
}
