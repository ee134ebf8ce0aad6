//! HTTP adapter: tide routes served from a smol accept loop.
//!
//! tide's own listener leaves Nagle's algorithm on, and every keep-alive request then waits
//! for the peer's delayed ACK (~44 ms, DESIGN.md §10). Accepting connections ourselves lets us
//! set TCP_NODELAY on each one and hand it to async-h1. Handlers only translate: read a
//! bounded body, decode it with the field-naming decoders of `attest-common`, call the
//! service on a blocking thread (redb commits are durable writes), and map the result.

use std::sync::Arc;

use attest_common::lifecycle::Status;
use attest_common::wire::{
    Blob, CredentialChallenge, ErrorBody, RegisterRequest, RegisterResponse, Role, from_json,
};
use futures_lite::AsyncReadExt;
use serde::Deserialize;
use serde_json::json;
use smol::net::TcpListener;
use subtle::ConstantTimeEq;
use tide::{Request, Response, StatusCode};

use crate::config::Config;
use crate::record::MachineRecord;
use crate::service::{Actor, Approval, ApproveOutcome, ErrorKind, Service, ServiceError};

/// Everything a handler needs.
pub struct AppState {
    pub service: Service,
    /// OIDC bearer-token verification, when enabled.
    pub oidc: Option<crate::oidc::Oidc>,
    pub config: Config,
    /// Base of the URLs handed to agents (`ITL_SERVICE_URL`, or the bound address).
    pub service_url: String,
    /// The response key: signs every attestation answer over the agent's nonce.
    pub response_key: p384::ecdsa::SigningKey,
    /// The same key, through aws-lc-rs (the hot path).
    pub response_signer: crate::responsekey::ResponseSigner,
    /// Its public half (DER SubjectPublicKeyInfo), for pinning.
    pub response_key_spki: Vec<u8>,
    /// What `GET /metrics` counts.
    pub counters: crate::metrics::Counters,
}

type State = Arc<AppState>;

/// A JSON error answer `{error, message}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let mut res = Response::new(status);
    res.set_body(
        tide::Body::from_json(&ErrorBody::new(code, message))
            .unwrap_or_else(|_| tide::Body::empty()),
    );
    res
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut res = Response::new(status);
    match tide::Body::from_json(value) {
        Ok(body) => res.set_body(body),
        Err(e) => {
            return error_response(StatusCode::InternalServerError, "internal", &e.to_string());
        }
    }
    res
}

/// A refused request, turned into a JSON error response at the edge.
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        error_response(self.status, self.code, &self.message)
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BadRequest,
            ErrorKind::NotFound => StatusCode::NotFound,
            ErrorKind::Conflict => StatusCode::Conflict,
            ErrorKind::Unprocessable => StatusCode::UnprocessableEntity,
            ErrorKind::Forbidden => StatusCode::Forbidden,
            ErrorKind::Gone => StatusCode::Gone,
            ErrorKind::Unavailable => StatusCode::ServiceUnavailable,
            ErrorKind::Internal => StatusCode::InternalServerError,
        };
        Refusal::new(status, e.code, e.message)
    }
}

/// Reads at most `max` bytes of body; more is a 413.
async fn read_body(req: &mut Request<State>) -> Result<Vec<u8>, Refusal> {
    let max = req.state().config.max_body_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PayloadTooLarge,
            "body_too_large",
            format!("request body larger than {max} bytes (ITL_MAX_BODY_BYTES)"),
        )
    };
    if req.len().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let body = req.take_body();
    body.take(max as u64 + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => {
                Refusal::new(StatusCode::RequestTimeout, "request_timeout", e.to_string())
            }
            _ => Refusal::new(StatusCode::BadRequest, "bad_body", e.to_string()),
        })?;
    if out.len() > max {
        return Err(too_large());
    }
    Ok(out)
}

async fn decode<T: serde::de::DeserializeOwned>(req: &mut Request<State>) -> Result<T, Refusal> {
    let bytes = read_body(req).await?;
    from_json(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BadRequest, "malformed_request", e.to_string()))
}

