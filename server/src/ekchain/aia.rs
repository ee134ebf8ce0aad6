//! Fetching a missing issuer from the caIssuers URL of a certificate's Authority Information
//! Access extension (`ITL_EK_AIA_FETCH=true` only).
//!
//! AMD fTPM and newer Intel PTT EK certificates name their issuer this way instead of being
//! covered by the vendor bundle. A fetched certificate is only a candidate intermediate: it
//! must be a CA and must itself chain to the trust store, like any other.
//!
//! The URL comes from a certificate the agent sent: with fetching on, anyone who can reach
//! the registration endpoint can make the server send a GET to a URL of their choosing. So
//! fetching is off by default, each fetch is bounded (time, 64 KiB, http/https only, at most
//! [`super::MAX_AIA_FETCHES`] per verification), what came back is never shown beyond "not a
//! certificate", and a URL that failed is not tried again for [`RETRY_AFTER_SECONDS`].
//! Answers are cached in memory (bounded) and, given a directory, on disk (one DER file per
//! URL, named by the SHA-256 of the URL), so a restart does not fetch again. Only a
//! certificate that a verified chain used is written to disk (`keep`): the URLs come from
//! agents, and what they point at must not fill the disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::cert::Cert;
use super::store::read_certificates;

/// Largest answer accepted.
pub const MAX_AIA_BYTES: u64 = 64 * 1024;
/// A URL whose fetch failed is tried again after this long.
pub const RETRY_AFTER_SECONDS: u64 = 600;
/// Memory cache entries kept (the cache starts over when full).
const MAX_ENTRIES: usize = 256;

#[derive(Debug, Clone)]
enum Entry {
    Cert(Arc<Cert>),
    Failed { at: u64, reason: String },
}

/// The fetcher and its cache.
pub(crate) struct AiaFetcher {
    agent: ureq::Agent,
    cache_dir: Option<PathBuf>,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for AiaFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiaFetcher")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl AiaFetcher {
    pub(crate) fn new(timeout: Duration, cache_dir: Option<PathBuf>) -> AiaFetcher {
        AiaFetcher {
            agent: crate::outbound::agent(timeout),
            cache_dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The CA certificate at `url`: from memory, from the disk cache, or fetched.
    pub(crate) fn get(&self, url: &str, now: u64) -> Result<Arc<Cert>, String> {
        match self.lock().get(url) {
            Some(Entry::Cert(c)) => return Ok(c.clone()),
            Some(Entry::Failed { at, reason }) if now < at.saturating_add(RETRY_AFTER_SECONDS) => {
                return Err(reason.clone());
            }
            _ => {}
        }
        let from_disk = self
            .disk_path(url)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|der| accept(&der).ok());
        let result = match from_disk {
            Some(cert) => Ok(cert),
            None => self.fetch(url).and_then(|bytes| accept(&bytes)),
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        let entry = match &result {
            Ok(c) => Entry::Cert(c.clone()),
            Err(reason) => Entry::Failed {
                at: now,
                reason: reason.clone(),
            },
        };
        cache.insert(url.to_owned(), entry);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere cannot leave a half-written entry: each is inserted whole.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url}: not an http(s) URL"));
        }
        // What went wrong on the network stays in the server's log: the reason reaches
        // whoever registered (the URL was theirs), and "connection refused" against
        // "timed out" would make the server a port scanner for them.
        let unreachable = |e: ureq::Error| {
            crate::log::warn(&format!(
                "AIA fetch of {} failed: {}",
                crate::log::escape(url),
                crate::log::escape(&e.to_string())
            ));
            format!("{url} could not be fetched (the server's log says why)")
        };
        let mut response = self.agent.get(url).call().map_err(unreachable)?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_AIA_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    format!("{url}: answer larger than {MAX_AIA_BYTES} bytes")
                }
                e => unreachable(e),
            })
    }

    fn disk_path(&self, url: &str) -> Option<PathBuf> {
        let digest = Sha256::digest(url.as_bytes());
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{}.der", crate::audit::hex(&digest))))
    }

    /// Keeps the certificate fetched from `url` on disk (a verified chain used it). Best
    /// effort: a cache that cannot be written only means fetching again after a restart.
    pub(crate) fn keep(&self, url: &str, der: &[u8]) {
        let Some(path) = self.disk_path(url) else {
            return;
        };
        if path.exists() {
            return;
        }
        let tmp = path.with_extension("tmp");
        let _ = path
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(&tmp, der))
            .and_then(|()| std::fs::rename(&tmp, &path));
    }
}

/// One CA certificate, DER or PEM, and nothing else.
fn accept(bytes: &[u8]) -> Result<Arc<Cert>, String> {
    let refuse = || "the answer is not one CA certificate (DER or PEM)".to_owned();
    let [der] = &read_certificates(bytes).map_err(|_| refuse())?[..] else {
        return Err(refuse());
    };
    let cert = Cert::parse(der).map_err(|_| refuse())?;
    if !cert.is_ca() {
        return Err(refuse());
    }
    Ok(Arc::new(cert))
}
