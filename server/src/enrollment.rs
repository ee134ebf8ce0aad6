//! The Enrollment CA (DESIGN.md §3.6): the air-gapped path's root of trust.
//!
//! A machine that cannot reach the server when it boots (USB stick, offline bundle) gets a
//! certificate from this CA in its MachineConfig; later it proves it holds the key by
//! signing a server nonce (`POST /api/v1/enroll`). The certificate binds the key to the
//! machine id (CN), its role (OU) and its TPM (`urn:itl:ek:<fingerprint>` SAN), so a
//! bundle copied to another machine, or a certificate from any other CA, gets nowhere.
//!
//! One crypto stack: x509-cert for the certificates, p384 for keys and signatures. The CA
//! key is PKCS#8 PEM (`ca.key`, mode 0600, readable by `openssl`), the certificate
//! `ca.pem`; a key that does not match its certificate stops start-up.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::Ia5String;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _, EncodePem as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use crate::service::platform::{OsRandom, Random};

/// The CA certificate's file in `ITL_ENROLLMENT_CA_DIR`.
pub const CERT_FILE: &str = "ca.pem";
/// The CA key's file (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "ca.key";
/// The service we replace names them so (its key a SEC1 `EC PRIVATE KEY`): a directory of
/// its is loaded as it is, so that outstanding enrollment certificates stay good.
pub const SEED_CERT_FILE: &str = "enrollment-ca.crt";
pub const SEED_KEY_FILE: &str = "enrollment-ca.key";

/// The CA's key and certificate files in `dir`: the seed's names when its key is there,
/// else ours.
pub fn ca_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    match dir.join(SEED_KEY_FILE).exists() || dir.join(SEED_CERT_FILE).exists() {
        true => (dir.join(SEED_KEY_FILE), dir.join(SEED_CERT_FILE)),
        false => (dir.join(KEY_FILE), dir.join(CERT_FILE)),
    }
}

/// A CA private key: PKCS#8 (`PRIVATE KEY`, ours) or SEC1 (`EC PRIVATE KEY`, the seed's),
/// P-384. An RSA key is the seed's CA from before its CNSA migration: refused, saying how
/// to move on.
fn read_ca_key(pem: &str, path: &Path) -> Result<SigningKey, String> {
    if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(key);
    }
    if let Ok(secret) = p384::SecretKey::from_sec1_pem(pem) {
        return Ok(SigningKey::from(&secret));
    }
    let rsa = pem.contains("BEGIN RSA PRIVATE KEY")
        || (pem.contains("BEGIN PRIVATE KEY")
            && pem_rfc7468::decode_vec(pem.as_bytes())
                .is_ok_and(|(_, der)| der.windows(11).any(|w| w == RSA_ENCRYPTION_OID)));
    Err(match rsa {
        true => format!(
            "{} is an RSA key: an Enrollment CA from before the CNSA migration (P-384 only). \
             Run `attestation-server rotate enrollment-ca` to make a P-384 CA (the old files \
             are kept), then issue new offline bundles: certificates of the RSA CA are no \
             longer honoured",
            path.display()
        ),
        false => format!(
            "{} is not a P-384 private key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` PEM)",
            path.display()
        ),
    })
}

/// DER of the rsaEncryption OID (1.2.840.113549.1.1.1), tag and length included.
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// The SAN URI prefix that names a machine's TPM.
pub const EK_URI_PREFIX: &str = "urn:itl:ek:";
/// How long the CA itself is valid.
const CA_DAYS: u64 = 3650;

const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// The Enrollment CA: its key and self-signed certificate.
pub struct EnrollmentCa {
    key: SigningKey,
    cert: Certificate,
    cert_pem: String,
    dir: PathBuf,
}

impl std::fmt::Debug for EnrollmentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnrollmentCa({})", self.dir.display())
    }
}

/// A freshly issued machine certificate and its key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// PKCS#8 PEM of the machine's private key.
    pub key_pem: Zeroizing<String>,
    /// Hex of the serial number.
    pub serial: String,
    pub not_after: u64,
}

