//! Every decoder that sees untrusted bytes, fed *valid* inputs with structure-aware edits
//! (issue 21, 9): bytes set, bits flipped, runs inserted, deleted or repeated, the input cut
//! short, a length field made larger or smaller. The wire types both ways (postcard and
//! JSON, requests and the answers the agents decode), DER certificates (the swtpm EK
//! certificates and every vendor CA of `../shared/tpm-roots`), TPM structures (TPM2B_PUBLIC,
//! TPMS_ATTEST, TPMT_SIGNATURE, EK public areas) and link frames. Each must answer an error or
//! a value, never panic; a wire value that decodes must encode back to an input that decodes to
//! the same value. A fixed budget of cases per property keeps the run to seconds
//! (`PROPTEST_CASES` raises it for a longer search).

#[path = "support/samples.rs"]
mod samples;

use std::fmt::Debug;

use attest_common::frame::{Deframer, encode, max_encoded_len};
use attest_common::tpm::attest::QuoteInfo;
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::signature::Signature;
use attest_common::wire::*;
use base64ct::Encoding as _;
use proptest::prelude::*;
use samples::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize),
    Truncate(usize),
    /// A DER or TPM length byte made larger or smaller.
    Nudge(usize, i8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Edit::Flip(a, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Repeat(a, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<i8>()).prop_map(|(a, d)| Edit::Nudge(a, d)),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..4)
}

fn apply(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = input.to_vec();
    for e in edits {
        if b.is_empty() {
            break;
        }
        let at = |i: usize| i % b.len();
        match e {
            Edit::Set(i, v) => {
                let i = at(*i);
                b[i] = *v;
            }
            Edit::Flip(i, bit) => {
                let i = at(*i);
                b[i] ^= 1 << bit;
            }
            Edit::Insert(i, run) => {
                let i = at(*i);
                b.splice(i..i, run.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Repeat(i, n) => {
                let i = at(*i);
                let end = (i + n).min(b.len());
                let run = b[i..end].to_vec();
                b.splice(i..i, run);
            }
            Edit::Truncate(i) => {
                let i = at(*i);
                b.truncate(i);
            }
            Edit::Nudge(i, d) => {
                let i = at(*i);
                b[i] = b[i].wrapping_add_signed(*d);
            }
        }
    }
    b
}

/// Decodes a mutated postcard and JSON encoding of `value` as `T`; whatever decodes is
/// stable: encoded again, it decodes to itself.
fn wire_survives<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, e: &[Edit]) {
    let bin = apply(&to_postcard(value).unwrap(), e);
    if let Ok(decoded) = from_postcard::<T>(&bin) {
        let again = to_postcard(&decoded).unwrap();
        assert_eq!(from_postcard::<T>(&again).unwrap(), decoded, "postcard");
    }
    let json = apply(&serde_json::to_vec(value).unwrap(), e);
    if let Ok(decoded) = from_json::<T>(&json) {
        let again = serde_json::to_vec(&decoded).unwrap();
        assert_eq!(from_json::<T>(&again).unwrap(), decoded, "JSON");
    }
}

/// The DER of every certificate in a PEM text.
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                out.push(base64ct::Base64::decode_vec(&body).unwrap());
            }
            l if inside => body.push_str(l),
            _ => {}
        }
    }
    out
}

/// The swtpm EK certificates and every vendor CA certificate beside the repository.
fn certificates() -> &'static [Vec<u8>] {
    static CERTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let mut all = pem_certificates(EK_PEM);
        all.extend(pem_certificates(include_str!("fixtures/swtpm-ek-p384.pem")));
        let roots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tpm-roots");
        let mut files: Vec<_> = std::fs::read_dir(&roots)
            .unwrap_or_else(|e| {
                panic!("{}: {e} (../shared beside the repository)", roots.display())
            })
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            match std::str::from_utf8(&bytes) {
                Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {
                    all.extend(pem_certificates(text))
                }
                _ => all.push(bytes),
            }
        }
        assert!(all.len() > 40, "the vendor CAs: {}", all.len());
        all
    })
}

