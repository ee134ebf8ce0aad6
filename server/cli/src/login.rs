//! Getting tokens from the OpenID provider: the authorization-code flow with PKCE and a
//! loopback redirect (RFC 8252: 127.0.0.1, a port chosen by the kernel, S256 challenge,
//! state checked), the device-authorization grant (RFC 8628) for machines without a browser,
//! the password grant only when asked for by name, and refreshing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::failure::{Failure, Outcome};
use crate::session::{Session, claims, lenient, now};
use crate::settings::Settings;

#[derive(Debug, Deserialize)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// A token endpoint's answer: tokens (RFC 6749 §5.1) or an error (§5.2). Every field is
/// optional and one of another type counts as absent; what is missing is said where it is
/// needed.
#[derive(Debug, Default, Deserialize)]
struct TokenAnswer {
    #[serde(default, deserialize_with = "lenient")]
    access_token: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    id_token: Option<String>,
    /// Seconds.
    #[serde(default, deserialize_with = "lenient")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    error: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    error_description: Option<String>,
}

/// The device-authorization endpoint's answer (RFC 8628 §3.2), or an error.
#[derive(Debug, Default, Deserialize)]
struct DeviceStart {
    #[serde(default, deserialize_with = "lenient")]
    device_code: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    user_code: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    verification_uri: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    verification_uri_complete: Option<String>,
    /// Seconds between polls.
    #[serde(default, deserialize_with = "lenient")]
    interval: Option<u64>,
    /// Seconds.
    #[serde(default, deserialize_with = "lenient")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    error: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    error_description: Option<String>,
}

fn http() -> ureq::Agent {
    crate::api::http(Duration::from_secs(15))
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Unreachable(format!("cannot reach the OpenID provider at {what}: {e}"))
}

pub fn discover(issuer: &str) -> Outcome<Provider> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let mut res = http().get(&url).call().map_err(|e| unreachable(&url, e))?;
    if res.status() != 200 {
        return Err(Failure::Other(format!(
            "{url} answered {}: is {issuer} an OpenID provider?",
            res.status()
        )));
    }
    let p: Provider = res
        .body_mut()
        .read_json()
        .map_err(|e| Failure::Other(format!("{url}: not a discovery document: {e}")))?;
    if p.issuer.trim_end_matches('/') != issuer {
        return Err(Failure::Other(format!(
            "{url} names the issuer {} instead of {issuer}",
            p.issuer
        )));
    }
    Ok(p)
}

/// RFC 3986 unreserved characters pass; everything else is %-encoded.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unpct(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    Base64UrlUnpadded::encode_string(&bytes)
}

/// POSTs a form to the token endpoint; an OAuth error becomes [`Failure::Auth`].
fn token_request(provider_token_endpoint: &str, form: &[(&str, &str)]) -> Outcome<TokenAnswer> {
    let mut res = http()
        .post(provider_token_endpoint)
        .send_form(form.iter().copied())
        .map_err(|e| unreachable(provider_token_endpoint, e))?;
    let status = res.status().as_u16();
    let body: TokenAnswer = res.body_mut().read_json().map_err(|e| {
        Failure::Other(format!(
            "{provider_token_endpoint} answered {status} without JSON: {e}"
        ))
    })?;
    if status != 200 {
        return Err(Failure::Auth(format!(
            "the OpenID provider refused ({status} {}): {}",
            body.error.as_deref().unwrap_or("error"),
            body.error_description
                .as_deref()
                .unwrap_or("no description")
        )));
    }
    Ok(body)
}

fn session_from(
    settings: &Settings,
    provider: &Provider,
    body: TokenAnswer,
    old_refresh: Option<&str>,
) -> Outcome<Session> {
    let access_token = body
        .access_token
        .ok_or_else(|| Failure::Other("the token response has no access_token".into()))?;
    // The token's own exp when it is a JWT; else expires_in; else five minutes.
    let expires_at = claims(&access_token)
        .exp
        .or_else(|| body.expires_in.map(|s| now() + s))
        .unwrap_or(now() + 300);
    Ok(Session {
        issuer: provider.issuer.trim_end_matches('/').to_owned(),
        client_id: settings.client_id.clone(),
        token_endpoint: provider.token_endpoint.clone(),
        revocation_endpoint: provider.revocation_endpoint.clone(),
        access_token,
        refresh_token: body.refresh_token.or(old_refresh.map(str::to_owned)),
        id_token: body.id_token,
        expires_at,
    })
}

