//! Agent-facing endpoints (no operator authentication): register, challenge, attest,
//! enroll, the firmware link, config delivery, the server key. Each decodes, calls the
//! service, encodes; the answers themselves (and their signatures) are the service's.

use attest_common::wire::{
    AttestRequest, EnrollRequest, ErrorBody, LinkRequest, LinkRequestBody as Q, LinkResponse,
    LinkResponseBody as A, RegisterRequest, Role, from_postcard,
};
use hyper::StatusCode;
use serde_json::json;

use super::request::Req;
use super::response::{self, Refusal, Reply};
use crate::store::Registry;

pub async fn healthz<R: Registry>(_req: Req<R>) -> Reply {
    Ok(response::json(StatusCode::OK, &crate::views::health()))
}

/// Readiness: 200 only when the registry answers a read, 503 `not_ready` otherwise and
/// while the server shuts down. `/healthz` (liveness) answers as long as the process serves.
pub async fn readyz<R: Registry>(req: Req<R>) -> Reply {
    let not_ready = |why: String| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why);
    if req.state.shutting_down() {
        return Err(not_ready("the server is shutting down".into()));
    }
    let state = req.state.clone();
    let damaged = state.service.registry().damaged_records();
    match smol::unblock(move || state.service.ready()).await {
        // Damaged records leave the server serving every other machine: ready, and said.
        Ok(()) => Ok(response::json(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "damaged_records": damaged.len(),
                "damaged_ids": damaged.iter().take(20).collect::<Vec<_>>(),
            }),
        )),
        Err(e) => Err(not_ready(format!(
            "the registry does not answer: {}",
            e.message
        ))),
    }
}

pub async fn openapi<R: Registry>(_req: Req<R>) -> Reply {
    Ok(response::json(StatusCode::OK, &crate::openapi::document()))
}

pub async fn register<R: Registry>(req: Req<R>) -> Reply {
    register_json(req, false).await
}

pub async fn self_register<R: Registry>(req: Req<R>) -> Reply {
    register_json(req, true).await
}

async fn register_json<R: Registry>(mut req: Req<R>, self_register: bool) -> Reply {
    let body: RegisterRequest = req.decode().await?;
    let actor = req.agent();
    let (created, answer) = req
        .service(move |s| s.register_answer(&body, self_register, &actor))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response::json(status, &answer))
}

pub async fn challenge<R: Registry>(req: Req<R>) -> Reply {
    // No I/O: the nonce is derived (crate::challenge), so no trip to the blocking pool.
    Ok(response::json(
        StatusCode::OK,
        &req.state.service.challenge(),
    ))
}

pub async fn attest<R: Registry>(mut req: Req<R>) -> Reply {
    let body: AttestRequest = req.decode().await?;
    let actor = req.agent();
    let answer = req.service(move |s| s.attest_answer(&body, &actor)).await?;
    Ok(response::json(StatusCode::OK, &answer))
}

pub async fn enroll<R: Registry>(mut req: Req<R>) -> Reply {
    let body: EnrollRequest = req.decode().await?;
    let actor = req.agent();
    let answer = req.service(move |s| s.enroll_answer(&body, &actor)).await?;
    Ok(response::json(StatusCode::OK, &answer))
}

/// `POST /api/v1/link`: the firmware's requests, relayed from its serial line by
/// `attest-agent relay`, in postcard; answered by the same service calls as the JSON API,
/// in postcard (errors as `LinkResponseBody::Error` with the status the JSON API would give).
pub async fn link<R: Registry>(mut req: Req<R>) -> Reply {
    let bytes = req.body().await?;
    let request: LinkRequest = from_postcard(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string()))?;
    let actor = req.agent();
    let answer = match request.body {
        Q::Challenge(_) => Ok(A::Challenge(req.state.service.challenge())),
        Q::Register(r) => req
            .service(move |s| s.register_answer(&r, false, &actor))
            .await
            .map(|(_, r)| A::Register(r)),
        Q::SelfRegister(r) => req
            .service(move |s| s.register_answer(&r, true, &actor))
            .await
            .map(|(_, r)| A::Register(r)),
        Q::Attest(a) => req
            .service(move |s| s.attest_answer(&a, &actor))
            .await
            .map(A::Attest),
        Q::Enroll(e) => req
            .service(move |s| s.enroll_answer(&e, &actor))
            .await
            .map(A::Enroll),
        // Receipts are offline by design: an operator imports them (POST /machines/import).
        Q::Receipt(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "receipt_not_accepted",
            "receipts are kept by the relay (attest-agent relay --receipt-out FILE) and \
             imported by an operator with POST /api/v1/machines/import",
        )),
    };
    let body = answer.unwrap_or_else(|r| A::Error {
        status: r.status.as_u16(),
        body: ErrorBody::new(r.code, &r.message),
    });
    let out = postcard::to_allocvec(&LinkResponse {
        seq: request.seq,
        body,
    })
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(response::with_body(
        StatusCode::OK,
        "application/octet-stream",
        response::full(out),
    ))
}

pub async fn config_by_token<R: Registry>(req: Req<R>) -> Reply {
    let token = req.param(0);
    let actor = req.agent();
    let fetched = req.service(move |s| s.fetch_config(&token, &actor)).await?;
    Ok(response::yaml(fetched.yaml))
}

pub async fn pending_config<R: Registry>(req: Req<R>) -> Reply {
    let role = match req.query("role").as_deref().map(str::parse::<Role>) {
        None => Role::WorkerApp,
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(Refusal::new(StatusCode::BAD_REQUEST, "invalid_role", e)),
    };
    let yaml = req.service(move |s| s.pending_config(role)).await?;
    Ok(response::yaml(yaml))
}

pub async fn server_key<R: Registry>(req: Req<R>) -> Reply {
    Ok(response::json(
        StatusCode::OK,
        &req.state.service.server_key()?,
    ))
}
