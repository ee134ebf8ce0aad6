//! `verify_quote` on quotes recorded from swtpm (P-384/ECDSA-SHA384 and RSA-2048/RSASSA-SHA256
//! AKs, PCRs sha384:0-7, nonce 00..1f): both providers, every error variant, and property
//! tests that feed every parser random and mutated bytes.

#[cfg(not(feature = "aws-lc"))]
compile_error!(
    "these tests compare both crypto providers: run them with --features aws-lc (cargo test --workspace does)"
);

use attest_common::crypto::CryptoProvider;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::crypto::rustcrypto::RustCrypto;
use attest_common::tpm::attest::{AttestError, QuoteInfo};
use attest_common::tpm::credential::{CredentialError, EkKey, Entropy, make_credential};
use attest_common::tpm::public::{PublicError, TpmPublic, attributes};
use attest_common::tpm::signature::Signature;
use attest_common::tpm::{QuoteError, verify_quote};
use attest_common::wire::{PcrValue, from_json};
use base64ct::Encoding;

const PROVIDERS: [&dyn CryptoProvider; 2] = [&RustCrypto, &AwsLc];

struct Fixture {
    ak_tpm2b: Vec<u8>,
    ak: TpmPublic,
    attest: Vec<u8>,
    sig: Vec<u8>,
    nonce: Vec<u8>,
    values: Vec<PcrValue>,
}

fn fixture(name: &str) -> Fixture {
    let text = match name {
        "p384" => include_str!("fixtures/quote-p384.json"),
        _ => include_str!("fixtures/quote-rsa2048.json"),
    };
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let b64 = |k: &str| base64ct::Base64::decode_vec(v[k].as_str().unwrap()).unwrap();
    let ak_tpm2b = b64("ak_public");
    let nonce_hex = v["nonce"].as_str().unwrap();
    let nonce = (0..nonce_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&nonce_hex[i..i + 2], 16).unwrap())
        .collect();
    Fixture {
        ak: TpmPublic::from_tpm2b(&ak_tpm2b).unwrap(),
        ak_tpm2b,
        attest: b64("quote"),
        sig: b64("signature"),
        nonce,
        values: from_json(v["pcr_values"].to_string().as_bytes()).unwrap(),
    }
}

fn verify_all(
    ak: &TpmPublic,
    attest: &[u8],
    sig: &[u8],
    nonce: &[u8],
    values: &[PcrValue],
) -> Result<(), QuoteError> {
    let results: Vec<_> = PROVIDERS
        .iter()
        .map(|p| verify_quote(*p, ak, attest, sig, nonce, values).map(|_| ()))
        .collect();
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "providers disagree: {results:?}"
    );
    results[0]
}

#[test]
fn recorded_quotes_verify_with_both_providers() {
    for name in ["p384", "rsa2048"] {
        let f = fixture(name);
        for p in PROVIDERS {
            let ok = verify_quote(p, &f.ak, &f.attest, &f.sig, &f.nonce, &f.values)
                .unwrap_or_else(|e| panic!("{name} with {}: {e}", p.name()));
            assert_eq!(
                ok.info.pcr_selection[0].indices().collect::<Vec<_>>(),
                (0..8).collect::<Vec<_>>()
            );
            assert_eq!(ok.info.extra_data.as_slice(), f.nonce.as_slice());
        }
    }
}

#[test]
fn every_failure_has_its_own_error() {
    let f = fixture("p384");
    let rsa = fixture("rsa2048");
    // Scheme: an ECDSA signature presented for the RSA AK.
    assert_eq!(
        verify_all(&rsa.ak, &f.attest, &f.sig, &f.nonce, &f.values),
        Err(QuoteError::SchemeMismatch)
    );
    // Malformed signature bytes.
    assert!(matches!(
        verify_all(&f.ak, &f.attest, &f.sig[..10], &f.nonce, &f.values),
        Err(QuoteError::MalformedSignature(_))
    ));
    // An AK that is not restricted: same key, attributes edited (the Name changes too).
    let mut unrestricted = f.ak_tpm2b.clone();
    // TPMT_PUBLIC: type(2) nameAlg(2) objectAttributes(4) at offset 2 + 4 in the TPM2B.
    let attrs = u32::from_be_bytes(unrestricted[6..10].try_into().unwrap());
    unrestricted[6..10].copy_from_slice(&(attrs & !attributes::RESTRICTED).to_be_bytes());
    let unrestricted = TpmPublic::from_tpm2b(&unrestricted).unwrap();
    assert_ne!(unrestricted.name, f.ak.name);
    assert_eq!(
        verify_all(&unrestricted, &f.attest, &f.sig, &f.nonce, &f.values),
        Err(QuoteError::AkNotRestrictedSigning)
    );
    // The same key with no fixed scheme (TPM_ALG_NULL in place of ECDSA-SHA384).
    let mut tpmt = f.ak_tpm2b[2..].to_vec();
    let at = 10 + usize::from(u16::from_be_bytes([tpmt[8], tpmt[9]])) + 2;
    assert_eq!(&tpmt[at..at + 4], &[0x00, 0x18, 0x00, 0x0c]);
    tpmt.splice(at..at + 4, [0x00, 0x10]);
    let null = TpmPublic::from_tpmt(&tpmt).unwrap();
    assert_eq!(null.scheme, None);
    assert_eq!(
        verify_all(&null, &f.attest, &f.sig, &f.nonce, &f.values),
        Err(QuoteError::AkSchemeNotFixed)
    );
    assert_eq!(
        verify_all(&f.ak, &f.attest, &f.sig, &[0; 32], &f.values),
        Err(QuoteError::NonceMismatch)
    );
    let mut extra = f.values.clone();
    extra.push(PcrValue {
        index: 8,
        ..f.values[0].clone()
    });
    assert_eq!(
        verify_all(&f.ak, &f.attest, &f.sig, &f.nonce, &extra),
        Err(QuoteError::PcrSelectionMismatch)
    );
    // One PCR twice (a second, made-up value beside the quoted one) is refused whatever
    // the selection says.
    let mut twice = f.values.clone();
    let mut other = f.values[0].clone();
    other.value.0[0] ^= 1;
    twice.push(other);
    assert_eq!(
        verify_all(&f.ak, &f.attest, &f.sig, &f.nonce, &twice),
        Err(QuoteError::PcrSelectionMismatch)
    );
    let mut short = f.values.clone();
    short[2].value.0.pop();
    assert_eq!(
        verify_all(&f.ak, &f.attest, &f.sig, &f.nonce, &short),
        Err(QuoteError::PcrSelectionMismatch)
    );

    // Structure errors, which a genuine signature cannot carry, from the parser itself.
    let mut bad_magic = f.attest.clone();
    bad_magic[0] = 0;
    assert_eq!(QuoteInfo::parse(&bad_magic), Err(AttestError::BadMagic));
    let mut certify = f.attest.clone();
    certify[4..6].copy_from_slice(&0x8017u16.to_be_bytes());
    // Parsed as TPMS_CERTIFY_INFO the quote body no longer fits: refused either way.
    assert!(matches!(
        QuoteInfo::parse(&certify),
        Err(AttestError::NotAQuote | AttestError::Malformed(_) | AttestError::TrailingBytes)
    ));
    let mut trailing = f.attest.clone();
    trailing.push(0);
    assert_eq!(QuoteInfo::parse(&trailing), Err(AttestError::TrailingBytes));
    assert!(matches!(
        QuoteInfo::parse(&f.attest[..20]),
        Err(AttestError::Malformed(_))
    ));
    assert_eq!(
        TpmPublic::from_tpm2b(&f.ak_tpm2b[1..]),
        Err(PublicError::SizeMismatch)
    );
}

