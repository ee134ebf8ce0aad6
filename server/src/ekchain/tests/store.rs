//! The trust store: the bundled list, `ITL_EK_CA_DIR` loading and its refusals.

use std::path::Path;

use super::super::bundled::BUNDLED;
use super::super::{EkChain, EkChainConfig, TrustStore};
use super::testca::{Opts, issue, root};

#[test]
fn bundled_list_is_the_ek_roots_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ek-roots");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pem"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BUNDLED.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "bundled.rs and server/ek-roots/ differ");
    assert_eq!(listed.len(), 51);
    for (file, pem) in BUNDLED {
        assert_eq!(
            *pem,
            std::fs::read(dir.join(file)).unwrap().as_slice(),
            "{file}"
        );
    }
}

#[test]
fn bundled_store_loads_every_vendor_certificate() {
    let store = TrustStore::bundled().unwrap();
    // 51 files, 6 of them copies (IFX1-5, IFX8 = IFX_RSA_01I-05I, 08I).
    assert_eq!(store.len(), 45);
    let chain = EkChain::from_config(&EkChainConfig::default()).unwrap();
    assert_eq!(chain.store().len(), 45);
    assert!(!chain.fetches_aia());
}

#[test]
fn ca_dir_adds_pem_bundles_and_der_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = root("CN=Extra Root,O=Test", &Opts::ca());
    let i = issue("CN=Extra Intermediate,O=Test", &r, &Opts::ca());
    let bundle = format!("subject=CN=Extra Root\n{}\nsome text\n{}", r.pem(), i.pem());
    std::fs::write(dir.path().join("bundle.pem"), bundle).unwrap();
    let other = root("CN=Other Root", &Opts::ca());
    std::fs::write(dir.path().join("other.CER"), &other.der).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a certificate").unwrap();
    let mut store = TrustStore::bundled().unwrap();
    assert_eq!(store.add_dir(dir.path()).unwrap(), 3);
    assert_eq!(store.len(), 48);
    // Loading the same files again adds nothing.
    assert_eq!(store.add_dir(dir.path()).unwrap(), 0);
    let config = EkChainConfig {
        ca_dir: Some(dir.path().to_owned()),
        ..EkChainConfig::default()
    };
    assert_eq!(EkChain::from_config(&config).unwrap().store().len(), 48);
}

#[test]
fn ca_dir_refusals_name_the_file() {
    let r = root("CN=Extra Root", &Opts::ca());
    let leaf = issue("CN=Not A CA", &r, &Opts::leaf());
    let no_sign = issue(
        "CN=No CertSign",
        &r,
        &Opts {
            key_cert_sign: Some(false),
            ..Opts::ca()
        },
    );
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "leaf.pem",
            leaf.pem().into_bytes(),
            "is not a CA certificate",
        ),
        ("nosign.pem", no_sign.pem().into_bytes(), "keyCertSign"),
        (
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            "'PRIVATE KEY', not a CERTIFICATE",
        ),
        ("garbage.crt", b"hello".to_vec(), "no PEM CERTIFICATE block"),
        (
            "trailing.der",
            [r.der.clone(), vec![0]].concat(),
            "not an X.509 certificate",
        ),
        (
            "second-bad.pem",
            format!("{}{}", r.pem(), leaf.pem()).into_bytes(),
            "certificate 2 of 2: 'Not A CA' is not a CA",
        ),
    ];
    for (file, bytes, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), bytes).unwrap();
        let e = TrustStore::empty().add_dir(dir.path()).unwrap_err();
        assert_eq!(e.variable, "ITL_EK_CA_DIR");
        assert!(e.message.contains(file), "{file}: {e}");
        assert!(e.message.contains(expected), "{file}: {e}");
    }
    let missing = Path::new("/nonexistent/ek-ca");
    let e = TrustStore::empty().add_dir(missing).unwrap_err();
    assert!(e.message.contains("/nonexistent/ek-ca"), "{e}");
}
