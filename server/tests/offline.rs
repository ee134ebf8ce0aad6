//! The air-gapped half over real HTTP on a real server: the Enrollment CA checked with
//! openssl, offline bundles that validate against the Talos schema, `/enroll` and its
//! refusals, ISO URLs from a local Image Factory stand-in, and live backups under load.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::nonce::{Domain, sign};
use attest_server::enrollment::{EnrollmentCa, key_matches_cert};
use base64ct::Encoding as _;
use p384::ecdsa::SigningKey;
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::{ADMIN, Server};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fingerprint(pem: &str) -> String {
    attest_common::ek_fingerprint(pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string()
}

fn register_body(pem: &str) -> String {
    json!({
        "ek_fingerprint": fingerprint(pem),
        "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes()),
        "desired_role": "worker-app",
    })
    .to_string()
}

/// A registry entry for an EK without a certificate: a fresh P-384 key in the EK template's
/// public area.
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

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed: apt-get install openssl (ci/setup.sh does)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn status_of(server: &Server, id: &str) -> String {
    let (s, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(s, 200, "{m}");
    m["status"].as_str().unwrap().to_owned()
}

/// `POST /enroll` with `cert_pem`, signing the nonce of `challenge` (or `signed_nonce`).
fn enroll(
    server: &Server,
    cert_pem: &str,
    key: &SigningKey,
    machine_id: &str,
    challenge: &Value,
    signed_nonce: Option<[u8; 32]>,
) -> (u16, Value) {
    let mut nonce = [0u8; 32];
    attest_common::hex::decode_into(challenge["nonce"].as_str().unwrap(), &mut nonce).unwrap();
    let sig = sign(
        key,
        Domain::Enroll,
        &signed_nonce.unwrap_or(nonce),
        machine_id.as_bytes(),
    );
    let body = json!({
        "cert_pem": base64ct::Base64::encode_string(cert_pem.as_bytes()),
        "nonce_id": challenge["nonce_id"],
        "signature": serde_json::to_value(sig).unwrap(),
    });
    server.call("POST", "/api/v1/enroll", None, Some(&body.to_string()))
}

fn challenge(server: &Server) -> Value {
    let (s, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
    assert_eq!(s, 200, "{c}");
    c
}

#[test]
fn enrollment_ca_offline_bundle_and_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let configs = support::config_dir(dir.path());
    let env = [
        ("ITL_ADMIN_TOKEN", ADMIN),
        ("ITL_CONFIG_DIR", configs.to_str().unwrap()),
        (
            "ITL_ISO_URL",
            "https://mirror.example/talos/metal-amd64.iso",
        ),
        ("ITL_ENROLLMENT_CERT_DAYS", "7"),
    ];
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &env);
    let ca_dir = data.join("enrollment-ca");
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("Enrollment CA generated (serial=")),
        "{:?}",
        server.startup
    );
    let mode = std::fs::metadata(ca_dir.join("ca.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let (ok, ca_text) = openssl(&[
        "x509",
        "-in",
        ca_dir.join("ca.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(ok, "{ca_text}");
    assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
    assert!(ca_text.contains("NIST CURVE: P-384"), "{ca_text}");

    // Registered (USB path) but not approved: no bundle yet.
    let (s, reg) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(s, 201, "{reg}");
    assert_eq!(
        reg["iso_url"],
        "https://mirror.example/talos/metal-amd64.iso"
    );
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    let (s, pending) = server.call("POST", "/api/v1/self-register", None, Some(&pub_ek_body()));
    assert_eq!(s, 201, "{pending}");
    let pending_id = pending["machine_id"].as_str().unwrap();
    let (s, e) = server.call(
        "GET",
        &format!("/api/v1/machines/{pending_id}/offline-bundle"),
        Some(ADMIN),
        None,
    );
    assert_eq!((s, e["error"].as_str()), (409, Some("not_approved")), "{e}");
    let (s, _) = server.call(
        "GET",
        &format!("/api/v1/machines/{id}/offline-bundle"),
        None,
        None,
    );
    assert_eq!(s, 401, "operators only");

    let (s, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(r#"{"role":"worker-app","hostname":"edge-7","assigned_ip":"10.0.7.7/24"}"#),
    );
    assert_eq!(s, 200, "{m}");
    let (s, bundle) = server.call(
        "GET",
        &format!("/api/v1/machines/{id}/offline-bundle"),
        Some(ADMIN),
        None,
    );
    assert_eq!(s, 200, "{bundle}");
    assert_eq!(
        bundle["iso_url"],
        "https://mirror.example/talos/metal-amd64.iso"
    );
    let token = bundle["config_token"].as_str().unwrap();
    assert_eq!(
        bundle["config_url"],
        format!("{}/api/v1/config/{token}", server.url)
    );
    // A new long-lived token for the bundle's ISO; the one /register made stops working
    // (the registry keeps hashes only, so an earlier token cannot be handed out again).
    let old = reg["config_token"].as_str().unwrap();
    assert_ne!(old, token);
    let (s, _) = server.call_text("GET", &format!("/api/v1/config/{old}"), None, None);
    assert_eq!(s, 404);
    let (s, public) = server.call_text("GET", &format!("/api/v1/config/{token}"), None, None);
    assert_eq!(s, 200);
    assert!(
        !public.contains("token:"),
        "the long-lived token serves no secrets"
    );

    // The MachineConfig validates and carries cert (0444) and key (0400) under /var.
    let yaml = bundle["machineconfig"].as_str().unwrap();
    support::validate(yaml);
    let config: Value = serde_norway::from_str(yaml).unwrap();
    assert!(
        config.pointer("/machine/token").is_some(),
        "full config, secrets included"
    );
    let files = config["machine"]["files"].as_array().unwrap();
    let file = |name: &str| {
        files
            .iter()
            .find(|f| f["path"] == format!("/var/lib/itl/{name}"))
            .unwrap_or_else(|| panic!("{name} in {files:?}"))
            .clone()
    };
    let (cert_file, key_file) = (file("enrollment.pem"), file("enrollment.key"));
    assert_eq!(
        (cert_file["permissions"].as_u64(), cert_file["op"].as_str()),
        (Some(0o444), Some("create"))
    );
    assert_eq!(
        (key_file["permissions"].as_u64(), key_file["op"].as_str()),
        (Some(0o400), Some("create"))
    );
    assert_eq!(file("server-key.pem")["content"], bundle["server_key_pem"]);
    let (s, sk) = server.call("GET", "/api/v1/server-key", None, None);
    assert_eq!(s, 200);
    assert_eq!(bundle["server_key_pem"], sk["public_key_pem"]);
    let cert_pem = cert_file["content"].as_str().unwrap().to_owned();
    let key_pem = key_file["content"].as_str().unwrap().to_owned();
    assert_eq!(cert_pem, bundle["enrollment_cert_pem"].as_str().unwrap());
    assert!(
        key_matches_cert(&key_pem, &cert_pem),
        "the key in the config is the cert's"
    );

    // openssl agrees: chain, P-384, the EK SAN, clientAuth, the validity.
    let machine_pem = dir.path().join("machine.pem");
    std::fs::write(&machine_pem, &cert_pem).unwrap();
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca_dir.join("ca.pem").to_str().unwrap(),
        machine_pem.to_str().unwrap(),
    ]);
    assert!(ok && out.contains(": OK"), "{out}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        machine_pem.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(ok, "{text}");
    let fp = fingerprint(EK_P384);
    for want in [
        "NIST CURVE: P-384",
        &format!("URI:urn:itl:ek:{fp}"),
        "TLS Web Client Authentication",
        "CA:FALSE",
        &format!("CN = {id}"),
        "OU = worker-app",
        "ecdsa-with-SHA384",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    let (_, dates) = openssl(&[
        "x509",
        "-in",
        machine_pem.to_str().unwrap(),
        "-noout",
        "-checkend",
        &(6 * 86_400).to_string(),
    ]);
    assert!(dates.contains("will not expire"), "7 days: {dates}");
    let details = server.audit_column(&id, "detail");
    assert!(
        details.iter().any(|d| d.starts_with(&format!(
            "Enrollment cert issued: machine_id={id} role=worker-app serial="
        )) && d.ends_with("valid_days=7")),
        "{details:?}"
    );

    // Refusals, each leaving the machine registered.
    let key = SigningKey::from_pkcs8_pem(&key_pem).unwrap();
    let real_ca = EnrollmentCa::load(&ca_dir).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = EnrollmentCa::load_or_generate(other_dir.path()).unwrap();
    let with_own_key = |issued: &attest_server::enrollment::Issued| {
        (
            issued.cert_pem.clone(),
            SigningKey::from_pkcs8_pem(&issued.key_pem).unwrap(),
        )
    };
    let other = with_own_key(
        &other_ca
            .issue(
                &id,
                "worker-app",
                &fp,
                now(),
                7,
                &attest_server::service::platform::OsRandom,
            )
            .unwrap(),
    );
    let expired = with_own_key(
        &real_ca
            .issue(
                &id,
                "worker-app",
                &fp,
                now() - 40 * 86_400,
                30,
                &attest_server::service::platform::OsRandom,
            )
            .unwrap(),
    );
    let other_ek = "ab".repeat(48);
    let wrong_machine = with_own_key(
        &real_ca
            .issue(
                &id,
                "worker-app",
                &other_ek,
                now(),
                7,
                &attest_server::service::platform::OsRandom,
            )
            .unwrap(),
    );
    /// (what, cert PEM, enrollment key, nonce to sign instead of the server's, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a SigningKey,
        Option<[u8; 32]>,
        u16,
        &'a str,
    );
    let cases: [Case; 4] = [
        (
            "another CA",
            &other.0,
            &other.1,
            None,
            403,
            "certificate_refused",
        ),
        (
            "expired",
            &expired.0,
            &expired.1,
            None,
            403,
            "certificate_refused",
        ),
        (
            "another EK",
            &wrong_machine.0,
            &wrong_machine.1,
            None,
            403,
            "ek_mismatch",
        ),
        (
            "another nonce",
            &cert_pem,
            &key,
            Some([9; 32]),
            403,
            "signature_invalid",
        ),
    ];
    for (what, cert, key, nonce, status, code) in cases {
        let (s, e) = enroll(&server, cert, key, &id, &challenge(&server), nonce);
        assert_eq!(
            (s, e["error"].as_str()),
            (status, Some(code)),
            "{what}: {e}"
        );
        assert_eq!(
            status_of(&server, &id),
            "registered",
            "{what} changed nothing"
        );
    }
    let failures = server
        .audit_column(&id, "action")
        .iter()
        .filter(|a| *a == "enroll-failed")
        .count();
    // Only the refusal whose proof held (a valid certificate and signature naming another
    // EK) is audited; the three that proved nothing wrote nothing.
    assert_eq!(failures, 1, "proven refusals audited, the others not");

    // The agent on the node: a key that is not the certificate's is refused before anything
    // is sent (exit status 2).
    let node = dir.path().join("node");
    std::fs::create_dir(&node).unwrap();
    let (node_cert, node_key) = (node.join("enrollment.pem"), node.join("enrollment.key"));
    std::fs::write(&node_cert, &cert_pem).unwrap();
    std::fs::write(&node_key, other.1.to_pkcs8_pem(Default::default()).unwrap()).unwrap();
    let (_, key_json) = server.call("GET", "/api/v1/server-key", None, None);
    let server_key = node.join("server-key.pem");
    std::fs::write(&server_key, key_json["public_key_pem"].as_str().unwrap()).unwrap();
    let agent_enroll_via = |url: &str| {
        let out = Command::new(support::agent_bin())
            .env_clear()
            .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
            .arg("--server-key")
            .arg(&server_key)
            .args(["enroll", "--server", url, "--cert"])
            .arg(&node_cert)
            .arg("--key")
            .arg(&node_key)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let agent_enroll = || agent_enroll_via(&server.url);
    let (code, _, err) = agent_enroll();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the key is not the certificate's key"),
        "{err}"
    );
    assert_eq!(status_of(&server, &id), "registered");

    // The real thing, with the bundle's key, as `attest-agent enroll` does it: proven and
    // audited, but not attested (review F3: the key is a file, not the TPM; only a verified
    // quote makes a machine attested).
    std::fs::write(&node_key, &key_pem).unwrap();
    let (code, out, err) = agent_enroll();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("machine_id={id}\nstatus=registered\n"));
    assert_eq!(status_of(&server, &id), "registered");
    let actions = server.audit_column(&id, "action");
    assert_eq!(actions.last().map(String::as_str), Some("enroll"));

    // A man in the middle who makes the answer say `attested`: it no longer verifies against
    // the server key (signed over this request and the answer's fields); refused, exit 1.
    let proxy = support::agent::tampering_proxy(server.url.clone(), |path, body| {
        match path == "/api/v1/enroll" {
            true => body.replace("\"registered\"", "\"attested\""),
            false => body,
        }
    });
    let (code, out, err) = agent_enroll_via(&proxy);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "nothing reported: {out}");
    assert!(err.contains("not signed by the pinned server key"), "{err}");

    // Again by hand, then the same nonce again is a replay.
    let c = challenge(&server);
    let (s, r) = enroll(&server, &cert_pem, &key, &id, &c, None);
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["machine_id"].as_str(), r["status"].as_str()),
        (Some(id.as_str()), Some("registered"))
    );
    assert_eq!(status_of(&server, &id), "registered");
    let (s, e) = enroll(&server, &cert_pem, &key, &id, &c, None);
    assert_eq!(
        (s, e["error"].as_str()),
        (409, Some("nonce_replayed")),
        "{e}"
    );

    // Revoked: refused on /enroll and for bundles.
    let (s, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"reason":"stolen"}"#),
    );
    assert_eq!(s, 200);
    let (s, e) = enroll(&server, &cert_pem, &key, &id, &challenge(&server), None);
    assert_eq!(
        (s, e["error"].as_str()),
        (403, Some("machine_refused")),
        "{e}"
    );
    assert_eq!(status_of(&server, &id), "revoked");
    let (s, e) = server.call(
        "GET",
        &format!("/api/v1/machines/{id}/offline-bundle"),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (s, e["error"].as_str()),
        (403, Some("machine_refused")),
        "{e}"
    );

    // A restart loads the same CA; a key that does not match its certificate stops it.
    let serial = real_ca.serial();
    let dir_kept = server.stop();
    let again = Server::start_with(&data, &env);
    assert!(
        again
            .startup
            .iter()
            .any(|l| l.contains("Enrollment CA loaded from")
                && l.ends_with(&format!("(serial={serial})"))),
        "{:?}",
        again.startup
    );
    drop(again);
    std::fs::copy(other_dir.path().join("ca.key"), ca_dir.join("ca.key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
        .env_clear()
        .env("ITL_LISTEN", "127.0.0.1:0")
        .env("ITL_DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not match its certificate"),
        "{stderr}"
    );
    drop(dir_kept);
}

