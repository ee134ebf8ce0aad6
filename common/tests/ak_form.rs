//! The AK's form (DESIGN.md §3.2, review finding 4): TPMT_PUBLIC areas built byte by byte
//! for every scheme a TPM can declare, read by `declared_scheme` and judged by `check_ak`:
//! NULL, ECDAA (with its `count`, as a TPM writes it), SM2 and ECSCHNORR refused by name;
//! P-256 and RSA only when allowed; the scheme hash and nameAlg pinned to the algorithm's.

use attest_common::tpm::ak::{AkAlgorithm, AkError, check_ak, declared_scheme, scheme_id};
use attest_common::tpm::hash::HashAlg;
use attest_common::tpm::public::SigScheme;

const AK_ATTRIBUTES: u32 = 0x0005_0072;
const SHA256: u16 = 0x000b;
const SHA384: u16 = 0x000c;

fn tpm2b(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u16).to_be_bytes()[..], body].concat()
}

/// The scheme field and its details: NULL has none, ECDAA a hash and a count, the others a
/// hash.
fn scheme(id: u16, hash: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    match id {
        scheme_id::NULL => {}
        scheme_id::ECDAA => out.extend([&hash.to_be_bytes()[..], &[0, 0]].concat()),
        _ => out.extend(hash.to_be_bytes()),
    }
    out
}

/// TPM2B_PUBLIC of an ECC key (P-256: curve 3, P-384: 4) with a real point.
fn ecc(curve: u16, name_alg: u16, attributes: u32, scheme: &[u8]) -> Vec<u8> {
    let point = match curve {
        3 => p256::ecdsa::SigningKey::from_slice(&[5; 32])
            .unwrap()
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        _ => p384::ecdsa::SigningKey::from_slice(&[5; 48])
            .unwrap()
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
    };
    let n = (point.len() - 1) / 2;
    let body = [
        &0x0023u16.to_be_bytes()[..],
        &name_alg.to_be_bytes(),
        &attributes.to_be_bytes(),
        &tpm2b(&[]),
        &scheme_id::NULL.to_be_bytes(),
        scheme,
        &curve.to_be_bytes(),
        &scheme_id::NULL.to_be_bytes(),
        &tpm2b(&point[1..1 + n]),
        &tpm2b(&point[1 + n..]),
    ]
    .concat();
    tpm2b(&body)
}

/// TPM2B_PUBLIC of an RSA key of `bits` (a modulus the parser takes: top bit set, odd).
fn rsa(bits: u16, name_alg: u16, scheme: &[u8]) -> Vec<u8> {
    let body = [
        &0x0001u16.to_be_bytes()[..],
        &name_alg.to_be_bytes(),
        &AK_ATTRIBUTES.to_be_bytes(),
        &tpm2b(&[]),
        &scheme_id::NULL.to_be_bytes(),
        scheme,
        &bits.to_be_bytes(),
        &0u32.to_be_bytes(),
        &tpm2b(&vec![0xc1; usize::from(bits / 8)]),
    ]
    .concat();
    tpm2b(&body)
}

const DEFAULT: &[AkAlgorithm] = &[AkAlgorithm::EccP384];

#[test]
fn every_scheme_is_read_from_the_bytes() {
    for id in [
        scheme_id::NULL,
        scheme_id::ECDSA,
        scheme_id::ECDAA,
        scheme_id::SM2,
        scheme_id::ECSCHNORR,
        scheme_id::ECDH,
    ] {
        let ak = ecc(4, SHA384, AK_ATTRIBUTES, &scheme(id, SHA384));
        assert_eq!(declared_scheme(&ak[2..]), Some(id), "{id:04x}");
    }
    for id in [
        scheme_id::RSASSA,
        scheme_id::RSAPSS,
        scheme_id::OAEP,
        scheme_id::NULL,
    ] {
        let ak = rsa(2048, SHA384, &scheme(id, SHA384));
        assert_eq!(declared_scheme(&ak[2..]), Some(id), "{id:04x}");
    }
    // A symmetric definition moves the scheme (AES-128-CFB: 6 bytes instead of 2).
    let mut with_sym =
        ecc(4, SHA384, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384))[2..].to_vec();
    with_sym.splice(10..12, [0x00, 0x06, 0x00, 0x80, 0x00, 0x43]);
    assert_eq!(declared_scheme(&with_sym), Some(scheme_id::ECDSA));
    // Cut short, or not an asymmetric key: nothing to read.
    let ak = ecc(4, SHA384, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384));
    assert_eq!(declared_scheme(&ak[2..13]), None);
    assert_eq!(declared_scheme(&[0x00, 0x08, 0x00, 0x0c]), None);
}

