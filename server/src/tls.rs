//! TLS termination in the server (DESIGN.md §3.10): rustls on aws-lc-rs.
//!
//! With `ITL_TLS_CERT` (the PEM chain, leaf first) and `ITL_TLS_KEY` (its PEM private key,
//! PKCS#8, SEC1 or PKCS#1, mode 0600 or stricter) the listener serves HTTPS only; without
//! them plain HTTP, for a TLS terminator in front (`ITL_TRUSTED_PROXIES`). The settings:
//!
//! - `ITL_TLS_MIN_VERSION`: `1.2` (default) or `1.3`;
//! - `ITL_TLS_CIPHERS`: comma-separated suite names as rustls spells them
//!   (`TLS13_AES_256_GCM_SHA384`, `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`, ...; the
//!   TLS 1.3 suites also under their IANA names, `TLS_AES_256_GCM_SHA384`), in order of
//!   preference; default: rustls' defaults;
//! - `ITL_HIGH_ASSURANCE=true`: CNSA 1.0, TLS 1.3 only with `TLS_AES_256_GCM_SHA384` and
//!   the `secp384r1` group only, and a P-384 certificate key. It overrides the two above; a
//!   value of theirs that says otherwise is refused rather than silently ignored.
//!
//! The handshake runs in the connection's task, under a deadline of the idle timeout
//! (`crate::listener`), so a client that opens a connection and stalls its handshake holds
//! its slot no longer than an idle connection does.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};

use crate::config::ConfigError;

/// The TLS protocol versions a server accepts at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }
}

/// What TLS the listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// `ITL_HIGH_ASSURANCE=true`: CNSA 1.0.
    HighAssurance,
    Standard {
        /// `ITL_TLS_MIN_VERSION`.
        min_version: MinVersion,
        /// `ITL_TLS_CIPHERS`, in the operator's order; `None`: rustls' defaults.
        ciphers: Option<Vec<CipherSuite>>,
    },
}

/// `ITL_TLS_*`: where the certificate and key are, and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub policy: TlsPolicy,
}

/// The one suite, group and version of CNSA 1.0 in TLS 1.3.
const CNSA_SUITE: CipherSuite = CipherSuite::TLS13_AES_256_GCM_SHA384;

