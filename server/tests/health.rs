//! The real server binary on a loopback port (the CLI against it: `server/cli/tests/health.rs`).

mod support;

use std::process::Command;

use support::Server;

#[test]
fn healthz_and_json_errors() {
    let server = Server::start();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let (status, body) = server.call("GET", "/healthz", None, None);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = server.call("GET", "/api/v1/nothing-here", None, None);
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing-here")
    );
}

#[test]
fn bad_configuration_names_the_variable() {
    for (var, value) in [
        ("ITL_LISTEN", "everywhere"),
        ("ITL_MAX_BODY_BYTES", "ten"),
        ("ITL_MAX_CONNECTIONS", "0"),
        ("ITL_IDLE_TIMEOUT_SECONDS", "forever"),
        ("ITL_OIDC_ENABLED", "true"),
        ("ITL_AUDIT_CHECKPOINT_ENTRIES", "0"),
        ("ITL_AUDIT_CHECKPOINT_MINUTES", "1441"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
            .env(var, value)
            .env(
                "ITL_DATA_DIR",
                std::env::temp_dir().join("itl-never-created"),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{err}");
    }
}

#[test]
fn openapi_describes_every_route() {
    let server = Server::start();
    let (status, doc) = server.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let routes = [
        ("get", "/healthz"),
        ("post", "/api/v1/register"),
        ("post", "/api/v1/self-register"),
        ("get", "/api/v1/config"),
        ("get", "/api/v1/config/{token}"),
        ("get", "/api/v1/machines"),
        ("get", "/api/v1/machines/{id}"),
        ("delete", "/api/v1/machines/{id}"),
        ("get", "/api/v1/machines/{id}/approvals"),
        ("post", "/api/v1/machines/{id}/approve"),
        ("post", "/api/v1/machines/{id}/reject"),
        ("post", "/api/v1/machines/{id}/lock"),
        ("post", "/api/v1/machines/{id}/unlock"),
        ("post", "/api/v1/machines/{id}/revoke"),
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/audit/verify"),
        ("get", "/api/v1/audit/checkpoints"),
        ("post", "/api/v1/attest/challenge"),
        ("get", "/api/v1/attest/challenge"),
        ("get", "/api/v1/server-key"),
        ("post", "/api/v1/attest"),
        ("post", "/api/v1/machines/{id}/reset-baseline"),
        ("get", "/api/v1/machines/{id}/offline-bundle"),
        ("post", "/api/v1/machines/import"),
        ("post", "/api/v1/enroll"),
        ("post", "/api/v1/link"),
        ("get", "/api/v1/backup"),
        ("get", "/api/v1/whoami"),
        ("get", "/metrics"),
    ];
    for (method, path) in routes {
        let op = &doc["paths"][path][method];
        assert!(
            op["responses"].is_object(),
            "{method} {path} is not documented"
        );
        // The route exists: it does not answer the catch-all 404.
        let concrete = path.replace("{token}", "t").replace("{id}", "x");
        let (_, body) = server.call(
            &method.to_uppercase(),
            &concrete,
            None,
            if method == "post" { Some("{}") } else { None },
        );
        assert!(
            !body["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("no such endpoint"),
            "{method} {path} is not routed"
        );
    }
}
