//! Running as a service: graceful shutdown on SIGTERM/SIGINT, `/readyz`, the server's
//! command line and its log formats, against the real binary.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p384::ecdsa::SigningKey;
use serde_json::{Value, json};
use support::{ADMIN, Server};

const REPAIRED: &str = "registry was not closed cleanly; repaired";

/// A self-registration of a fresh EK without a certificate (a new P-384 key in the EK
/// template's public area).
fn pub_ek_body() -> String {
    let mut scalar = [0u8; 48];
    loop {
        getrandom::fill(&mut scalar).unwrap();
        if let Ok(k) = SigningKey::from_slice(&scalar) {
            let point = k.verifying_key().to_sec1_point(false);
            return support::pub_ek_body(point.as_bytes()).to_string();
        }
    }
}

/// A POST on `agent` (which keeps connections alive); `None` when no answer came.
fn post(agent: &ureq::Agent, url: &str, token: Option<&str>, body: &str) -> Option<(u16, Value)> {
    let mut req = agent.post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut res = req.send(body.as_bytes()).ok()?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// What the writers had acknowledged (2xx) when the server stopped answering.
#[derive(Default)]
struct Acknowledged {
    registered: Vec<String>,
    approved: Vec<String>,
    revoked: Vec<String>,
}

/// One writer: self-registers machines, approves them, revokes them, keeping its
/// connection alive, until the server stops answering.
fn writer(url: String, n: usize, acked: Arc<Mutex<Acknowledged>>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();
    for i in 0.. {
        let Some((status, reg)) = post(
            &agent,
            &format!("{url}/api/v1/self-register"),
            None,
            &pub_ek_body(),
        ) else {
            return;
        };
        assert_eq!(status, 201, "{reg}");
        let id = reg["machine_id"].as_str().unwrap().to_owned();
        acked.lock().unwrap().registered.push(id.clone());
        let approval = json!({
            "role": "worker-app",
            "hostname": format!("w{n}-{i}"),
            "assigned_ip": format!("10.{n}.{}.{}/16", i / 250, i % 250 + 1),
        });
        let Some((status, m)) = post(
            &agent,
            &format!("{url}/api/v1/machines/{id}/approve"),
            Some(ADMIN),
            &approval.to_string(),
        ) else {
            return;
        };
        assert_eq!(status, 200, "{m}");
        acked.lock().unwrap().approved.push(id.clone());
        let Some((status, m)) = post(
            &agent,
            &format!("{url}/api/v1/machines/{id}/revoke"),
            Some(ADMIN),
            r#"{"reason":"shutdown test"}"#,
        ) else {
            return;
        };
        assert_eq!(status, 200, "{m}");
        acked.lock().unwrap().revoked.push(id);
    }
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let (url, acked) = (server.url.clone(), acked.clone());
            std::thread::spawn(move || writer(url, n, acked))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().revoked.len() < 20 {
        assert!(Instant::now() < deadline, "the writers do not get answers");
        std::thread::sleep(Duration::from_millis(5));
    }
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    let stopping = signalled.elapsed();
    for w in writers {
        w.join().expect("a writer failed");
    }
    assert_eq!(status.code(), Some(0), "{:#?}", server.log());
    assert!(server.wait_log("stopped", Duration::from_secs(2)));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.ends_with("INFO itl.attestation — shutting down (SIGTERM)")),
        "{log:#?}"
    );
    assert!(
        log.last()
            .unwrap()
            .ends_with("INFO itl.attestation — stopped"),
        "{log:#?}"
    );
    assert!(stopping < Duration::from_secs(5), "{stopping:?}");
    assert!(!log.iter().any(|l| l.contains("dropped")), "{log:#?}");
    drop(server);

    // Everything acknowledged is there after a restart, which did not have to repair.
    let again = Server::start_with(&data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    assert!(
        !again.startup.iter().any(|l| l.contains(REPAIRED)),
        "{:#?}",
        again.startup
    );
    let acked = acked.lock().unwrap();
    let status_of = |id: &str| {
        let (s, m) = again.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
        assert_eq!(s, 200, "acknowledged machine {id} lost: {m}");
        m["status"].as_str().unwrap().to_owned()
    };
    for id in &acked.registered {
        let status = status_of(id);
        if acked.revoked.contains(id) {
            assert_eq!(status, "revoked", "{id}");
        } else if acked.approved.contains(id) {
            assert_ne!(status, "pending_approval", "{id}: approval lost");
        }
    }
    for id in acked.revoked.iter().rev().take(3) {
        assert_eq!(
            again.audit_column(id, "action"),
            ["self-register", "approve", "revoke"],
            "{id}"
        );
    }
    let (s, v) = again.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!((s, v["valid"].as_bool()), (200, Some(true)), "{v}");
    let acknowledged = acked.registered.len() + acked.approved.len() + acked.revoked.len();
    assert!(
        v["entries"].as_u64().unwrap() as usize >= acknowledged,
        "{v} < {acknowledged}"
    );
    eprintln!(
        "{} registrations, {} approvals, {} revocations acknowledged; stopped in {stopping:?}",
        acked.registered.len(),
        acked.approved.len(),
        acked.revoked.len()
    );
}

