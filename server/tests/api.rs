//! The operator and registration API over real HTTP on 127.0.0.1, on a real redb file.

mod support;

use base64ct::Encoding;
use serde_json::json;
use support::{ADMIN, Server};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");

fn register_body(pem: &str) -> String {
    let fp = attest_common::ek_fingerprint(pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    json!({
        "ek_fingerprint": fp,
        "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes()),
        "hw_uuid": "4c4c4544-0042",
        "hw_serial": "SN-1",
        "desired_role": "worker-app",
    })
    .to_string()
}

#[test]
fn zero_touch_registration_and_operator_actions() {
    let server = Server::start();
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["status"], "pending_approval");
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    // Idempotent: 200 and nothing written (it proves nothing, DESIGN.md §3.8); the answer
    // names no machine (whoever holds a public EK certificate learns none) and is signed.
    let (status, again) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!((status, again["machine_id"].as_str()), (200, Some("")));
    assert_eq!(again["role"], serde_json::Value::Null, "{again}");
    assert!(again["signature"].is_string(), "{again}");

    let (status, list) = server.call(
        "GET",
        "/api/v1/machines?status=pending_approval",
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);

    let approve = json!({"role": "controlplane", "hostname": "cp-1", "assigned_ip": "10.0.0.5/24"})
        .to_string();
    let (status, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(&approve),
    );
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (
            m["status"].as_str(),
            m["role"].as_str(),
            m["hostname"].as_str()
        ),
        (Some("registered"), Some("controlplane"), Some("cp-1"))
    );

    // Undefined transition: 409 with the JSON error shape, nothing written.
    let before = server.audit_total();
    let (status, err) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/lock"),
        Some(ADMIN),
        Some(r#"{"reason":"x"}"#),
    );
    assert_eq!(status, 409);
    assert_eq!(err["error"], "invalid_transition");
    assert_eq!(err["message"], "cannot lock a machine in state registered");
    assert_eq!(before, server.audit_total());

    let (status, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"wipe":true,"reason":"stolen"}"#),
    );
    assert_eq!(
        (status, m["status"].as_str(), m["wipe_pending"].as_bool()),
        (200, Some("revoked"), Some(true))
    );

    // The audit log says who: the agent, then SYSTEM for break-glass actions.
    let who: Vec<(String, String)> = server
        .audit_column(&id, "operator_cn")
        .into_iter()
        .zip(server.audit_column(&id, "action"))
        .collect();
    assert_eq!(
        who,
        [
            ("agent".into(), "self-register".into()),
            ("SYSTEM".into(), "approve".into()),
            ("SYSTEM".into(), "revoke".into())
        ]
    );
    let (status, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(status, 200);
    assert_eq!(
        (v["valid"].as_bool(), v["entries"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(v["root_hash"].as_str().unwrap().len(), 96);

    let (status, _) = server.call(
        "DELETE",
        &format!("/api/v1/machines/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 204);
    let (status, err) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!((status, err["error"].as_str()), (404, Some("not_found")));
}

#[test]
fn authentication_and_bad_requests() {
    let server = Server::start();
    let (status, err) = server.call("GET", "/api/v1/machines", None, None);
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("missing_token"))
    );
    let (status, err) = server.call("GET", "/api/v1/machines", Some("wrong"), None);
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("invalid_token"))
    );

    // Malformed JSON and wrong types: 400 naming the field; nothing written.
    let (status, err) = server.call("POST", "/api/v1/register", None, Some("{not json"));
    assert_eq!(status, 400);
    assert_eq!(err["error"], "malformed_request");
    let (status, err) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(r#"{"ek_fingerprint": 5}"#),
    );
    assert_eq!(status, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("ek_fingerprint:"),
        "{err}"
    );
    let legacy = json!({"ek_fingerprint": "ab".repeat(32)}).to_string();
    let (status, err) = server.call("POST", "/api/v1/register", None, Some(&legacy));
    assert_eq!(status, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("upgrade the agent"),
        "{err}"
    );
    // The fingerprint must match the certificate: 422.
    let mut body: serde_json::Value = serde_json::from_str(&register_body(EK_P384)).unwrap();
    body["ek_fingerprint"] = json!("cd".repeat(48));
    let (status, err) = server.call("POST", "/api/v1/register", None, Some(&body.to_string()));
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("fingerprint_mismatch"))
    );
    // Oversized body: 413.
    let big = format!(r#"{{"ek_fingerprint":"{}"}}"#, "a".repeat(70_000));
    let (status, err) = server.call("POST", "/api/v1/register", None, Some(&big));
    assert_eq!(
        (status, err["error"].as_str()),
        (413, Some("body_too_large"))
    );
    // Unknown ids and actions, bad approvals.
    let (status, _) = server.call("POST", "/api/v1/machines/nope/lock", Some(ADMIN), None);
    assert_eq!(status, 404);
    let (status, _) = server.call("POST", "/api/v1/machines/nope/explode", Some(ADMIN), None);
    assert_eq!(status, 404);
    let (status, err) = server.call("GET", "/api/v1/audit?per_page=500", Some(ADMIN), None);
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(v["entries"], 0, "nothing was written by any bad request");
}

