//! The real server binary on a loopback port, and the CLI against it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `attestation-server` on 127.0.0.1:0 and reads the bound address from its log.
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
            .env("ITL_LISTEN", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start attestation-server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let line = lines.next().expect("a log line").expect("utf-8");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in '{line}'"))
            .to_owned();
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut res = agent.get(url).call().expect("request");
    (
        res.status().as_u16(),
        res.body_mut().read_json().expect("JSON body"),
    )
}

#[test]
fn healthz_and_json_errors() {
    let server = Server::start();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let (status, body) = get(&format!("{}/healthz", server.url));
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = get(&format!("{}/api/v1/nothing-here", server.url));
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
    let out = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
        .env("ITL_LISTEN", "everywhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ITL_LISTEN") && err.contains("everywhere"),
        "{err}"
    );
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