/// Authorization code + PKCE through a loopback redirect.
pub fn pkce(settings: &Settings, open_browser: bool, timeout: Duration) -> Outcome<Session> {
    let provider = discover(settings.issuer()?)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Failure::Other(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = random_b64(32);
    let challenge = Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16);
    let sep = if provider.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        provider.authorization_endpoint,
        pct(&settings.client_id),
        pct(&redirect_uri),
        pct(&settings.scope),
    );
    eprintln!("Open this URL in a browser to sign in:\n\n  {url}\n");
    if open_browser {
        open_in_browser(&url);
    }
    eprintln!("Waiting for the provider to redirect to {redirect_uri} …");
    let code = wait_for_code(&listener, &state, Instant::now() + timeout)?;
    let body = token_request(
        &provider.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", &settings.client_id),
            ("code_verifier", &verifier),
        ],
    )?;
    session_from(settings, &provider, body, None)
}

/// Opens the URL when there is a desktop to open it on; the URL is printed either way.
fn open_in_browser(url: &str) {
    use std::process::{Command, Stdio};
    let program = match std::env::var("BROWSER") {
        Ok(b) if !b.is_empty() => b,
        _ if cfg!(target_os = "macos") => "open".into(),
        _ if std::env::var_os("DISPLAY").is_some()
            || std::env::var_os("WAYLAND_DISPLAY").is_some() =>
        {
            "xdg-open".into()
        }
        _ => return,
    };
    let _ = Command::new(program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

const PAGE_OK: &str = "<!doctype html><title>Signed in</title><p>Signed in to attestation. You can close this window.</p>";

fn answer(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves the loopback redirect until the provider sends the browser back with a code (or an
/// error) for our `state`. Requests for other paths (favicon) get 404 and do not end the wait.
fn wait_for_code(listener: &TcpListener, state: &str, deadline: Instant) -> Outcome<String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::Other(e.to_string()))?;
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Failure::Auth(
                        "timed out waiting for the browser to come back from the provider".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(Failure::Other(format!("loopback listener: {e}"))),
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut reader = BufReader::new((&stream).take(8192));
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/callback" {
            answer(&mut stream, "404 Not Found", "not here");
            continue;
        }
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (unpct(k), unpct(v)))
            .collect();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("state") != Some(state) {
            answer(
                &mut stream,
                "400 Bad Request",
                "state mismatch: this is not the login the CLI started",
            );
            continue;
        }
        if let Some(error) = get("error") {
            let why = format!(
                "the OpenID provider refused the login: {error}: {}",
                get("error_description").unwrap_or("no description")
            );
            answer(&mut stream, "400 Bad Request", &why);
            return Err(Failure::Auth(why));
        }
        let Some(code) = get("code") else {
            answer(&mut stream, "400 Bad Request", "no code");
            continue;
        };
        answer(&mut stream, "200 OK", PAGE_OK);
        return Ok(code.to_owned());
    }
}