#[test]
fn no_auth_configured_is_503_and_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[]);
    let (status, err) = server.call("GET", "/api/v1/machines", Some("anything"), None);
    assert_eq!(status, 503);
    assert!(err["message"].as_str().unwrap().contains("ITL_ADMIN_TOKEN"));
    let (status, reg) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(status, 201, "{reg}");
    server.stop();

    let server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["machine_id"], reg["machine_id"]);
    assert_eq!(list[0]["status"], "registered");
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(
        (v["valid"].as_bool(), v["entries"].as_u64()),
        (Some(true), Some(1))
    );
}

#[test]
fn dual_control_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_DUAL_CONTROL_ROLES", "controlplane"),
            ("ITL_DUAL_CONTROL_QUORUM", "2"),
            // The break-glass token votes here only because this says it may (without it:
            // 403 break_glass_not_counted, tests/oidc.rs).
            ("ITL_DUAL_CONTROL_BREAK_GLASS", "true"),
        ],
    );
    let (_, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body(EK_P384)),
    );
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    let approve = json!({"role": "controlplane", "hostname": "cp-1", "assigned_ip": "10.0.0.5/24"})
        .to_string();
    let path = format!("/api/v1/machines/{id}/approve");
    let (status, body) = server.call("POST", &path, Some(ADMIN), Some(&approve));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending_second_approval");
    assert_eq!(
        (
            body["approvals_received"].as_u64(),
            body["approvals_required"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let (_, detail) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(detail["approvals"][0]["operator"], "SYSTEM");
    // SYSTEM counts once.
    let (status, err) = server.call("POST", &path, Some(ADMIN), Some(&approve));
    assert_eq!(
        (status, err["error"].as_str()),
        (409, Some("duplicate_approval"))
    );
    let (status, list) = server.call(
        "GET",
        &format!("/api/v1/machines/{id}/approvals"),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (status, list["approvals"].as_array().unwrap().len()),
        (200, 1)
    );
}

#[test]
fn challenges_and_the_server_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("ITL_PCR_SELECTION", "sha384:0-7+sha256:16")]);
    let (status, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["nonce"].as_str().unwrap().len(), 64);
    assert_eq!(c["hash_alg"], "sha384");
    assert_eq!(
        c["pcr_selection"][1],
        json!({"hash_alg": "sha256", "pcrs": [16]})
    );
    assert!(c["expires_at"].as_str().unwrap().ends_with('Z'));
    let (status, c2) = server.call("GET", "/api/v1/attest/challenge", None, None);
    assert_eq!(status, 200);
    assert_ne!(c["nonce"], c2["nonce"]);

    // The published key is the one in the data directory, and OpenSSL reads it.
    let (status, key) = server.call("GET", "/api/v1/server-key", None, None);
    assert_eq!(status, 200);
    let pem = key["public_key_pem"].as_str().unwrap();
    let pem_path = dir.path().join("server-key.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let text = attest_swtpm::openssl(&[
        "pkey",
        "-pubin",
        "-in",
        pem_path.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("NIST CURVE: P-384"), "{text}");
    let der = base64ct::Base64::decode_vec(key["public_key_der"].as_str().unwrap()).unwrap();
    assert!(attest_common::nonce::verifying_key_from_spki(&der).is_ok());
    let file = std::fs::read_to_string(dir.path().join("response-key")).unwrap();
    assert_eq!(file.trim().len(), 96);
    drop(server);
    // Restarted, it publishes the same key.
    let server = Server::start_with(dir.path(), &[]);
    let (_, again) = server.call("GET", "/api/v1/server-key", None, None);
    assert_eq!(again["public_key_der"], key["public_key_der"]);
}