fn source_ip(req: &Request<State>) -> Option<String> {
    req.peer_addr().map(|a| {
        a.rsplit_once(':')
            .map_or(a, |(ip, _)| ip)
            .trim_matches(['[', ']'])
            .to_owned()
    })
}

/// Operator authentication: the break-glass token (constant-time compare) acts as `SYSTEM`;
/// any other bearer token is checked with OIDC when it is enabled.
async fn operator(req: &Request<State>) -> Result<Actor, Refusal> {
    use crate::oidc::AuthError;
    let state = req.state().clone();
    let admin = state.config.admin_token.clone();
    if admin.is_none() && state.oidc.is_none() {
        return Err(Refusal::new(
            StatusCode::ServiceUnavailable,
            "auth_not_configured",
            "Operator authentication is not configured: set ITL_ADMIN_TOKEN (break-glass) or \
             enable OIDC (ITL_OIDC_ENABLED, ITL_OIDC_ISSUER, ITL_OIDC_AUDIENCE)",
        ));
    }
    let source_ip = source_ip(req);
    let Some(presented) = req
        .header("Authorization")
        .and_then(|h| h.last().as_str().strip_prefix("Bearer ").map(str::to_owned))
    else {
        return Err(Refusal::new(
            StatusCode::Unauthorized,
            "missing_token",
            "operator endpoints need an Authorization: Bearer token",
        ));
    };
    if let Some(token) = admin
        && bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
    {
        return Ok(Actor {
            identity: "SYSTEM".into(),
            source_ip,
        });
    }
    if state.oidc.is_none() {
        return Err(Refusal::new(
            StatusCode::Unauthorized,
            "invalid_token",
            "the bearer token is not valid",
        ));
    }
    let result = smol::unblock(move || {
        state
            .oidc
            .as_ref()
            .map(|o| o.authenticate(&presented))
            .expect("checked above")
    })
    .await;
    match result {
        Ok(op) => Ok(Actor {
            identity: op.identity,
            source_ip,
        }),
        Err(AuthError::Invalid(why)) => {
            Err(Refusal::new(StatusCode::Unauthorized, "invalid_token", why))
        }
        Err(AuthError::MissingRole { identity, role }) => Err(Refusal::new(
            StatusCode::Forbidden,
            "missing_role",
            format!("{identity} does not have the operator role '{role}' (ITL_OIDC_OPERATOR_ROLE)"),
        )),
        Err(AuthError::ProviderDown(why)) => Err(Refusal::new(
            StatusCode::ServiceUnavailable,
            "oidc_unavailable",
            format!("the OIDC provider cannot be reached: {why}"),
        )),
    }
}

/// Runs a blocking service call off the async executor.
async fn blocking<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Refusal> {
    let state = state.clone();
    smol::unblock(move || f(&state.service))
        .await
        .map_err(Refusal::from)
}

/// The machine detail as the API shows it.
/// `stale`: attested but silent for longer than interval × ITL_LIVENESS_FACTOR.
pub fn machine_json(m: &MachineRecord, stale: bool) -> attest_api::Machine {
    crate::views::machine(m, stale)
}

macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(refusal) => return Ok(Refusal::into_response(refusal)),
        }
    };
}

async fn register(mut req: Request<State>, self_register: bool) -> tide::Result {
    let body: RegisterRequest = attempt!(decode(&mut req).await);
    let actor = Actor::agent(source_ip(&req));
    let (status, response) = attempt!(register_core(req.state(), body, self_register, actor).await);
    Ok(json_response(status, &response))
}

