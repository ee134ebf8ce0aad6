//! Cross-checks with OpenSSL and a real swtpm: our fingerprints are OpenSSL's, our nonce
//! signatures verify in OpenSSL and OpenSSL's verify in ours.

use std::path::Path;
use std::process::Command;

use attest_common::fingerprint::{EkSource, ek_fingerprint, ek_fingerprint_der};
use attest_common::nonce::{self, Domain, NonceSignature};
use attest_swtpm::{NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048, Swtpm, openssl};
use p384::ecdsa::SigningKey;
use p384::pkcs8::DecodePrivateKey;

/// `openssl x509 -noout -fingerprint -sha384`, colons removed, lower case.
fn openssl_fingerprint(cert: &Path, inform: &str) -> String {
    let out = openssl(&[
        "x509",
        "-inform",
        inform,
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha384",
    ]);
    let hex = out.trim().split('=').nth(1).expect("Fingerprint=...");
    hex.replace(':', "").to_lowercase()
}

#[test]
fn swtpm_ek_certificates_match_openssl() {
    let tpm = Swtpm::start();
    for (index, key_type) in [
        (NV_EK_CERT_RSA2048, "rsaEncryption"),
        (NV_EK_CERT_ECC_P384, "secp384r1"),
    ] {
        let der = tpm.ek_cert_der(index);
        let path = tpm.scratch_dir().join(format!("ek-{index:x}.der"));
        std::fs::write(&path, &der).unwrap();
        let text = openssl(&[
            "x509",
            "-inform",
            "der",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(
            text.contains(key_type),
            "EK at {index:#x} is not {key_type}"
        );

        let ours = ek_fingerprint(&der).unwrap();
        assert_eq!(ours.source, EkSource::Cert);
        assert_eq!(
            ours.fingerprint.to_string(),
            openssl_fingerprint(&path, "der")
        );

        // The same certificate as PEM gives the same fingerprint.
        let pem_path = tpm.scratch_dir().join(format!("ek-{index:x}.pem"));
        openssl(&[
            "x509",
            "-inform",
            "der",
            "-in",
            path.to_str().unwrap(),
            "-out",
            pem_path.to_str().unwrap(),
        ]);
        let pem = std::fs::read(&pem_path).unwrap();
        assert_eq!(ek_fingerprint(&pem).unwrap(), ours);
        // The firmware's DER-only entry point agrees, and refuses PEM.
        assert_eq!(ek_fingerprint_der(&der).unwrap(), ours);
        assert!(ek_fingerprint_der(&pem).is_err());

        // The EK public key alone: SHA-384 of its SubjectPublicKeyInfo DER, source `pub`.
        let spki_path = tpm.scratch_dir().join(format!("ek-{index:x}.spki.der"));
        let pubkey_pem = openssl(&[
            "x509",
            "-inform",
            "der",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]);
        let pub_pem_path = tpm.scratch_dir().join(format!("ek-{index:x}.pub.pem"));
        std::fs::write(&pub_pem_path, &pubkey_pem).unwrap();
        openssl(&[
            "pkey",
            "-pubin",
            "-in",
            pub_pem_path.to_str().unwrap(),
            "-outform",
            "der",
            "-out",
            spki_path.to_str().unwrap(),
        ]);
        let digest = openssl(&["dgst", "-sha384", "-r", spki_path.to_str().unwrap()]);
        let want = digest.split_whitespace().next().unwrap();
        let from_pem = ek_fingerprint(pubkey_pem.as_bytes()).unwrap();
        let from_der = ek_fingerprint(&std::fs::read(&spki_path).unwrap()).unwrap();
        assert_eq!(from_pem, from_der);
        assert_eq!(from_pem.source, EkSource::Pub);
        assert_eq!(from_pem.fingerprint.to_string(), want);
    }
}

/// The SPKI of the NV certificate at `index`, as OpenSSL writes it.
fn openssl_cert_spki(tpm: &Swtpm, index: u32) -> Vec<u8> {
    let cert = tpm.scratch_dir().join(format!("cert-{index:x}.der"));
    std::fs::write(&cert, tpm.ek_cert_der(index)).unwrap();
    let pem = tpm.scratch_dir().join(format!("cert-{index:x}.pub.pem"));
    std::fs::write(
        &pem,
        openssl(&[
            "x509",
            "-inform",
            "der",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]),
    )
    .unwrap();
    let der = tpm.scratch_dir().join(format!("cert-{index:x}.pub.der"));
    openssl(&[
        "pkey",
        "-pubin",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "der",
        "-out",
        der.to_str().unwrap(),
    ]);
    std::fs::read(der).unwrap()
}

/// The EKs swtpm makes from the TCG templates (tpm2-tools: `tpm2_createek` for L-1,
/// `tpm2_createprimary` with H-3's parameters): their public areas are exactly the templates'
/// (`check_ek_public`, `EkTemplate::public_area`), and the SPKI our encoder writes for them is
/// the one in the manufacturer's certificate as OpenSSL reads it, and the one tpm2-tools
/// writes: a `pub` EK has the fingerprint of its key's certificate's SPKI.
#[test]
fn swtpm_ek_public_areas_are_the_templates_and_encode_as_openssl_does() {
    use attest_common::tpm::ek::{EkType, POLICY_B_SHA384};
    use attest_common::tpm::ek_template::check_ek_public;
    let tpm = Swtpm::start();
    let path = |name: &str| tpm.scratch_dir().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("policy-b.bin"), POLICY_B_SHA384).unwrap();
    let h3_attributes =
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|adminwithpolicy|restricted|decrypt";
    for (ek_type, index) in [
        (EkType::Rsa2048, NV_EK_CERT_RSA2048),
        (EkType::EccP384, NV_EK_CERT_ECC_P384),
    ] {
        let (ctx, public, tools_spki) = (path("ek.ctx"), path("ek.pub"), path("ek.spki.der"));
        match ek_type {
            EkType::Rsa2048 => {
                tpm.tpm2("tpm2_createek", &["-G", "rsa", "-c", &ctx, "-u", &public]);
            }
            EkType::EccP384 => {
                tpm.tpm2(
                    "tpm2_createprimary",
                    &[
                        "-C",
                        "e",
                        "-g",
                        "sha384",
                        "-G",
                        "ecc384:null:aes256cfb",
                        "-a",
                        h3_attributes,
                        "-L",
                        &path("policy-b.bin"),
                        "-c",
                        &ctx,
                    ],
                );
                // No resource manager: the transient object must go before the next load.
                tpm.tpm2("tpm2_flushcontext", &["-t"]);
                tpm.tpm2("tpm2_readpublic", &["-c", &ctx, "-o", &public]);
            }
        }
        tpm.tpm2("tpm2_flushcontext", &["-t"]);
        tpm.tpm2(
            "tpm2_readpublic",
            &["-c", &ctx, "-f", "der", "-o", &tools_spki],
        );
        tpm.tpm2("tpm2_flushcontext", &["-t"]);

        let area = std::fs::read(&public).unwrap();
        let ek = check_ek_public(&area).unwrap_or_else(|e| panic!("{ek_type}: {e}"));
        assert_eq!(ek.ek_type, ek_type);
        assert_eq!(
            ek_type
                .template()
                .public_area(&ek.public.key)
                .unwrap()
                .as_slice(),
            area.as_slice()
        );
        let cert_spki = openssl_cert_spki(&tpm, index);
        assert_eq!(ek.spki().as_slice(), cert_spki.as_slice(), "{ek_type}");
        assert_eq!(
            ek.spki().as_slice(),
            std::fs::read(&tools_spki).unwrap().as_slice(),
            "{ek_type}: tpm2-tools' SPKI"
        );
        assert_eq!(
            ek.fingerprint(),
            ek_fingerprint(&cert_spki).unwrap().fingerprint
        );
    }
}

#[test]
fn openssl_made_certificate_matches() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:secp384r1",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "1",
        "-subj",
        "/CN=itl-test",
    ]);
    let pem = std::fs::read(&cert).unwrap();
    let ours = ek_fingerprint(&pem).unwrap();
    assert_eq!(ours.source, EkSource::Cert);
    assert_eq!(
        ours.fingerprint.to_string(),
        openssl_fingerprint(&cert, "pem")
    );
    // A private key is not EK material.
    let key_pem = std::fs::read(&key).unwrap();
    assert!(ek_fingerprint(&key_pem).is_err());
}

