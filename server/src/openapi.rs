//! `GET /api/v1/openapi.json`: the API as it is served, for clients and for schemathesis.
//! A test walks the routes and requires each to be described here; another
//! (`tests/views.rs`) validates `attest-api`'s views, and the server's real answers, against
//! the component schemas below.

use serde_json::{Value, json};

fn error_ref() -> Value {
    schema_ref("Error")
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A JSON answer of the component schema `name`.
fn content(name: &str) -> Value {
    json!({"application/json": {"schema": schema_ref(name)}})
}

/// Sets the body of the `code` answer of `op` to the component schema `name`.
fn answers(op: &mut Value, code: &str, name: &str) {
    if op["responses"][code].is_null() {
        op["responses"][code] = json!({"description": "success"});
    }
    op["responses"][code]["content"] = content(name);
}

/// OpenAPI 3.0's way of allowing `null` (an enum lists it as well).
fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.push(Value::Null);
    }
    schema
}

/// An object whose every property the server always sends (`null` when absent).
fn object(properties: Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map_or(vec![], |p| p.keys().collect());
    json!({"type": "object", "required": required, "properties": properties})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time", "description": "RFC 3339, UTC"})
}

fn role() -> Value {
    json!({"type": "string", "enum": ["controlplane", "worker-infra", "worker-app"]})
}

fn status() -> Value {
    json!({"type": "string",
        "enum": ["pending_approval", "registered", "attested", "locked", "revoked", "rejected"]})
}

/// The answers' schemas: `attest-api`'s views.
fn schemas() -> Value {
    let machine = object(json!({
        "machine_id": string(),
        "ek_fingerprint": {"type": "string", "pattern": "^[0-9a-f]{96}$"},
        "ek_source": {"type": "string", "enum": ["cert", "pub"]},
        "status": status(),
        "wipe_pending": {"type": "boolean"},
        "role": nullable(role()),
        "hostname": nullable(string()),
        "assigned_ip": nullable(string()),
        "desired_role": nullable(role()),
        "cluster_id": string(),
        "hw_uuid": nullable(string()),
        "hw_mac": nullable(string()),
        "hw_serial": nullable(string()),
        "hw_product": nullable(string()),
        "created_at": time(),
        "updated_at": time(),
        "last_attested_at": nullable(time()),
        "stale": {"type": "boolean", "description": "attested, but silent for longer than the interval × ITL_LIVENESS_FACTOR"},
        "pcr_baseline_pinned": {"type": "boolean"},
        "tpm_clock": nullable(json!({"type": "object",
            "description": "TPMS_CLOCK_INFO and firmwareVersion of the last accepted quote",
            "required": ["reset_count", "restart_count", "clock_ms", "safe", "firmware_version"],
            "properties": {
                "reset_count": integer(), "restart_count": integer(), "clock_ms": integer(),
                "safe": {"type": "boolean"}, "firmware_version": string()}})),
        "tpm_proven": {"type": "boolean", "description": "the TPM activated the credential for its AK; until then hardware fields and desired role are unproven claims"},
        "ek_chain": {"type": "object", "required": ["status"],
            "description": "whether the EK certificate chains to a TPM vendor's CA (ITL_EK_CHAIN)",
            "properties": {
                "status": {"type": "string", "enum": ["verified", "unverified", "unchecked"]},
                "by": {"type": "string", "description": "the trust anchor (verified)"},
                "reason": {"type": "string", "description": "why not (unverified)"}}}
    }));
    let approval = object(json!({
        "state": {"type": "string", "enum": ["approved", "pending"]},
        "operator": string(),
        "role": role(),
        "hostname": string(),
        "assigned_ip": string(),
        "at": time()
    }));
    let hash = json!({"type": "string", "pattern": "^[0-9a-f]{96}$"});
    let audit_entry = object(json!({
        "seq": integer(),
        "timestamp": {"type": "integer", "minimum": 0, "description": "seconds since the epoch"},
        "operator_cn": string(),
        "action": string(),
        "machine_id": nullable(string()),
        "prev_state": nullable(string()),
        "new_state": nullable(string()),
        "detail": string(),
        "source_ip": nullable(string()),
        "prev_hash": hash,
        "entry_hash": hash
    }));
    json!({
        "Error": object(json!({"error": string(), "message": string()})),
        "Machine": machine,
        "MachineDetail": {"allOf": [schema_ref("Machine"), {"type": "object", "required": ["approvals"],
            "properties": {"approvals": {"type": "array", "items": schema_ref("Approval")}}}]},
        "MachineList": {"type": "array", "items": schema_ref("Machine"),
            "description": "a bare array (the seed's); X-Total-Count: the count; X-Damaged-Records: records left out as damaged"},
        "Approval": approval,
        "ApprovalList": object(json!({"approvals": {"type": "array", "items": schema_ref("Approval")}})),
        "ApprovePending": object(json!({
            "status": {"type": "string", "enum": ["pending_second_approval"]},
            "approvals_received": integer(),
            "approvals_required": integer(),
            "expires_at": time()
        })),
        "AuditEntry": audit_entry,
        "AuditPage": {"type": "array", "items": schema_ref("AuditEntry"),
            "description": "a bare array, newest first (page 1 is the most recent); X-Total-Count: entries matching; Link: first, last, next, prev pages"},
        "AuditVerification": object(json!({
            "valid": {"type": "boolean"},
            "entries": integer(),
            "root_hash": hash,
            "first_invalid_id": nullable(integer()),
            "error": nullable(string()),
            "checkpoints": {"type": "integer", "minimum": 0,
                "description": "signed checkpoints found good (up to the first failure)"},
            "latest_checkpoint": nullable(json!({"allOf": [schema_ref("AuditCheckpoint")],
                "description": "the newest checkpoint, for the client to keep (null: none, or the log is not valid)"}))
        })),
        "AuditCheckpoint": {
            "type": "object",
            "required": ["seq", "entry_hash", "timestamp", "signature"],
            "description": "The server's response key vouches that audit entry seq had hash entry_hash at timestamp: ECDSA P-384/SHA-384 over \"itl-attestation/v1/audit-checkpoint\" 0x00 u32be(48) entry_hash u32be(16) u64be(seq) u64be(timestamp)",
            "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "entry_hash": hash,
                "timestamp": {"type": "integer", "minimum": 0, "description": "seconds since the epoch"},
                "signature": {"type": "string", "pattern": "^[A-Za-z0-9+/]{128}$",
                    "description": "r ‖ s (96 bytes), base64"}
            }
        },
        "Whoami": object(json!({"identity": string(), "break_glass": {"type": "boolean"}})),
        "Health": object(json!({"status": {"type": "string", "enum": ["ok"]}, "version": string()})),
        "OfflineBundle": object(json!({
            "machine_id": string(),
            "role": role(),
            "hostname": string(),
            "iso_url": nullable(string()),
            "config_token": string(),
            "config_url": nullable(string()),
            "machineconfig": {"type": "string", "description": "the full MachineConfig (YAML) with the enrollment key"},
            "enrollment_cert_pem": string(),
            "enrollment_cert_serial": string(),
            "enrollment_cert_not_after": time(),
            "enrollment_ca_pem": string(),
            "server_key_pem": string()
        }))
    })
}