/// Registration as both the JSON API and the firmware link answer it.
async fn register_core(
    state: &State,
    body: RegisterRequest,
    self_register: bool,
    actor: Actor,
) -> Result<(StatusCode, RegisterResponse), Refusal> {
    let done = blocking(state, move |s| s.register(&body, self_register, &actor)).await?;
    let m = &done.machine;
    let config_url = m
        .config_token
        .as_ref()
        .map(|t| format!("{}/api/v1/config/{t}", state.service_url));
    let response = RegisterResponse {
        machine_id: heapless::String::try_from(m.id.as_str()).unwrap_or_default(),
        role: m.role.or(m.desired_role),
        status: m.state.status,
        iso_url: done
            .iso_url
            .as_deref()
            .and_then(|u| heapless::String::try_from(u).ok()),
        config_token: m
            .config_token
            .as_deref()
            .and_then(|t| heapless::String::try_from(t).ok()),
        config_url: config_url.and_then(|u| heapless::String::try_from(u.as_str()).ok()),
        credential: done.credential.as_ref().and_then(|c| {
            Some(CredentialChallenge {
                credential_blob: Blob::from_slice(&c.credential_blob)?,
                encrypted_secret: Blob::from_slice(&c.encrypted_secret)?,
            })
        }),
    };
    let status = if done.created {
        StatusCode::Created
    } else {
        StatusCode::Ok
    };
    Ok((status, response))
}

#[derive(Deserialize)]
struct ApproveBody {
    role: Role,
    hostname: String,
    assigned_ip: String,
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(default)]
    wipe: bool,
    reason: String,
}

/// Decodes an optional JSON body (empty body → default).
async fn decode_or_default<T: serde::de::DeserializeOwned + Default>(
    req: &mut Request<State>,
) -> Result<T, Refusal> {
    let bytes = read_body(req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    from_json(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BadRequest, "malformed_request", e.to_string()))
}

async fn operate(mut req: Request<State>) -> tide::Result {
    let actor = attempt!(operator(&req).await);
    let id = req.param("id")?.to_owned();
    let action = req.param("action")?.to_owned();
    let record = match action.as_str() {
        "approve" => {
            let b: ApproveBody = attempt!(decode(&mut req).await);
            let approval = Approval {
                role: b.role,
                hostname: b.hostname,
                assigned_ip: b.assigned_ip,
            };
            match attempt!(blocking(req.state(), move |s| s.approve(&id, &approval, &actor)).await)
            {
                ApproveOutcome::Approved(record) => *record,
                ApproveOutcome::Pending {
                    approvals_received,
                    approvals_required,
                    expires_at,
                } => {
                    return Ok(json_response(
                        StatusCode::Accepted,
                        &crate::views::approve_pending(
                            approvals_received,
                            approvals_required,
                            expires_at,
                        ),
                    ));
                }
            }
        }
        "reject" | "lock" | "unlock" => {
            let b: ReasonBody = attempt!(decode_or_default(&mut req).await);
            attempt!(
                blocking(req.state(), move |s| match action.as_str() {
                    "reject" => s.reject(&id, &b.reason, &actor),
                    "lock" => s.lock(&id, &b.reason, &actor),
                    _ => s.unlock(&id, &b.reason, &actor),
                })
                .await
            )
        }
        "reset-baseline" => {
            let b: ReasonBody = attempt!(decode_or_default(&mut req).await);
            attempt!(
                blocking(req.state(), move |s| s
                    .reset_baseline(&id, &b.reason, &actor))
                .await
            )
        }
        "revoke" => {
            let b: RevokeBody = attempt!(decode(&mut req).await);
            attempt!(
                blocking(req.state(), move |s| s
                    .revoke(&id, b.wipe, &b.reason, &actor))
                .await
            )
        }
        other => {
            return Ok(error_response(
                StatusCode::NotFound,
                "not_found",
                &format!(
                    "no machine action '{other}' (approve, reject, lock, unlock, revoke, reset-baseline)"
                ),
            ));
        }
    };
    let stale = req.state().service.is_stale(&record, unix_now());
    Ok(json_response(StatusCode::Ok, &machine_json(&record, stale)))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Audits machines that turn stale, checking every `min(interval, 60 s)`.
pub fn spawn_liveness_sweeper(state: State) {
    let period = std::time::Duration::from_secs(
        u64::from(state.service.challenges().interval_seconds).clamp(1, 60),
    );
    std::thread::Builder::new()
        .name("liveness".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                if let Err(e) = state.service.sweep_stale() {
                    crate::log::warn(&format!("liveness sweep failed: {e}"));
                }
            }
        })
        .expect("cannot start the liveness thread");
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let q: ListQuery = req.query().unwrap_or(ListQuery { status: None });
    let status = match q.status.as_deref().map(str::parse::<Status>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            return Ok(error_response(
                StatusCode::BadRequest,
                "invalid_status",
                &e.to_string(),
            ));
        }
    };
    // `{"machines": [...], "total": n}`, written as the registry is read (crate::streamed).
    let state = req.state().clone();
    let (first, body) = crate::streamed::start(move |out| {
        let mut buf = b"{\"machines\":[".to_vec();
        let mut total = 0u64;
        let mut gone = false;
        let scan = state.service.each_machine(status, unix_now(), |m, stale| {
            if total > 0 {
                buf.push(b',');
            }
            total += 1;
            // A JSON value always serialises.
            let _ = serde_json::to_writer(&mut buf, &machine_json(&m, stale));
            if buf.len() >= crate::streamed::CHUNK_BYTES {
                gone = !out.send(std::mem::take(&mut buf));
                if gone {
                    return std::ops::ControlFlow::Break(());
                }
            }
            std::ops::ControlFlow::Continue(())
        });
        match scan {
            _ if gone => {}
            Ok(()) => {
                buf.extend_from_slice(format!("],\"total\":{total}}}").as_bytes());
                out.send(buf);
            }
            Err(e) => {
                crate::log::warn(&format!("listing machines failed: {e}"));
                out.fail(std::io::Error::other(e.to_string()));
            }
        }
    })
    .await;
    let first = match first {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => {
            return Ok(error_response(
                StatusCode::InternalServerError,
                "storage_error",
                &e.to_string(),
            ));
        }
        None => {
            return Ok(error_response(
                StatusCode::InternalServerError,
                "internal",
                "the listing ended before it began",
            ));
        }
    };
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_reader(
        futures_lite::io::BufReader::new(body.after(first)),
        None,
    ));
    res.set_content_type("application/json");
    Ok(res)
}

