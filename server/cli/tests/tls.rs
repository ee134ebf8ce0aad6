//! The CLI against the real server binary serving HTTPS with a certificate of a private CA
//! (made with `openssl`): trusted only through --ca-file, ATTESTATION_CA_FILE, `ca_file`
//! in the config file, or SSL_CERT_FILE; refused otherwise, with a message saying what to
//! do.

#[path = "../../tests/support/pki.rs"]
mod pki;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use support::{ADMIN, Server};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `attestation ARGS` as the break-glass operator, with `env` and its own config home.
fn cli(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_attestation"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XDG_CONFIG_HOME", home)
        .env("ITL_ADMIN_TOKEN", ADMIN)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn https_with_a_private_ca_is_trusted_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki::make(&d.join("pki"), "server", "P-384");
    let env = pki.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("ITL_ADMIN_TOKEN", ADMIN));
    let server = Server::start_with(&d.join("data"), &all);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let url = server.url.as_str();
    let ca = pki.ca.to_str().unwrap();
    let home = d.join("home");
    std::fs::create_dir_all(home.join("attestation")).unwrap();

    // Not trusted: exit 4 (cannot reach), saying why and what to do.
    let out = cli(&home, &[], &["--api-url", url, "machine", "list"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("not trusted") && out.stderr.contains("--ca-file"),
        "{}",
        out.stderr
    );
    let out = cli(&home, &[], &["--api-url", url, "health"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);

    // --ca-file, the variable, the config file (relative to it), SSL_CERT_FILE.
    let out = cli(
        &home,
        &[],
        &["--api-url", url, "--ca-file", ca, "machine", "list"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(
        &home,
        &[("ATTESTATION_CA_FILE", ca), ("ATTESTATION_API_URL", url)],
        &["health"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("ok: {url}")),
        "{}",
        out.stdout
    );
    std::fs::copy(&pki.ca, home.join("attestation/site-ca.pem")).unwrap();
    std::fs::write(
        home.join("attestation/config.toml"),
        format!("api_url = \"{url}\"\nca_file = \"site-ca.pem\"\n"),
    )
    .unwrap();
    let out = cli(&home, &[], &["machine", "list", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str::<serde_json::Value>(&out.stdout).expect("the server's JSON");
    std::fs::remove_file(home.join("attestation/config.toml")).unwrap();
    let out = cli(
        &home,
        &[("SSL_CERT_FILE", ca)],
        &["--api-url", url, "machine", "list"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Files that hold no certificate are usage errors (2).
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for env in [
        vec![("SSL_CERT_FILE", empty.to_str().unwrap())],
        vec![("ATTESTATION_CA_FILE", empty.to_str().unwrap())],
        vec![("ATTESTATION_CA_FILE", "/nonexistent/ca.pem")],
    ] {
        let out = cli(&home, &env, &["--api-url", url, "health"]);
        assert_eq!(out.code, 2, "{env:?}: {}", out.stderr);
    }
    let out = cli(
        &home,
        &[("ATTESTATION_CA_FILE", empty.to_str().unwrap())],
        &["--api-url", url, "health"],
    );
    assert!(
        out.stderr.contains("holds no certificate"),
        "{}",
        out.stderr
    );
    // SSL_CERT_FILE replaces the Web PKI roots; a CA file adds to whichever roots.
    let other = pki::make(&d.join("other"), "x", "P-384");
    let out = cli(
        &home,
        &[("SSL_CERT_FILE", other.ca.to_str().unwrap())],
        &["--api-url", url, "health"],
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    let out = cli(
        &home,
        &[("SSL_CERT_FILE", other.ca.to_str().unwrap())],
        &["--api-url", url, "--ca-file", ca, "health"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}