impl TlsSettings {
    /// Reads the TLS variables; `None` when neither certificate nor key is set (plain
    /// HTTP). Only the values are checked here; the files are read by [`server_config`].
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let set = |v: &'static str| get(v).filter(|s| !s.trim().is_empty());
        let high_assurance = match set("ITL_HIGH_ASSURANCE").as_deref().map(str::trim) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "ITL_HIGH_ASSURANCE",
                    message: format!("'{other}' is neither true nor false"),
                });
            }
        };
        let min_version = match set("ITL_TLS_MIN_VERSION").as_deref().map(str::trim) {
            None => None,
            Some("1.2") => Some(MinVersion::Tls12),
            Some("1.3") => Some(MinVersion::Tls13),
            Some(other) => {
                return Err(ConfigError {
                    variable: "ITL_TLS_MIN_VERSION",
                    message: format!("'{other}' is neither 1.2 nor 1.3"),
                });
            }
        };
        let ciphers = match set("ITL_TLS_CIPHERS") {
            None => None,
            Some(list) => Some(parse_ciphers(&list).map_err(|message| ConfigError {
                variable: "ITL_TLS_CIPHERS",
                message,
            })?),
        };
        let (cert, key) = match (set("ITL_TLS_CERT"), set("ITL_TLS_KEY")) {
            (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
            (Some(_), None) => {
                return Err(ConfigError {
                    variable: "ITL_TLS_KEY",
                    message: "required with ITL_TLS_CERT (the certificate's private key, PEM)"
                        .into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    variable: "ITL_TLS_CERT",
                    message: "required with ITL_TLS_KEY (the certificate chain, PEM)".into(),
                });
            }
            (None, None) => {
                // Nothing TLS applies to: a TLS setting given anyway is a mistake to name.
                let given = [
                    ("ITL_HIGH_ASSURANCE", high_assurance),
                    ("ITL_TLS_MIN_VERSION", min_version.is_some()),
                    ("ITL_TLS_CIPHERS", ciphers.is_some()),
                ];
                if let Some((variable, _)) = given.iter().find(|(_, set)| *set) {
                    return Err(ConfigError {
                        variable,
                        message: "needs ITL_TLS_CERT and ITL_TLS_KEY: without them the server \
                                  serves plain HTTP, and cannot hold a TLS terminator in front \
                                  of it to this setting"
                            .into(),
                    });
                }
                return Ok(None);
            }
        };
        let policy = if high_assurance {
            if min_version == Some(MinVersion::Tls12) {
                return Err(ConfigError {
                    variable: "ITL_TLS_MIN_VERSION",
                    message: "1.2 conflicts with ITL_HIGH_ASSURANCE=true (CNSA 1.0: TLS 1.3 \
                              only); leave it unset or set 1.3"
                        .into(),
                });
            }
            if let Some(c) = &ciphers
                && c.as_slice() != [CNSA_SUITE]
            {
                return Err(ConfigError {
                    variable: "ITL_TLS_CIPHERS",
                    message: format!(
                        "{} conflicts with ITL_HIGH_ASSURANCE=true (CNSA 1.0: \
                         TLS13_AES_256_GCM_SHA384 only); leave it unset",
                        names(c)
                    ),
                });
            }
            TlsPolicy::HighAssurance
        } else {
            let min_version = min_version.unwrap_or(MinVersion::Tls12);
            if let Some(c) = &ciphers
                && min_version == MinVersion::Tls13
                && !c.iter().any(|s| is_tls13(*s))
            {
                return Err(ConfigError {
                    variable: "ITL_TLS_CIPHERS",
                    message: format!(
                        "{} has no TLS 1.3 suite, and ITL_TLS_MIN_VERSION=1.3",
                        names(c)
                    ),
                });
            }
            TlsPolicy::Standard {
                min_version,
                ciphers,
            }
        };
        Ok(Some(TlsSettings { cert, key, policy }))
    }
}

fn is_tls13(suite: CipherSuite) -> bool {
    supported(suite).is_some_and(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
}

fn supported(suite: CipherSuite) -> Option<SupportedCipherSuite> {
    provider::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .find(|s| s.suite() == suite)
}

/// rustls' name of a suite (`TLS13_AES_256_GCM_SHA384`).
pub fn suite_name(suite: CipherSuite) -> String {
    format!("{suite:?}")
}

fn names(suites: &[CipherSuite]) -> String {
    suites
        .iter()
        .map(|s| suite_name(*s))
        .collect::<Vec<_>>()
        .join(",")
}

/// `ITL_TLS_CIPHERS`: names rustls with aws-lc-rs supports, in order, no repeats.
pub fn parse_ciphers(list: &str) -> Result<Vec<CipherSuite>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // The TLS 1.3 suites under their IANA (and OpenSSL) names too.
        let rustls_name = match name.to_ascii_uppercase().as_str() {
            n @ ("TLS_AES_256_GCM_SHA384"
            | "TLS_AES_128_GCM_SHA256"
            | "TLS_CHACHA20_POLY1305_SHA256") => n.replacen("TLS_", "TLS13_", 1),
            n => n.to_owned(),
        };
        let suite = provider::ALL_CIPHER_SUITES
            .iter()
            .map(|s| s.suite())
            .find(|s| suite_name(*s) == rustls_name)
            .ok_or_else(|| {
                format!(
                    "'{name}' is not a cipher suite this server supports; these are: {}",
                    names(
                        &provider::ALL_CIPHER_SUITES
                            .iter()
                            .map(|s| s.suite())
                            .collect::<Vec<_>>()
                    )
                )
            })?;
        if out.contains(&suite) {
            return Err(format!("'{name}' is named twice"));
        }
        out.push(suite);
    }
    if out.is_empty() {
        return Err("names no cipher suite".into());
    }
    Ok(out)
}

