//! Property: a valid EK certificate with bytes flipped, inserted or deleted never makes the
//! verifier panic and never verifies. Run on a real swtpm EK certificate (its CA added) and on
//! a vendor intermediate (verified against the bundled store).

use attest_swtpm::{NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048, Swtpm};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::super::{EkChain, EkChainConfig, TrustStore};
use super::swtpm::copy_ca_certs;
use super::testca::NOW;

#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    // Flips mostly: they keep the structure and reach the signature check; inserts and
    // deletes test the parser.
    let edit = prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        1 => any::<usize>().prop_map(|at| Edit::Delete { at }),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn apply(der: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = der.to_vec();
    for e in edits {
        match *e {
            Edit::Flip { at, mask } if !out.is_empty() => {
                let i = at % out.len();
                out[i] ^= mask;
            }
            Edit::Insert { at, byte } => out.insert(at % (out.len() + 1), byte),
            Edit::Delete { at } if !out.is_empty() => {
                let i = at % out.len();
                out.remove(i);
            }
            _ => {}
        }
    }
    out
}

/// Mutations of `der` under `chain`: no panic, never Verified (unless the edits cancelled
/// out and gave back the original).
fn never_verifies(chain: &EkChain, der: &[u8], cases: u32) {
    assert!(
        chain.verify(der, NOW).is_verified(),
        "the original verifies"
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&edits(), |edits| {
            let mutated = apply(der, &edits);
            let v = chain.verify(&mutated, NOW);
            prop_assert!(
                mutated == der || !v.is_verified(),
                "{edits:?} verified: {v:?}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_swtpm_ek_certificates_never_verify() {
    let tpm = Swtpm::start();
    let ca_dir = tempfile::tempdir().unwrap();
    copy_ca_certs(&tpm, ca_dir.path());
    let chain = EkChain::from_config(&EkChainConfig {
        ca_dir: Some(ca_dir.path().to_owned()),
        ..EkChainConfig::default()
    })
    .unwrap();
    let rsa = tpm.ek_cert_der(NV_EK_CERT_RSA2048);
    let ecc = tpm.ek_cert_der(NV_EK_CERT_ECC_P384);
    drop(tpm);
    never_verifies(&chain, &rsa, 400);
    never_verifies(&chain, &ecc, 400);
}

#[test]
fn mutated_vendor_intermediates_never_verify() {
    let chain = EkChain::new(TrustStore::bundled().unwrap());
    let pick = |origin: &str| {
        chain
            .store()
            .entries()
            .find(|e| e.origin == origin)
            .unwrap()
            .der
            .to_vec()
    };
    // RSA-4096 root signing RSA-2048 (SHA-256); P-384 root signing P-256 (ECDSA SHA-384).
    never_verifies(&chain, &pick("INF_RSA_011.pem"), 300);
    never_verifies(&chain, &pick("INF_ECC_011.pem"), 300);
}
