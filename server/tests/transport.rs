//! Transport (DESIGN.md §3.10) with the real binaries on 127.0.0.1: the server's own TLS
//! (a CA and certificates made with `openssl`), the agent over HTTPS with and without the
//! CA, its refusal of plain HTTP, CNSA mode checked with `openssl s_client`, the start-up
//! refusals, handshakes that stall, and `X-Forwarded-For` from trusted proxies only.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_swtpm::Swtpm;
use serde_json::Value;
use support::{ADMIN, Server, agent_bin, server_bin};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../common/tests/fixtures/swtpm-ek-rsa2048.pem");

/// A TLS server on `dir/data` with role base configs, with `pki`'s certificate and `extra`.
fn start_tls(dir: &Path, pki: &pki::Pki, extra: &[(&str, &str)]) -> Server {
    let env = pki.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    support::start_with_configs(dir, &all)
}

/// An HTTPS client that trusts `ca` (and nothing else), and keeps no connection open
/// after its answer (a pooled connection would hold a server slot).
fn https(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// `method url` with the break-glass token (and a body): status and JSON.
fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let mut res = match (method, body) {
        ("GET", _) => agent.get(url).header("authorization", &auth).call(),
        (_, Some(b)) => agent
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(b.as_bytes()),
        (_, None) => agent.post(url).header("authorization", &auth).send_empty(),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

struct Out {
    code: i32,
    kv: HashMap<String, String>,
    stderr: String,
}

/// `attest-agent` with this TPM and state directory, and exactly the environment given.
fn agent(swtpm: &Swtpm, state: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    let out = Command::new(agent_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .env("ATTEST_AGENT_STATE_DIR", state)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run attest-agent");
    Out {
        code: out.status.code().unwrap_or(-1),
        kv: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_agent_attests_over_https_with_the_ca_and_refuses_without_it_or_over_plain_http() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki::make(&d.join("pki"), "server", "P-384");
    let started = Instant::now();
    let server = start_tls(d, &pki, &[]);
    eprintln!("TLS server started in {:?}", started.elapsed());
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(
        server.listening.contains("listening on https://"),
        "{}",
        server.listening
    );
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("TLS on: certificate CN=localhost") && l.contains("ECDSA P-384")),
        "{:#?}",
        server.startup
    );
    assert!(
        !server
            .startup
            .iter()
            .any(|l| l.contains("serving plain HTTP") || l.contains("request to itself")),
        "{:#?}",
        server.startup
    );
    let state = d.join("agent");
    let ca = pki.ca.to_str().unwrap();
    let hooks = format!("cat > '{}'", d.join("applied.yaml").display());
    let env = [
        ("ATTEST_AGENT_SERVER", server.url.as_str()),
        ("ATTEST_AGENT_ON_APPLY_CONFIG", hooks.as_str()),
    ];

    // Without the CA: the server's certificate is refused, and the message says what to do.
    let out = agent(&swtpm, &state, &env, &["self-register"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not trusted") && out.stderr.contains("ca_file"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("plain HTTP"), "{}", out.stderr);

    // With it: registered, approved, attested; the config comes over HTTPS too (the
    // service URL defaults to https:// and the bound address).
    let reg = agent(&swtpm, &state, &env, &["--ca-file", ca, "self-register"]);
    assert_eq!(reg.code, 0, "{}", reg.stderr);
    assert_eq!(reg.kv["status"], "pending_approval");
    assert!(!reg.stderr.contains("warning"), "{}", reg.stderr);
    let id = reg.kv["machine_id"].clone();
    let client = https(&pki.ca);
    let (status, m) = call(
        &client,
        "POST",
        &format!("{}/api/v1/machines/{id}/approve", server.url),
        Some(r#"{"role":"worker-app","hostname":"tls-1","assigned_ip":"10.0.0.31/24"}"#),
    );
    assert_eq!(status, 200, "{m}");
    let t = Instant::now();
    let env_ca = [
        ("ATTEST_AGENT_SERVER", server.url.as_str()),
        ("ATTEST_AGENT_ON_APPLY_CONFIG", hooks.as_str()),
        ("ATTEST_AGENT_CA_FILE", ca),
    ];
    let att = agent(&swtpm, &state, &env_ca, &["attest", "--once"]);
    eprintln!("attest --once over HTTPS: {:?}", t.elapsed());
    assert_eq!(att.code, 0, "{}", att.stderr);
    assert_eq!(att.kv["action"], "apply-config", "{}", att.stderr);
    assert!(
        att.kv["config_url"].starts_with(&format!("{}/api/v1/config/", server.url)),
        "{:?}",
        att.kv
    );
    assert_eq!(att.kv["hooks_run"], "apply-config");
    let applied = std::fs::read_to_string(d.join("applied.yaml")).unwrap();
    assert!(applied.contains("tls-1"), "{applied}");
    let (_, m) = call(
        &client,
        "GET",
        &format!("{}/api/v1/machines/{id}", server.url),
        None,
    );
    assert_eq!(m["status"], "attested", "{m}");

    // `attestation-server backup` while the service runs asks it over its own TLS, trusting
    // exactly the certificate it serves.
    let copy = d.join("copy.redb");
    let out = Command::new(server_bin())
        .env_clear()
        .env("ITL_DATA_DIR", d.join("data"))
        .env("ITL_LISTEN", server.addr())
        .env("ITL_ADMIN_TOKEN", ADMIN)
        .envs(pki.env())
        .args(["backup", "--to", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("backup: 1 machines")
            && said.contains(&format!("from {}/api/v1/backup", server.url)),
        "{said}"
    );

    // Plain HTTP: refused before anything is sent (exit status 2), whatever the command;
    // the flag, the environment or the file allows it, with a warning every time.
    let plain = Server::start();
    assert!(
        plain
            .startup
            .iter()
            .any(|l| l.contains("WARNING itl.attestation — serving plain HTTP: terminate TLS in front of the server (ITL_TRUSTED_PROXIES) or set ITL_TLS_CERT/ITL_TLS_KEY")),
        "{:#?}",
        plain.startup
    );
    let state2 = d.join("agent2");
    let env_plain = [("ATTEST_AGENT_SERVER", plain.url.as_str())];
    for args in [
        &["self-register"][..],
        &["register"],
        &["relay", "--serial", "tcp:127.0.0.1:9"],
    ] {
        let out = agent(&swtpm, &state2, &env_plain, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("is plain HTTP")
                && out.stderr.contains("allow_plain_http = true")
                && out.stderr.contains("--allow-plain-http"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let warning = "warning: plain HTTP to ";
    let out = agent(
        &swtpm,
        &state2,
        &env_plain,
        &["--allow-plain-http", "self-register"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr.matches(warning).count(), 1, "{}", out.stderr);
    // Registered: attesting to that server is refused all the same without the setting.
    let out = agent(&swtpm, &state2, &env_plain, &["attest", "--once"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is plain HTTP"), "{}", out.stderr);
    let allowed = [
        ("ATTEST_AGENT_SERVER", plain.url.as_str()),
        ("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true"),
    ];
    let out = agent(&swtpm, &state2, &allowed, &["attest", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.kv["status"], "pending_approval");
    assert_eq!(out.stderr.matches(warning).count(), 1, "{}", out.stderr);
    let toml = d.join("agent2.toml");
    std::fs::write(&toml, "allow_plain_http = true\n").unwrap();
    let out = agent(
        &swtpm,
        &state2,
        &[
            ("ATTEST_AGENT_SERVER", plain.url.as_str()),
            ("ATTEST_AGENT_CONFIG", toml.to_str().unwrap()),
        ],
        &["attest", "--once"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(warning), "{}", out.stderr);
    // An explicit false over the file's true refuses again.
    let out = agent(
        &swtpm,
        &state2,
        &[
            ("ATTEST_AGENT_SERVER", plain.url.as_str()),
            ("ATTEST_AGENT_CONFIG", toml.to_str().unwrap()),
            ("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "false"),
        ],
        &["attest", "--once"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// `openssl s_client` against `addr` with `args`: whether the handshake succeeded, and
/// what it printed.
fn s_client(addr: &str, ca: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(["-CAfile", ca.to_str().unwrap(), "-verify_return_error"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (ci/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn high_assurance_speaks_cnsa_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make(&dir.path().join("pki"), "server", "P-384");
    let server = start_tls(dir.path(), &pki, &[("ITL_HIGH_ASSURANCE", "true")]);
    let summary = server
        .startup
        .iter()
        .find(|l| l.contains("TLS on:"))
        .expect("the TLS line");
    assert!(
        summary.contains("TLS 1.3 only")
            && summary.contains("suites TLS13_AES_256_GCM_SHA384;")
            && summary.contains("groups secp384r1")
            && summary.contains("CNSA 1.0"),
        "{summary}"
    );
    let addr = server.addr();
    let (ok, text) = s_client(addr, &pki.ca, &["-tls1_2"]);
    assert!(!ok, "TLS 1.2 accepted:\n{text}");
    let (ok, text) = s_client(
        addr,
        &pki.ca,
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
    );
    assert!(!ok, "AES-128 accepted:\n{text}");
    let (ok, text) = s_client(
        addr,
        &pki.ca,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384",
            "-groups",
            "P-256",
        ],
    );
    assert!(!ok, "P-256 key exchange accepted:\n{text}");
    let (ok, text) = s_client(
        addr,
        &pki.ca,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384",
            "-groups",
            "P-384",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("TLSv1.3") && text.contains("TLS_AES_256_GCM_SHA384"),
        "{text}"
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // And an ordinary client (rustls, default settings) gets through too.
    let (status, _) = call(
        &https(&pki.ca),
        "GET",
        &format!("{}/healthz", server.url),
        None,
    );
    assert_eq!(status, 200);

    // Without ITL_HIGH_ASSURANCE the same certificate serves TLS 1.2 and AES-128 as well.
    let standard = start_tls(&dir.path().join("std"), &pki, &[]);
    let (ok, text) = s_client(standard.addr(), &pki.ca, &["-tls1_2"]);
    assert!(ok, "{text}");
    // ITL_TLS_MIN_VERSION=1.3 and an operator's suite list.
    let chosen = start_tls(
        &dir.path().join("chosen"),
        &pki,
        &[
            ("ITL_TLS_MIN_VERSION", "1.3"),
            ("ITL_TLS_CIPHERS", "TLS_CHACHA20_POLY1305_SHA256"),
        ],
    );
    let (ok, text) = s_client(chosen.addr(), &pki.ca, &["-tls1_2"]);
    assert!(!ok, "{text}");
    let (ok, text) = s_client(
        chosen.addr(),
        &pki.ca,
        &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
    );
    assert!(!ok, "{text}");
    let (ok, text) = s_client(
        chosen.addr(),
        &pki.ca,
        &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
    );
    assert!(ok, "{text}");
}

#[test]
fn certificates_keys_and_settings_that_cannot_be_served_stop_start_up() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let p384 = pki::make(&d.join("pki"), "server", "P-384");
    let p256 = pki::make(&d.join("pki"), "p256", "P-256");
    let (cert, key) = (p384.cert.to_str().unwrap(), p384.key.to_str().unwrap());
    let (cert256, key256) = (p256.cert.to_str().unwrap(), p256.key.to_str().unwrap());
    let expect = |env: &[(&str, &str)], variable: &str, words: &[&str]| {
        let (code, err) = support::refused_start(&data, env);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert!(
            err.contains(&format!("invalid configuration: {variable}: ")),
            "{err}"
        );
        for w in words {
            assert!(err.contains(w), "{env:?}: '{w}' not in {err}");
        }
    };
    // One without the other.
    expect(&[("ITL_TLS_CERT", cert)], "ITL_TLS_KEY", &["required"]);
    expect(&[("ITL_TLS_KEY", key)], "ITL_TLS_CERT", &["required"]);
    // CNSA needs a P-384 certificate key.
    expect(
        &[
            ("ITL_TLS_CERT", cert256),
            ("ITL_TLS_KEY", key256),
            ("ITL_HIGH_ASSURANCE", "true"),
        ],
        "ITL_TLS_CERT",
        &["ECDSA P-256", "P-384", "CNSA"],
    );
    // Conflicts with CNSA are named, not silently overridden.
    expect(
        &[
            ("ITL_TLS_CERT", cert),
            ("ITL_TLS_KEY", key),
            ("ITL_HIGH_ASSURANCE", "true"),
            ("ITL_TLS_MIN_VERSION", "1.2"),
        ],
        "ITL_TLS_MIN_VERSION",
        &["ITL_HIGH_ASSURANCE"],
    );
    expect(
        &[
            ("ITL_TLS_CERT", cert),
            ("ITL_TLS_KEY", key),
            ("ITL_HIGH_ASSURANCE", "true"),
            ("ITL_TLS_CIPHERS", "TLS_AES_128_GCM_SHA256"),
        ],
        "ITL_TLS_CIPHERS",
        &["ITL_HIGH_ASSURANCE"],
    );
    expect(
        &[("ITL_HIGH_ASSURANCE", "true")],
        "ITL_HIGH_ASSURANCE",
        &["ITL_TLS_CERT"],
    );
    // CNSA means P-384 AKs too (DESIGN.md §3.2).
    expect(
        &[
            ("ITL_TLS_CERT", cert),
            ("ITL_TLS_KEY", key),
            ("ITL_HIGH_ASSURANCE", "true"),
            ("ITL_AK_ALGORITHMS", "ecc-p384,rsa-2048"),
        ],
        "ITL_AK_ALGORITHMS",
        &["conflicts with ITL_HIGH_ASSURANCE=true", "ecc-p384 only"],
    );
    expect(
        &[("ITL_AK_ALGORITHMS", "ecc-p521")],
        "ITL_AK_ALGORITHMS",
        &[
            "not an AK algorithm",
            "ecc-p384,ecc-p256,rsa-2048,rsa-3072,rsa-4096",
        ],
    );
    expect(
        &[
            ("ITL_TLS_CERT", cert),
            ("ITL_TLS_KEY", key),
            ("ITL_TLS_CIPHERS", "TLS_RSA_WITH_NULL_MD5"),
        ],
        "ITL_TLS_CIPHERS",
        &["not a cipher suite", "TLS13_AES_256_GCM_SHA384"],
    );
    // A key that is not the certificate's.
    expect(
        &[("ITL_TLS_CERT", cert), ("ITL_TLS_KEY", key256)],
        "ITL_TLS_KEY",
        &["is not the private key of the certificate"],
    );
    // A key others can read.
    std::fs::set_permissions(&p384.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    expect(
        &[("ITL_TLS_CERT", cert), ("ITL_TLS_KEY", key)],
        "ITL_TLS_KEY",
        &["readable by group or others (mode 640)", "chmod 600"],
    );
    std::fs::set_permissions(&p384.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Files that are not what they should be.
    expect(
        &[("ITL_TLS_CERT", key), ("ITL_TLS_KEY", key)],
        "ITL_TLS_CERT",
        &["holds no certificate"],
    );
    expect(
        &[
            ("ITL_TLS_CERT", "/nonexistent/cert.pem"),
            ("ITL_TLS_KEY", key),
        ],
        "ITL_TLS_CERT",
        &["cannot read /nonexistent/cert.pem"],
    );
    expect(
        &[("ITL_TRUSTED_PROXIES", "10.0.0.1,example.org")],
        "ITL_TRUSTED_PROXIES",
        &["'example.org'"],
    );
}

/// Waits until `stream` is closed by the server (EOF or reset), at most `within`; answers
/// when, or `None`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 512];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn stalled_handshakes_are_cut_at_the_idle_timeout_and_free_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make(&dir.path().join("pki"), "server", "P-384");
    // One connection at a time, 2 s of idleness.
    let server = start_tls(
        dir.path(),
        &pki,
        &[
            ("ITL_IDLE_TIMEOUT_SECONDS", "2"),
            ("ITL_MAX_CONNECTIONS", "1"),
        ],
    );
    let addr = server.addr().to_owned();
    let client = https(&pki.ca);
    let url = format!("{}/healthz", server.url);

    // A client that connects and sends nothing holds the only slot only until another comes:
    // it gives way (its handshake is not a request in progress), and the newcomer is served
    // at once (crate::conn_table).
    let mut silent = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let behind = {
        let (client, url) = (client.clone(), url.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let (status, _) = call(&client, "GET", &url, None);
            (status, t.elapsed())
        })
    };
    let cut = closed_within(&mut silent, Duration::from_secs(10)).expect("never closed");
    let (status, waited) = behind.join().unwrap();
    eprintln!("silent client cut after {cut:?}; the request behind it waited {waited:?}");
    assert!(
        cut < Duration::from_millis(1500),
        "gave way, not timed out: {cut:?}"
    );
    assert_eq!(status, 200);
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    // Alone, a silent client is cut at the idle timeout.
    let mut alone = TcpStream::connect(&addr).unwrap();
    let cut = closed_within(&mut alone, Duration::from_secs(10)).expect("never closed");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(4),
        "{cut:?}"
    );

    // A client that trickles its handshake (a byte every 400 ms: never idle for 2 s) is cut
    // at the handshake deadline all the same.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    // A TLS record header announcing a 512-byte handshake message, then its bytes.
    let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    bytes.extend(std::iter::repeat_n(0u8, 503));
    let start = Instant::now();
    let mut cut = None;
    for b in &bytes {
        if trickle.write_all(&[*b]).is_err() {
            cut = Some(start.elapsed());
            break;
        }
        if let Some(_at) = closed_within(&mut trickle, Duration::from_millis(400)) {
            cut = Some(start.elapsed());
            break;
        }
        if start.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let cut = cut.expect("a trickling handshake was never cut");
    eprintln!("trickling handshake cut after {cut:?}");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_millis(3500),
        "{cut:?}"
    );

    // A client that completes the handshake and asks nothing: closed at the idle timeout.
    let pem = std::fs::read(&pki.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(&addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let start = Instant::now();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0u8; 64];
    let read = tls.read(&mut buf);
    let after = start.elapsed();
    eprintln!("quiet TLS connection closed after {after:?}: {read:?}");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(4),
        "{after:?}"
    );

    // The server serves on, and none of this was worth a warning.
    let (status, _) = call(&client, "GET", &url, None);
    assert_eq!(status, 200);
    assert!(
        !server.log().iter().any(|l| l.contains("WARN")),
        "{:#?}",
        server.log()
    );
}

/// `POST /api/v1/self-register` for `pem`'s EK with the given `X-Forwarded-For` headers:
/// the machine id.
fn self_register(server: &Server, pem: &str, forwarded: &[&str]) -> String {
    use base64ct::Encoding as _;
    let fp = attest_common::ek_fingerprint(pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    let body = serde_json::json!({
        "ek_fingerprint": fp,
        "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes()),
        "desired_role": "worker-app",
    })
    .to_string();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut req = agent
        .post(format!("{}/api/v1/self-register", server.url))
        .header("content-type", "application/json");
    for f in forwarded {
        req = req.header("x-forwarded-for", *f);
    }
    let mut res = req.send(body.as_bytes()).unwrap();
    let text = res.body_mut().read_to_string().unwrap();
    assert_eq!(res.status().as_u16(), 201, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["machine_id"].as_str().unwrap().to_owned()
}

#[test]
fn forwarded_for_reaches_the_audit_only_from_trusted_proxies() {
    // Our peer (127.0.0.1) is not trusted here: a forged header is ignored.
    let dir = tempfile::tempdir().unwrap();
    let untrusted = Server::start_with(
        &dir.path().join("a"),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8"),
        ],
    );
    assert!(
        untrusted
            .startup
            .iter()
            .any(|l| l.contains("X-Forwarded-For believed from 10.0.0.0/8,fd00::/8")),
        "{:#?}",
        untrusted.startup
    );
    let id = self_register(&untrusted, EK_P384, &["203.0.113.66"]);
    assert_eq!(untrusted.audit_column(&id, "source_ip"), ["127.0.0.1"]);

    // Our peer is the trusted proxy: the right-most address that is not a trusted proxy is
    // the client, over several headers; what the client itself wrote further left is not.
    let trusted = Server::start_with(
        &dir.path().join("b"),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_TRUSTED_PROXIES", "127.0.0.1, 10.1.0.0/16"),
        ],
    );
    let id = self_register(
        &trusted,
        EK_P384,
        &["203.0.113.66, 198.51.100.7", "10.1.2.3"],
    );
    assert_eq!(trusted.audit_column(&id, "source_ip"), ["198.51.100.7"]);
    // Operators too (the break-glass token's approval is audited with its address).
    let (status, m) = {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut res = agent
            .post(format!("{}/api/v1/machines/{id}/reject", trusted.url))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("x-forwarded-for", "192.0.2.44")
            .header("content-type", "application/json")
            .send(br#"{"reason":"test"}"#.as_slice())
            .unwrap();
        let status = res.status().as_u16();
        (status, res.body_mut().read_to_string().unwrap())
    };
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        trusted.audit_column(&id, "source_ip"),
        ["198.51.100.7", "192.0.2.44"]
    );
    // No header from a trusted proxy: the proxy is the source.
    let other = self_register(&trusted, EK_RSA, &[]);
    assert_eq!(trusted.audit_column(&other, "source_ip"), ["127.0.0.1"]);
}

#[test]
fn outbound_calls_trust_itl_ca_file() {
    use base64ct::Encoding as _;
    // The "OpenID provider" is a TLS server of ours with a private CA: it has no discovery
    // document (404), which is what a server that trusts the CA gets to see; one that does
    // not trust it fails the handshake.
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make(&dir.path().join("pki"), "server", "P-384");
    let provider = start_tls(&dir.path().join("provider"), &pki, &[]);
    let token = format!(
        "{}.{}.AAAA",
        base64ct::Base64UrlUnpadded::encode_string(br#"{"alg":"ES384","kid":"k1","typ":"JWT"}"#),
        base64ct::Base64UrlUnpadded::encode_string(b"{}")
    );
    let whoami = |with_ca: bool| {
        let data = dir.path().join(if with_ca { "with" } else { "without" });
        let mut env = vec![
            ("ITL_OIDC_ENABLED", "true"),
            ("ITL_OIDC_ISSUER", provider.url.as_str()),
            ("ITL_OIDC_AUDIENCE", "attestation"),
        ];
        if with_ca {
            env.push(("ITL_CA_FILE", pki.ca.to_str().unwrap()));
        }
        let server = Server::start_with(&data, &env);
        let (status, text) = server.call_text("GET", "/api/v1/machines", Some(&token), None);
        assert_eq!(status, 503, "{text}");
        text
    };
    let without = whoami(false);
    assert!(without.contains("UnknownIssuer"), "{without}");
    let with = whoami(true);
    assert!(
        with.contains("404") && !with.contains("UnknownIssuer"),
        "{with}"
    );

    // A CA file that holds no certificate stops start-up.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (code, err) = support::refused_start(
        &dir.path().join("bad"),
        &[("ITL_CA_FILE", empty.to_str().unwrap())],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("invalid configuration: ITL_CA_FILE: ") && err.contains("no certificate"),
        "{err}"
    );
}