#[test]
fn schemes_other_than_ecdsa_rsassa_rsapss_are_refused_by_name() {
    for (id, name) in [
        (scheme_id::NULL, "TPM_ALG_NULL"),
        (scheme_id::ECDAA, "ECDAA"),
        (scheme_id::SM2, "SM2"),
        (scheme_id::ECSCHNORR, "ECSCHNORR"),
        (scheme_id::ECDH, "ECDH"),
    ] {
        let ak = ecc(4, SHA384, AK_ATTRIBUTES, &scheme(id, SHA384));
        let e = check_ak(&ak, &AkAlgorithm::ALL).unwrap_err();
        assert_eq!(e, AkError::Scheme(id));
        let message = e.to_string();
        assert!(message.starts_with("ak_public scheme"), "{message}");
        assert!(message.contains(name), "{message}");
    }
    let e = check_ak(
        &rsa(2048, SHA384, &scheme(scheme_id::OAEP, SHA384)),
        &AkAlgorithm::ALL,
    );
    assert_eq!(e, Err(AkError::Scheme(scheme_id::OAEP)));
    let e = check_ak(
        &rsa(2048, SHA384, &scheme(scheme_id::NULL, 0)),
        &AkAlgorithm::ALL,
    );
    assert_eq!(e, Err(AkError::Scheme(scheme_id::NULL)));
}

#[test]
fn p384_ecdsa_sha384_by_default_others_when_allowed() {
    let good = ecc(4, SHA384, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384));
    let ak = check_ak(&good, DEFAULT).unwrap();
    assert_eq!(ak.scheme, Some((SigScheme::Ecdsa, HashAlg::Sha384)));

    let p256 = ecc(3, SHA256, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA256));
    let e = check_ak(&p256, DEFAULT).unwrap_err();
    assert_eq!(e, AkError::NotAllowed(Some(AkAlgorithm::EccP256)));
    assert_eq!(e.to_string(), "ak_public is an ecc-p256 key");
    assert!(check_ak(&p256, &[AkAlgorithm::EccP256]).is_ok());

    for (bits, algorithm) in [
        (2048, AkAlgorithm::Rsa2048),
        (3072, AkAlgorithm::Rsa3072),
        (4096, AkAlgorithm::Rsa4096),
    ] {
        for id in [scheme_id::RSASSA, scheme_id::RSAPSS] {
            let ak = rsa(bits, SHA384, &scheme(id, SHA384));
            assert_eq!(
                check_ak(&ak, DEFAULT),
                Err(AkError::NotAllowed(Some(algorithm)))
            );
            assert!(check_ak(&ak, &[algorithm]).is_ok(), "{bits} {id:04x}");
        }
    }
}

#[test]
fn the_hash_and_name_algorithm_are_the_algorithms() {
    let all = &AkAlgorithm::ALL;
    // P-384 signing or named with SHA-256.
    let e = check_ak(
        &ecc(4, SHA384, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA256)),
        all,
    );
    assert_eq!(
        e.as_ref().unwrap_err().to_string(),
        "ak_public scheme hash is sha256: ecc-p384 AKs sign with sha384"
    );
    let e = check_ak(
        &ecc(4, SHA256, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384)),
        all,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "ak_public nameAlg is sha256: ecc-p384 AKs are named with sha384"
    );
    // P-256 with SHA-384; RSA with SHA-256 (the TCG's usual RSA AK).
    let e = check_ak(
        &ecc(3, SHA256, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384)),
        all,
    );
    assert!(matches!(e, Err(AkError::SchemeHash { .. })), "{e:?}");
    let e = check_ak(&rsa(2048, SHA256, &scheme(scheme_id::RSASSA, SHA256)), all);
    assert!(matches!(e, Err(AkError::SchemeHash { .. })), "{e:?}");
    let e = check_ak(&rsa(2048, SHA256, &scheme(scheme_id::RSASSA, SHA384)), all);
    assert!(matches!(e, Err(AkError::NameAlg { .. })), "{e:?}");
    // An ECC scheme on an RSA key.
    let e = check_ak(&rsa(2048, SHA384, &scheme(scheme_id::ECDSA, SHA384)), all);
    assert_eq!(
        e,
        Err(AkError::SchemeForKey(
            SigScheme::Ecdsa,
            AkAlgorithm::Rsa2048
        ))
    );
}

#[test]
fn the_form_comes_first() {
    let good = ecc(4, SHA384, AK_ATTRIBUTES, &scheme(scheme_id::ECDSA, SHA384));
    assert!(matches!(
        check_ak(&good[..good.len() - 1], DEFAULT),
        Err(AkError::Malformed(_))
    ));
    let unrestricted = ecc(
        4,
        SHA384,
        AK_ATTRIBUTES & !0x0001_0000,
        &scheme(scheme_id::ECDSA, SHA384),
    );
    let e = check_ak(&unrestricted, DEFAULT).unwrap_err();
    assert_eq!(e.to_string(), "ak_public is not a restricted signing key");
}

#[test]
fn algorithm_names() {
    for a in AkAlgorithm::ALL {
        assert_eq!(AkAlgorithm::from_name(a.name()), Some(a));
    }
    assert_eq!(AkAlgorithm::from_name("ecc-p521"), None);
    assert_eq!(AkAlgorithm::from_name("ECC-P384"), None);
}