/// Approved votes first, then pending ones, each saying which it is.
fn votes_json(a: &crate::service::Approvals) -> Vec<attest_api::Approval> {
    crate::views::approvals(a)
}

async fn get(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let id = req.param("id")?.to_owned();
    let (m, votes) = attempt!(
        blocking(req.state(), move |s| Ok((
            s.machine(&id)?,
            s.approvals(&id)?
        )))
        .await
    );
    let detail = crate::views::detail(
        machine_json(&m, req.state().service.is_stale(&m, unix_now())),
        votes_json(&votes),
    );
    Ok(json_response(StatusCode::Ok, &detail))
}

async fn approvals(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let id = req.param("id")?.to_owned();
    let votes = attempt!(blocking(req.state(), move |s| s.approvals(&id)).await);
    Ok(json_response(
        StatusCode::Ok,
        &crate::views::approval_list(votes_json(&votes)),
    ))
}

async fn delete(req: Request<State>) -> tide::Result {
    let actor = attempt!(operator(&req).await);
    let id = req.param("id")?.to_owned();
    attempt!(blocking(req.state(), move |s| s.delete(&id, &actor)).await);
    Ok(Response::new(StatusCode::NoContent))
}

#[derive(Deserialize)]
struct AuditQuery {
    page: Option<usize>,
    per_page: Option<usize>,
    machine_id: Option<String>,
}

async fn audit_list(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let q: AuditQuery = match req.query() {
        Ok(q) => q,
        Err(e) => {
            return Ok(error_response(
                StatusCode::BadRequest,
                "invalid_query",
                &e.to_string(),
            ));
        }
    };
    let page = q.page.unwrap_or(1).max(1);
    let per_page = q.per_page.unwrap_or(50);
    if !(1..=200).contains(&per_page) {
        return Ok(error_response(
            StatusCode::BadRequest,
            "invalid_query",
            "per_page must be 1 to 200",
        ));
    }
    let machine = q.machine_id.clone();
    let (entries, total) = attempt!(
        blocking(req.state(), move |s| Ok(s.store().audit_page(
            machine.as_deref(),
            page,
            per_page
        )?))
        .await
    );
    Ok(json_response(
        StatusCode::Ok,
        &crate::views::audit_page(entries, total, page, per_page),
    ))
}