/// The crypto provider a policy allows: the suites, the key-exchange groups.
pub fn crypto_provider(policy: &TlsPolicy) -> CryptoProvider {
    let mut p = provider::default_provider();
    match policy {
        TlsPolicy::HighAssurance => {
            p.cipher_suites = vec![provider::cipher_suite::TLS13_AES_256_GCM_SHA384];
            p.kx_groups = vec![provider::kx_group::SECP384R1];
        }
        TlsPolicy::Standard { ciphers, .. } => {
            if let Some(c) = ciphers {
                p.cipher_suites = c.iter().filter_map(|s| supported(*s)).collect();
            }
        }
    }
    p
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(policy: &TlsPolicy) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match policy {
        TlsPolicy::HighAssurance
        | TlsPolicy::Standard {
            min_version: MinVersion::Tls13,
            ..
        } => &TLS13_ONLY,
        TlsPolicy::Standard {
            min_version: MinVersion::Tls12,
            ..
        } => &TLS13_AND_12,
    }
}

/// The server's TLS, ready to serve: its configuration, and what to say about it.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The certificate chain served (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// One line for the log: the certificate, its expiry, versions, suites, groups.
    pub summary: String,
}

fn error(variable: &'static str, message: String) -> ConfigError {
    ConfigError { variable, message }
}

/// Reads the certificate and key and builds the server's TLS configuration. Refused (naming
/// the variable): a key file readable by group or others, files that are not PEM of the
/// right kind, a key that is not the certificate's, a suite list the key cannot use, and
/// under `ITL_HIGH_ASSURANCE` a certificate key other than P-384.
pub fn server_config(settings: &TlsSettings) -> Result<ServerTls, ConfigError> {
    let chain = read_chain(&settings.cert).map_err(|m| error("ITL_TLS_CERT", m))?;
    let key = read_key(&settings.key).map_err(|m| error("ITL_TLS_KEY", m))?;
    let leaf = Leaf::parse(&chain[0]).map_err(|m| error("ITL_TLS_CERT", m))?;
    if settings.policy == TlsPolicy::HighAssurance && !leaf.p384 {
        return Err(error(
            "ITL_TLS_CERT",
            format!(
                "{}: the certificate's key is {}, and ITL_HIGH_ASSURANCE=true (CNSA 1.0) needs \
                 an ECDSA P-384 key",
                settings.cert.display(),
                leaf.key_kind
            ),
        ));
    }
    let provider = Arc::new(crypto_provider(&settings.policy));
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        error(
            "ITL_TLS_KEY",
            format!("{}: not a usable private key: {e}", settings.key.display()),
        )
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(error(
                "ITL_TLS_KEY",
                format!(
                    "{} is not the private key of the certificate in {} (ITL_TLS_CERT)",
                    settings.key.display(),
                    settings.cert.display()
                ),
            ));
        }
    }
    let algorithm = certified.key.algorithm();
    let tls13 = versions(&settings.policy).contains(&&rustls::version::TLS13)
        && provider
            .cipher_suites
            .iter()
            .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    if !tls13
        && !provider
            .cipher_suites
            .iter()
            .any(|s| s.usable_for_signature_algorithm(algorithm))
    {
        return Err(error(
            "ITL_TLS_CIPHERS",
            format!(
                "none of these TLS 1.2 suites signs with the certificate's {algorithm:?} key, \
                 and no TLS 1.3 suite is allowed"
            ),
        ));
    }
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(&settings.policy))
        .map_err(|e| error("ITL_TLS_CIPHERS", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCert(Arc::new(certified))));
    // HTTP/1.1 only (hyper's http1 server).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's preference, so that an operator's ITL_TLS_CIPHERS order is the order.
    config.ignore_client_order = true;
    let summary = format!(
        "TLS on: certificate {} ({}, {} in chain, valid until {}{}); TLS {}; suites {}; \
         groups {}{}",
        leaf.subject,
        leaf.key_kind,
        chain.len(),
        leaf.not_after,
        if leaf.expired { ", EXPIRED" } else { "" },
        match versions(&settings.policy) {
            [_] => "1.3 only",
            _ => "1.2 and 1.3",
        },
        provider
            .cipher_suites
            .iter()
            .map(|s| suite_name(s.suite()))
            .collect::<Vec<_>>()
            .join(","),
        provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect::<Vec<_>>()
            .join(","),
        if settings.policy == TlsPolicy::HighAssurance {
            " (ITL_HIGH_ASSURANCE: CNSA 1.0)"
        } else {
            ""
        }
    );
    Ok(ServerTls {
        config: Arc::new(config),
        chain,
        summary,
    })
}

