//! The Enrollment CA directory of the service we replace (issue 22): its file names
//! (`enrollment-ca.crt`, `enrollment-ca.key`) and its SEC1 P-384 key are loaded as they are,
//! so its outstanding enrollment certificates stay good and new ones chain to the same CA;
//! an RSA CA from before its CNSA migration is refused, saying how to rotate.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use attest_swtpm::openssl;
use base64ct::Encoding as _;
use serde_json::json;
use support::{ADMIN, server_bin};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");

fn private(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn the_seeds_ca_directory_is_honoured_and_an_rsa_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    let (key, cert) = (ca.join("enrollment-ca.key"), ca.join("enrollment-ca.crt"));
    let (key_s, cert_s) = (key.to_str().unwrap(), cert.to_str().unwrap());
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        key_s,
    ]);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    private(&key);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        key_s,
        "-subj",
        "/CN=ITL Enrollment CA",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        cert_s,
    ]);
    let server = support::start_with_configs(
        dir.path(),
        &[("ITL_ENROLLMENT_CA_DIR", ca.to_str().unwrap())],
    );
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains(&format!("Enrollment CA loaded from {}", ca.display()))),
        "{:#?}",
        server.startup
    );
    assert!(!ca.join("ca.key").exists(), "no second CA made beside it");

    // A bundle's certificate chains to the seed's CA.
    let body = json!({
        "ek_fingerprint": attest_common::ek_fingerprint(EK_P384.as_bytes()).unwrap().fingerprint.to_string(),
        "ek_cert_pem": base64ct::Base64::encode_string(EK_P384.as_bytes()),
    });
    let (status, reg) = server.call("POST", "/api/v1/register", None, Some(&body.to_string()));
    assert_eq!(status, 201, "{reg}");
    let id = reg["machine_id"].as_str().unwrap();
    server.admin(
        id,
        "approve",
        r#"{"role":"worker-app","hostname":"w-1","assigned_ip":"10.0.0.9/24"}"#,
    );
    let (status, bundle) = server.call(
        "GET",
        &format!("/api/v1/machines/{id}/offline-bundle"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200, "{bundle}");
    let issued = dir.path().join("issued.pem");
    std::fs::write(&issued, bundle["enrollment_cert_pem"].as_str().unwrap()).unwrap();
    let verified = openssl(&["verify", "-CAfile", cert_s, issued.to_str().unwrap()]);
    assert!(verified.contains(": OK"), "{verified}");
    drop(server);

    // An RSA CA (before the CNSA migration): refused, naming the file and the way on.
    let old = dir.path().join("rsa-ca");
    std::fs::create_dir(&old).unwrap();
    let rsa_key = old.join("enrollment-ca.key");
    openssl(&["genrsa", "-out", rsa_key.to_str().unwrap(), "2048"]);
    private(&rsa_key);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        rsa_key.to_str().unwrap(),
        "-subj",
        "/CN=Old CA",
        "-days",
        "30",
        "-out",
        old.join("enrollment-ca.crt").to_str().unwrap(),
    ]);
    let out = Command::new(server_bin())
        .env_clear()
        .env("ITL_LISTEN", "127.0.0.1:0")
        .env("ITL_DATA_DIR", dir.path().join("data-rsa"))
        .env("ITL_ENROLLMENT_CA_DIR", &old)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is an RSA key") && err.contains("attestation-server rotate enrollment-ca"),
        "{err}"
    );
}