#[test]
fn make_credential_refuses_bad_input() {
    struct Zero;
    impl Entropy for Zero {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = i as u8 | 1);
        }
    }
    let f = fixture("p384");
    // An AK is not an EK.
    assert_eq!(EkKey::from_public(&f.ak), Err(CredentialError::NotAnEk));
    let ek = EkKey::from_spki(
        attest_common::der::parse_certificate(&pem_der(include_str!("fixtures/swtpm-ek-p384.pem")))
            .unwrap()
            .spki,
    )
    .unwrap();
    assert_eq!(
        make_credential(&ek, &f.ak.name, &[], &mut Zero),
        Err(CredentialError::BadSecretLength)
    );
    assert_eq!(
        make_credential(&ek, &f.ak.name, &[1; 49], &mut Zero),
        Err(CredentialError::BadSecretLength)
    );
    assert_eq!(
        make_credential(&ek, &f.ak.name[..10], &[1; 32], &mut Zero),
        Err(CredentialError::BadAkName)
    );
    let c = make_credential(&ek, &f.ak.name, &[1; 48], &mut Zero).unwrap();
    // TPM2B_ID_OBJECT: size, TPM2B_DIGEST(HMAC-SHA384), AES-CFB(2 + 48 bytes).
    assert_eq!(c.credential_blob.len(), 2 + 2 + 48 + 2 + 48);
    // TPM2B_ENCRYPTED_SECRET of an ECC EK: a TPMS_ECC_POINT.
    assert_eq!(c.encrypted_secret.len(), 2 + 2 + 48 + 2 + 48);
}

fn pem_der(pem: &str) -> Vec<u8> {
    let mut buf = [0u8; 3072];
    let (der, _) = attest_common::fingerprint::decode_ek(pem.as_bytes(), &mut buf).unwrap();
    der.to_vec()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700)) {
        let (p384, rsa) = (fixture("p384"), fixture("rsa2048"));
        let _ = TpmPublic::from_tpmt(&bytes);
        let _ = TpmPublic::from_tpm2b(&bytes);
        for key in [&p384.ak.key, &rsa.ak.key] {
            let _ = Signature::parse(&bytes, key);
        }
        let _ = QuoteInfo::parse(&bytes);
        let _ = EkKey::from_spki(&bytes);
    }

    #[test]
    fn any_change_to_signed_bytes_fails(which in 0usize..2, at in 0usize..4096, xor in 1u8..=255) {
        let f = fixture(if which == 0 { "p384" } else { "rsa2048" });
        let mut attest = f.attest.clone();
        let i = at % attest.len();
        attest[i] ^= xor;
        let r = verify_all(&f.ak, &attest, &f.sig, &f.nonce, &f.values);
        proptest::prop_assert!(r.is_err());
        let mut sig = f.sig.clone();
        let j = at % sig.len();
        sig[j] ^= xor;
        let r = verify_all(&f.ak, &f.attest, &sig, &f.nonce, &f.values);
        proptest::prop_assert!(r.is_err(), "signature byte {} changed and still verified", j);
    }

    #[test]
    fn mutated_ak_never_panics(at in 0usize..4096, xor in 1u8..=255) {
        let f = fixture("p384");
        let mut ak = f.ak_tpm2b.clone();
        let i = at % ak.len();
        ak[i] ^= xor;
        if let Ok(ak) = TpmPublic::from_tpm2b(&ak) {
            let _ = verify_all(&ak, &f.attest, &f.sig, &f.nonce, &f.values);
        }
    }
}