/// `GET /api/v1/whoami` (operator): the identity the server sees in the bearer token.
async fn whoami(req: Request<State>) -> tide::Result {
    let actor = attempt!(operator(&req).await);
    Ok(json_response(
        StatusCode::Ok,
        &crate::views::whoami(&actor.identity),
    ))
}

async fn audit_verify(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let v = attempt!(blocking(req.state(), |s| Ok(s.store().audit_verify()?)).await);
    Ok(json_response(
        StatusCode::Ok,
        &crate::views::verification(v),
    ))
}

fn yaml_response(yaml: String) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(yaml);
    res.set_content_type("application/yaml");
    res
}

async fn config_by_token(req: Request<State>) -> tide::Result {
    let token = req.param("token")?.to_owned();
    let actor = Actor::agent(source_ip(&req));
    let fetched = attempt!(blocking(req.state(), move |s| s.fetch_config(&token, &actor)).await);
    Ok(yaml_response(fetched.yaml))
}

#[derive(Deserialize)]
struct PendingQuery {
    role: Option<String>,
}

async fn pending_config(req: Request<State>) -> tide::Result {
    let q: PendingQuery = req.query().unwrap_or(PendingQuery { role: None });
    let role = match q.role.as_deref().map(str::parse::<Role>) {
        None => Role::WorkerApp,
        Some(Ok(r)) => r,
        Some(Err(e)) => return Ok(error_response(StatusCode::BadRequest, "invalid_role", e)),
    };
    let yaml = attempt!(blocking(req.state(), move |s| s.pending_config(role)).await);
    Ok(yaml_response(yaml))
}

async fn attest(mut req: Request<State>) -> tide::Result {
    let body: attest_common::wire::AttestRequest = attempt!(decode(&mut req).await);
    let actor = Actor::agent(source_ip(&req));
    let response = attempt!(attest_core(req.state(), body, actor).await);
    Ok(json_response(StatusCode::Ok, &response))
}

async fn metrics(req: Request<State>) -> tide::Result {
    attempt!(operator(&req).await);
    let state = req.state().clone();
    let text = attempt!(
        blocking(req.state(), move |s| crate::metrics::render(
            s,
            &state.counters,
            crate::service::now()
        ))
        .await
    );
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(text);
    res.set_content_type("text/plain; version=0.0.4");
    Ok(res)
}

/// An attestation, its answer signed over the agent's nonce (JSON API and firmware link).
async fn attest_core(
    state: &State,
    body: attest_common::wire::AttestRequest,
    actor: Actor,
) -> Result<attest_common::wire::AttestResponse, Refusal> {
    use attest_common::crypto::aws_lc::AwsLc;
    use attest_common::nonce::{Domain, NonceSignature};
    use attest_common::wire::AttestResponse;
    let agent_nonce = body.agent_nonce;
    let outcome = blocking(state, move |s| s.attest(&body, &AwsLc, &actor)).await;
    crate::metrics::Counters::count(match outcome {
        Ok(_) => &state.counters.attest_accepted,
        Err(_) => &state.counters.attest_refused,
    });
    let outcome = outcome?;
    let config_url = outcome
        .config_token
        .as_ref()
        .map(|t| format!("{}/api/v1/config/{t}", state.service_url));
    let mut response = AttestResponse {
        machine_id: heapless::String::try_from(outcome.machine_id.as_str()).unwrap_or_default(),
        status: outcome.status,
        action: outcome.action,
        config_url: config_url.and_then(|u| heapless::String::try_from(u.as_str()).ok()),
        seconds_to_next_attestation: state.config.challenges.interval_seconds,
        signature: NonceSignature([0; 96]),
    };
    response.signature =
        state
            .response_signer
            .sign(Domain::Action, &agent_nonce.0, &response.signed_context());
    Ok(response)
}

async fn challenge(req: Request<State>) -> tide::Result {
    crate::metrics::Counters::count(&req.state().counters.challenges);
    // No I/O: the nonce is derived (crate::challenge), so no trip to the blocking pool.
    Ok(json_response(
        StatusCode::Ok,
        &req.state().service.challenge(),
    ))
}

