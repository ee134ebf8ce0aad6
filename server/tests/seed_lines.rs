//! The operations guide of the service we replace (`../shared/seed/000_3800083aa9a80b6e.txt`),
//! its list and audit lines run verbatim through `sh` with real `curl` and `jq` (the host
//! `https://attest.itlusions.com` replaced by the test server's): the machine list and audit
//! pages are bare arrays, the audit newest first (issue 22). The CLI's line runs the
//! `attestation` binary the same way.

mod support;

use std::process::Command;

use base64ct::Encoding as _;
use serde_json::{Value, json};
use support::{ADMIN, Server, cli_bin};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../common/tests/fixtures/swtpm-ek-rsa2048.pem");
const SEED_HOST: &str = "https://attest.itlusions.com";

/// A guide line, host replaced, run by `sh` with `$TOKEN` set; its output as JSON (jq's
/// stream of values as an array when there are several).
fn run(server: &Server, line: &str) -> Value {
    assert!(
        Command::new("jq").arg("--version").output().is_ok()
            && Command::new("curl").arg("--version").output().is_ok(),
        "curl and jq are missing: run ./ci/setup.sh"
    );
    let line = line.replace(SEED_HOST, &server.url);
    let out = Command::new("sh")
        .args(["-c", &format!("set -e; {line}")])
        .env("TOKEN", ADMIN)
        .env(
            "PATH",
            format!("{}:{}", cli_dir(), std::env::var("PATH").unwrap()),
        )
        // The CLI's server and break-glass token, as an operator's shell has them.
        .env("ATTESTATION_API_URL", &server.url)
        .env("ITL_ADMIN_TOKEN", ADMIN)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{line}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{line}: not JSON ({e}): {text}"));
    match values.len() {
        1 => values.into_iter().next().unwrap(),
        _ => Value::Array(values),
    }
}

fn cli_dir() -> String {
    cli_bin().parent().unwrap().display().to_string()
}

fn register(server: &Server, pem: &str) -> String {
    let body = json!({
        "ek_fingerprint": attest_common::ek_fingerprint(pem.as_bytes()).unwrap().fingerprint.to_string(),
        "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes()),
    });
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{reg}");
    reg["machine_id"].as_str().unwrap().to_owned()
}

#[test]
fn the_guides_list_and_audit_lines_work_verbatim() {
    let server = Server::start();
    let pending = register(&server, EK_P384);
    let approved = register(&server, EK_RSA);
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{approved}/approve"),
        Some(ADMIN),
        Some(r#"{"role":"worker-app","hostname":"w-1","assigned_ip":"10.0.0.9/24"}"#),
    );
    assert_eq!(status, 200);

    // "1. See pending machines"
    let seen = run(
        &server,
        r#"curl -s -H "Authorization: Bearer $TOKEN" \
  https://attest.itlusions.com/api/v1/machines \
  | jq '[.[] | select(.status == "pending_approval")]'"#,
    );
    assert_eq!(seen.as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!(seen[0]["machine_id"], pending.as_str());

    // "Machines requiring approval" (both states).
    let both = run(
        &server,
        r#"curl -s -H "Authorization: Bearer $TOKEN" \
  https://attest.itlusions.com/api/v1/machines \
  | jq '.[] | select(.status == "pending_approval" or .status == "registered")'"#,
    );
    assert_eq!(both.as_array().map(Vec::len), Some(2), "{both}");

    // "Machine status counts", curl and CLI.
    let want = json!([
        {"status": "pending_approval", "count": 1},
        {"status": "registered", "count": 1},
    ]);
    let counts = run(
        &server,
        r#"curl -s -H "Authorization: Bearer $TOKEN" \
  https://attest.itlusions.com/api/v1/machines \
  | jq 'group_by(.status) | map({status: .[0].status, count: length})'"#,
    );
    assert_eq!(counts, want);
    let counts = run(
        &server,
        r#"attestation machine list --output json | jq 'group_by(.status) | map({status: .[0].status, count: length})'"#,
    );
    assert_eq!(counts, want);

    // "Most recent 50 admin actions": page 1 is the newest.
    let recent = run(
        &server,
        r#"curl -s -H "Authorization: Bearer $TOKEN" \
  "https://attest.itlusions.com/api/v1/audit?page=1&per_page=50" | jq ."#,
    );
    let recent = recent.as_array().expect("a bare array");
    assert_eq!(recent.len(), 3, "two registrations and an approval");
    assert_eq!(recent[0]["action"], "approve", "newest first");
    assert_eq!(recent[2]["action"], "self-register");

    // "Filter to a specific machine"
    let mine = run(
        &server,
        &r#"curl -s -H "Authorization: Bearer $TOKEN" \
  "https://attest.itlusions.com/api/v1/audit" \
  | jq '[.[] | select(.machine_id == "<machine_id>")]'"#
            .replace("<machine_id>", &approved),
    );
    let actions: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["approve", "self-register"]);

    // The count and the pages travel in headers.
    let (_, headers, _) = server.get_full("/api/v1/audit?page=2&per_page=1", Some(ADMIN));
    assert_eq!(headers["x-total-count"], "3");
    let link = &headers["link"];
    for rel in [
        "</api/v1/audit?page=1&per_page=1>; rel=\"first\"",
        "</api/v1/audit?page=3&per_page=1>; rel=\"last\"",
        "</api/v1/audit?page=3&per_page=1>; rel=\"next\"",
        "</api/v1/audit?page=1&per_page=1>; rel=\"prev\"",
    ] {
        assert!(link.contains(rel), "{link}");
    }
    let (_, headers, _) = server.get_full("/api/v1/machines?status=registered", Some(ADMIN));
    assert_eq!(headers["x-total-count"], "1");
}
