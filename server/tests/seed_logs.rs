//! The log reference of the service we replace (`../shared/seed/000_3800083aa9a80b6e.txt`,
//! "Log Reference"), line by line (issue 22): each event is driven against the real binary
//! and the server's output is searched for the seed's pattern, at the seed's level, in its
//! format `timestamp LEVEL logger — message`.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use attest_swtpm::Swtpm;
use serde_json::Value;
use support::agent::{agent, approve};
use support::{ADMIN, Server, start_with_configs};

/// A line `<time> <LEVEL> itl.attestation — <message…>` whose message begins with each part
/// of `pattern` in turn (the seed's `...` standing for what varies), waited for a while.
fn logged(server: &Server, level: &str, pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split("...").collect();
    let matches = |line: &str| {
        let Some((_, message)) = line.split_once(&format!(" {level} itl.attestation \u{2014} "))
        else {
            return false;
        };
        let mut rest = message;
        for (i, part) in parts.iter().enumerate() {
            let found = if i == 0 {
                rest.starts_with(part).then_some(0)
            } else {
                rest.find(part)
            };
            match found {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        parts.last().is_none_or(|p| p.is_empty()) || rest.is_empty()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let all: Vec<String> = server.startup.iter().cloned().chain(server.log()).collect();
        if let Some(line) = all.iter().find(|l| matches(l)) {
            return line.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {level} line like {pattern:?} in\n{all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_line_of_the_seeds_log_reference() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    // CA generated INFO Enrollment CA generated (serial=...)
    logged(&server, "INFO", "Enrollment CA generated (serial=...)");

    // New machine registered INFO New machine registered: id=... role=... ek=...
    let a = agent(&swtpm, &server.url, dir.path(), "a");
    let id = a.ok(&["register"])["machine_id"].clone();
    logged(
        &server,
        "INFO",
        "New machine registered: id=... role=... ek=...",
    );
    let fp = support::agent::machine(&server, &id)["ek_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    // Machine re-registered INFO Re-registration of machine ... (ek=...)
    let again = support::agent::AgentCli {
        tcti: a.tcti.clone(),
        state: dir.path().join("a-again"),
        server: server.url.clone(),
    };
    again.ok(&["register"]);
    logged(
        &server,
        "INFO",
        &format!("Re-registration of machine {id} (ek={fp})"),
    );

    // Config token consumed INFO / Config re-fetch INFO (the USB path's long-lived token).
    approve(&server, &id, "worker-app", "a");
    let state: Value =
        serde_json::from_slice(&std::fs::read(a.state.join("enrollment.json")).unwrap()).unwrap();
    let url = state["config_url"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, _) = server.call_text("GET", url.trim_start_matches(&server.url), None, None);
        assert_eq!(status, 200);
    }
    logged(
        &server,
        "INFO",
        &format!("Config token consumed for machine {id}..."),
    );
    logged(
        &server,
        "INFO",
        &format!("Config re-fetch for machine {id} (token already consumed...)"),
    );

    // Machine attested INFO Machine attested: id=... role=...
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    logged(
        &server,
        "INFO",
        &format!("Machine attested: id={id} role=worker-app..."),
    );

    // Attestation from unknown EK WARNING Attestation from unknown EK ...
    let unknown = "ab".repeat(48);
    let c: Value = server
        .call("POST", "/api/v1/attest/challenge", None, None)
        .1;
    let forged = serde_json::json!({
        "ek_fingerprint": unknown, "nonce_id": c["nonce_id"], "agent_nonce": "00".repeat(32),
        "quote": "AAAA", "signature": "AAAA", "pcr_values": [],
    });
    let (status, _) = server.call("POST", "/api/v1/attest", None, Some(&forged.to_string()));
    assert_eq!(status, 404);
    logged(
        &server,
        "WARNING",
        &format!("Attestation from unknown EK {unknown}..."),
    );

    // Locked machine contact WARNING Locked machine contacted: id=...
    server.admin(&id, "lock", r#"{"reason":"lost"}"#);
    assert_eq!(a.ok(&["attest", "--once"])["action"], "lock");
    logged(
        &server,
        "WARNING",
        &format!("Locked machine contacted: id={id}..."),
    );

    // Revoked machine contact WARNING Revoked machine contacted: id=... action=...
    server.admin(&id, "revoke", r#"{"reason":"stolen","wipe":true}"#);
    assert_eq!(a.ok(&["attest", "--once"])["action"], "wipe");
    logged(
        &server,
        "WARNING",
        &format!("Revoked machine contacted: id={id} action=wipe"),
    );

    // Enrollment cert issued INFO Enrollment cert issued: machine_id=... role=... serial=...
    // valid_days=... (an offline bundle for an approved machine).
    let b_tpm = Swtpm::start();
    let b = agent(&b_tpm, &server.url, dir.path(), "b");
    let b_id = b.ok(&["register"])["machine_id"].clone();
    approve(&server, &b_id, "worker-infra", "b");
    let (status, _) = server.call(
        "GET",
        &format!("/api/v1/machines/{b_id}/offline-bundle"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    logged(
        &server,
        "INFO",
        &format!(
            "Enrollment cert issued: machine_id={b_id} role=worker-infra serial=... valid_days=..."
        ),
    );

    // CA loaded INFO Enrollment CA loaded from ... (serial=...)
    let data = server.data_dir.clone();
    drop(server);
    let server = Server::start_with(&data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    logged(
        &server,
        "INFO",
        "Enrollment CA loaded from ... (serial=...)",
    );

    // Factory unreachable ERROR Talos Image Factory unreachable: ...
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    drop(server);
    let server = Server::start_with(
        &data,
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_SERVICE_URL", "http://127.0.0.1:8080"),
            ("ITL_FACTORY_URL", &format!("http://127.0.0.1:{port}")),
        ],
    );
    let c_tpm = Swtpm::start();
    let out = agent(&c_tpm, &server.url, dir.path(), "c").run(&["register"]);
    assert_ne!(out.code, 0, "503 while the factory is down");
    logged(&server, "ERROR", "Talos Image Factory unreachable: ...");
}
