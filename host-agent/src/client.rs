//! The agent's HTTP client: the agent-facing half of the server's API.
//!
//! Answers are decoded into `common`'s bounded wire types, and bodies are read with a cap,
//! so a hostile or broken server cannot make the agent allocate without bound. Server
//! errors keep their status, code and `Retry-After`, because the attest loop's backoff
//! depends on them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use attest_common::wire::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, EnrollRequest,
    EnrollResponse, RegisterRequest, RegisterResponse, from_json,
};
use serde::de::DeserializeOwned;

/// Largest answer body read (a machine config is the largest answer).
const MAX_BODY: u64 = 1 << 20;
/// A `Retry-After` longer than this is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The server answered, but not with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// The server's error code (`nonce_expired`, `machine_refused`, ...).
    pub code: String,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server answered {} {}: {}",
            self.status, self.code, self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A transport error, with what to do when it is a certificate the agent does not trust.
fn explain(e: &ureq::Error) -> String {
    // rustls' error comes as itself, or inside an I/O error.
    let rustls_error = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "{e}: the server's TLS certificate is not trusted ({why:?}); if it is signed by a \
             private CA, set ca_file (--ca-file, ATTEST_AGENT_CA_FILE) to that CA"
        ),
        _ => e.to_string(),
    }
}

pub struct Client {
    base: String,
    http: ureq::Agent,
    /// Whether `http://` URLs may be fetched (`allow_plain_http`).
    allow_plain_http: bool,
}

/// `url` as it may be printed or logged: a config URL's token (a bearer secret: the
/// single-use URL serves the config with its secrets, the long-lived one its public part)
/// replaced by a marker.
pub fn shown(url: &str) -> String {
    const CONFIG: &str = "/api/v1/config/";
    match url.find(CONFIG) {
        Some(at) if url.len() > at + CONFIG.len() => {
            format!("{}<token, not shown>", &url[..at + CONFIG.len()])
        }
        _ => url.to_owned(),
    }
}

/// The warning about plain HTTP, once per process.
static PLAIN_HTTP_WARNING: std::sync::Once = std::sync::Once::new();

impl Client {
    /// A client for the server at `base`; `ca_pem` replaces the web roots for https. A
    /// plain `http://` URL, the base's or one the server hands out, is fetched only when
    /// `allow_plain_http`.
    pub fn new(
        base: &str,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
        allow_plain_http: bool,
    ) -> Result<Client> {
        let roots = match ca_pem {
            Some(pem) => {
                let certs = ureq::tls::parse_pem(pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .context("the CA file is not PEM")?;
                if certs.is_empty() {
                    anyhow::bail!("the CA file holds no certificate");
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
            None => ureq::tls::RootCerts::WebPki,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(roots)
            .build();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .user_agent(concat!("attest-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            allow_plain_http,
        })
    }

    /// A client for `server` with the settings' timeout and CA file. A plain `http://`
    /// server is refused (exit status 2) unless `allow_plain_http` is set, and then warned
    /// about on stderr, once per process.
    pub fn for_server(settings: &crate::config::Settings, server: &str) -> Result<Client> {
        settings
            .check_scheme(server)
            .map_err(|e| crate::agent::Fatal(format!("{e:#}")))?;
        if crate::config::is_plain_http(server) {
            PLAIN_HTTP_WARNING.call_once(|| {
                eprintln!(
                    "attest-agent: warning: plain HTTP to {server} (allow_plain_http): \
                     attestations and machine configs, with their secrets, travel \
                     unencrypted; use https:// in production"
                );
            });
        }
        let ca = match &settings.ca_file {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Client::new(
            server,
            settings.timeout,
            ca.as_deref(),
            settings.allow_plain_http,
        )
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> Result<String> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        if crate::config::is_plain_http(&url) && !self.allow_plain_http {
            return Err(anyhow!(
                "{} is plain HTTP, and allow_plain_http is not set: not fetched (is the \
                 server's ITL_SERVICE_URL http://?)",
                shown(&url)
            ));
        }
        Ok(url)
    }

    /// Sends a request; answers the body of a 2xx, else the server's error.
    fn send(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, Vec<u8>)> {
        let url = self.url(path)?;
        let result = match body {
            Some(b) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .send(b.as_bytes()),
            None if method == "POST" => self.http.post(&url).send_empty(),
            None => self.http.get(&url).call(),
        };
        let mut response =
            result.map_err(|e| anyhow!("{method} {}: {}", shown(&url), explain(&e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| anyhow!("{method} {}: reading the answer: {e}", shown(&url)))?;
        if (200..300).contains(&status) {
            return Ok((status, bytes));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Err(ApiError {
            status,
            code: text("error").unwrap_or_else(|| "http_error".into()),
            message: text("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            retry_after,
        }
        .into())
    }

    fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
        from_json(bytes).map_err(|e| anyhow!("the server's {what} answer does not decode: {e}"))
    }

    pub fn challenge(&self, req: &ChallengeRequest) -> Result<ChallengeResponse> {
        let (_, body) = self.send(
            "POST",
            "/api/v1/attest/challenge",
            Some(serde_json::to_string(req)?),
        )?;
        Self::decode("challenge", &body)
    }

    /// `POST /register` (USB path) or `/self-register` (zero-touch).
    pub fn register(&self, req: &RegisterRequest, self_register: bool) -> Result<RegisterResponse> {
        let path = if self_register {
            "/api/v1/self-register"
        } else {
            "/api/v1/register"
        };
        let (_, body) = self.send("POST", path, Some(serde_json::to_string(req)?))?;
        Self::decode("register", &body)
    }

    pub fn attest(&self, req: &AttestRequest) -> Result<AttestResponse> {
        let (_, body) = self.send("POST", "/api/v1/attest", Some(serde_json::to_string(req)?))?;
        Self::decode("attest", &body)
    }

    /// `POST /api/v1/link`: a postcard `LinkRequest` in, the postcard `LinkResponse` out.
    pub fn link(&self, request: &[u8]) -> Result<Vec<u8>> {
        let url = self.url("/api/v1/link")?;
        let mut response = self
            .http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(request)
            .map_err(|e| anyhow!("POST {url}: {}", explain(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| anyhow!("POST {url}: reading the answer: {e}"))?;
        if status != 200 {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(anyhow!("POST {url}: status {status}: {text}"));
        }
        Ok(bytes)
    }

    /// `POST /api/v1/enroll` (air-gapped path: the enrollment certificate's proof).
    pub fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse> {
        let (_, body) = self.send("POST", "/api/v1/enroll", Some(serde_json::to_string(req)?))?;
        Self::decode("enroll", &body)
    }

    /// The server's response public key (DER SubjectPublicKeyInfo).
    pub fn server_key(&self) -> Result<Vec<u8>> {
        let (_, body) = self.send("GET", "/api/v1/server-key", None)?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).context("the server-key answer is not JSON")?;
        let b64 = json
            .get("public_key_der")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("the server-key answer has no public_key_der"))?;
        use base64ct::Encoding as _;
        base64ct::Base64::decode_vec(b64).map_err(|_| anyhow!("public_key_der is not base64"))
    }

    /// A machine config (YAML) from a config URL the server gave.
    pub fn config(&self, url: &str) -> Result<Vec<u8>> {
        Ok(self.send("GET", url, None)?.1)
    }
}