/// A stand-in for the Talos Image Factory's `POST /schematics`: the id is the SHA-256 of
/// the YAML (content-addressed, as the real one). Records the bodies it got.
struct Factory {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

fn factory() -> Factory {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let (status, answer) = if request_line.starts_with("POST /schematics ") {
                let yaml = String::from_utf8(body).unwrap();
                let parsed: Result<Value, _> = serde_norway::from_str(&yaml);
                let id = attest_server::audit::hex(&Sha256::digest(yaml.as_bytes()));
                seen.lock().unwrap().push(yaml);
                match parsed {
                    Ok(_) => ("201 Created", json!({ "id": id }).to_string()),
                    Err(e) => (
                        "400 Bad Request",
                        json!({ "error": e.to_string() }).to_string(),
                    ),
                }
            } else {
                ("404 Not Found", "{}".to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    Factory { url, bodies }
}

#[test]
fn iso_urls_from_the_image_factory_and_503_when_it_is_down() {
    let f = factory();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("up"),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_FACTORY_URL", &f.url),
            (
                "ITL_FACTORY_EXTENSIONS",
                "siderolabs/intel-ucode, siderolabs/iscsi-tools",
            ),
            ("ITL_TALOS_VERSION", "v1.9.5"),
        ],
    );
    let (s, reg) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(s, 201, "{reg}");
    let yaml = f
        .bodies
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the factory was asked");
    let schematic: Value = serde_norway::from_str(&yaml).unwrap();
    let config_url = reg["config_url"].as_str().unwrap();
    assert_eq!(
        schematic["customization"]["extraKernelArgs"],
        json!([format!("talos.config={config_url}")])
    );
    assert_eq!(
        schematic["customization"]["systemExtensions"]["officialExtensions"],
        json!(["siderolabs/intel-ucode", "siderolabs/iscsi-tools"])
    );
    let id = attest_server::audit::hex(&Sha256::digest(yaml.as_bytes()));
    assert_eq!(
        reg["iso_url"],
        format!("{}/image/{id}/v1.9.5/metal-amd64.iso", f.url)
    );
    // The same machine again: its token (in the ISO) is not handed out twice, so neither
    // is the ISO URL, and the factory is not asked.
    let (s, again) = server.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(s, 200, "{again}");
    assert!(
        again["iso_url"].is_null() && again["config_token"].is_null(),
        "{again}"
    );
    assert_eq!(f.bodies.lock().unwrap().len(), 1);
    // Self-registration (zero-touch: already booted) asks nothing.
    let (s, _) = server.call("POST", "/api/v1/self-register", None, Some(&pub_ek_body()));
    assert_eq!(s, 201);
    assert_eq!(f.bodies.lock().unwrap().len(), 1);

    // Factory down: 503, and nothing is written.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Server::start_with(
        &dir.path().join("down"),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_FACTORY_URL", &format!("http://{closed}")),
            ("ITL_FACTORY_TIMEOUT_SECONDS", "2"),
        ],
    );
    let (s, e) = down.call(
        "POST",
        "/api/v1/register",
        None,
        Some(&register_body(EK_P384)),
    );
    assert_eq!(
        (s, e["error"].as_str()),
        (503, Some("image_factory_unavailable")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("Image Factory"),
        "{e}"
    );
    let (_, list) = down.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let (_, audit) = down.call("GET", "/api/v1/audit", Some(ADMIN), None);
    assert_eq!(audit.as_array().map(Vec::len), Some(0), "{audit}");
}

