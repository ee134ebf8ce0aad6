//! One TPMT_SIGNATURE parser for both crypto providers (review finding 6: a P-256 signature
//! whose r was zero-padded past 32 bytes passed RustCrypto and failed aws-lc). One vector
//! set — valid, high-S, zero-padded, short, over-long, wrong curve, zero, out of range,
//! RSASSA and RSA-PSS with every salt length — runs through both providers, which must give
//! the same verdict, and the verdict must be the expected one. Property tests mutate valid
//! signatures: padding never changes the parsed form, and the providers never disagree.

#[cfg(not(feature = "aws-lc"))]
compile_error!(
    "these tests compare both crypto providers: run them with --features aws-lc (cargo test --workspace does)"
);

use attest_common::crypto::CryptoProvider;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::crypto::rustcrypto::RustCrypto;
use attest_common::tpm::hash::HashAlg;
use attest_common::tpm::public::PublicKey;
use attest_common::tpm::signature::Signature;
use vectors::*;

mod vectors;

const PROVIDERS: [&dyn CryptoProvider; 2] = [&RustCrypto, &AwsLc];
const MESSAGE: &[u8] = b"a TPMS_ATTEST stands here";

/// One provider's verdict on a TPMT_SIGNATURE over `message`.
fn verdict(
    provider: &dyn CryptoProvider,
    key: &PublicKey,
    tpmt: &[u8],
    message: &[u8],
) -> Result<(), String> {
    let sig = Signature::parse(tpmt, key).map_err(|e| format!("parse: {e}"))?;
    provider
        .verify(key, &sig, message)
        .map_err(|e| format!("verify: {e:?}"))
}

/// Both providers' verdicts; `Err` names the vector when they differ.
fn both(key: &PublicKey, tpmt: &[u8], message: &[u8]) -> Result<Result<(), String>, String> {
    let [a, b] = PROVIDERS.map(|p| verdict(p, key, tpmt, message));
    if a == b {
        Ok(a)
    } else {
        Err(format!("rustcrypto {a:?}, aws-lc {b:?}"))
    }
}

/// One vector: a TPMT_SIGNATURE over `message` for `key`, and whether it must verify.
struct Vector {
    name: String,
    key: PublicKey,
    tpmt: Vec<u8>,
    message: Vec<u8>,
    ok: bool,
}

fn vector(name: String, key: &PublicKey, tpmt: Vec<u8>, ok: bool) -> Vector {
    Vector {
        name,
        key: key.clone(),
        tpmt,
        message: MESSAGE.to_vec(),
        ok,
    }
}

/// The vectors of one ECC key and hash; `other` is another key of the same curve.
fn ecc_vectors(name: &str, key: &EccKey, other: &EccKey, alg: HashAlg) -> Vec<Vector> {
    let (r, s) = key.sign(&prehash(alg, MESSAGE));
    let n = r.len();
    let neg = key.negate(&s);
    let (low_s, high_s) = if neg < s {
        (neg, s.clone())
    } else {
        (s.clone(), neg)
    };
    let (or, os) = other.sign(&prehash(alg, MESSAGE));
    let k = &key.public();
    let v = |what: &str, r: &[u8], s: &[u8], ok: bool| {
        vector(format!("{name} {what}"), k, tpmt_ecdsa(alg, r, s), ok)
    };
    let mut out = vec![
        v("valid", &r, &s, true),
        v("high-S", &r, &high_s, true),
        v("low-S", &r, &low_s, true),
        v("r zero-padded by 1", &pad(&r, 1), &s, true),
        v("s zero-padded by 1", &r, &pad(&s, 1), true),
        v(
            "r, s zero-padded to 66",
            &pad(&r, 66 - n),
            &pad(&s, 66 - n),
            true,
        ),
        v(
            "r over-long (01 before it)",
            &[&[1], &r[..]].concat(),
            &s,
            false,
        ),
        v(
            "s over-long (01 before it)",
            &r,
            &[&[1], &s[..]].concat(),
            false,
        ),
        v("r truncated", &r[..n - 1], &s, false),
        v("s empty", &r, &[], false),
        v("r zero", &[0], &s, false),
        v("s zero (n bytes)", &r, &vec![0; n], false),
        v("r = order", &key.order(), &s, false),
        v("s = order", &r, &key.order(), false),
        v("s = order + 1", &r, &plus_one(&key.order()), false),
        v("r all ones", &vec![0xff; n], &s, false),
        v("another key's signature", &or, &os, false),
        v("s + 1", &r, &plus_one(&s), false),
    ];
    // A message whose signature has an r with a leading zero byte: sent short, as a TPM
    // may, and padded back.
    let (message, short_r, short_s) = (0u32..)
        .map(|i| [MESSAGE, &i.to_be_bytes()].concat())
        .find_map(|m| {
            let (r, s) = key.sign(&prehash(alg, &m));
            (r[0] == 0).then(|| (m, r[1..].to_vec(), s))
        })
        .unwrap();
    for (what, r) in [
        ("r short", short_r.clone()),
        ("r short, re-padded", pad(&short_r, 1)),
    ] {
        out.push(Vector {
            message: message.clone(),
            ..v(what, &r, &short_s, true)
        });
    }
    out
}

