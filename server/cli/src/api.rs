//! Calls to the server's operator API with the right bearer token: `ITL_ADMIN_TOKEN` when
//! set (break-glass), else the cached login, refreshed before it expires and once more when
//! the server answers 401 (clocks differ). Every error answer becomes one [`Failure`].
//! Answers are read into `attest-api`'s views, the types the server writes them from.

use std::sync::Arc;
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

/// A 2xx answer: its status and JSON, as the server sent it (`--output json` prints it).
pub struct Answer {
    pub status: u16,
    pub body: Value,
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

/// The CLI's HTTP client: error statuses are answers (their JSON is shown), bounded time
/// (connecting: at most 5 s of it), HTTPS through rustls with the ring provider and the Web
/// PKI roots. The server uses aws-lc-rs; the CLI does not, so an operator's build does not
/// compile aws-lc (a large C library) for the few TLS connections a CLI makes.
pub fn http(timeout: Duration) -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::WebPki)
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
                "cannot reach the server at {}: {e}",
                self.settings.api_url
            ))
        })?;
        let status = res.status().as_u16();
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
        Ok(Answer { status, body })
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