/// What a valid machine certificate says.
#[derive(Debug, Clone)]
pub struct MachineCert {
    pub machine_id: String,
    pub role: Option<String>,
    /// The EK fingerprint of its `urn:itl:ek:` SAN.
    pub ek_fingerprint: String,
    pub key: VerifyingKey,
    pub serial: String,
}

/// Why a certificate is not a valid machine certificate of this CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal(pub String);

impl std::fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn unix(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

fn time(t: u64) -> Result<Time, String> {
    Time::try_from(unix(t)).map_err(|e| format!("time {t} does not encode: {e}"))
}

fn random_serial(random: &dyn Random) -> Result<(SerialNumber, String), String> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip: exactly 16 bytes
    let serial = SerialNumber::new(&bytes).map_err(|e| e.to_string())?;
    Ok((serial, crate::audit::hex(&bytes)))
}

fn new_key(random: &dyn Random) -> Result<SigningKey, String> {
    loop {
        let mut scalar = [0u8; 48];
        random.fill(&mut scalar);
        if let Ok(k) = SigningKey::from_slice(&scalar) {
            return Ok(k);
        }
    }
}

fn spki(key: &VerifyingKey) -> Result<SubjectPublicKeyInfoOwned, String> {
    let der = key.to_public_key_der().map_err(|e| e.to_string())?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(|e| e.to_string())
}

struct CaProfile {
    subject: Name,
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut out: Vec<Extension> = Vec::new();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        out.push(
            BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            }
            .to_extension(tbs.subject(), &out)?,
        );
        out.push(
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                .to_extension(tbs.subject(), &out)?,
        );
        out.push(ski.to_extension(tbs.subject(), &out)?);
        Ok(out)
    }
}

struct MachineProfile {
    issuer: Name,
    subject: Name,
    ek_uri: Ia5String,
}

impl BuilderProfile for MachineProfile {
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
        let mut out: Vec<Extension> = Vec::new();
        let subject = tbs.subject();
        out.push(
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(subject, &out)?,
        );
        out.push(KeyUsage(KeyUsages::DigitalSignature.into()).to_extension(subject, &out)?);
        out.push(ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]).to_extension(subject, &out)?);
        out.push(
            SubjectAltName(vec![GeneralName::UniformResourceIdentifier(
                self.ek_uri.clone(),
            )])
            .to_extension(subject, &out)?,
        );
        out.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &out)?);
        let aki = SubjectKeyIdentifier::try_from(issuer_spk)?;
        out.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(aki.0),
                ..Default::default()
            }
            .to_extension(subject, &out)?,
        );
        Ok(out)
    }
}

/// Distinguished-name attribute values we put in names: no characters that need escaping.
fn check_name_value(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{what} '{v}' cannot go into a certificate name (1–64 of A-Z a-z 0-9 - _ .)"
        ));
    }
    Ok(())
}