#[test]
fn one_vector_set_one_verdict_from_both_providers() {
    let (p256, p256b) = (p256_key(0x11), p256_key(0x33));
    let (p384, p384b) = (p384_key(0x22), p384_key(0x44));
    let mut vectors = Vec::new();
    for alg in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
        vectors.extend(ecc_vectors(
            &format!("P-256/{}", alg.name()),
            &p256,
            &p256b,
            alg,
        ));
        vectors.extend(ecc_vectors(
            &format!("P-384/{}", alg.name()),
            &p384,
            &p384b,
            alg,
        ));
    }
    // Wrong curve: a P-384 signature for the P-256 key and the reverse.
    let digest = prehash(HashAlg::Sha384, MESSAGE);
    for (name, signer, key) in [
        ("P-384 signature, P-256 key", &p384, &p256),
        ("P-256 signature, P-384 key", &p256, &p384),
    ] {
        let (r, s) = signer.sign(&digest);
        let tpmt = tpmt_ecdsa(HashAlg::Sha384, &r, &s);
        vectors.push(vector(name.into(), &key.public(), tpmt, false));
    }
    vectors.extend(rsa_vectors());

    let mut failures = Vec::new();
    for v in &vectors {
        match both(&v.key, &v.tpmt, &v.message) {
            Err(differ) => failures.push(format!("{}: providers disagree: {differ}", v.name)),
            Ok(got) if got.is_ok() != v.ok => {
                failures.push(format!("{}: expected ok={}, got {got:?}", v.name, v.ok))
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

fn rsa_vectors() -> Vec<Vector> {
    use rsa::traits::PublicKeyParts as _;
    let mut rng = TestRng(0x5eed);
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let public = PublicKey::Rsa {
        modulus: heapless::Vec::from_slice(&private.n().to_bytes_be()).unwrap(),
        exponent: 65537,
    };
    let modulus = private.n().to_bytes_be();
    let mut out = Vec::new();
    let mut push = |what: String, tpmt: Vec<u8>, ok: bool| {
        out.push(vector(format!("RSA-2048 {what}"), &public, tpmt, ok))
    };
    for alg in [HashAlg::Sha256, HashAlg::Sha384] {
        let digest = prehash(alg, MESSAGE);
        let h_len = digest.len();
        let pkcs1 = match alg {
            HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(),
            _ => rsa::Pkcs1v15Sign::new::<sha2_010::Sha384>(),
        };
        let sig = private.sign(pkcs1, &digest).unwrap();
        let name = alg.name();
        push(
            format!("RSASSA/{name} valid"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &sig),
            true,
        );
        push(
            format!("RSASSA/{name} as RSAPSS"),
            tpmt_rsa(TPM_ALG_RSAPSS, alg, &sig),
            false,
        );
        push(
            format!("RSASSA/{name} zero-padded"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &[&[0], &sig[..]].concat()),
            false,
        );
        push(
            format!("RSASSA/{name} truncated"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &sig[1..]),
            false,
        );
        push(
            format!("RSASSA/{name} = modulus"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &modulus),
            false,
        );
        push(
            format!("RSASSA/{name} all ones"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &[0xff; 256]),
            false,
        );
        push(
            format!("RSASSA/{name} zero"),
            tpmt_rsa(TPM_ALG_RSASSA, alg, &[0; 256]),
            false,
        );
        // PSS: a TPM uses a salt as long as the digest (TPM 2.0 Part 1, B.7); both providers
        // accept exactly that one.
        let max_salt = 256 - h_len - 2;
        for salt in [0, 20, h_len, h_len + 1, max_salt] {
            let pss = match alg {
                HashAlg::Sha256 => rsa::Pss::new_with_salt::<sha2_010::Sha256>(salt),
                _ => rsa::Pss::new_with_salt::<sha2_010::Sha384>(salt),
            };
            let sig = private.sign_with_rng(&mut rng, pss, &digest).unwrap();
            push(
                format!("RSAPSS/{name} salt {salt}"),
                tpmt_rsa(TPM_ALG_RSAPSS, alg, &sig),
                salt == h_len,
            );
        }
    }
    out
}

/// A key of curve `which` (0: P-256, 1: P-384), its signature over `MESSAGE` with `alg`.
fn signed(which: u8, alg: HashAlg) -> (EccKey, Vec<u8>, Vec<u8>) {
    let key = if which == 0 {
        p256_key(0x55)
    } else {
        p384_key(0x66)
    };
    let (r, s) = key.sign(&prehash(alg, MESSAGE));
    (key, r, s)
}

fn any_hash() -> impl proptest::strategy::Strategy<Value = HashAlg> {
    proptest::sample::select(vec![HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512])
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Leading zeros, however many fit a TPM2B_ECC_PARAMETER, never change what the
    /// parser makes, and both providers accept the padded signature.
    #[test]
    fn padding_never_changes_the_parsed_form(
        which in 0u8..2, alg in any_hash(), zr in 0usize..=34, zs in 0usize..=34,
    ) {
        let (key, r, s) = signed(which, alg);
        let plain = Signature::parse(&tpmt_ecdsa(alg, &r, &s), &key.public()).unwrap();
        let padded = tpmt_ecdsa(alg, &pad(&r, zr.min(66 - r.len())), &pad(&s, zs.min(66 - s.len())));
        proptest::prop_assert_eq!(Signature::parse(&padded, &key.public()), Ok(plain));
        proptest::prop_assert_eq!(both(&key.public(), &padded, MESSAGE), Ok(Ok(())));
    }

    /// Any change to a valid TPMT_SIGNATURE (a byte flipped, cut short, a byte inserted):
    /// no panic, one verdict from both providers, and whatever parses is canonical.
    #[test]
    fn mutated_signatures_get_one_verdict(
        which in 0u8..2, alg in any_hash(), how in 0u8..3, at in 0usize..256, byte in 0u8..=255,
    ) {
        let (key, r, s) = signed(which, alg);
        let mut tpmt = tpmt_ecdsa(alg, &r, &s);
        let i = at % tpmt.len();
        match how {
            0 => tpmt[i] ^= byte.max(1),
            1 => tpmt.truncate(i),
            _ => tpmt.insert(i, byte),
        }
        let verdict = both(&key.public(), &tpmt, MESSAGE);
        proptest::prop_assert!(verdict.is_ok(), "{:?}", verdict);
        if let Ok(sig) = Signature::parse(&tpmt, &key.public()) {
            let (_, rs) = sig.ecdsa().unwrap();
            let n = rs.len() / 2;
            proptest::prop_assert_eq!(n, r.len());
            for scalar in [&rs[..n], &rs[n..]] {
                proptest::prop_assert!(scalar.iter().any(|b| *b != 0));
                proptest::prop_assert!(scalar < key.order().as_slice());
            }
        }
    }
}
