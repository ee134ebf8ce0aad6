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

/// `audit actions` lists the server's closed list of audit actions, without a server, and a
/// reader that stops early (`| head`) ends it quietly.
#[test]
fn audit_actions_are_listed_offline() {
    let out = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .args(["--output", "json", "audit", "actions"])
        .env("ATTESTATION_API_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    let all: Vec<&str> = attest_api::AuditAction::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    assert_eq!(names, all);
    assert!(
        listed
            .iter()
            .all(|a| !a["description"].as_str().unwrap().is_empty())
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .args(["audit", "actions"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
