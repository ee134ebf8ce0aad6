//! Test certificates made with x509-cert's builder and P-384 keys: CAs, leaves, and the
//! malformed shapes the tampering tests need.

use std::str::FromStr as _;
use std::time::{Duration, UNIX_EPOCH};

use p384::ecdsa::{DerSignature, SigningKey};
use p384::pkcs8::EncodePublicKey as _;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::{Ia5String, OctetString};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _, EncodePem as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

/// 2026-01-01, the "now" of these tests.
pub(crate) const NOW: u64 = 1_767_225_600;

/// What goes into a test certificate.
#[derive(Clone)]
pub(crate) struct Opts {
    /// basicConstraints: `None` absent, `Some(cA)` present.
    pub basic_constraints: Option<bool>,
    pub path_len: Option<u8>,
    /// keyUsage: `None` absent, `Some(keyCertSign)`.
    pub key_cert_sign: Option<bool>,
    pub aia: Option<String>,
    /// Seconds since 1970; `None`: 9999-12-31T23:59:59Z (as EK certificates say).
    pub not_after: Option<u64>,
    /// An extra critical extension with this OID.
    pub critical_oid: Option<&'static str>,
    /// Write an authorityKeyIdentifier naming the issuer key.
    pub aki: bool,
}

impl Opts {
    pub(crate) fn ca() -> Opts {
        Opts {
            basic_constraints: Some(true),
            path_len: None,
            key_cert_sign: Some(true),
            aia: None,
            not_after: None,
            critical_oid: None,
            aki: true,
        }
    }

    pub(crate) fn leaf() -> Opts {
        Opts {
            basic_constraints: Some(false),
            key_cert_sign: None,
            ..Opts::ca()
        }
    }
}

/// A made certificate with its key.
pub(crate) struct Made {
    pub der: Vec<u8>,
    pub name: Name,
    pub key: SigningKey,
}

impl Made {
    pub(crate) fn pem(&self) -> String {
        x509_cert::Certificate::from_der(&self.der)
            .unwrap()
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .unwrap()
    }
}

pub(crate) fn key() -> SigningKey {
    loop {
        let mut scalar = [0u8; 48];
        getrandom::fill(&mut scalar).unwrap();
        if let Ok(k) = SigningKey::from_slice(&scalar) {
            return k;
        }
    }
}

/// `dn` in RFC 4514 form; `""` is the empty name (as many EK certificates have).
pub(crate) fn name(dn: &str) -> Name {
    if dn.is_empty() {
        return Name::default();
    }
    Name::from_str(dn).unwrap()
}

/// A self-signed certificate for `dn`.
pub(crate) fn root(dn: &str, opts: &Opts) -> Made {
    let key = key();
    let der = build(&name(dn), &key, &name(dn), &key, opts);
    Made {
        der,
        name: name(dn),
        key,
    }
}

/// A certificate for `dn` issued by `issuer`.
pub(crate) fn issue(dn: &str, issuer: &Made, opts: &Opts) -> Made {
    let key = key();
    let der = build(&name(dn), &key, &issuer.name, &issuer.key, opts);
    Made {
        der,
        name: name(dn),
        key,
    }
}

/// The general case: any subject and key, any issuer name, signed by any key.
pub(crate) fn build(
    subject: &Name,
    subject_key: &SigningKey,
    issuer: &Name,
    issuer_key: &SigningKey,
    opts: &Opts,
) -> Vec<u8> {
    let spki = spki(subject_key);
    let mut serial = [0u8; 8];
    getrandom::fill(&mut serial).unwrap();
    serial[0] = 0x11;
    let not_after = match opts.not_after {
        Some(t) => Time::try_from(UNIX_EPOCH + Duration::from_secs(t)).unwrap(),
        None => Time::from_str("9999-12-31T23:59:59Z").unwrap(),
    };
    let not_before = Time::try_from(UNIX_EPOCH + Duration::from_secs(NOW - 86_400)).unwrap();
    let profile = Profile {
        subject: subject.clone(),
        issuer: issuer.clone(),
        opts: opts.clone(),
    };
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::new(&serial).unwrap(),
        Validity::new(not_before, not_after),
        spki,
    )
    .unwrap();
    builder
        .build::<_, DerSignature>(issuer_key)
        .unwrap()
        .to_der()
        .unwrap()
}

fn spki(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    let der = key.verifying_key().to_public_key_der().unwrap();
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).unwrap()
}

struct Profile {
    subject: Name,
    issuer: Name,
    opts: Opts,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let o = &self.opts;
        let subject = tbs.subject();
        let mut out: Vec<Extension> = Vec::new();
        if let Some(ca) = o.basic_constraints {
            let bc = BasicConstraints {
                ca,
                path_len_constraint: o.path_len,
            };
            out.push(bc.to_extension(subject, &out)?);
        }
        if let Some(cert_sign) = o.key_cert_sign {
            let usage = if cert_sign {
                KeyUsages::KeyCertSign | KeyUsages::CRLSign
            } else {
                KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
            };
            out.push(KeyUsage(usage).to_extension(subject, &out)?);
        }
        out.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &out)?);
        if o.aki {
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(SubjectKeyIdentifier::try_from(issuer_spk)?.0),
                ..Default::default()
            };
            out.push(aki.to_extension(subject, &out)?);
        }
        if let Some(url) = &o.aia {
            let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
                access_method: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2"),
                access_location: GeneralName::UniformResourceIdentifier(
                    Ia5String::new(url).unwrap(),
                ),
            }]);
            out.push(aia.to_extension(subject, &out)?);
        }
        if let Some(oid) = o.critical_oid {
            out.push(Extension {
                extn_id: ObjectIdentifier::new_unwrap(oid),
                critical: true,
                extn_value: OctetString::new(vec![0x05, 0x00]).unwrap(),
            });
        }
        Ok(out)
    }
}