#[test]
fn a_killed_server_is_repaired_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (s, reg) = server.call("POST", "/api/v1/self-register", None, Some(&pub_ek_body()));
    assert_eq!(s, 201, "{reg}");
    // SIGKILL: nothing is closed.
    drop(server.stop());
    let again = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    assert!(
        again
            .startup
            .iter()
            .any(|l| l.contains(&format!("WARNING itl.attestation — {REPAIRED}"))),
        "{:#?}",
        again.startup
    );
    let id = reg["machine_id"].as_str().unwrap();
    let (s, _) = again.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(s, 200, "an acknowledged registration survives SIGKILL too");
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// Bytes the server has not read yet on its side of the connection `client` made
/// (`/proc/net/tcp`), if that connection is there.
fn unread_by_server(client: &TcpStream) -> Option<u64> {
    let port = |a: std::net::SocketAddr| format!("{:04X}", a.port());
    let (server_port, client_port) = (
        port(client.peer_addr().unwrap()),
        port(client.local_addr().unwrap()),
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (f.get(1)?, f.get(2)?, f.get(4)?);
        if local.ends_with(&format!(":{server_port}"))
            && remote.ends_with(&format!(":{client_port}"))
        {
            u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        } else {
            None
        }
    })
}

/// A connection with the first part of a request head sent and read by the server: a
/// request in progress.
fn request_in_progress(server: &Server, path: &str) -> TcpStream {
    let mut stream = connect(server);
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while unread_by_server(&stream) != Some(0) {
        assert!(Instant::now() < deadline, "the server does not read");
        std::thread::sleep(Duration::from_millis(5));
    }
    stream
}

/// A self-registration whose handler is reading its body: the head is sent with
/// `expect: 100-continue`, and the server has asked for the body.
fn registration_in_progress(server: &Server) -> (TcpStream, String) {
    let mut stream = connect(server);
    let body = pub_ek_body();
    write!(
        stream,
        "POST /api/v1/self-register HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    reader.read_line(&mut line).unwrap();
    assert!(reader.buffer().is_empty());
    (stream, body)
}

#[test]
fn draining_finishes_requests_in_progress_and_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    // An idle keep-alive connection, after one request.
    let mut idle = connect(&server);
    idle.write_all(b"GET /readyz HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    BufReader::new(&idle).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut busy = request_in_progress(&server, "/readyz");
    let (mut writing, registration) = registration_in_progress(&server);

    server.signal(libc::SIGTERM);
    assert!(server.wait_log("shutting down (SIGTERM)", Duration::from_secs(5)));
    // The idle connection is closed at once; new connections are refused.
    let started = Instant::now();
    let rest = read_to_close(&mut idle);
    assert!(started.elapsed() < Duration::from_secs(2), "{rest}");
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(server.addr()).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The request in progress is answered (not ready: shutting down), then the connection
    // closes and the server stops.
    std::thread::sleep(Duration::from_millis(50));
    busy.write_all(b"\r\n").unwrap();
    let answer = read_to_close(&mut busy);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "not_ready", "{body}");
    assert!(body["message"].as_str().unwrap().contains("shutting down"));
    // The registration whose body was awaited is served, durably, then closed.
    writing.write_all(registration.as_bytes()).unwrap();
    let answer = read_to_close(&mut writing);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let registered: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(server.wait_log("stopped", Duration::from_secs(2)));
    assert!(
        !server.log().iter().any(|l| l.contains("dropped")),
        "{:#?}",
        server.log()
    );
    drop(server);
    let again = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let id = registered["machine_id"].as_str().unwrap();
    let (s, m) = again.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(s, 200, "{m}");
}

