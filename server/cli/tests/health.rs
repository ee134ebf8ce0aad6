//! The CLI's `health` against the real server binary, up and down.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::Server;

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
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("ok: "), "{said}");
    // Read through attest-api's Health view (one workspace version for both).
    assert!(
        said.contains(&format!("(server version {})", env!("CARGO_PKG_VERSION"))),
        "{said}"
    );

    let url = server.url.clone();
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .env("ATTESTATION_API_URL", &url)
        .arg("health")
        .output()
        .unwrap();
    // 4: the server cannot be reached (the CLI's exit statuses, README).
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
