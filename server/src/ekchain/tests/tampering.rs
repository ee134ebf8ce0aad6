//! Certificates that must not verify: self-signed EKs, flipped signatures, non-CA issuers,
//! over-long paths, self-naming issuers, cycles, floods of candidates, garbage. Each is
//! Unverified, without panic, in bounded time.

use std::time::Duration;

use super::super::{EkChain, MAX_PATH_LEN, TrustStore};
use super::testca::{Made, NOW, Opts, build, issue, key, name, root};
use super::{chain_of, quickly, reason, verified};

const FAST: Duration = Duration::from_secs(2);

fn vendor_chain() -> EkChain {
    EkChain::new(TrustStore::bundled().unwrap())
}

#[test]
fn self_signed_ek_is_unverified() {
    let ek = root("CN=Self Made EK", &Opts::leaf());
    let why = reason(&vendor_chain().verify(&ek.der, NOW)).to_owned();
    assert!(why.contains("self-issued ('Self Made EK')"), "{why}");
    // Even as a CA, and handed in as its own intermediate.
    let ek_ca = root("CN=Self Made EK CA", &Opts::ca());
    let v = vendor_chain().verify_with_intermediates(&ek_ca.der, &[&ek_ca.der], NOW);
    assert!(reason(&v).contains("names itself as its issuer"), "{v:?}");
}

#[test]
fn flipped_signature_byte_is_unverified() {
    let r = root("CN=Root", &Opts::ca());
    let leaf = issue("CN=ek", &r, &Opts::leaf());
    let chain = chain_of(&[&r]);
    assert!(chain.verify(&leaf.der, NOW).is_verified());
    let mut bad = leaf.der.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let why = reason(&chain.verify(&bad, NOW)).to_owned();
    assert!(why.contains("the signature does not verify"), "{why}");
    // A byte of the signed part instead.
    let mut bad = leaf.der.clone();
    let pos = bad.windows(2).position(|w| w == b"ek").unwrap();
    bad[pos] = b'E';
    assert!(!chain.verify(&bad, NOW).is_verified());
}

#[test]
fn same_name_other_key_is_unverified() {
    let r = root("CN=Vendor Root", &Opts::ca());
    let impostor = root("CN=Vendor Root", &Opts::ca());
    let leaf = issue(
        "CN=ek",
        &impostor,
        &Opts {
            aki: false,
            ..Opts::leaf()
        },
    );
    let why = reason(&chain_of(&[&r]).verify(&leaf.der, NOW)).to_owned();
    assert!(
        why.contains("checked with the key of 'Vendor Root'"),
        "{why}"
    );
    // With an authorityKeyIdentifier the impostor's leaf is not even a candidate.
    let leaf = issue("CN=ek", &impostor, &Opts::leaf());
    let why = reason(&chain_of(&[&r]).verify(&leaf.der, NOW)).to_owned();
    assert!(why.contains("another key identifier"), "{why}");
}

#[test]
fn issuers_that_may_not_issue_are_refused() {
    let r = root("CN=Root", &Opts::ca());
    let chain = chain_of(&[&r]);
    let cases: [(Opts, &str); 4] = [
        (Opts::leaf(), "is not a CA certificate"),
        (
            Opts {
                basic_constraints: None,
                ..Opts::ca()
            },
            "is not a CA certificate",
        ),
        (
            Opts {
                key_cert_sign: Some(false),
                ..Opts::ca()
            },
            "may not sign certificates",
        ),
        (
            Opts {
                critical_oid: Some("2.5.29.30"),
                ..Opts::ca()
            },
            "critical extension this verifier does not process (2.5.29.30)",
        ),
    ];
    for (opts, expected) in cases {
        let middle = issue("CN=Middle", &r, &opts);
        let leaf = issue("CN=ek", &middle, &Opts::leaf());
        let v = chain.verify_with_intermediates(&leaf.der, &[&middle.der], NOW);
        assert!(reason(&v).contains(expected), "{expected}: {v:?}");
    }
    // The leaf's own critical extensions are not judged (EK certificates mark SAN critical).
    let leaf = issue(
        "CN=ek",
        &r,
        &Opts {
            critical_oid: Some("2.23.133.99"),
            ..Opts::leaf()
        },
    );
    assert!(chain.verify(&leaf.der, NOW).is_verified());
}

/// Root, `n` intermediates, leaf; the root in the store, the intermediates handed in.
fn long_chain(n: usize, root_path_len: Option<u8>) -> (Made, Vec<Made>, Made) {
    let r = root(
        "CN=Long Root",
        &Opts {
            path_len: root_path_len,
            ..Opts::ca()
        },
    );
    let mut intermediates: Vec<Made> = Vec::new();
    for k in 0..n {
        let parent = intermediates.last().unwrap_or(&r);
        let next = issue(&format!("CN=Intermediate {k}"), parent, &Opts::ca());
        intermediates.push(next);
    }
    let leaf = issue("CN=ek", intermediates.last().unwrap_or(&r), &Opts::leaf());
    (r, intermediates, leaf)
}

