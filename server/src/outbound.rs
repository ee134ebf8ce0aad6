//! HTTP clients for the services the server calls (the OpenID provider, the Talos Image
//! Factory): bounded time, HTTPS through rustls on aws-lc-rs (the crypto stack the server
//! already carries) with the Web PKI roots.

use std::sync::Arc;
use std::time::Duration;

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
        .root_certs(ureq::tls::RootCerts::WebPki)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .tls_config(tls)
}