#[test]
fn backups_are_consistent_while_requests_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Arc::new(Server::start_with(&data, &[("ITL_ADMIN_TOKEN", ADMIN)]));
    let url = server.url.clone();
    let backup = |to: &Path, token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_attestation-server"));
        cmd.env_clear()
            .env("ITL_DATA_DIR", &data)
            .env("ITL_SERVICE_URL", &url)
            .args(["backup", "--to", to.to_str().unwrap()]);
        if let Some(t) = token {
            cmd.env("ITL_ADMIN_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    // Writers: registrations, each acknowledged one counted.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (server, stop, acknowledged) = (server.clone(), stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (s, r) =
                        server.call("POST", "/api/v1/self-register", None, Some(&pub_ek_body()));
                    assert_eq!(s, 201, "{r}");
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Without the operator token, the running service cannot be asked: a clear error.
    let refused = backup(&dir.path().join("nope.redb"), None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("set ITL_ADMIN_TOKEN"));
    assert!(!dir.path().join("nope.redb").exists());

    let copy = dir.path().join("copy.redb");
    let before = acknowledged.load(Ordering::SeqCst);
    let out = backup(&copy, Some(ADMIN));
    let after = acknowledged.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("chain valid"), "{stdout}");
    assert!(after > before, "the writers kept writing during the backup");

    // The copy opens, its chain verifies, and it holds every registration acknowledged
    // before the backup began (and none that was never made).
    let v = attest_server::store::redb::RedbRegistry::audit_verify_file(&copy).unwrap();
    assert!(v.valid, "{v:?}");
    let machines =
        attest_server::store::redb::RedbRegistry::machines_in_file(&copy).unwrap() as usize;
    assert!(
        machines >= before && machines <= after,
        "{before} <= {machines} <= {after}"
    );
    assert_eq!(
        v.entries as usize, machines,
        "one audit entry per registration"
    );
    // A second copy over the first is refused; the first stays.
    let again = backup(&copy, Some(ADMIN));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // The live registry has the backup audited; stopped, the file is copied directly.
    let total = {
        let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
        v["entries"].as_u64().unwrap()
    };
    let server = Arc::try_unwrap(server).ok().expect("writers are done");
    drop(server.stop());
    let offline = dir.path().join("offline.redb");
    let out = backup(&offline, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = attest_server::store::redb::RedbRegistry::open(&offline).unwrap();
    assert_eq!(store.audit_verify().unwrap().entries, total);
    let actions: Vec<String> = store
        .audit_page(None, 1, 1_000_000)
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"backup".to_owned()),
        "the live backup is audited"
    );
    let live =
        attest_server::store::redb::RedbRegistry::open(&data.join("attestation.redb")).unwrap();
    assert_eq!(
        store.table_names().unwrap(),
        live.table_names().unwrap(),
        "every table copied"
    );
    // Opening a file makes every table: the checkpoints are compared too (the verification
    // above signed one).
    let signed = live.audit_checkpoints().unwrap();
    assert!(!signed.is_empty());
    assert_eq!(
        store.audit_checkpoints().unwrap(),
        signed,
        "checkpoints copied"
    );
    drop((store, live));

    // Restore: a server started on the copy serves its machines and its chain. The keys
    // come from their own backup (the file system's), as the README says; without them the
    // start is refused (tests/hardening.rs).
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&copy, restored.join("attestation.redb")).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .args(["response-key", "activation-key", "enrollment-ca"].map(|f| data.join(f)))
        .arg(&restored)
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start_with(&restored, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (s, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), machines);
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(v["valid"], true, "{v}");
}
