//! The EK trust store: the vendor CA certificates compiled into the server, plus an
//! operator's own (`ITL_EK_CA_DIR`).
//!
//! Every certificate in the store is a trust anchor, intermediates included, as in Keylime
//! (OpenSSL's partial-chain mode): a vendor publishes intermediates for exactly that, and an
//! operator who adds an intermediate trusts it. A certificate is checked when it is loaded
//! (it must parse and be a CA: basicConstraints cA, keyCertSign if keyUsage is present, no
//! critical extension this verifier does not process); its own signature and validity are
//! not (an anchor is trusted by configuration). Anything wrong stops start-up with a message
//! naming the file: a store that silently dropped a certificate would refuse TPMs later, far
//! from the cause.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use x509_cert::der::pem;

use super::bundled::BUNDLED;
use super::cert::Cert;
use super::name::{Name, NameKey};
use crate::config::ConfigError;

/// File name endings read from `ITL_EK_CA_DIR` (other files are ignored).
pub const CA_FILE_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];

/// Trusted CA certificates, indexed by subject name.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    certs: Vec<Arc<Cert>>,
    /// Where each certificate came from (bundled file name, or path).
    origins: Vec<String>,
    by_subject: HashMap<NameKey, Vec<usize>>,
}

/// One certificate of a [`TrustStore`], for listings.
#[derive(Debug, Clone, Copy)]
pub struct StoreEntry<'a> {
    /// The bundled file's name, or the path it was loaded from.
    pub origin: &'a str,
    /// The certificate DER.
    pub der: &'a [u8],
}

impl TrustStore {
    /// A store without certificates (tests; `bundled` is the real start).
    pub fn empty() -> TrustStore {
        TrustStore::default()
    }

    /// The vendor certificates compiled into the server (`server/ek-roots/`).
    pub fn bundled() -> Result<TrustStore, ConfigError> {
        let mut store = TrustStore::empty();
        for (file, pem) in BUNDLED {
            store.add(file, pem).map_err(|message| ConfigError {
                variable: "ITL_EK_CHAIN",
                message: format!("bundled EK CA certificate {file}: {message}"),
            })?;
        }
        Ok(store)
    }

    /// Adds every certificate file of `dir` (`*.pem`, `*.crt`, `*.cer`, `*.der`; PEM with one
    /// or more CERTIFICATE blocks, or one DER certificate). Returns how many certificates it
    /// added; an error names the file.
    pub fn add_dir(&mut self, dir: &Path) -> Result<usize, ConfigError> {
        let fail = |message: String| ConfigError {
            variable: "ITL_EK_CA_DIR",
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("cannot read directory {}: {e}", dir.display())))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| fail(format!("cannot read directory {}: {e}", dir.display())))?
                .path();
            let wanted = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CA_FILE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if wanted && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut added = 0;
        for path in paths {
            let bytes = std::fs::read(&path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            added += self
                .add(&path.display().to_string(), &bytes)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        }
        Ok(added)
    }

    /// Adds the certificates in `bytes` (PEM or DER), all or none. Returns how many were new.
    pub fn add(&mut self, origin: &str, bytes: &[u8]) -> Result<usize, String> {
        let certs = read_certificates(bytes)?;
        let mut checked = Vec::new();
        for (i, der) in certs.iter().enumerate() {
            let which = if certs.len() > 1 {
                format!("certificate {} of {}: ", i + 1, certs.len())
            } else {
                String::new()
            };
            let cert = Cert::parse(der).map_err(|e| format!("{which}{e}"))?;
            if let Some(why) = cert.ca_refusal() {
                return Err(format!(
                    "{which}{why}; only CA certificates can be EK trust anchors"
                ));
            }
            checked.push(cert);
        }
        let mut added = 0;
        for cert in checked {
            if self.certs.iter().any(|c| c.der == cert.der) {
                continue;
            }
            self.by_subject
                .entry(cert.subject.key.clone())
                .or_default()
                .push(self.certs.len());
            self.certs.push(Arc::new(cert));
            self.origins.push(origin.to_owned());
            added += 1;
        }
        Ok(added)
    }

    /// How many distinct certificates the store holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Every certificate with its origin, in the order they were added.
    pub fn entries(&self) -> impl Iterator<Item = StoreEntry<'_>> {
        self.certs
            .iter()
            .zip(&self.origins)
            .map(|(c, o)| StoreEntry {
                origin: o,
                der: &c.der,
            })
    }

    /// Certificates whose subject is `name`.
    pub(crate) fn by_subject(&self, name: &Name) -> impl Iterator<Item = &Arc<Cert>> {
        self.by_subject
            .get(&name.key)
            .into_iter()
            .flatten()
            .map(|i| &self.certs[*i])
    }

    /// Whether `cert` (the same DER) is in the store.
    pub(crate) fn contains(&self, cert: &Cert) -> bool {
        self.by_subject(&cert.subject).any(|c| c.der == cert.der)
    }
}

/// The certificates of a PEM file (every block must be a CERTIFICATE; text around blocks is
/// allowed, as OpenSSL writes it) or of a DER file (exactly one certificate).
pub(crate) fn read_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither PEM nor DER".to_owned())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let end_marker = after
            .find("-----END ")
            .ok_or_else(|| "a PEM block has no END line".to_owned())?;
        let close = after[end_marker + 9..]
            .find("-----")
            .ok_or_else(|| "a PEM END line is cut off".to_owned())?;
        let block_end = end_marker + 9 + close + 5;
        let (label, der) = pem::decode_vec(&after.as_bytes()[..block_end])
            .map_err(|e| format!("bad PEM block: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("holds a PEM block '{label}', not a CERTIFICATE"));
        }
        out.push(der);
        rest = &after[block_end..];
    }
    if out.is_empty() {
        return Err("no PEM CERTIFICATE block and not DER".into());
    }
    Ok(out)
}
