//! The real server binary on a loopback port, and the CLI against it.

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
        ("ITL_OIDC_ENABLED", "true"),
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
fn cli_health_up_and_down() {
    let server = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .args(["--api-url", &server.url, "health"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));

    let url = server.url.clone();
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .env("ATTESTATION_API_URL", &url)
        .arg("health")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
