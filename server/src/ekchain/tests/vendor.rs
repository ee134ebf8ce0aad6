//! Vendor-shaped chains: the bundled intermediates linked to their bundled roots, and a chain
//! made under a test CA added as an extra root.

use std::collections::BTreeMap;

use super::super::cert::Cert;
use super::super::{ChainVerdict, EkChain, TrustStore};
use super::testca::{NOW, Opts, issue, root};
use super::{chain_of, reason, verified};

/// Every bundled certificate whose issuer is also bundled (and is not itself), verified as
/// if it were an EK certificate: file → verdict.
fn store_links() -> BTreeMap<String, ChainVerdict> {
    let chain = EkChain::new(TrustStore::bundled().unwrap());
    let store = chain.store();
    let mut out = BTreeMap::new();
    for entry in store.entries() {
        let cert = Cert::parse(entry.der).unwrap();
        let issuer_bundled = store.by_subject(&cert.issuer).next().is_some();
        if issuer_bundled && !cert.is_self_issued() {
            out.insert(entry.origin.to_owned(), chain.verify(entry.der, NOW));
        }
    }
    out
}

#[test]
fn bundled_intermediates_chain_to_bundled_roots() {
    let links = store_links();
    for (file, v) in &links {
        eprintln!("{file}: {v:?}");
    }
    let by = |file: &str| verified(&links[file]).0.to_owned();
    let path = |file: &str| verified(&links[file]).1.len();
    assert_eq!(by("INF_RSA_011.pem"), "Infineon OPTIGA(TM) RSA Root CA");
    assert_eq!(by("INF_RSA_022.pem"), "Infineon OPTIGA(TM) RSA Root CA");
    assert_eq!(by("INF_ECC_011.pem"), "Infineon OPTIGA(TM) ECC Root CA");
    assert_eq!(by("IFX_ECC_042.pem"), "Infineon OPTIGA(TM) ECC Root CA");
    assert_eq!(by("INTEL_I.pem"), "www.intel.com");
    // STMicro: intermediate → STM root → GlobalSign TPM root (all bundled, RSA SHA-256).
    assert_eq!(
        by("STM_RSA_05I.pem"),
        "GlobalSign Trusted Platform Module Root CA"
    );
    assert_eq!(
        verified(&links["STM_RSA_05I.pem"]).1,
        [
            "STM TPM EK Intermediate CA 05",
            "STM TPM EK Root CA",
            "GlobalSign Trusted Platform Module Root CA"
        ]
    );
    assert_eq!(path("STM_RSA_RT.pem"), 2);
    // The ECC root's issuer (GlobalSign's ECC TPM root) is not bundled: it stops there.
    assert_eq!(by("STM_ECC_01I.pem"), "STM TPM ECC Root CA 01");
    // Infineon's older intermediates were signed by their root with SHA-1: that link is
    // refused (each intermediate is a trust anchor itself, so their TPMs still verify).
    let sha1 = reason(&links["IFX_RSA_17I.pem"]);
    assert!(sha1.contains("SHA-1"), "{sha1}");
    let verified_count = links.values().filter(|v| v.is_verified()).count();
    let sha1_count = links
        .values()
        .filter(|v| !v.is_verified() && reason(v).contains("SHA-1"))
        .count();
    assert_eq!(
        verified_count + sha1_count,
        links.len(),
        "every link verifies or is SHA-1"
    );
    // 30 bundled certificates have a bundled issuer: 19 links verify, 11 are SHA-1.
    assert_eq!((verified_count, sha1_count), (19, 11));
}

#[test]
fn leaf_under_test_ca_added_as_extra_root() {
    let r = root("CN=Test TPM EK Root CA,O=Test Vendor,C=DE", &Opts::ca());
    let i = issue(
        "CN=Test TPM EK Intermediate CA 01,O=Test Vendor,C=DE",
        &r,
        &Opts {
            path_len: Some(0),
            // An intermediate that has expired: reported, not refused.
            not_after: Some(NOW - 86_400 * 30),
            ..Opts::ca()
        },
    );
    let leaf = issue("", &i, &Opts::leaf());
    // Root as extra anchor, intermediate handed in by the caller.
    let mut store = TrustStore::bundled().unwrap();
    store.add("test root", &r.der).unwrap();
    let chain = EkChain::new(store);
    let v = chain.verify_with_intermediates(&leaf.der, &[&i.der], NOW);
    assert_eq!(
        verified(&v),
        (
            "Test TPM EK Root CA",
            vec![
                "(empty name)",
                "Test TPM EK Intermediate CA 01",
                "Test TPM EK Root CA"
            ]
        )
    );
    let ChainVerdict::Verified { not_checked, .. } = &v else {
        unreachable!()
    };
    assert!(
        not_checked[0].starts_with("validity periods"),
        "{not_checked:?}"
    );
    assert!(
        not_checked
            .iter()
            .any(|n| n.starts_with("'Test TPM EK Intermediate CA 01' expired on")),
        "{not_checked:?}"
    );
    // Without the intermediate the root alone does not vouch for the leaf.
    let why = reason(&chain.verify(&leaf.der, NOW)).to_owned();
    assert!(
        why.contains(
            "the issuer 'Test TPM EK Intermediate CA 01' of the EK certificate is not in the EK trust store"
        ),
        "{why}"
    );
    // The intermediate in the store is an anchor itself, extended to the root.
    let both = chain_of(&[&r, &i]);
    assert_eq!(verified(&both.verify(&leaf.der, NOW)).1.len(), 3);
    // JSON shape for the machine record.
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["status"], "verified");
    assert_eq!(json["by"], "Test TPM EK Root CA");
}
