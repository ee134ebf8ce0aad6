//! Config delivery over HTTP: rendered configs validate against the Talos v1.9 schema in
//! `../shared/talos`, tokens are audited, refused machines and pending configs get no secrets.

mod support;

use std::process::Command;

use base64ct::Encoding;
use serde_json::{Value, json};
use support::{ADMIN, Server, config_dir, validate};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");

fn get_text(url: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut res = agent.get(url).call().unwrap();
    (
        res.status().as_u16(),
        res.body_mut().read_to_string().unwrap(),
    )
}

fn register_body() -> String {
    let fp = attest_common::ek_fingerprint(EK_P384.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    json!({"ek_fingerprint": fp, "ek_cert_pem": base64ct::Base64::encode_string(EK_P384.as_bytes())}).to_string()
}

#[test]
fn approved_machines_get_valid_configs_and_refused_ones_none() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_dir(dir.path());
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_CONFIG_DIR", cfg.to_str().unwrap()),
        ],
    );

    // The pending config: valid, and without a single secret.
    for role in ["controlplane", "worker-infra", "worker-app"] {
        let (status, yaml) = get_text(&format!("{}/api/v1/config?role={role}", server.url));
        assert_eq!(status, 200, "{yaml}");
        validate(&yaml);
        let v: Value = serde_norway::from_str(&yaml).unwrap();
        for secret in [
            "/machine/token",
            "/machine/ca/key",
            "/cluster/token",
            "/cluster/secretboxEncryptionSecret",
            "/cluster/ca/key",
            "/cluster/serviceAccount/key",
            "/cluster/etcd/ca/key",
            "/cluster/aggregatorCA/key",
        ] {
            assert!(
                v.pointer(secret).is_none(),
                "{role}: {secret} in the pending config"
            );
        }
    }

    // The USB path: `/register` makes the machine's long-lived token (its ISO's kernel
    // argument); before approval it serves nothing.
    let (status, reg) = server.call("POST", "/api/v1/register", None, Some(&register_body()));
    assert_eq!(status, 201, "{reg}");
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    let url = reg["config_url"].as_str().expect("a config URL").to_owned();
    assert!(url.starts_with(&server.url) && url.ends_with(reg["config_token"].as_str().unwrap()));
    let (status, body) = get_text(&url);
    assert_eq!(status, 403, "{body}");
    // Registering again never hands the token out again.
    let (status, again) = server.call("POST", "/api/v1/register", None, Some(&register_body()));
    assert_eq!(status, 200);
    assert!(
        again["config_token"].is_null() && again["config_url"].is_null(),
        "{again}"
    );
    let approve = json!({"role": "controlplane", "hostname": "cp-1", "assigned_ip": "10.0.0.5/24"})
        .to_string();
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(&approve),
    );
    assert_eq!(status, 200);
    let (status, yaml) = get_text(&url);
    assert_eq!(status, 200, "{yaml}");
    validate(&yaml);
    let v: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(v.pointer("/machine/network/hostname"), Some(&json!("cp-1")));
    assert_eq!(
        v.pointer("/machine/network/interfaces/0/addresses/0"),
        Some(&json!("10.0.0.5/24"))
    );
    assert!(
        v.pointer("/machine/token").is_none() && v.pointer("/cluster/ca/key").is_none(),
        "the long-lived token never yields secrets (they come by a single-use URL of a \
         verified attestation: tests/attest.rs)"
    );
    let written = server.audit_column(&id, "action");
    assert_eq!(written.last().map(String::as_str), Some("config-consumed"));
    // Used again (whoever holds the ISO's kernel arguments may): served, nothing written,
    // counted for /metrics.
    for _ in 0..20 {
        let (status, again) = get_text(&url);
        assert_eq!((status, &again), (200, &yaml));
    }
    assert_eq!(server.audit_column(&id, "action"), written);
    let (_, metrics) = server.call_text("GET", "/metrics", Some(ADMIN), None);
    assert!(
        metrics.contains("itl_unauthenticated_total{reason=\"config_refetch\"} 20"),
        "{metrics}"
    );

    // Unknown token: 404. Revoked machine: 403, nothing served.
    let (status, _) = get_text(&format!("{}/api/v1/config/{}", server.url, "0".repeat(64)));
    assert_eq!(status, 404);
    server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"reason":"test"}"#),
    );
    let (status, body) = get_text(&url);
    assert_eq!(status, 403);
    assert!(
        body.contains("revoked") && !body.contains("token:"),
        "{body}"
    );
}

#[test]
fn config_dir_is_checked_at_start_and_required_for_configs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
        .env("ITL_DATA_DIR", dir.path())
        .env("ITL_CONFIG_DIR", dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ITL_CONFIG_DIR"));

    let server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (status, body) = get_text(&format!("{}/api/v1/config", server.url));
    assert_eq!(status, 503);
    assert!(body.contains("ITL_CONFIG_DIR"), "{body}");
}

/// Issue 22: a fresh clone has role base configs to start with (`server/deploy/configs`):
/// they load as the server loads them, and every role's rendered config validates against
/// the Talos v1.9 schema.
#[test]
fn the_repositorys_example_configs_load_and_validate() {
    use attest_common::wire::Role;
    use attest_server::machineconfig::BaseConfigs;
    let dir = support::repo_dir().join("server/deploy/configs");
    let configs = BaseConfigs::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for role in Role::ALL {
        let rendered = configs.render(role, "node-1", "10.0.0.21/24");
        validate(&BaseConfigs::to_yaml(&rendered));
    }
}
