//! Operator endpoints (Bearer: OIDC or the break-glass token): the machine list and
//! detail, lifecycle actions, approvals, audit, metrics, offline bundles, import, backup.

use attest_common::lifecycle::Status;
use attest_common::wire::{Role, TpmReceipt};
use hyper::StatusCode;
use serde::Deserialize;

use super::request::Req;
use super::response::{self, Refusal, Reply};
use crate::record::MachineRecord;
use crate::service::{Approval, ApproveOutcome};
use crate::store::Registry;
use crate::views;

/// The machine as the API shows it (`attest-api`'s view).
pub fn machine_json(m: &MachineRecord, stale: bool) -> attest_api::Machine {
    views::machine(m, stale)
}

/// A machine as the operator endpoints answer it, staleness judged now.
fn machine_reply<R: Registry>(req: &Req<R>, status: StatusCode, m: &MachineRecord) -> Reply {
    let stale = req.state.service.is_stale(m);
    Ok(response::json(status, &machine_json(m, stale)))
}

pub async fn list<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let status = match req.query("status").as_deref().map(str::parse::<Status>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                e.to_string(),
            ));
        }
    };
    // A bare array (the seed's: `jq '.[] | select(...)'`), written as the registry is read
    // (crate::streamed). Its count goes first, in `X-Total-Count`: one counting pass before
    // (a machine added or removed between the two passes may make them differ by it); a
    // damaged record is skipped and counted in `X-Damaged-Records`.
    let counting = req.state.clone();
    let total = smol::unblock(move || {
        let mut n = 0u64;
        counting
            .service
            .each_machine(status, |_, _| {
                n += 1;
                std::ops::ControlFlow::Continue(())
            })
            .map(|()| n)
    })
    .await?;
    let damaged_before = req.state.service.registry().damaged_records().len();
    let state = req.state.clone();
    let (first, rest) = crate::streamed::start(move |out| {
        let mut buf = b"[".to_vec();
        let mut total = 0u64;
        let mut gone = false;
        let scan = state.service.each_machine(status, |m, stale| {
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
                buf.push(b']');
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
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the listing ended before it began",
            ));
        }
    };
    let mut res = response::with_body(
        StatusCode::OK,
        "application/json",
        response::streamed(rest.after(first)),
    );
    let headers = res.headers_mut();
    headers.insert("x-total-count", total.into());
    headers.insert("x-damaged-records", damaged_before.into());
    Ok(res)
}

pub async fn get<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let id = req.param(0);
    let (m, votes) = req
        .service(move |s| Ok((s.machine(&id)?, s.approvals(&id)?)))
        .await?;
    let stale = req.state.service.is_stale(&m);
    let detail = views::detail(machine_json(&m, stale), views::approvals(&votes));
    Ok(response::json(StatusCode::OK, &detail))
}

pub async fn approvals<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let id = req.param(0);
    let votes = req.service(move |s| s.approvals(&id)).await?;
    Ok(response::json(
        StatusCode::OK,
        &views::approval_list(views::approvals(&votes)),
    ))
}

pub async fn delete<R: Registry>(req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    let id = req.param(0);
    req.service(move |s| s.delete(&id, &actor)).await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
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

/// `POST /api/v1/machines/{id}/{action}`.
pub async fn operate<R: Registry>(mut req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    let (id, action) = (req.param(0), req.param(1));
    let record = match action.as_str() {
        "approve" => {
            let b: ApproveBody = req.decode().await?;
            let approval = Approval {
                role: b.role,
                hostname: b.hostname,
                assigned_ip: b.assigned_ip,
            };
            match req
                .service(move |s| s.approve(&id, &approval, &actor))
                .await?
            {
                ApproveOutcome::Approved(record) => *record,
                ApproveOutcome::Pending {
                    approvals_received,
                    approvals_required,
                    expires_at,
                } => {
                    return Ok(response::json(
                        StatusCode::ACCEPTED,
                        &views::approve_pending(approvals_received, approvals_required, expires_at),
                    ));
                }
            }
        }
        "reject" | "lock" | "unlock" | "reset-baseline" => {
            let b: ReasonBody = req.decode_or_default().await?;
            req.service(move |s| match action.as_str() {
                "reject" => s.reject(&id, &b.reason, &actor),
                "lock" => s.lock(&id, &b.reason, &actor),
                "unlock" => s.unlock(&id, &b.reason, &actor),
                _ => s.reset_baseline(&id, &b.reason, &actor),
            })
            .await?
        }
        "revoke" => {
            let b: RevokeBody = req.decode().await?;
            req.service(move |s| s.revoke(&id, b.wipe, &b.reason, &actor))
                .await?
        }
        other => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no machine action '{}' (approve, reject, lock, unlock, revoke, reset-baseline)",
                    crate::log::escape(other)
                ),
            ));
        }
    };
    machine_reply(&req, StatusCode::OK, &record)
}