/// The one certificate this server has, whatever the client asks for.
#[derive(Debug)]
struct SingleCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(chain)
}

/// The private key, refused when group or others may read it (as the response key).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "{} holds no PEM private key (PKCS#8, SEC1 or PKCS#1): {e}",
            path.display()
        )
    })
}

/// What the log and the CNSA check need of the leaf certificate.
struct Leaf {
    subject: String,
    not_after: String,
    expired: bool,
    key_kind: String,
    p384: bool,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        use x509_cert::der::{Decode as _, oid::ObjectIdentifier};
        const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
        const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
        const CURVES: [(&str, &str); 3] = [
            ("1.2.840.10045.3.1.7", "P-256"),
            ("1.3.132.0.34", "P-384"),
            ("1.3.132.0.35", "P-521"),
        ];
        let cert = x509_cert::Certificate::from_der(der.as_ref())
            .map_err(|e| format!("the first certificate does not decode: {e}"))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let key_kind = if spki.algorithm.oid == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve.and_then(|c| CURVES.iter().find(|(oid, _)| c.to_string() == *oid)) {
                Some((_, name)) => format!("ECDSA {name}"),
                None => "ECDSA on another curve".to_owned(),
            }
        } else if spki.algorithm.oid == RSA {
            "RSA".to_owned()
        } else {
            format!("a key of type {}", spki.algorithm.oid)
        };
        let not_after = tbs.validity().not_after.to_unix_duration();
        let now = UnixTime::now().as_secs();
        Ok(Leaf {
            subject: tbs.subject().to_string(),
            not_after: tbs.validity().not_after.to_string(),
            expired: not_after.as_secs() < now,
            p384: key_kind == "ECDSA P-384",
            key_kind,
        })
    }
}

/// The leaf certificate `settings` name (for a client of this server's own: the warm-up,
/// `attestation-server backup`).
pub fn served_leaf(settings: &TlsSettings) -> Result<CertificateDer<'static>, ConfigError> {
    let mut chain = read_chain(&settings.cert).map_err(|m| error("ITL_TLS_CERT", m))?;
    Ok(chain.swap_remove(0))
}

/// A client for the server's request to itself (`crate::listener::warm_up`) over its own
/// TLS: the same provider and versions as the server, and it trusts exactly the leaf
/// certificate the server serves (whatever name that certificate is for).
pub fn self_client(policy: &TlsPolicy, leaf: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(crypto_provider(policy));
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(policy))
        .expect("the server's own versions and suites")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedLeaf { leaf, provider }))
        .with_no_client_auth();
    Arc::new(config)
}

/// The name the warm-up client asks for: the loopback address it connects to.
pub fn self_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// Accepts exactly one end-entity certificate, with signatures checked as usual.
#[derive(Debug)]
struct PinnedLeaf {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<TlsSettings>, ConfigError> {
        TlsSettings::from_lookup(&lookup(pairs))
    }

    const FILES: [(&str, &str); 2] = [("ITL_TLS_CERT", "/c.pem"), ("ITL_TLS_KEY", "/k.pem")];

