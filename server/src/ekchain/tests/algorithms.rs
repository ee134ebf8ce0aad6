//! Signature algorithms beyond the P-384 test chains, with certificates made by openssl: RSA
//! PKCS#1 v1.5 (SHA-512), RSA-PSS (SHA-256, SHA-384), ECDSA P-256; refused: SHA-1, PSS with
//! a salt other than the hash length.

use super::super::{EkChain, TrustStore};
use super::testca::NOW;
use super::{reason, verified};

/// Runs openssl with `args` split at spaces (paths in a temp dir have none).
fn ossl(args: &str) {
    attest_swtpm::openssl(&args.split(' ').collect::<Vec<_>>());
}

#[test]
fn rsa_pkcs1_pss_and_p256_chains_made_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let ca = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign";
    ossl(&format!(
        "req -x509 -newkey rsa:3072 -nodes -keyout {d}/rsa.key -out {d}/rsa.pem \
         -subj /CN=Test-RSA-Root -days 30 -sha384 {ca}"
    ));
    ossl(&format!(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/ec.key \
         -out {d}/ec.pem -subj /CN=Test-P256-Root -days 30 -sha256 {ca}"
    ));
    ossl(&format!(
        "req -new -newkey rsa:2048 -nodes -keyout {d}/leaf.key -out {d}/leaf.csr -subj /CN=leaf"
    ));
    let sign = |issuer: &str, out: &str, options: &str| {
        ossl(&format!(
            "x509 -req -in {d}/leaf.csr -CA {d}/{issuer}.pem -CAkey {d}/{issuer}.key \
             -out {d}/{out} -days 30 -set_serial 5 -outform DER {options}"
        ));
        std::fs::read(format!("{d}/{out}")).unwrap()
    };
    let pss = "-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen";
    let pkcs1 = sign("rsa", "pkcs1.der", "-sha512");
    let pss256 = sign("rsa", "pss256.der", &format!("-sha256 {pss}:digest"));
    let pss384 = sign("rsa", "pss384.der", &format!("-sha384 {pss}:digest"));
    let pss_salt20 = sign("rsa", "pss-salt.der", &format!("-sha256 {pss}:20"));
    let sha1 = sign("rsa", "sha1.der", "-sha1");
    let ecdsa = sign("ec", "ec.der", "-sha256");

    let mut store = TrustStore::empty();
    for root in ["rsa", "ec"] {
        let pem = std::fs::read(format!("{d}/{root}.pem")).unwrap();
        store.add(root, &pem).unwrap();
    }
    let chain = EkChain::new(store);
    for (what, der) in [
        ("PKCS#1 SHA-512", &pkcs1),
        ("PSS SHA-256", &pss256),
        ("PSS SHA-384", &pss384),
    ] {
        assert_eq!(
            verified(&chain.verify(der, NOW)).0,
            "Test-RSA-Root",
            "{what}"
        );
    }
    assert_eq!(verified(&chain.verify(&ecdsa, NOW)).0, "Test-P256-Root");
    let why = reason(&chain.verify(&pss_salt20, NOW)).to_owned();
    assert!(why.contains("unsupported RSA-PSS parameters"), "{why}");
    let why = reason(&chain.verify(&sha1, NOW)).to_owned();
    assert!(why.contains("SHA-1 signatures are not accepted"), "{why}");
}
