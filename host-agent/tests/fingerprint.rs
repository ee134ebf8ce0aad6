//! `attest-agent fingerprint` against OpenSSL and a real swtpm.

use std::process::{Command, Output};

use attest_swtpm::{NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048, Swtpm, openssl};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attest-agent"))
        .args(args)
        .output()
        .expect("run attest-agent")
}

/// Parses `key=value` lines.
fn field(out: &Output, key: &str) -> Option<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn openssl_cert_fingerprint(der_path: &str) -> String {
    let out = openssl(&[
        "x509",
        "-inform",
        "der",
        "-in",
        der_path,
        "-noout",
        "-fingerprint",
        "-sha384",
    ]);
    out.trim()
        .split('=')
        .nth(1)
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// SHA-384 of the certificate's SubjectPublicKeyInfo DER, computed by OpenSSL.
fn openssl_spki_fingerprint(tpm: &Swtpm, der_path: &str) -> String {
    let pem = tpm.scratch_dir().join("pub.pem");
    let spki = tpm.scratch_dir().join("pub.der");
    std::fs::write(
        &pem,
        openssl(&[
            "x509", "-inform", "der", "-in", der_path, "-noout", "-pubkey",
        ]),
    )
    .unwrap();
    openssl(&[
        "pkey",
        "-pubin",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "der",
        "-out",
        spki.to_str().unwrap(),
    ]);
    openssl(&["dgst", "-sha384", "-r", spki.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn file_fingerprints_match_openssl() {
    let tpm = Swtpm::start();
    let der = tpm.ek_cert_der(NV_EK_CERT_RSA2048);
    let der_path = tpm.scratch_dir().join("ek.der");
    std::fs::write(&der_path, &der).unwrap();
    let der_path = der_path.to_str().unwrap();
    let pem_path = tpm.scratch_dir().join("ek.pem");
    openssl(&[
        "x509",
        "-inform",
        "der",
        "-in",
        der_path,
        "-out",
        pem_path.to_str().unwrap(),
    ]);
    let want = openssl_cert_fingerprint(der_path);
    for path in [der_path, pem_path.to_str().unwrap()] {
        let out = agent(&["fingerprint", path]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            field(&out, "ek_fingerprint").as_deref(),
            Some(want.as_str())
        );
        assert_eq!(field(&out, "ek_source").as_deref(), Some("cert"));
    }
    // A public key file: source `pub`.
    let pub_pem = tpm.scratch_dir().join("only-key.pem");
    std::fs::write(
        &pub_pem,
        openssl(&[
            "x509", "-inform", "der", "-in", der_path, "-noout", "-pubkey",
        ]),
    )
    .unwrap();
    let out = agent(&["fingerprint", pub_pem.to_str().unwrap()]);
    assert_eq!(field(&out, "ek_source").as_deref(), Some("pub"));
    assert_eq!(
        field(&out, "ek_fingerprint"),
        Some(openssl_spki_fingerprint(&tpm, der_path))
    );
}

#[test]
fn bad_files_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.txt");
    std::fs::write(&garbage, "hello, world\n").unwrap();
    let out = agent(&["fingerprint", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not an EK certificate or public key"),
        "{err}"
    );

    let out = agent(&[
        "fingerprint",
        dir.path().join("missing.pem").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    // Neither a file nor --tpm: a usage error from clap.
    assert_eq!(agent(&["fingerprint"]).status.code(), Some(2));
}

#[test]
fn tpm_fingerprints_match_openssl_for_both_ek_types() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let mut spki_fps = vec![];
    for (index, ek_type, args) in [
        (
            NV_EK_CERT_ECC_P384,
            "ecc-p384",
            vec!["fingerprint", "--tpm", &tcti],
        ),
        (
            NV_EK_CERT_ECC_P384,
            "ecc-p384",
            vec!["fingerprint", "--tpm", &tcti, "--ek-type", "ecc-p384"],
        ),
        (
            NV_EK_CERT_RSA2048,
            "rsa-2048",
            vec!["fingerprint", "--tpm", &tcti, "--ek-type", "rsa-2048"],
        ),
    ] {
        let path = tpm.scratch_dir().join(format!("{index:x}.der"));
        std::fs::write(&path, tpm.ek_cert_der(index)).unwrap();
        let out = agent(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            field(&out, "ek_fingerprint"),
            Some(openssl_cert_fingerprint(path.to_str().unwrap()))
        );
        assert_eq!(field(&out, "ek_source").as_deref(), Some("cert"));
        assert_eq!(field(&out, "ek_type").as_deref(), Some(ek_type));
        assert_eq!(field(&out, "nv_index"), Some(format!("{index:#010x}")));
        spki_fps.push((
            ek_type,
            openssl_spki_fingerprint(&tpm, path.to_str().unwrap()),
        ));
    }

    // Without certificates the EK is named by its public key, recreated from the TCG
    // template: it must be the very key the manufacturer certified.
    for index in [NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048] {
        tpm.tpm2("tpm2_nvundefine", &[&format!("{index:#010x}"), "-C", "p"]);
    }
    for (ek_type, want) in &spki_fps[1..] {
        let out = agent(&["fingerprint", "--tpm", &tcti, "--ek-type", ek_type]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(field(&out, "ek_source").as_deref(), Some("pub"));
        assert_eq!(
            field(&out, "ek_fingerprint").as_ref(),
            Some(want),
            "{ek_type}"
        );
        assert_eq!(field(&out, "nv_index"), None);
    }
    let out = agent(&["fingerprint", "--tpm", &tcti]);
    assert_eq!(
        field(&out, "ek_type").as_deref(),
        Some("ecc-p384"),
        "P-384 is the default"
    );
}

#[test]
fn unreachable_tpm_fails_clearly() {
    let out = agent(&["fingerprint", "--tpm", "swtpm:host=127.0.0.1,port=1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open TPM via TCTI"), "{err}");
}