impl EnrollmentCa {
    /// Loads the CA from `dir`, or makes one there on first start. The flag says whether it
    /// was generated now.
    pub fn load_or_generate(dir: &Path) -> Result<(EnrollmentCa, bool), String> {
        let (key_path, cert_path) = ca_files(dir);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => Self::load(dir).map(|ca| (ca, false)),
            (false, false) => Self::generate(dir).map(|ca| (ca, true)),
            (true, false) => Err(format!(
                "{} exists without {}: restore the certificate or remove the key to make a new CA",
                key_path.display(),
                cert_path.display()
            )),
            (false, true) => Err(format!(
                "{} exists without {}: restore the key or remove the certificate to make a new CA",
                cert_path.display(),
                key_path.display()
            )),
        }
    }

    /// Loads an existing CA; refuses a key others can read and a key that does not match
    /// the certificate.
    pub fn load(dir: &Path) -> Result<EnrollmentCa, String> {
        let (key_path, cert_path) = ca_files(dir);
        let mode = std::fs::metadata(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                key_path.display(),
                mode & 0o777
            ));
        }
        let key_pem = Zeroizing::new(
            std::fs::read_to_string(&key_path)
                .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?,
        );
        let key = read_ca_key(key_pem.as_str(), &key_path)?;
        let cert_pem = std::fs::read_to_string(&cert_path)
            .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
        let cert = Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| format!("{} is not a PEM certificate: {e}", cert_path.display()))?;
        let mine = spki(key.verifying_key())?;
        if cert.tbs_certificate().subject_public_key_info() != &mine {
            return Err(format!(
                "the Enrollment CA key {} does not match its certificate {}: restore the \
                 matching pair, or move both away to make a new CA (machines enrolled with \
                 the old CA will need new certificates)",
                key_path.display(),
                cert_path.display()
            ));
        }
        Ok(EnrollmentCa {
            key,
            cert,
            cert_pem,
            dir: dir.to_owned(),
        })
    }

    fn generate(dir: &Path) -> Result<EnrollmentCa, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The CA is made once, at start-up, by the server itself.
        let key = new_key(&OsRandom)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let subject = Name::from_str("CN=ITL Enrollment CA,O=Talos TPM Attestation")
            .map_err(|e| e.to_string())?;
        let (serial, _) = random_serial(&OsRandom)?;
        let validity = Validity::new(time(now - 60)?, time(now + CA_DAYS * 86_400)?);
        let builder = CertificateBuilder::new(
            CaProfile { subject },
            serial,
            validity,
            spki(key.verifying_key())?,
        )
        .map_err(|e| e.to_string())?;
        let cert = builder
            .build::<_, DerSignature>(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        let cert_pem = cert
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let key_pem = Zeroizing::new(
            key.to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string(),
        );
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(text.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        // The key first: a crash between the two leaves a key without a certificate, which
        // start-up names instead of silently making a second CA.
        write(KEY_FILE, key_pem.as_str(), 0o600)?;
        write(CERT_FILE, &cert_pem, 0o644)?;
        Ok(EnrollmentCa {
            key,
            cert,
            cert_pem,
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's serial number, hex.
    pub fn serial(&self) -> String {
        crate::audit::hex(self.cert.tbs_certificate().serial_number().as_bytes())
    }

    /// Where the CA lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a machine certificate with a new P-384 key: CN=machine_id, OU=role, SAN
    /// `urn:itl:ek:<fingerprint>`, EKU clientAuth, valid from a minute before `now` for
    /// `days`.
    pub fn issue(
        &self,
        machine_id: &str,
        role: &str,
        ek_fingerprint: &str,
        now: u64,
        days: u32,
        random: &dyn Random,
    ) -> Result<Issued, String> {
        check_name_value("machine id", machine_id)?;
        check_name_value("role", role)?;
        let ek_uri = Ia5String::new(&format!("{EK_URI_PREFIX}{ek_fingerprint}"))
            .map_err(|e| format!("EK fingerprint does not fit a URI: {e}"))?;
        let subject =
            Name::from_str(&format!("CN={machine_id},OU={role}")).map_err(|e| e.to_string())?;
        let key = new_key(random)?;
        let (serial, serial_hex) = random_serial(random)?;
        let not_after = now + u64::from(days) * 86_400;
        let validity = Validity::new(time(now.saturating_sub(60))?, time(not_after)?);
        let builder = CertificateBuilder::new(
            MachineProfile {
                issuer: self.cert.tbs_certificate().subject().clone(),
                subject,
                ek_uri,
            },
            serial,
            validity,
            spki(key.verifying_key())?,
        )
        .map_err(|e| e.to_string())?;
        let cert = builder
            .build::<_, DerSignature>(&self.key)
            .map_err(|e| format!("cannot sign the machine certificate: {e}"))?;
        Ok(Issued {
            cert_pem: cert
                .to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| e.to_string())?,
            key_pem: Zeroizing::new(
                key.to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| e.to_string())?
                    .to_string(),
            ),
            serial: serial_hex,
            not_after,
        })
    }

    /// Checks a machine certificate (DER): signed by this CA with ECDSA P-384/SHA-384,
    /// valid at `now`, not a CA, EKU clientAuth, exactly one `urn:itl:ek:` SAN, a CN, a
    /// P-384 key. Answers what it says.
    pub fn verify(&self, der: &[u8], now: u64) -> Result<MachineCert, CertRefusal> {
        let refuse = |why: String| Err(CertRefusal(why));
        let cert = match Certificate::from_der(der) {
            Ok(c) => c,
            Err(e) => return refuse(format!("not a DER certificate: {e}")),
        };
        let tbs = cert.tbs_certificate();
        let ca = self.cert.tbs_certificate();
        if tbs.issuer() != ca.subject() {
            return refuse(format!(
                "issued by '{}', not by the Enrollment CA '{}'",
                tbs.issuer(),
                ca.subject()
            ));
        }
        if cert.signature_algorithm().oid != ECDSA_WITH_SHA384
            || tbs.signature().oid != ECDSA_WITH_SHA384
        {
            return refuse("not signed with ECDSA P-384 / SHA-384".into());
        }
        let signed = match tbs.to_der() {
            Ok(d) => d,
            Err(e) => return refuse(format!("certificate body does not encode: {e}")),
        };
        let signature = match cert
            .signature()
            .as_bytes()
            .and_then(|b| DerSignature::from_bytes(b).ok())
        {
            Some(s) => s,
            None => return refuse("malformed certificate signature".into()),
        };
        if self
            .key
            .verifying_key()
            .verify(&signed, &signature)
            .is_err()
        {
            return refuse("signature does not verify with the Enrollment CA key (another CA with the same name?)".into());
        }
        let not_before = tbs.validity().not_before.to_unix_duration().as_secs();
        let not_after = tbs.validity().not_after.to_unix_duration().as_secs();
        if now < not_before {
            return refuse(format!("not valid before {}", tbs.validity().not_before));
        }
        if now > not_after {
            return refuse(format!("expired at {}", tbs.validity().not_after));
        }
        let mut is_ca = None;
        let mut client_auth = false;
        let mut signs = true;
        let mut ek_uris = Vec::new();
        for ext in tbs.extensions().map(|e| e.as_slice()).unwrap_or_default() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == ID_CE_BASIC_CONSTRAINTS {
                is_ca = BasicConstraints::from_der(value).ok().map(|b| b.ca);
            } else if ext.extn_id == ID_CE_KEY_USAGE {
                signs = KeyUsage::from_der(value).is_ok_and(|ku| ku.digital_signature());
            } else if ext.extn_id == ID_CE_EXT_KEY_USAGE {
                client_auth = ExtendedKeyUsage::from_der(value)
                    .is_ok_and(|eku| eku.0.contains(&ID_KP_CLIENT_AUTH));
            } else if ext.extn_id == ID_CE_SUBJECT_ALT_NAME {
                if let Ok(san) = SubjectAltName::from_der(value) {
                    for name in san.0 {
                        if let GeneralName::UniformResourceIdentifier(uri) = name
                            && let Some(fp) = uri.as_str().strip_prefix(EK_URI_PREFIX)
                        {
                            ek_uris.push(fp.to_owned());
                        }
                    }
                }
            } else if ext.critical {
                return refuse(format!("unknown critical extension {}", ext.extn_id));
            }
        }
        if is_ca != Some(false) {
            return refuse("not an end-entity certificate (basicConstraints CA:FALSE)".into());
        }
        if !signs {
            return refuse("key usage does not allow digitalSignature".into());
        }
        if !client_auth {
            return refuse("no clientAuth extended key usage".into());
        }
        let ek_fingerprint = match ek_uris.as_slice() {
            [one] if attest_common::Fingerprint::from_str(one).is_ok() => one.clone(),
            [] => {
                return refuse(format!(
                    "no {EK_URI_PREFIX}<fingerprint> subject alternative name"
                ));
            }
            _ => {
                return refuse(format!(
                    "not exactly one valid {EK_URI_PREFIX}<fingerprint> SAN"
                ));
            }
        };
        let machine_id = match tbs.subject().common_name() {
            Ok(Some(cn)) => String::from(cn),
            _ => return refuse("no common name (machine id)".into()),
        };
        let role = tbs
            .subject()
            .organization_unit()
            .ok()
            .flatten()
            .map(String::from);
        let spki_der = match tbs.subject_public_key_info().to_der() {
            Ok(d) => d,
            Err(e) => return refuse(format!("public key does not encode: {e}")),
        };
        let key = match attest_common::nonce::verifying_key_from_spki(&spki_der) {
            Ok(k) => k,
            Err(_) => return refuse("the certified key is not a P-384 public key".into()),
        };
        Ok(MachineCert {
            machine_id,
            role,
            ek_fingerprint,
            key,
            serial: crate::audit::hex(tbs.serial_number().as_bytes()),
        })
    }
}