/// RFC 8628: show the code, poll the token endpoint at the provider's interval.
pub fn device(settings: &Settings, timeout: Duration) -> Outcome<Session> {
    let provider = discover(settings.issuer()?)?;
    let endpoint = provider
        .device_authorization_endpoint
        .clone()
        .ok_or_else(|| {
            Failure::Other(format!(
                "{} does not offer the device-authorization grant",
                provider.issuer
            ))
        })?;
    let mut res = http()
        .post(&endpoint)
        .send_form([
            ("client_id", settings.client_id.as_str()),
            ("scope", settings.scope.as_str()),
        ])
        .map_err(|e| unreachable(&endpoint, e))?;
    let status = res.status().as_u16();
    let start: DeviceStart = res
        .body_mut()
        .read_json()
        .map_err(|e| Failure::Other(format!("{endpoint} answered {status} without JSON: {e}")))?;
    if status != 200 {
        return Err(Failure::Auth(format!(
            "the OpenID provider refused ({status} {}): {}",
            start.error.as_deref().unwrap_or("error"),
            start.error_description.as_deref().unwrap_or("")
        )));
    }
    let field = |v: Option<String>, k: &str| {
        v.ok_or_else(|| Failure::Other(format!("{endpoint}: the answer has no {k}")))
    };
    let device_code = field(start.device_code, "device_code")?;
    let user_code = field(start.user_code, "user_code")?;
    let verification_uri = field(start.verification_uri, "verification_uri")?;
    eprintln!("To sign in, open {verification_uri} and enter the code {user_code}");
    if let Some(complete) = &start.verification_uri_complete {
        eprintln!("or open {complete}");
    }
    let mut interval = start.interval.unwrap_or(5).max(1);
    let expires = start
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(timeout)
        .min(timeout);
    let deadline = Instant::now() + expires;
    loop {
        std::thread::sleep(Duration::from_secs(interval));
        if Instant::now() >= deadline {
            return Err(Failure::Auth(
                "the device code expired before sign-in".into(),
            ));
        }
        match token_request(
            &provider.token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
                ("client_id", &settings.client_id),
            ],
        ) {
            Ok(body) => return session_from(settings, &provider, body, None),
            Err(Failure::Auth(m)) if m.contains("authorization_pending") => {}
            Err(Failure::Auth(m)) if m.contains("slow_down") => interval += 5,
            Err(e) => return Err(e),
        }
    }
}

/// The resource-owner password grant: only with `--password`, for providers and accounts
/// that allow it (break-glass consoles, CI).
pub fn password(settings: &Settings, username: &str, password: &str) -> Outcome<Session> {
    let provider = discover(settings.issuer()?)?;
    let body = token_request(
        &provider.token_endpoint,
        &[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("client_id", &settings.client_id),
            ("scope", &settings.scope),
        ],
    )?;
    session_from(settings, &provider, body, None)
}

/// A new access token from the refresh token.
pub fn refresh(settings: &Settings, old: &Session) -> Outcome<Session> {
    let Some(refresh_token) = old.refresh_token.as_deref() else {
        return Err(Failure::Auth(
            "the session expired and has no refresh token: run `attestation auth login`".into(),
        ));
    };
    let body = token_request(
        &old.token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &old.client_id),
        ],
    )
    .map_err(|e| match e {
        Failure::Auth(m) => Failure::Auth(format!(
            "the session cannot be refreshed ({m}): run `attestation auth login`"
        )),
        other => other,
    })?;
    let provider = Provider {
        issuer: old.issuer.clone(),
        authorization_endpoint: String::new(),
        token_endpoint: old.token_endpoint.clone(),
        device_authorization_endpoint: None,
        revocation_endpoint: old.revocation_endpoint.clone(),
    };
    session_from(settings, &provider, body, Some(refresh_token))
}

/// Best effort: tells the provider the refresh token is no longer wanted.
pub fn revoke(session: &Session) -> bool {
    let (Some(endpoint), Some(token)) = (&session.revocation_endpoint, &session.refresh_token)
    else {
        return false;
    };
    http()
        .post(endpoint)
        .send_form([
            ("token", token.as_str()),
            ("token_type_hint", "refresh_token"),
            ("client_id", session.client_id.as_str()),
        ])
        .map(|r| r.status() == 200)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["", "a b", "http://127.0.0.1:5/callback?x=1&y=2", "ü%+/"] {
            assert_eq!(unpct(&pct(s)), s);
        }
        assert_eq!(pct("openid profile"), "openid%20profile");
        assert_eq!(unpct("a+b%2"), "a b%2");
        assert_eq!(unpct("%zz"), "%zz");
    }
}