#[test]
fn path_length_is_bounded() {
    // MAX_PATH_LEN certificates: leaf, MAX_PATH_LEN - 2 intermediates, root.
    let (r, inter, leaf) = long_chain(MAX_PATH_LEN - 2, None);
    let ders: Vec<&[u8]> = inter.iter().map(|m| m.der.as_slice()).collect();
    let v = chain_of(&[&r]).verify_with_intermediates(&leaf.der, &ders, NOW);
    assert_eq!(verified(&v).1.len(), MAX_PATH_LEN);
    let (r, inter, leaf) = long_chain(MAX_PATH_LEN - 1, None);
    let ders: Vec<&[u8]> = inter.iter().map(|m| m.der.as_slice()).collect();
    let v = quickly(FAST, || {
        chain_of(&[&r]).verify_with_intermediates(&leaf.der, &ders, NOW)
    });
    assert!(reason(&v).contains("within 6 certificates"), "{v:?}");
}

#[test]
fn path_length_constraint_is_enforced() {
    let (r, inter, leaf) = long_chain(2, Some(1));
    let ders: Vec<&[u8]> = inter.iter().map(|m| m.der.as_slice()).collect();
    let v = chain_of(&[&r]).verify_with_intermediates(&leaf.der, &ders, NOW);
    assert!(
        reason(&v).contains("'Long Root' allows 1 intermediate"),
        "{v:?}"
    );
    let (r, inter, leaf) = long_chain(1, Some(1));
    let v = chain_of(&[&r]).verify_with_intermediates(&leaf.der, &[&inter[0].der], NOW);
    assert!(v.is_verified());
}

#[test]
fn cycle_of_two_ends() {
    let (ka, kb) = (key(), key());
    let opts = Opts {
        aki: false,
        ..Opts::ca()
    };
    let a = build(&name("CN=Cycle A"), &ka, &name("CN=Cycle B"), &kb, &opts);
    let b = build(&name("CN=Cycle B"), &kb, &name("CN=Cycle A"), &ka, &opts);
    let leaf = build(
        &name("CN=ek"),
        &key(),
        &name("CN=Cycle A"),
        &ka,
        &Opts::leaf(),
    );
    let v = quickly(FAST, || {
        vendor_chain().verify_with_intermediates(&leaf, &[&a, &b, &a, &b], NOW)
    });
    assert!(
        reason(&v).contains("already in the path (a cycle)"),
        "{v:?}"
    );
}

#[test]
fn a_flood_of_candidates_is_bounded() {
    let r = root("CN=Root", &Opts::ca());
    let no_aki = Opts {
        aki: false,
        ..Opts::ca()
    };
    // Many CAs of one name, none the real issuer.
    let decoys: Vec<Vec<u8>> = (0..40)
        .map(|_| build(&name("CN=Decoy"), &key(), &name("CN=Root"), &r.key, &no_aki))
        .collect();
    let leaf_opts = Opts {
        aki: false,
        ..Opts::leaf()
    };
    let leaf = build(
        &name("CN=ek"),
        &key(),
        &name("CN=Decoy"),
        &key(),
        &leaf_opts,
    );
    let ders: Vec<&[u8]> = decoys.iter().map(Vec::as_slice).collect();
    let mut store = TrustStore::bundled().unwrap();
    store.add("root", &r.der).unwrap();
    for d in &decoys[..20] {
        store.add("decoy", d).unwrap();
    }
    let chain = EkChain::new(store);
    let v = quickly(FAST, || chain.verify_with_intermediates(&leaf, &ders, NOW));
    assert!(reason(&v).contains("does not verify"), "{v:?}");
}

#[test]
fn garbage_is_unverified() {
    let r = root("CN=Root", &Opts::ca());
    let leaf = issue("CN=ek", &r, &Opts::leaf());
    let chain = chain_of(&[&r]);
    let pem = leaf.pem().into_bytes();
    let trailing = [leaf.der.clone(), vec![0]].concat();
    let huge = vec![0x30; 100_000];
    for bad in [
        &[][..],
        &[0x30, 0x80, 0, 0],
        &pem,
        &trailing,
        &huge,
        &leaf.der[..100],
    ] {
        let why = reason(&chain.verify(bad, NOW)).to_owned();
        assert!(why.starts_with("the EK certificate is"), "{why}");
    }
}