/// A quote fixture's AK (TPM2B_PUBLIC), TPMS_ATTEST and TPMT_SIGNATURE.
type QuoteParts = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The quote fixtures' parts.
fn quote_parts() -> &'static [QuoteParts] {
    static PARTS: std::sync::OnceLock<Vec<QuoteParts>> = std::sync::OnceLock::new();
    PARTS.get_or_init(|| {
        [
            include_str!("fixtures/quote-p384.json"),
            include_str!("fixtures/quote-rsa2048.json"),
        ]
        .iter()
        .map(|text| {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let b64 = |k: &str| base64ct::Base64::decode_vec(v[k].as_str().unwrap()).unwrap();
            (b64("ak_public"), b64("quote"), b64("signature"))
        })
        .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_survive_edits(e in edits()) {
        wire_survives(&register_max(), &e);
        wire_survives(&register_min(), &e);
        wire_survives(&attest_request(), &e);
        wire_survives(&enroll_request(), &e);
        wire_survives(&receipt(), &e);
        wire_survives(&ChallengeRequest { ek_fingerprint: Some(fp()) }, &e);
        wire_survives(&LinkRequest { seq: 7, body: LinkRequestBody::Attest(attest_request()) }, &e);
        wire_survives(&LinkRequest { seq: 8, body: LinkRequestBody::Receipt(receipt()) }, &e);
    }

    #[test]
    fn answers_survive_edits(e in edits()) {
        wire_survives(&register_response(), &e);
        wire_survives(&attest_response(), &e);
        wire_survives(&challenge_response(), &e);
        wire_survives(
            &LinkResponse { seq: 7, body: LinkResponseBody::Attest(attest_response()) },
            &e,
        );
        wire_survives(
            &LinkResponse { seq: 9, body: LinkResponseBody::Register(register_response()) },
            &e,
        );
    }

    #[test]
    fn certificates_survive_edits(which in any::<usize>(), e in edits()) {
        let certs = certificates();
        let der = apply(&certs[which % certs.len()], &e);
        let parsed = attest_common::der::parse_certificate(&der);
        let strict = attest_common::der::check_strict(&der);
        let _ = attest_common::ek_fingerprint(&der);
        let _ = attest_common::ek_fingerprint_der(&der);
        if let Ok(cert) = parsed {
            let _ = attest_common::der::parse_spki(cert.spki);
            // What the strict check accepts, the parser reads.
            prop_assert!(strict.is_err() || attest_common::der::parse_certificate(&der).is_ok());
        }
    }

    #[test]
    fn tpm_structures_survive_edits(which in 0usize..2, e in edits()) {
        let (ak, attest, sig) = &quote_parts()[which];
        if let Ok(public) = TpmPublic::from_tpm2b(&apply(ak, &e)) {
            let _ = Signature::parse(sig, &public.key);
        }
        let _ = QuoteInfo::parse(&apply(attest, &e));
        let key = TpmPublic::from_tpm2b(ak).unwrap().key;
        let _ = Signature::parse(&apply(sig, &e), &key);
        let _ = attest_common::tpm::ek_template::check_ek_public(&apply(ak, &e));
    }

    #[test]
    fn frames_survive_edits(e in edits(), payload in proptest::collection::vec(any::<u8>(), 1..300)) {
        let mut wire = vec![0u8; max_encoded_len(payload.len())];
        let n = encode(&payload, &mut wire).unwrap();
        let mutated = apply(&wire[..n], &e);
        let mut d = Box::new(Deframer::<1024>::new());
        for b in mutated {
            if let Some(Ok(frame)) = d.push(b) {
                let _ = from_postcard::<LinkResponse>(frame);
            }
        }
    }
}