/// The response key's public half, PEM.
fn server_key_pem(state: &AppState) -> String {
    let mut pem = vec![0u8; 400];
    pem_rfc7468::encode(
        "PUBLIC KEY",
        pem_rfc7468::LineEnding::LF,
        &state.response_key_spki,
        &mut pem,
    )
    .unwrap_or_default()
    .to_owned()
}

async fn offline_bundle(req: Request<State>) -> tide::Result {
    let actor = attempt!(operator(&req).await);
    let id = req.param("id")?.to_owned();
    let key = server_key_pem(req.state());
    let bundle =
        attempt!(blocking(req.state(), move |s| s.offline_bundle(&id, &key, &actor)).await);
    Ok(json_response(StatusCode::Ok, &bundle))
}

async fn enroll(mut req: Request<State>) -> tide::Result {
    let body: attest_common::wire::EnrollRequest = attempt!(decode(&mut req).await);
    let actor = Actor::agent(source_ip(&req));
    let response = attempt!(enroll_core(req.state(), body, actor).await);
    Ok(json_response(StatusCode::Ok, &response))
}

async fn enroll_core(
    state: &State,
    body: attest_common::wire::EnrollRequest,
    actor: Actor,
) -> Result<attest_common::wire::EnrollResponse, Refusal> {
    let done = blocking(state, move |s| s.enroll(&body, &actor)).await?;
    Ok(attest_common::wire::EnrollResponse {
        machine_id: heapless::String::try_from(done.machine.id.as_str()).unwrap_or_default(),
        status: done.machine.state.status,
    })
}

/// `POST /api/v1/link`: the firmware's requests, relayed from its serial line by
/// `attest-agent relay`, in postcard; answered by the same functions as the JSON API, in
/// postcard (errors as `LinkResponseBody::Error` with the status the JSON API would give).
async fn link(mut req: Request<State>) -> tide::Result {
    use attest_common::wire::{
        LinkRequest, LinkRequestBody as Q, LinkResponse, LinkResponseBody as A,
    };
    let bytes = attempt!(read_body(&mut req).await);
    let request: LinkRequest = attempt!(
        attest_common::wire::from_postcard(&bytes).map_err(|e| Refusal::new(
            StatusCode::BadRequest,
            "malformed_request",
            e.to_string()
        ))
    );
    let actor = Actor::agent(source_ip(&req));
    let state = req.state();
    let answer = match request.body {
        Q::Challenge(_) => Ok(A::Challenge(state.service.challenge())),
        Q::Register(r) => register_core(state, r, false, actor)
            .await
            .map(|(_, r)| A::Register(r)),
        Q::SelfRegister(r) => register_core(state, r, true, actor)
            .await
            .map(|(_, r)| A::Register(r)),
        Q::Attest(a) => attest_core(state, a, actor).await.map(A::Attest),
        Q::Enroll(e) => enroll_core(state, e, actor).await.map(A::Enroll),
        // Receipts are offline by design: an operator imports them (POST /machines/import).
        Q::Receipt(_) => Err(Refusal::new(
            StatusCode::BadRequest,
            "receipt_not_accepted",
            "receipts are kept by the relay (attest-agent relay --receipt-out FILE) and \
             imported by an operator with POST /api/v1/machines/import",
        )),
    };
    let body = answer.unwrap_or_else(|r| A::Error {
        status: r.status as u16,
        body: ErrorBody::new(r.code, &r.message),
    });
    let out = postcard::to_allocvec(&LinkResponse {
        seq: request.seq,
        body,
    })?;
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(out);
    res.set_content_type("application/octet-stream");
    Ok(res)
}

async fn import(mut req: Request<State>) -> tide::Result {
    use attest_common::wire::TpmReceipt;
    let actor = attempt!(operator(&req).await);
    let receipt: TpmReceipt = attempt!(decode(&mut req).await);
    let done = attempt!(blocking(req.state(), move |s| s.import(&receipt, &actor)).await);
    let stale = req.state().service.is_stale(&done.machine, unix_now());
    let status = if done.created {
        StatusCode::Created
    } else {
        StatusCode::Ok
    };
    Ok(json_response(status, &machine_json(&done.machine, stale)))
}

