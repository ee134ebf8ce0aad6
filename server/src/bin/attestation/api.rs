//! Calls to the server's operator API with the right bearer token: `ITL_ADMIN_TOKEN` when
//! set (break-glass), else the cached login, refreshed before it expires and once more when
//! the server answers 401 (clocks differ). Every error answer becomes one [`Failure`].

use std::time::Duration;

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

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// The CLI's HTTP client: error statuses are answers (their JSON is shown), bounded time.
pub fn http(timeout: Duration) -> ureq::Agent {
    attest_server::outbound::agent_keeping_status(
        timeout,
        concat!("attestation-cli/", env!("CARGO_PKG_VERSION")),
    )
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
            serde_json::json!({ "error": "not_json", "message": text.chars().take(200).collect::<String>() })
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
        let code = answer.body["error"].as_str().unwrap_or("error").to_owned();
        let message = answer.body["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
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
