//! Calls to the server's operator API with the right bearer token: `ITL_ADMIN_TOKEN` when
//! set (break-glass), else the cached login, refreshed before it expires and once more when
//! the server answers 401 (clocks differ). Every error answer becomes one [`Failure`].
//! Answers are read into `attest-api`'s views, the types the server writes them from.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attest_api::ErrorBody;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::failure::{Failure, Outcome};
use crate::login;
use crate::session::{self, Session};
use crate::settings::Settings;

pub struct Api<'a> {
    settings: &'a Settings,
    http: ureq::Agent,
    session: Option<Session>,
}

/// A 2xx answer: its status and JSON, as the server sent it (`--output json` prints it),
/// and the count a list or page answer carries in `X-Total-Count`.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub total: Option<u64>,
}

impl Answer {
    /// The answer as one of the API's views.
    pub fn view<T: DeserializeOwned>(&self) -> Outcome<T> {
        view(&self.body)
    }
}

/// A JSON value read as one of the API's views; a server whose answer does not fit is named.
pub fn view<T: DeserializeOwned>(body: &Value) -> Outcome<T> {
    T::deserialize(body).map_err(|e| {
        Failure::Other(format!(
            "the server's answer is not what this CLI understands ({e}); is it another version?"
        ))
    })
}

/// The trust roots when they are not the Web PKI's alone (`set_trust`).
static ROOTS: OnceLock<ureq::tls::RootCerts> = OnceLock::new();

/// Sets the roots every HTTPS call of this process trusts (the server's and the OpenID
/// provider's certificates): the certificates of `SSL_CERT_FILE` when that variable is set
/// (instead of the Web PKI roots, as OpenSSL and curl read it), else the Web PKI roots; and
/// those of `ca_file` (`--ca-file`, `ATTESTATION_CA_FILE`, `ca_file`) besides. A file that
/// cannot be read or holds no certificate is a usage error.
pub fn set_trust(ca_file: Option<&Path>) -> Outcome<()> {
    use ureq::tls::Certificate;
    let ssl_cert_file = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty());
    if ssl_cert_file.is_none() && ca_file.is_none() {
        return Ok(());
    }
    let mut roots = match &ssl_cert_file {
        Some(path) => read_certificates(Path::new(path), "SSL_CERT_FILE")?,
        None => webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()))
            .collect(),
    };
    if let Some(path) = ca_file {
        roots.extend(read_certificates(path, "the CA file (--ca-file)")?);
    }
    let _ = ROOTS.set(ureq::tls::RootCerts::from(roots));
    Ok(())
}

fn read_certificates(path: &Path, what: &str) -> Outcome<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("{what} {}: {e}", path.display())))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Usage(format!("{what} {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Failure::Usage(format!(
            "{what} {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// A transport error, with what to do when it is a certificate this CLI does not trust.
pub fn explain(e: &ureq::Error) -> String {
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
             private CA, pass that CA with --ca-file (ATTESTATION_CA_FILE, or ca_file in the \
             config file)"
        ),
        _ => e.to_string(),
    }
}

/// The CLI's HTTP client: error statuses are answers (their JSON is shown), bounded time
/// (connecting: at most 5 s of it), HTTPS through rustls with the ring provider and the Web
/// PKI roots (or those `set_trust` set). The server uses aws-lc-rs; the CLI does not, so an
/// operator's build does not compile aws-lc (a large C library) for the few TLS
/// connections a CLI makes.
pub fn http(timeout: Duration) -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ROOTS.get().cloned().unwrap_or(RootCerts::WebPki))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .tls_config(tls)
        .http_status_as_error(false)
        .user_agent(concat!("attestation-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

impl<'a> Api<'a> {
    pub fn new(settings: &'a Settings) -> Api<'a> {
        Api {
            settings,
            http: http(Duration::from_secs(30)),
            session: None,
        }
    }

    /// The cached session, refreshed (and saved) when it is about to expire.
    pub fn session(&mut self, force_refresh: bool) -> Outcome<&Session> {
        let path = self.settings.token_cache();
        let cached = match self.session.take() {
            Some(s) => s,
            None => session::load(&path)?.ok_or_else(|| {
                Failure::Auth("not logged in: run `attestation auth login`".into())
            })?,
        };
        if let Some(issuer) = &self.settings.issuer
            && *issuer != cached.issuer
        {
            return Err(Failure::Auth(format!(
                "logged in at {} but the configured provider is {issuer}: run `attestation auth login`",
                cached.issuer
            )));
        }
        let current = if force_refresh || cached.needs_refresh() {
            let fresh = login::refresh(self.settings, &cached)?;
            session::save(&path, &fresh)?;
            fresh
        } else {
            cached
        };
        Ok(self.session.insert(current))
    }

    fn bearer(&mut self, force_refresh: bool) -> Outcome<String> {
        if let Some(t) = &self.settings.admin_token {
            return Ok(t.clone());
        }
        Ok(self.session(force_refresh)?.access_token.clone())
    }

    fn send(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Outcome<Answer> {
        let url = format!("{}{path}", self.settings.api_url);
        let auth = format!("Bearer {token}");
        let result = match (method, body) {
            ("GET", _) => self.http.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.http.delete(&url).header("Authorization", &auth).call(),
            (_, Some(b)) => self
                .http
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            (_, None) => self
                .http
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
        };
        let mut res = result.map_err(|e| {
            Failure::Unreachable(format!(
                "cannot reach the server at {}: {}",
                self.settings.api_url,
                explain(&e)
            ))
        })?;
        let status = res.status().as_u16();
        let total = res
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let text = res
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| Failure::Unreachable(format!("{url}: reading the answer: {e}")))?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            let not_json = ErrorBody {
                error: "not_json".into(),
                message: text.chars().take(200).collect(),
            };
            serde_json::to_value(not_json).unwrap_or_default()
        });
        Ok(Answer {
            status,
            body,
            total,
        })
    }

    /// One call; 2xx answers come back, everything else is a [`Failure`].
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Outcome<Answer> {
        let token = self.bearer(false)?;
        let mut answer = self.send(method, path, &token, body)?;
        if answer.status == 401 && self.settings.admin_token.is_none() {
            let token = self.bearer(true)?;
            answer = self.send(method, path, &token, body)?;
        }
        if answer.status < 300 {
            return Ok(answer);
        }
        let (code, message) = match ErrorBody::deserialize(&answer.body) {
            Ok(e) => (e.error, e.message),
            Err(_) => ("error".to_owned(), "no message".to_owned()),
        };
        Err(match answer.status {
            401 | 403 => Failure::Auth(format!(
                "server answered {} {code}: {message}",
                answer.status
            )),
            status => Failure::Server {
                status,
                code,
                message,
            },
        })
    }
}
