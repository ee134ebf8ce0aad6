//! HTTP clients for the services the server calls (the OpenID provider, the Talos Image
//! Factory): bounded time, HTTPS through rustls on aws-lc-rs (the crypto stack the server
//! already carries) with the Web PKI roots, and the CA certificates of `ITL_CA_FILE` besides
//! them (a provider behind a private CA).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts};

/// The roots when `ITL_CA_FILE` adds some: the Web PKI's and those.
static ROOTS: OnceLock<RootCerts> = OnceLock::new();

/// Trusts the CA certificates (PEM) in `path` for every outbound call from now on, besides
/// the Web PKI roots. Called once, at start-up.
pub fn add_roots_from(path: &Path) -> Result<usize, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let extra = pem_certificates(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = extra.len();
    let all = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()))
        .chain(extra);
    ROOTS
        .set(RootCerts::from(all))
        .map_err(|_| "the outbound roots are set already".to_owned())?;
    Ok(n)
}

/// The certificates of a PEM bundle (other PEM sections are skipped); none is an error.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let certs = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// An agent whose every call gives up after `timeout` (connecting: at most 5 s of it).
pub fn agent(timeout: Duration) -> ureq::Agent {
    config(timeout)
        .user_agent(concat!("attestation-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn config(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(ROOTS.get().cloned().unwrap_or(RootCerts::WebPki))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .tls_config(tls)
}