struct OpensslKey {
    dir: tempfile::TempDir,
}

impl OpensslKey {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            key.to_str().unwrap(),
        ]);
        openssl(&[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "der",
            "-out",
            dir.path().join("pub.der").to_str().unwrap(),
        ]);
        openssl(&[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            dir.path().join("pub.pem").to_str().unwrap(),
        ]);
        OpensslKey { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_pkcs8_pem(&std::fs::read_to_string(self.path("key.pem")).unwrap()).unwrap()
    }

    fn write_message(&self, domain: Domain, nonce: &[u8], context: &[u8]) -> String {
        let mut msg = Vec::new();
        nonce::message_parts(domain, nonce, context, |p| msg.extend_from_slice(p));
        let path = self.path("msg.bin");
        std::fs::write(&path, msg).unwrap();
        path
    }

    /// Runs `openssl dgst -verify` and says whether it printed "Verified OK".
    fn openssl_verifies(&self, msg: &str, sig_der: &[u8]) -> bool {
        std::fs::write(self.path("sig.der"), sig_der).unwrap();
        let out = Command::new("openssl")
            .args([
                "dgst",
                "-sha384",
                "-verify",
                &self.path("pub.pem"),
                "-signature",
                &self.path("sig.der"),
                msg,
            ])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
    }
}