#[test]
fn connections_still_open_after_the_timeout_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[("ITL_SHUTDOWN_TIMEOUT_SECONDS", "1")]);
    let mut stuck = request_in_progress(&server, "/healthz");
    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(read_to_close(&mut stuck), "", "dropped without an answer");
    assert!(server.wait_log("stopped", Duration::from_secs(2)));
    let log = server.log();
    assert!(
        log.iter().any(|l| l.contains("shutting down (SIGINT)")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains(
            "WARNING itl.attestation — 1 of 1 connections still open after 1 s (ITL_SHUTDOWN_TIMEOUT_SECONDS): dropped"
        )),
        "{log:#?}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[]);
    let _stuck = request_in_progress(&server, "/healthz");
    server.signal(libc::SIGTERM);
    assert!(server.wait_log("shutting down (SIGTERM)", Duration::from_secs(5)));
    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(1));
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert!(server.wait_log(
        "WARNING itl.attestation — SIGINT during shutdown: exiting at once (status 1)",
        Duration::from_secs(2)
    ));
    assert!(!server.log().iter().any(|l| l.contains("stopped")));
}

#[test]
fn readyz_answers_when_the_registry_does() {
    let server = Server::start();
    let (status, body) = server.call("GET", "/readyz", None, None);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ready", "damaged_records": 0, "damaged_ids": []})
        )
    );
    // Liveness is unchanged.
    let (status, body) = server.call("GET", "/healthz", None, None);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
        )
    );
    let (_, doc) = server.call("GET", "/api/v1/openapi.json", None, None);
    let readyz = &doc["paths"]["/readyz"]["get"]["responses"];
    assert!(
        readyz["200"].is_object() && readyz["503"].is_object(),
        "{readyz}"
    );
}

fn server_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attestation-server"));
    cmd.env_clear().env("ITL_LISTEN", "127.0.0.1:0").env(
        "ITL_DATA_DIR",
        std::env::temp_dir().join("itl-never-created"),
    );
    cmd
}

#[test]
fn command_line_version_help_and_usage() {
    let out = server_bin().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("attestation-server {}", env!("CARGO_PKG_VERSION"))
    );
    let out = server_bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for want in ["backup", "--version", "ITL_", "README"] {
        assert!(help.contains(want), "{want}: {help}");
    }
    for bad in [
        &["--bogus"][..],
        &["backup"],
        &["backup", "--to"],
        &["restore"],
    ] {
        let out = server_bin().args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{bad:?}"
        );
    }
    // Logging variables are checked like the others: exit 2 naming the variable.
    for (var, value) in [
        ("ITL_LOG_FORMAT", "yaml"),
        ("RUST_LOG", "attest_server=loud"),
        ("ITL_SHUTDOWN_TIMEOUT_SECONDS", "soon"),
    ] {
        let out = server_bin().env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{err}");
    }
}

#[test]
fn json_log_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[("ITL_LOG_FORMAT", "json")]);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(server.wait_log("stopped", Duration::from_secs(2)));
    let lines: Vec<String> = server
        .startup
        .iter()
        .chain([&server.listening])
        .chain(&server.log())
        .cloned()
        .collect();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for e in &events {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(e[field].is_string(), "{field}: {e}");
        }
    }
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains(" listening on http://")),
        "{messages:#?}"
    );
    assert!(messages.contains(&"shutting down (SIGTERM)"));
    assert_eq!(messages.last(), Some(&"stopped"));
    assert_eq!(events[0]["level"], "WARN");
    assert_eq!(events[0]["target"], "attest_server");
}

#[test]
fn rust_log_filters() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = server_bin()
        .env("RUST_LOG", "warn")
        .env("ITL_DATA_DIR", dir.path())
        .env("ITL_LISTEN", addr.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Serving (the line that would say so is INFO, filtered out).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /readyz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
                .unwrap();
            if read_to_close(&mut s).starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server does not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.contains(" WARNING itl.attestation — no operator authentication")),
        "{seen:#?}"
    );
    assert!(!seen.iter().any(|l| l.contains(" INFO ")), "{seen:#?}");
}