    fn with_files(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = FILES.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn both_files_or_neither() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[("ITL_TLS_CERT", "/c.pem")])
                .unwrap_err()
                .variable,
            "ITL_TLS_KEY"
        );
        assert_eq!(
            settings(&[("ITL_TLS_KEY", "/k.pem")]).unwrap_err().variable,
            "ITL_TLS_CERT"
        );
        let s = settings(&FILES).unwrap().unwrap();
        assert_eq!(s.cert, PathBuf::from("/c.pem"));
        assert_eq!(
            s.policy,
            TlsPolicy::Standard {
                min_version: MinVersion::Tls12,
                ciphers: None
            }
        );
        // A TLS setting without TLS is named, not ignored.
        for v in [
            "ITL_HIGH_ASSURANCE",
            "ITL_TLS_MIN_VERSION",
            "ITL_TLS_CIPHERS",
        ] {
            let value = match v {
                "ITL_HIGH_ASSURANCE" => "true",
                "ITL_TLS_MIN_VERSION" => "1.3",
                _ => "TLS_AES_256_GCM_SHA384",
            };
            let e = settings(&[(v, value)]).unwrap_err();
            assert_eq!(e.variable, v);
            assert!(e.message.contains("ITL_TLS_CERT"), "{e}");
        }
        assert_eq!(settings(&[("ITL_HIGH_ASSURANCE", "false")]).unwrap(), None);
    }

    #[test]
    fn versions_and_ciphers_are_checked() {
        let e = settings(&with_files(&[("ITL_TLS_MIN_VERSION", "1.1")])).unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_MIN_VERSION");
        let e = settings(&with_files(&[(
            "ITL_TLS_CIPHERS",
            "TLS_RSA_WITH_RC4_128_MD5",
        )]))
        .unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_CIPHERS");
        assert!(e.message.contains("TLS13_AES_256_GCM_SHA384"), "{e}");
        let s = settings(&with_files(&[(
            "ITL_TLS_CIPHERS",
            "tls_aes_256_gcm_sha384, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.policy,
            TlsPolicy::Standard {
                min_version: MinVersion::Tls12,
                ciphers: Some(vec![
                    CipherSuite::TLS13_AES_256_GCM_SHA384,
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                ])
            }
        );
        assert!(
            parse_ciphers("TLS13_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_ciphers(" , ").is_err());
        let e = settings(&with_files(&[
            ("ITL_TLS_MIN_VERSION", "1.3"),
            ("ITL_TLS_CIPHERS", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_CIPHERS");
        assert!(e.message.contains("no TLS 1.3 suite"), "{e}");
    }

    #[test]
    fn high_assurance_overrides_and_refuses_conflicts() {
        let s = settings(&with_files(&[("ITL_HIGH_ASSURANCE", "true")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.policy, TlsPolicy::HighAssurance);
        // Saying the same is fine.
        let same = settings(&with_files(&[
            ("ITL_HIGH_ASSURANCE", "true"),
            ("ITL_TLS_MIN_VERSION", "1.3"),
            ("ITL_TLS_CIPHERS", "TLS_AES_256_GCM_SHA384"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(same.policy, TlsPolicy::HighAssurance);
        let e = settings(&with_files(&[
            ("ITL_HIGH_ASSURANCE", "true"),
            ("ITL_TLS_MIN_VERSION", "1.2"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_MIN_VERSION");
        assert!(e.message.contains("ITL_HIGH_ASSURANCE"), "{e}");
        let e = settings(&with_files(&[
            ("ITL_HIGH_ASSURANCE", "true"),
            (
                "ITL_TLS_CIPHERS",
                "TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256",
            ),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "ITL_TLS_CIPHERS");
        let e = settings(&with_files(&[("ITL_HIGH_ASSURANCE", "yes")])).unwrap_err();
        assert_eq!(e.variable, "ITL_HIGH_ASSURANCE");

        let p = crypto_provider(&TlsPolicy::HighAssurance);
        assert_eq!(
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>(),
            [CipherSuite::TLS13_AES_256_GCM_SHA384]
        );
        assert_eq!(
            p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>(),
            [rustls::NamedGroup::secp384r1]
        );
        assert_eq!(
            versions(&TlsPolicy::HighAssurance),
            [&rustls::version::TLS13]
        );
    }
}