/// Whether `key_pem` (PKCS#8) is the private key of the certificate `cert_pem`.
pub fn key_matches_cert(key_pem: &str, cert_pem: &str) -> bool {
    let Ok(key) = SigningKey::from_pkcs8_pem(key_pem) else {
        return false;
    };
    let Ok(cert) = Certificate::from_pem(cert_pem.as_bytes()) else {
        return false;
    };
    spki(key.verifying_key()).is_ok_and(|s| cert.tbs_certificate().subject_public_key_info() == &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn generated_once_then_loaded_and_issues_certificates_it_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, generated) = EnrollmentCa::load_or_generate(dir.path()).unwrap();
        assert!(generated);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, generated) = EnrollmentCa::load_or_generate(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(again.serial(), ca.serial());

        let issued = ca
            .issue("m-1", "worker-app", FP, now(), 30, &OsRandom)
            .unwrap();
        assert!(key_matches_cert(&issued.key_pem, &issued.cert_pem));
        let der = Certificate::from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        let m = again.verify(&der, now()).unwrap();
        assert_eq!(
            (
                m.machine_id.as_str(),
                m.role.as_deref(),
                m.ek_fingerprint.as_str()
            ),
            ("m-1", Some("worker-app"), FP)
        );
        assert_eq!(m.serial, issued.serial);
        // Validity window.
        assert!(
            again
                .verify(&der, now() + 31 * 86_400)
                .unwrap_err()
                .0
                .contains("expired")
        );
        assert!(
            again
                .verify(&der, now() - 3_600)
                .unwrap_err()
                .0
                .contains("not valid before")
        );
        // Another CA with the very same name.
        let other_dir = tempfile::tempdir().unwrap();
        let (other, _) = EnrollmentCa::load_or_generate(other_dir.path()).unwrap();
        assert!(
            other
                .verify(&der, now())
                .unwrap_err()
                .0
                .contains("does not verify")
        );
        // The CA's own certificate is no machine certificate.
        let ca_der = Certificate::from_pem(ca.cert_pem().as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        assert!(ca.verify(&ca_der, now()).is_err());
        // Garbage.
        assert!(ca.verify(b"\x30\x03\x02\x01\x01", now()).is_err());
        assert!(!key_matches_cert(
            &ca.issue("m-2", "r", FP, now(), 1, &OsRandom)
                .unwrap()
                .key_pem,
            &issued.cert_pem
        ));
    }

    #[test]
    fn a_key_that_does_not_match_or_that_others_can_read_stops_loading() {
        let dir = tempfile::tempdir().unwrap();
        EnrollmentCa::load_or_generate(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        EnrollmentCa::load_or_generate(other.path()).unwrap();
        std::fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
        let e = EnrollmentCa::load_or_generate(dir.path()).unwrap_err();
        assert!(e.contains("does not match its certificate"), "{e}");
        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = EnrollmentCa::load_or_generate(dir.path()).unwrap_err();
        assert!(e.contains("readable by others"), "{e}");
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let e = EnrollmentCa::load_or_generate(dir.path()).unwrap_err();
        assert!(e.contains("exists without"), "{e}");
    }

    #[test]
    fn names_that_would_need_escaping_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = EnrollmentCa::load_or_generate(dir.path()).unwrap();
        for (id, role) in [("a,b", "r"), ("a", "r+x"), ("", "r"), ("a", "O=evil")] {
            assert!(
                ca.issue(id, role, FP, now(), 1, &OsRandom).is_err(),
                "{id} {role}"
            );
        }
    }
}