fn responses(ok: &str, codes: &[u16]) -> Value {
    let mut r = serde_json::Map::new();
    r.insert(ok.into(), json!({"description": "success"}));
    for c in codes {
        r.insert(
            c.to_string(),
            json!({"description": "error", "content": {"application/json": {"schema": error_ref()}}}),
        );
    }
    Value::Object(r)
}

fn operator(summary: &str, ok: &str, codes: &[u16]) -> Value {
    json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": responses(ok, &[&[401u16, 403, 503][..], codes].concat()),
    })
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let register = json!({
        "type": "object",
        "required": ["ek_fingerprint"],
        "properties": {
            "ek_fingerprint": {"type": "string", "pattern": "^[0-9a-fA-F]{96}$"},
            "ek_cert_pem": {"type": "string", "description": "base64 of the EK certificate PEM"},
            "ek_public": {"type": "string", "description": "base64 of the EK's TPM2B_PUBLIC (ek_source pub, a TPM without an EK certificate): exactly the TCG EK template L-1 (RSA-2048) or H-3 (ECC P-384), else 422 not_an_ek; ek_fingerprint is the SHA-384 of its key's DER SubjectPublicKeyInfo"},
            "ek_source": {"type": "string", "enum": ["cert", "pub"]},
            "hw_uuid": {"type": "string", "maxLength": 128},
            "hw_mac": {"type": "string", "maxLength": 128},
            "hw_serial": {"type": "string", "maxLength": 128},
            "hw_product": {"type": "string", "maxLength": 128},
            "desired_role": {"type": "string", "enum": ["controlplane", "worker-infra", "worker-app"]},
            "cluster_id": {"type": "string", "maxLength": 63},
            "ak_public": {"type": "string", "description": "base64 TPM2B_PUBLIC of the AK"},
            "agent_nonce": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "the agent's fresh nonce: the answer's signature (field signature, response key, domain action) is over SHA-384 of the request's postcard encoding, so it is good for this request alone; a known EK's answer names no machine (machine_id empty)"}
        }
    });
    let reason = json!({"type": "object", "properties": {"reason": {"type": "string"}}});
    let mut reject = operator("Reject a pending machine", "200", &[400, 404, 409]);
    reject["parameters"] = id_param();
    let mut lock = operator("Lock an attested machine", "200", &[400, 404, 409]);
    lock["parameters"] = id_param();
    let mut unlock = operator("Unlock a locked machine", "200", &[400, 404, 409]);
    unlock["parameters"] = id_param();
    let mut reset_baseline = operator(
        "Forget the machine's PCR baseline; its next verified attestation pins a new one",
        "200",
        &[400, 404],
    );
    reset_baseline["parameters"] = id_param();
    for op in [&mut reject, &mut lock, &mut unlock, &mut reset_baseline] {
        op["requestBody"] = json!({"content": {"application/json": {"schema": reason}}});
        answers(op, "200", "Machine");
    }
    let mut approve = operator(
        "Approve (a vote under dual control: 202 until the quorum)",
        "200",
        &[400, 404, 409],
    );
    approve["parameters"] = id_param();
    answers(&mut approve, "200", "Machine");
    approve["responses"]["202"] = json!({"description": "pending_second_approval",
        "content": content("ApprovePending")});
    approve["requestBody"] = body(json!({
        "type": "object", "required": ["role", "hostname", "assigned_ip"],
        "properties": {
            "role": {"type": "string", "enum": ["controlplane", "worker-infra", "worker-app"]},
            "hostname": {"type": "string"},
            "assigned_ip": {"type": "string", "description": "address/prefix, e.g. 10.0.0.5/24"}
        }
    }));
    let mut revoke = operator(
        "Revoke, optionally with a remote wipe",
        "200",
        &[400, 404, 409],
    );
    revoke["parameters"] = id_param();
    answers(&mut revoke, "200", "Machine");
    revoke["requestBody"] = body(json!({
        "type": "object", "required": ["reason"],
        "properties": {"wipe": {"type": "boolean"}, "reason": {"type": "string"}}
    }));
    let mut get = operator(
        "Machine detail with its approval votes (approved and pending)",
        "200",
        &[404],
    );
    get["parameters"] = id_param();
    answers(&mut get, "200", "MachineDetail");
    let mut delete = operator(
        "Delete a revoked or rejected record (audit stays)",
        "204",
        &[404, 409],
    );
    delete["parameters"] = id_param();
    let mut bundle = operator(
        "Offline bundle: ISO URL, config token and URL, full MachineConfig with a new enrollment certificate and key",
        "200",
        &[403, 404, 409, 503],
    );
    bundle["parameters"] = id_param();
    answers(&mut bundle, "200", "OfflineBundle");
    let mut import = operator(
        "Import a TPM receipt (attest-agent receipt): registered, idempotent on the EK",
        "201",
        &[400, 413, 422],
    );
    answers(&mut import, "201", "Machine");
    import["responses"]["200"] = json!({"description": "already known (the same EK)",
        "content": content("Machine")});
    import["requestBody"] = body(
        json!({"type": "object", "required": ["format", "identity", "agent_version", "created_at"]}),
    );
    let mut approvals = operator(
        "Approval votes: those that approved the machine, then pending dual-control votes",
        "200",
        &[404],
    );
    approvals["parameters"] = id_param();
    answers(&mut approvals, "200", "ApprovalList");
    let mut list = operator("List machines", "200", &[400]);
    answers(&mut list, "200", "MachineList");
    list["parameters"] = json!([{"name": "status", "in": "query", "schema": {"type": "string",
        "enum": ["pending_approval", "registered", "attested", "locked", "revoked", "rejected"]}}]);
    let mut audit = operator("Audit entries, oldest first", "200", &[400]);
    answers(&mut audit, "200", "AuditPage");
    audit["parameters"] = json!([
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
        {"name": "machine_id", "in": "query", "schema": {"type": "string"}}
    ]);
    let mut whoami = operator(
        "The operator identity the server sees in the bearer token",
        "200",
        &[],
    );
    answers(&mut whoami, "200", "Whoami");
    let mut verify = operator(
        "Recompute the audit chain and check it against the signed checkpoints; a valid log's head is signed",
        "200",
        &[],
    );
    answers(&mut verify, "200", "AuditVerification");
    let mut checkpoints = operator(
        "Every signed checkpoint of the audit chain, oldest first, to keep where the server cannot rewrite them",
        "200",
        &[],
    );
    checkpoints["responses"]["200"]["content"] = json!({"application/json": {"schema":
        {"type": "array", "items": schema_ref("AuditCheckpoint")}}});
    let mut health = json!({"summary": "Liveness", "responses": responses("200", &[])});
    answers(&mut health, "200", "Health");
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ITL attestation server", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "OIDC access token, or the break-glass ITL_ADMIN_TOKEN"}},
            "schemas": schemas()
        },
        "paths": {
            "/healthz": {"get": health},
            "/readyz": {"get": {"summary": "Readiness: the registry answers a read and the server is not shutting down (503 not_ready otherwise)",
                "responses": responses("200", &[503])}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": responses("200", &[])}},
            "/api/v1/register": {"post": {"summary": "Pre-register a machine (USB agent); answers the ISO URL when an ISO source is configured",
                "requestBody": body(register.clone()), "responses": responses("201", &[400, 409, 413, 422, 503])}},
            "/api/v1/self-register": {"post": {"summary": "Zero-touch registration (pending approval)",
                "requestBody": body(register), "responses": responses("201", &[400, 409, 413, 422])}},
            "/api/v1/attest/challenge": {
                "post": {"summary": "A single-use nonce with lifetime and PCR selection", "responses": responses("200", &[])},
                "get": {"summary": "Same as POST (seed compatibility)", "responses": responses("200", &[])}},
            "/api/v1/attest": {"post": {"summary": "Push attestation: quote over the challenge nonce (first time with the activation proof); answers a signed action",
                "requestBody": body(json!({"type": "object", "required": ["ek_fingerprint", "nonce_id", "agent_nonce", "quote", "signature", "pcr_values"]})),
                "responses": responses("200", &[400, 403, 404, 409, 410, 413, 422])}},
            "/api/v1/server-key": {"get": {"summary": "The response-signing public key, to pin", "responses": responses("200", &[])}},
            "/api/v1/config": {"get": {"summary": "A role's config without secrets",
                "parameters": [{"name": "role", "in": "query", "schema": {"type": "string"}}],
                "responses": responses("200", &[400, 503])}},
            "/api/v1/config/{token}": {"get": {"summary": "The machine's config (YAML)",
                "parameters": [{"name": "token", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": responses("200", &[403, 404, 503])}},
            "/api/v1/machines": {"get": list},
            "/api/v1/machines/{id}": {"get": get, "delete": delete},
            "/api/v1/machines/{id}/approvals": {"get": approvals},
            "/api/v1/machines/{id}/approve": {"post": approve},
            "/api/v1/machines/{id}/reject": {"post": reject},
            "/api/v1/machines/{id}/lock": {"post": lock},
            "/api/v1/machines/{id}/unlock": {"post": unlock},
            "/api/v1/machines/{id}/revoke": {"post": revoke},
            "/api/v1/machines/{id}/reset-baseline": {"post": reset_baseline},
            "/api/v1/machines/{id}/offline-bundle": {"get": bundle},
            "/api/v1/machines/import": {"post": import},
            "/api/v1/enroll": {"post": {"summary": "Prove the enrollment key over a challenge nonce (air-gapped path): audited, the state unchanged; the answer is signed over the request's digest (field signature)",
                "requestBody": body(json!({"type": "object", "required": ["cert_pem", "nonce_id", "signature"]})),
                "responses": responses("200", &[400, 403, 404, 409, 410, 413, 503])}},
            "/api/v1/link": {"post": {"summary": "Firmware link (postcard LinkRequest in, LinkResponse out; errors inside the envelope)",
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": responses("200", &[400, 413])}},
            "/api/v1/backup": {"get": operator("A consistent copy of the registry (redb file)", "200", &[])},
            "/api/v1/whoami": {"get": whoami},
            "/api/v1/audit": {"get": audit},
            "/api/v1/audit/verify": {"get": verify},
            "/api/v1/audit/checkpoints": {"get": checkpoints},
            "/metrics": {"get": operator("Prometheus metrics (text format): machines by status, stale machines, challenges, attestations by result, heartbeat commits", "200", &[])}
        }
    })
}
