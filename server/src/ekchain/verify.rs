//! The EK chain verifier: the trust store, AIA fetching when allowed, and the entry points
//! registration calls. How a path is built and checked is `path.rs`; the verdict,
//! `verdict.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::aia::AiaFetcher;
use super::cert::Cert;
use super::path;
use super::policy::EkChainConfig;
use super::store::TrustStore;
use super::verdict::{ChainVerdict, unverified, verified};
use super::{MAX_CERT_BYTES, MAX_INTERMEDIATES};
use crate::config::ConfigError;

/// The EK chain verifier: a trust store and, optionally, AIA fetching. Shared between
/// threads (`Send + Sync`); [`EkChain::verify`] blocks while it fetches, so async callers
/// with fetching on run it off the executor (`smol::unblock`).
#[derive(Debug)]
pub struct EkChain {
    store: TrustStore,
    aia: Option<AiaFetcher>,
}

impl EkChain {
    /// A verifier over `store`, without AIA fetching.
    pub fn new(store: TrustStore) -> EkChain {
        EkChain { store, aia: None }
    }

    /// The same verifier, fetching missing issuers (each fetch bounded by `timeout`; fetched
    /// certificates kept in `cache_dir` too when given).
    pub fn with_aia_fetching(self, timeout: Duration, cache_dir: Option<PathBuf>) -> EkChain {
        EkChain {
            aia: Some(AiaFetcher::new(timeout, cache_dir)),
            ..self
        }
    }

    /// The bundled vendor store, plus `ITL_EK_CA_DIR`, plus AIA fetching if configured.
    pub fn from_config(config: &EkChainConfig) -> Result<EkChain, ConfigError> {
        let mut store = TrustStore::bundled()?;
        if let Some(dir) = &config.ca_dir {
            store.add_dir(dir)?;
        }
        let chain = EkChain::new(store);
        Ok(if config.aia_fetch {
            chain.with_aia_fetching(config.aia_timeout, config.aia_cache_dir.clone())
        } else {
            chain
        })
    }

    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    /// Whether missing issuers are fetched from caIssuers URLs.
    pub fn fetches_aia(&self) -> bool {
        self.aia.is_some()
    }

    /// Verifies the chain of an EK certificate (DER) at `now` (seconds since 1970; only
    /// reported against validity periods).
    pub fn verify(&self, ek_cert_der: &[u8], now: u64) -> ChainVerdict {
        self.verify_with_intermediates(ek_cert_der, &[], now)
    }

    /// Like [`EkChain::verify`], with untrusted intermediate candidates the caller has (the
    /// TPM's EK certificate chain NV indices 0x01c00100 and up, say); at most
    /// [`MAX_INTERMEDIATES`] are used, unreadable ones are ignored.
    pub fn verify_with_intermediates(
        &self,
        ek_cert_der: &[u8],
        intermediates: &[&[u8]],
        now: u64,
    ) -> ChainVerdict {
        if ek_cert_der.len() > MAX_CERT_BYTES {
            return unverified(format!(
                "the EK certificate is larger than {MAX_CERT_BYTES} bytes"
            ));
        }
        let leaf = match Cert::parse(ek_cert_der) {
            Ok(c) => Arc::new(c),
            Err(e) => return unverified(format!("the EK certificate is {e}")),
        };
        let intermediates = intermediates
            .iter()
            .filter(|d| d.len() <= MAX_CERT_BYTES)
            .filter_map(|d| Cert::parse(d).ok())
            .take(MAX_INTERMEDIATES)
            .map(Arc::new)
            .collect();
        match path::build(&self.store, self.aia.as_ref(), leaf, intermediates, now) {
            Ok(found) => verified(&found, now),
            Err(reason) => unverified(reason),
        }
    }
}