#[test]
fn our_signatures_verify_in_openssl() {
    let key = OpensslKey::new();
    let sk = key.signing_key();
    for i in 0..8u8 {
        let nonce = [i; nonce::NONCE_LEN];
        let context = format!("machine-{i}");
        let sig = nonce::sign(&sk, Domain::Enroll, &nonce, context.as_bytes());
        let msg = key.write_message(Domain::Enroll, &nonce, context.as_bytes());
        assert!(key.openssl_verifies(&msg, &sig.to_der()), "signature {i}");
        // The same signature over the `action` message must fail in OpenSSL too.
        let other = key.write_message(Domain::Action, &nonce, context.as_bytes());
        assert!(!key.openssl_verifies(&other, &sig.to_der()));
    }
}

#[test]
fn openssl_signatures_verify_in_ours() {
    let key = OpensslKey::new();
    let vk = nonce::verifying_key_from_spki(&std::fs::read(key.path("pub.der")).unwrap()).unwrap();
    assert_eq!(vk, *key.signing_key().verifying_key());
    // OpenSSL's k is random; several signatures cover short r/s and high s.
    for i in 0..16u8 {
        let nonce = [i ^ 0x5a; nonce::NONCE_LEN];
        let msg = key.write_message(Domain::Action, &nonce, b"ctx");
        openssl(&[
            "dgst",
            "-sha384",
            "-sign",
            &key.path("key.pem"),
            "-out",
            &key.path("sig.der"),
            &msg,
        ]);
        let der = std::fs::read(key.path("sig.der")).unwrap();
        let sig = NonceSignature::from_der(&der).unwrap();
        assert_eq!(sig.to_der().as_slice(), &der[..], "DER round trip");
        assert_eq!(
            nonce::verify(&vk, Domain::Action, &nonce, b"ctx", &sig),
            Ok(())
        );
        assert_eq!(
            nonce::verify(&vk, Domain::Enroll, &nonce, b"ctx", &sig),
            Err(nonce::NonceError::BadSignature)
        );
    }
}