/// `GET /api/v1/backup` (operator): a consistent copy of the registry, as a redb file.
async fn backup(req: Request<State>) -> tide::Result {
    let actor = attempt!(operator(&req).await);
    let dir = req.state().config.data_dir.clone();
    let (path, summary) = attempt!(blocking(req.state(), move |s| s.backup(&dir, &actor)).await);
    // Opened, then unlinked: the copy lives exactly as long as the response streams it.
    let file = smol::fs::File::open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = file?;
    let len = file.metadata().await?.len();
    let mut res = tide::Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_reader(
        smol::io::BufReader::new(file),
        Some(len as usize),
    ));
    res.set_content_type("application/octet-stream");
    res.insert_header("x-itl-machines", summary.machines.to_string());
    res.insert_header("x-itl-audit-entries", summary.audit_entries.to_string());
    Ok(res)
}

async fn server_key(req: Request<State>) -> tide::Result {
    use base64ct::Encoding;
    let spki = &req.state().response_key_spki;
    let pem = server_key_pem(req.state());
    Ok(json_response(
        StatusCode::Ok,
        &json!({
            "algorithm": "ECDSA P-384 / SHA-384",
            "public_key_der": base64ct::Base64::encode_string(spki),
            "public_key_pem": pem,
        }),
    ))
}

/// The routes.
pub fn app(state: State) -> tide::Server<State> {
    let mut app = tide::with_state(state);
    app.at("/healthz").get(|_req: Request<State>| async {
        Ok(json_response(StatusCode::Ok, &crate::views::health()))
    });
    app.at("/api/v1/openapi.json")
        .get(|_req: Request<State>| async {
            Ok(json_response(StatusCode::Ok, &crate::openapi::document()))
        });
    app.at("/api/v1/register").post(|req| register(req, false));
    app.at("/api/v1/self-register")
        .post(|req| register(req, true));
    app.at("/api/v1/attest/challenge")
        .post(challenge)
        .get(challenge);
    app.at("/api/v1/attest").post(attest);
    app.at("/api/v1/server-key").get(server_key);
    app.at("/api/v1/config").get(pending_config);
    app.at("/api/v1/config/:token").get(config_by_token);
    app.at("/api/v1/machines").get(list);
    app.at("/api/v1/machines/import").post(import);
    app.at("/api/v1/machines/:id/offline-bundle")
        .get(offline_bundle);
    app.at("/api/v1/enroll").post(enroll);
    app.at("/api/v1/link").post(link);
    app.at("/api/v1/backup").get(backup);
    app.at("/api/v1/machines/:id").get(get).delete(delete);
    app.at("/api/v1/machines/:id/approvals").get(approvals);
    app.at("/api/v1/machines/:id/:action").post(operate);
    app.at("/api/v1/whoami").get(whoami);
    app.at("/api/v1/audit").get(audit_list);
    app.at("/api/v1/audit/verify").get(audit_verify);
    app.at("/metrics").get(metrics);
    app.at("*").all(|req: Request<State>| async move {
        Ok(error_response(
            StatusCode::NotFound,
            "not_found",
            &format!("no such endpoint: {} {}", req.method(), req.url().path()),
        ))
    });
    app
}

/// Serves `app` on `listener` until the listener breaks, at most `max_connections` at
/// once, closing connections idle for `idle` (crate::listener).
pub async fn serve(
    listener: TcpListener,
    app: tide::Server<State>,
    max_connections: usize,
    idle: std::time::Duration,
) -> std::io::Result<()> {
    crate::listener::accept_loop(listener, max_connections, idle, move |stream, peer| {
        let app = app.clone();
        async move {
            let result = async_h1::accept(stream, |mut req| {
                req.set_peer_addr(Some(peer));
                let app = app.clone();
                async move { app.respond(req).await }
            })
            .await;
            if let Err(e) = result {
                // A client that goes away, or goes quiet, is routine; anything else is logged.
                let routine = e.status() == tide::StatusCode::BadRequest
                    || e.downcast_ref::<std::io::Error>()
                        .is_some_and(crate::listener::is_routine_end);
                if !routine {
                    eprintln!("connection from {peer}: {e}");
                }
            }
        }
    })
    .await
}