pub async fn audit_list<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let page = req.query_number("page")?.unwrap_or(1).max(1);
    let per_page = req.query_number("per_page")?.unwrap_or(50);
    if !(1..=200).contains(&per_page) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "per_page must be 1 to 200",
        ));
    }
    let machine = req.query("machine_id");
    let filter = machine
        .as_deref()
        .map(|m| format!("&machine_id={}", crate::http::request::pct(m)))
        .unwrap_or_default();
    let (entries, total) = req
        .service(move |s| s.audit_page(machine.as_deref(), page, per_page))
        .await?;
    // A bare array, newest first (the seed's); the count and the pages in headers.
    let mut res = response::json(StatusCode::OK, &views::audit_page(entries));
    let last = total.div_ceil(per_page).max(1);
    let link = |p: usize, rel: &str| {
        format!("</api/v1/audit?page={p}&per_page={per_page}{filter}>; rel=\"{rel}\"")
    };
    let mut links = vec![link(1, "first"), link(last, "last")];
    if page < last {
        links.push(link(page + 1, "next"));
    }
    if page > 1 {
        links.push(link((page - 1).min(last), "prev"));
    }
    let headers = res.headers_mut();
    headers.insert("x-total-count", total.into());
    if let Ok(v) = links.join(", ").parse() {
        headers.insert("link", v);
    }
    Ok(res)
}

/// `GET /api/v1/whoami` (operator): the identity the server sees in the bearer token.
pub async fn whoami<R: Registry>(req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    Ok(response::json(
        StatusCode::OK,
        &views::whoami(&actor.identity, actor.is_break_glass()),
    ))
}

/// `GET /api/v1/audit/verify` (operator): the chain checked against the signed checkpoints;
/// a valid log's head is signed as it is answered.
pub async fn audit_verify<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let v = req.service(|s| s.audit_verify()).await?;
    Ok(response::json(StatusCode::OK, &views::verification(v)))
}

/// `GET /api/v1/audit/checkpoints` (operator): every signed checkpoint, oldest first, a bare
/// array, for operators to copy where the server cannot rewrite them.
pub async fn audit_checkpoints<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let all = req.service(|s| s.audit_checkpoints()).await?;
    Ok(response::json(StatusCode::OK, &all))
}

pub async fn metrics<R: Registry>(req: Req<R>) -> Reply {
    req.operator().await?;
    let text = req.service(|s| s.metrics()).await?;
    Ok(response::with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        response::full(text),
    ))
}

pub async fn offline_bundle<R: Registry>(req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    let id = req.param(0);
    let bundle = req.service(move |s| s.offline_bundle(&id, &actor)).await?;
    Ok(response::json(StatusCode::OK, &bundle))
}

pub async fn import<R: Registry>(mut req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    let receipt: TpmReceipt = req.decode().await?;
    let done = req.service(move |s| s.import(&receipt, &actor)).await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    machine_reply(&req, status, &done.machine)
}

/// `GET /api/v1/backup` (operator): a consistent copy of the registry, as a file of the registry backend (redb).
pub async fn backup<R: Registry>(req: Req<R>) -> Reply {
    let actor = req.operator().await?;
    let dir = req.state.config.data_dir.clone();
    let (path, summary) = req.service(move |s| s.backup(&dir, &actor)).await?;
    // Opened, then unlinked: the copy lives exactly as long as the response streams it.
    let file = std::fs::File::open(&path);
    let _ = std::fs::remove_file(&path);
    let file = file.map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            e.to_string(),
        )
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut res = response::with_body(
        StatusCode::OK,
        "application/octet-stream",
        response::streamed(crate::streamed::file_chunks(file)),
    );
    let headers = res.headers_mut();
    for (name, value) in [
        ("content-length", len),
        ("x-itl-machines", summary.machines),
        ("x-itl-audit-entries", summary.audit_entries),
    ] {
        headers.insert(name, value.into());
    }
    Ok(res)
}
