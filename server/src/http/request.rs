//! What a handler reads from a request: its path parameters and query, a bounded body
//! decoded with the field-naming decoders of `attest-common`, the peer's address, and the
//! operator it authenticates as.

use std::net::SocketAddr;
use std::sync::Arc;

use attest_common::wire::from_json;
use http_body_util::BodyExt as _;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use subtle::ConstantTimeEq;

use super::AppState;
use super::response::Refusal;
use crate::service::{Actor, Service, ServiceError};
use crate::store::Registry;

/// One request as a handler sees it.
pub struct Req<R: Registry> {
    pub state: Arc<AppState<R>>,
    pub head: hyper::http::request::Parts,
    /// Path parameters (`{id}`, `{token}`, `{action}`) in the order the route names them.
    pub params: Vec<String>,
    pub peer: SocketAddr,
    body: Option<Incoming>,
    /// The connection's place (crate::conn_table): marked busy once the body is in.
    place: Option<Arc<crate::conn_table::Place>>,
}

impl<R: Registry> Req<R> {
    pub fn new(
        state: Arc<AppState<R>>,
        request: hyper::Request<Incoming>,
        params: Vec<String>,
        peer: SocketAddr,
        place: Option<Arc<crate::conn_table::Place>>,
    ) -> Req<R> {
        let (head, body) = request.into_parts();
        Req {
            state,
            head,
            params,
            peer,
            body: Some(body),
            place,
        }
    }

    /// Path parameter `i` (the route guarantees it exists).
    pub fn param(&self, i: usize) -> String {
        self.params.get(i).cloned().unwrap_or_default()
    }

    /// The value of query parameter `name` (the last one when repeated).
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.head.uri.query()?;
        form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .last()
    }

    /// Query parameter `name` as a number; a value that is not one is a 400.
    pub fn query_number(&self, name: &str) -> Result<Option<usize>, Refusal> {
        self.query(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("{name}: '{v}' is not a non-negative whole number"),
                    )
                })
            })
            .transpose()
    }

    /// The client's address for the audit log: the TCP peer, or, when the peer is one of
    /// `ITL_TRUSTED_PROXIES`, the right-most address of its `X-Forwarded-For` that is not a
    /// trusted proxy (crate::proxies). Anyone else's `X-Forwarded-For` is ignored.
    pub fn source_ip(&self) -> Option<String> {
        let forwarded = self
            .head
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let client = self
            .state
            .config
            .trusted_proxies
            .client(self.peer.ip(), forwarded);
        Some(client.to_string())
    }

    /// An agent acting from this request's address.
    pub fn agent(&self) -> Actor {
        Actor::agent(self.source_ip())
    }

    /// Reads at most `ITL_MAX_BODY_BYTES` of body: more is a 413; a body not all there
    /// within the idle timeout *in all* (`ITL_IDLE_TIMEOUT_SECONDS`, not per byte: a client
    /// trickling a byte at a time must not keep its connection) is a 408.
    pub async fn body(&mut self) -> Result<Vec<u8>, Refusal> {
        let limit = self.state.config.idle_timeout;
        let read = self.read_body();
        let out_of_time = async {
            smol::Timer::after(limit).await;
            Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s (ITL_IDLE_TIMEOUT_SECONDS)",
                    limit.as_secs()
                ),
            ))
        };
        let body = futures_lite::future::or(read, out_of_time).await;
        // Until its body is in, a request can still give way to another connection.
        if let Some(place) = &self.place {
            place.busy();
        }
        body
    }

    async fn read_body(&mut self) -> Result<Vec<u8>, Refusal> {
        let max = self.state.config.max_body_bytes;
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {max} bytes (ITL_MAX_BODY_BYTES)"),
            )
        };
        let declared = self
            .head
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let Some(mut body) = self.body.take() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(read_failure)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    /// The body as JSON of type `T`; malformed → 400 naming the field.
    pub async fn decode<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Refusal> {
        let bytes = self.body().await?;
        from_json(&bytes).map_err(malformed)
    }

    /// The same, with an empty body meaning `T::default()`.
    pub async fn decode_or_default<T: serde::de::DeserializeOwned + Default>(
        &mut self,
    ) -> Result<T, Refusal> {
        let bytes = self.body().await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        from_json(&bytes).map_err(malformed)
    }

    /// Runs a blocking service call (registry commits are durable writes) off the executor.
    pub async fn service<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Service<R>) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, Refusal> {
        let state = self.state.clone();
        smol::unblock(move || f(&state.service))
            .await
            .map_err(Refusal::from)
    }

    /// Operator authentication: the break-glass token (constant-time compare) acts as
    /// `SYSTEM`; any other bearer token is checked with OIDC when it is enabled.
    pub async fn operator(&self) -> Result<Actor, Refusal> {
        use crate::oidc::AuthError;
        let state = self.state.clone();
        if state.config.admin_token.is_none() && state.oidc.is_none() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_not_configured",
                "Operator authentication is not configured: set ITL_ADMIN_TOKEN (break-glass) or \
                 enable OIDC (ITL_OIDC_ENABLED, ITL_OIDC_ISSUER, ITL_OIDC_AUDIENCE)",
            ));
        }
        let source_ip = self.source_ip();
        let Some(presented) = self
            .head
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .next_back()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_owned)
        else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "operator endpoints need an Authorization: Bearer token",
            ));
        };
        if let Some(token) = &state.config.admin_token
            && bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
        {
            return Ok(Actor::break_glass(source_ip));
        }
        if state.oidc.is_none() {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is not valid",
            ));
        }
        let result = smol::unblock(move || match &state.oidc {
            Some(oidc) => oidc.authenticate(&presented),
            None => unreachable!("checked above"),
        })
        .await;
        match result {
            Ok(op) => Ok(Actor::operator(&op.identity, &op.principal, source_ip)),
            Err(AuthError::Invalid(why)) => {
                Err(Refusal::new(StatusCode::UNAUTHORIZED, "invalid_token", why))
            }
            Err(AuthError::MissingRole { identity, role }) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "missing_role",
                format!(
                    "{identity} does not have the operator role '{role}' (ITL_OIDC_OPERATOR_ROLE)"
                ),
            )),
            Err(AuthError::ProviderDown(why)) => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "oidc_unavailable",
                format!("the OIDC provider cannot be reached: {why}"),
            )),
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string())
}

/// A body that could not be read: stalled past the idle timeout (408) or broken (400).
fn read_failure(e: hyper::Error) -> Refusal {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                io.to_string(),
            );
        }
        cause = c.source();
    }
    Refusal::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
}

/// `s` percent-encoded for a query value (RFC 3986 unreserved characters kept).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