#[test]
fn reject_and_reapprove_over_http() {
    let server = Server::start();
    let (_, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body(EK_P384)),
    );
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    // pending → rejected; rejected refuses approve (409) and registration (409); delete works.
    let (status, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/reject"),
        Some(ADMIN),
        Some(r#"{"reason":"unknown"}"#),
    );
    assert_eq!((status, m["status"].as_str()), (200, Some("rejected")));
    let approve = json!({"role": "worker-infra", "hostname": "w-1", "assigned_ip": "10.0.0.9/24"})
        .to_string();
    let (status, err) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(&approve),
    );
    assert_eq!(
        (status, err["message"].as_str()),
        (409, Some("cannot approve a machine in state rejected"))
    );
    let (status, _) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(status, 409);
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/api/v1/machines/{id}"),
                Some(ADMIN),
                None
            )
            .0,
        204
    );
    // (none) → registered by register; registered → registered by approve, twice.
    let (status, reg) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!((status, reg["status"].as_str()), (201, Some("registered")));
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    for host in ["w-1", "w-2"] {
        let body = json!({"role": "worker-infra", "hostname": host, "assigned_ip": "10.0.0.9/24"})
            .to_string();
        let (status, m) = server.call(
            "POST",
            &format!("/api/v1/machines/{id}/approve"),
            Some(ADMIN),
            Some(&body),
        );
        assert_eq!(
            (status, m["status"].as_str(), m["hostname"].as_str()),
            (200, Some("registered"), Some(host))
        );
    }
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(v["valid"], true);
}

/// The listing is streamed in chunks (crate::streamed): thousands of machines, several
/// chunks, still one JSON document with every machine once, the total, the status filter
/// and stale flags; a client that leaves halfway does not stop the server.
#[test]
fn listing_a_large_registry_streams_one_document() {
    use attest_common::lifecycle::{State, Status};
    use attest_server::record::MachineRecord;
    use attest_server::store::redb::RedbRegistry;
    use attest_server::store::{RegistryTx as _, StoreError};

    let dir = tempfile::tempdir().unwrap();
    let machines = 3_000;
    // A first start makes the keys a registry with machines must have beside it.
    Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]).stop();
    {
        let store = RedbRegistry::open(&dir.path().join("attestation.redb")).unwrap();
        store
            .write(|tx| {
                for i in 0..machines {
                    let status = if i % 3 == 0 {
                        Status::Registered
                    } else {
                        Status::PendingApproval
                    };
                    let r = MachineRecord::new(
                        format!("m-{i:05}"),
                        format!("{i:0>96}"),
                        attest_common::EkSource::Cert,
                        State::new(status),
                        1,
                    );
                    tx.put_machine(&r)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
    let server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);

    let (status, text) = server.call_text("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(status, 200);
    assert!(
        text.len() > 4 * attest_server::streamed::CHUNK_BYTES,
        "{}",
        text.len()
    );
    let all: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["machine_id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..machines).map(|i| format!("m-{i:05}")).collect();
    assert_eq!(ids, want);
    assert!(all[0]["stale"] == false, "{}", all[0]);

    let (status, some) = server.call(
        "GET",
        "/api/v1/machines?status=registered",
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(some.as_array().map(Vec::len), Some(1_000));
    assert!(
        some.as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "registered")
    );

    // A client that reads the head and a little of the body, then goes.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "GET /api/v1/machines HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 4096];
        let n = s.read(&mut head).unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    }
    let (status, again) = server.call(
        "GET",
        "/api/v1/machines?status=registered",
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(again.as_array().map(Vec::len), Some(1_000));
}
