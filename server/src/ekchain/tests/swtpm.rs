//! swtpm's EK certificates (RSA-2048 and ECC P-384, issued by swtpm's local test
//! manufacturer CA): verified with that CA added through `ITL_EK_CA_DIR`, not with the
//! vendor store alone; and the committed fixtures, whose CA is gone.

use std::path::Path;

use attest_swtpm::{NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048, Swtpm};

use super::super::store::read_certificates;
use super::super::{EkChain, EkChainConfig};
use super::testca::NOW;
use super::{reason, verified};

/// The two CA certificates of a swtpm manufacturer CA directory, copied alone into `to`.
pub(super) fn copy_ca_certs(tpm: &Swtpm, to: &Path) {
    for f in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
        std::fs::copy(tpm.manufacturer_ca_dir().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn swtpm_ek_verifies_against_its_manufacturer_ca_only() {
    let tpm = Swtpm::start();
    let rsa = tpm.ek_cert_der(NV_EK_CERT_RSA2048);
    let ecc = tpm.ek_cert_der(NV_EK_CERT_ECC_P384);

    let vendor_only = EkChain::from_config(&EkChainConfig::default()).unwrap();
    for ek in [&rsa, &ecc] {
        let why = reason(&vendor_only.verify(ek, NOW)).to_owned();
        assert!(
            why.contains(
                "the issuer 'swtpm-localca' of the EK certificate is not in the EK trust store"
            ),
            "{why}"
        );
    }

    let ca_dir = tempfile::tempdir().unwrap();
    copy_ca_certs(&tpm, ca_dir.path());
    let config = EkChainConfig {
        ca_dir: Some(ca_dir.path().to_owned()),
        ..EkChainConfig::default()
    };
    let chain = EkChain::from_config(&config).unwrap();
    for ek in [&rsa, &ecc] {
        let v = chain.verify(ek, NOW);
        assert_eq!(
            verified(&v),
            (
                "swtpm-localca-rootca",
                vec!["unknown", "swtpm-localca", "swtpm-localca-rootca"]
            )
        );
    }

    // The manufacturer CA directory as it is holds the CA's private keys: refused, named.
    let raw = EkChainConfig {
        ca_dir: Some(tpm.manufacturer_ca_dir()),
        ..EkChainConfig::default()
    };
    let e = EkChain::from_config(&raw).unwrap_err();
    assert_eq!(e.variable, "ITL_EK_CA_DIR");
    assert!(e.message.contains("PRIVATE KEY"), "{e}");
}

#[test]
fn committed_swtpm_fixtures_name_a_ca_that_is_gone() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/tests/fixtures");
    let tpm = Swtpm::start();
    let ca_dir = tempfile::tempdir().unwrap();
    copy_ca_certs(&tpm, ca_dir.path());
    let config = EkChainConfig {
        ca_dir: Some(ca_dir.path().to_owned()),
        ..EkChainConfig::default()
    };
    let fresh_ca = EkChain::from_config(&config).unwrap();
    let vendor_only = EkChain::from_config(&EkChainConfig::default()).unwrap();
    for f in ["swtpm-ek-rsa2048.pem", "swtpm-ek-p384.pem"] {
        let pem = std::fs::read(fixtures.join(f)).unwrap();
        let [der] = &read_certificates(&pem).unwrap()[..] else {
            panic!("{f}: one certificate expected")
        };
        // Issued by a swtpm CA of the same name whose key only existed in a temp dir.
        let why = reason(&vendor_only.verify(der, NOW)).to_owned();
        assert!(why.contains("issuer 'swtpm-localca'"), "{f}: {why}");
        let why = reason(&fresh_ca.verify(der, NOW)).to_owned();
        assert!(why.contains("another key identifier"), "{f}: {why}");
    }
}
