//! Wire types: JSON and postcard round trips for every type, at the largest and smallest
//! sizes; oversized and malformed input refused with an error naming the field; decoders
//! fuzzed with random and mutated input.

use std::fmt::Debug;

use attest_common::fingerprint::EkSource;
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::NonceSignature;
use attest_common::wire::*;
use heapless::Vec;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[path = "support/samples.rs"]
mod samples;
use samples::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_vec(value).unwrap();
    let back: T = from_json(&json).unwrap_or_else(|e| panic!("JSON {value:?}: {e}"));
    assert_eq!(&back, value, "JSON round trip");
    let bin = to_postcard(value).unwrap();
    let back: T = from_postcard(&bin).unwrap_or_else(|e| panic!("postcard {value:?}: {e}"));
    assert_eq!(&back, value, "postcard round trip");
    // Postcard is the compact one: the firmware link depends on that.
    assert!(bin.len() <= json.len(), "postcard larger than JSON");
}

#[test]
fn every_type_round_trips() {
    round_trip(&register_max());
    round_trip(&register_min());
    round_trip(&register_response());
    round_trip(&RegisterResponse {
        machine_id: s("m"),
        role: None,
        status: Status::PendingApproval,
        iso_url: None,
        config_token: None,
        config_url: None,
        credential: None,
        signature: None,
    });
    round_trip(&ChallengeRequest::default());
    round_trip(&ChallengeRequest {
        ek_fingerprint: Some(fp()),
    });
    round_trip(&challenge_response());
    round_trip(&attest_request());
    round_trip(&AttestRequest {
        pcr_values: Vec::new(),
        activation_proof: None,
        ..attest_request()
    });
    round_trip(&attest_response());
    round_trip(&AttestResponse {
        config_url: None,
        ..attest_response()
    });
    round_trip(&enroll_request());
    round_trip(&EnrollResponse {
        machine_id: full('i'),
        status: Status::Attested,
        signature: Some(NonceSignature([0x22; 96])),
    });
    round_trip(&receipt());
    round_trip(&ErrorBody::new(
        "conflict",
        "cannot lock a machine in state revoked",
    ));
    for body in [
        LinkRequestBody::Challenge(ChallengeRequest::default()),
        LinkRequestBody::Register(register_max()),
        LinkRequestBody::SelfRegister(register_min()),
        LinkRequestBody::Attest(attest_request()),
        LinkRequestBody::Enroll(enroll_request()),
    ] {
        round_trip(&LinkRequest { seq: 7, body });
    }
    for body in [
        LinkResponseBody::Challenge(challenge_response()),
        LinkResponseBody::Register(register_response()),
        LinkResponseBody::Attest(attest_response()),
        LinkResponseBody::Enroll(EnrollResponse {
            machine_id: s("m"),
            status: Status::Attested,
            signature: None,
        }),
        LinkResponseBody::Error {
            status: 409,
            body: ErrorBody::new("conflict", "nonce already used"),
        },
    ] {
        round_trip(&LinkResponse {
            seq: u32::MAX,
            body,
        });
    }
}

#[test]
fn json_uses_the_seed_field_names_and_encodings() {
    let v = serde_json::to_value(register_max()).unwrap();
    for field in [
        "ek_fingerprint",
        "ek_cert_pem",
        "ek_source",
        "hw_uuid",
        "hw_mac",
        "hw_serial",
        "hw_product",
        "desired_role",
        "cluster_id",
        "ak_public",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["ek_fingerprint"], "ab".repeat(48));
    assert_eq!(v["desired_role"], "worker-infra");
    assert_eq!(v["ek_source"], "cert");
    // ek_cert_pem is the base64 of the PEM text.
    use base64ct::Encoding;
    let pem = base64ct::Base64::decode_vec(v["ek_cert_pem"].as_str().unwrap()).unwrap();
    assert!(
        std::str::from_utf8(&pem)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );

    let r = serde_json::to_value(attest_response()).unwrap();
    assert_eq!(r["action"], "apply-config");
    assert_eq!(r["status"], "attested");
    let c = serde_json::to_value(challenge_response()).unwrap();
    assert_eq!(c["expires_at"], "2026-11-22T07:30:00Z");
    assert_eq!(c["nonce"], "01".repeat(32));

    // A seed client sends only what it knows: defaults fill the rest.
    let minimal = format!(r#"{{"ek_fingerprint":"{}"}}"#, "cd".repeat(48));
    let req: RegisterRequest = from_json(minimal.as_bytes()).unwrap();
    assert_eq!(req.cluster_id.as_str(), "default");
    assert_eq!(req.ek_source, EkSource::Cert);
    assert_eq!(req.ek_cert_pem, None);
    // ... and a pasted plain PEM is accepted as ek_cert_pem too.
    let pasted = serde_json::json!({"ek_fingerprint": "cd".repeat(48), "ek_cert_pem": EK_PEM});
    let req: RegisterRequest = from_json(pasted.to_string().as_bytes()).unwrap();
    assert_eq!(req.ek_cert_pem, Some(cert()));
}

fn json_error<T: DeserializeOwned + Debug>(value: serde_json::Value) -> DecodeError {
    from_json::<T>(value.to_string().as_bytes()).expect_err("must be refused")
}

#[test]
fn oversized_json_fields_are_named() {
    let base = serde_json::to_value(register_max()).unwrap();
    let with = |field: &str, v: serde_json::Value| {
        let mut x = base.clone();
        x[field] = v;
        x
    };
    for (field, value) in [
        ("hw_serial", serde_json::json!("s".repeat(129))),
        ("hw_product", serde_json::json!("é".repeat(65))),
        ("cluster_id", serde_json::json!("c".repeat(64))),
        (
            "ak_public",
            serde_json::json!("AAAA".repeat(MAX_TPM2B_PUBLIC / 3 + 1)),
        ),
        ("ek_public", serde_json::json!("AAAA".repeat(201))),
        ("ek_cert_pem", serde_json::json!("QUFB".repeat(3000))),
    ] {
        let e = json_error::<RegisterRequest>(with(field, value));
        assert_eq!(e.field, field, "{e}");
    }

    let mut a = serde_json::to_value(attest_request()).unwrap();
    a["pcr_values"][3]["value"] = serde_json::json!("00".repeat(65));
    assert_eq!(json_error::<AttestRequest>(a).field, "pcr_values[3].value");
    let mut a = serde_json::to_value(attest_request()).unwrap();
    let extra = a["pcr_values"][0].clone();
    a["pcr_values"].as_array_mut().unwrap().push(extra);
    assert_eq!(json_error::<AttestRequest>(a).field, "pcr_values");

    let mut c = serde_json::to_value(challenge_response()).unwrap();
    c["pcr_selection"][0]["pcrs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(1));
    assert_eq!(
        json_error::<ChallengeResponse>(c).field,
        "pcr_selection[0].pcrs"
    );
}

#[test]
fn malformed_json_fields_are_named() {
    let base = serde_json::to_value(attest_request()).unwrap();
    let with = |field: &str, v: serde_json::Value| {
        let mut x = base.clone();
        x[field] = v;
        x
    };
    let cases = [
        ("quote", serde_json::json!("not base64!")),
        ("agent_nonce", serde_json::json!("zz".repeat(32))),
        ("agent_nonce", serde_json::json!("00".repeat(31))),
        ("activation_proof", serde_json::json!(12)),
        ("ek_fingerprint", serde_json::json!("xyz")),
        ("nonce_id", serde_json::Value::Null),
    ];
    for (field, value) in cases {
        let e = json_error::<AttestRequest>(with(field, value.clone()));
        assert_eq!(e.field, field, "{field} = {value}: {e}");
    }
    let legacy =
        json_error::<AttestRequest>(with("ek_fingerprint", serde_json::json!("ab".repeat(32))));
    assert!(
        legacy.message.contains("SHA-256") && legacy.message.contains("upgrade"),
        "{legacy}"
    );

    let mut r = serde_json::to_value(attest_response()).unwrap();
    r["action"] = serde_json::json!("reboot");
    assert_eq!(json_error::<AttestResponse>(r.clone()).field, "action");
    r["action"] = serde_json::json!("none");
    r["signature"] = serde_json::json!("AAAA");
    assert_eq!(json_error::<AttestResponse>(r).field, "signature");

    let mut c = serde_json::to_value(challenge_response()).unwrap();
    c["expires_at"] = serde_json::json!("tomorrow");
    assert_eq!(json_error::<ChallengeResponse>(c).field, "expires_at");

    let mut e = serde_json::to_value(enroll_request()).unwrap();
    e["cert_pem"] = serde_json::json!("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K");
    assert_eq!(json_error::<EnrollRequest>(e).field, "cert_pem");

    // Not JSON at all, or trailing garbage: the message as a whole.
    assert_eq!(from_json::<EnrollResponse>(b"{").unwrap_err().field, "");
    let ok = serde_json::to_vec(&EnrollResponse {
        machine_id: s("m"),
        status: Status::Attested,
        signature: None,
    })
    .unwrap();
    let mut trailing = ok.clone();
    trailing.extend_from_slice(b" x");
    assert!(from_json::<EnrollResponse>(&trailing).is_err());
}

fn varint(mut n: usize) -> std::vec::Vec<u8> {
    let mut out = vec![];
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Replaces the length-prefixed `old` content in postcard bytes by `new`.
fn patch(bytes: &[u8], old: &[u8], new: &[u8]) -> std::vec::Vec<u8> {
    let prefix = varint(old.len());
    let needle: std::vec::Vec<u8> = prefix.iter().chain(old).copied().collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("field content in the encoding");
    let mut out = bytes[..at].to_vec();
    out.extend(varint(new.len()));
    out.extend_from_slice(new);
    out.extend_from_slice(&bytes[at + needle.len()..]);
    out
}

#[test]
fn oversized_postcard_fields_are_named() {
    let reg = register_max();
    let bin = to_postcard(&reg).unwrap();
    let serial = reg.hw_serial.clone().unwrap();
    let longer = "s".repeat(129);
    let e = from_postcard::<RegisterRequest>(&patch(&bin, serial.as_bytes(), longer.as_bytes()))
        .unwrap_err();
    assert_eq!(e.field, "hw_serial", "{e}");

    let ak = reg.ak_public.clone().unwrap();
    let mut bigger = ak.to_vec();
    bigger.push(0);
    let e = from_postcard::<RegisterRequest>(&patch(&bin, &ak, &bigger)).unwrap_err();
    assert_eq!(e.field, "ak_public", "{e}");

    // Nested inside the link envelope and a Vec: the path says so.
    let link = LinkRequest {
        seq: 1,
        body: LinkRequestBody::Attest(attest_request()),
    };
    let bin = to_postcard(&link).unwrap();
    let value = [3u8; 64];
    let e = from_postcard::<LinkRequest>(&patch(&bin, &value, &[3u8; 65])).unwrap_err();
    assert_eq!(e.field, "body.attest.pcr_values[3].value", "{e}");

    let challenge = challenge_response();
    let bin = to_postcard(&challenge).unwrap();
    let pcrs: std::vec::Vec<u8> = (0..24).collect();
    let more: std::vec::Vec<u8> = (0..25).collect();
    let e = from_postcard::<ChallengeResponse>(&patch(&bin, &pcrs, &more)).unwrap_err();
    assert_eq!(e.field, "pcr_selection[0].pcrs", "{e}");
}

#[test]
fn malformed_postcard_is_refused() {
    let bin = to_postcard(&attest_response()).unwrap();
    for cut in [0, 1, 10, bin.len() - 1] {
        assert!(
            from_postcard::<AttestResponse>(&bin[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut trailing = bin.clone();
    trailing.push(0);
    let e = from_postcard::<AttestResponse>(&trailing).unwrap_err();
    assert!(e.message.contains("after the message"), "{e}");
    // An unknown enum discriminant names the field.
    let resp = attest_response();
    let bin = to_postcard(&resp).unwrap();
    let status_at = 1 + resp.machine_id.len();
    let mut bad = bin.clone();
    bad[status_at] = 17;
    assert_eq!(
        from_postcard::<AttestResponse>(&bad).unwrap_err().field,
        "status"
    );
    // A certificate field must hold a certificate.
    let enroll = enroll_request();
    let bin = to_postcard(&enroll).unwrap();
    let der = enroll.cert_pem.der().to_vec();
    let mut broken = der.clone();
    broken[4] ^= 0xff;
    let e = from_postcard::<EnrollRequest>(&patch(&bin, &der, &broken)).unwrap_err();
    assert_eq!(e.field, "cert_pem", "{e}");
}

/// The answer's signed context covers every field of the answer and the request it
/// answers (DESIGN §3.7): another machine's request, another challenge, or a request changed
/// in any field gives another context.
#[test]
fn signed_context_covers_every_field() {
    let base = attest_response();
    let req = attest_request();
    let ctx = base.signed_context_for(&req);
    let requests = [
        AttestRequest {
            ek_fingerprint: attest_common::Fingerprint([0x99; 48]),
            ..req.clone()
        },
        AttestRequest {
            nonce_id: s("another-challenge"),
            ..req.clone()
        },
        AttestRequest {
            agent_nonce: Hex([0x44; 32]),
            ..req.clone()
        },
        AttestRequest {
            config_applied: Some(Hex([0x55; 48])),
            wipe_done: false,
            ..req.clone()
        },
    ];
    for r in &requests {
        assert_ne!(base.signed_context_for(r), ctx, "{r:?}");
    }
    // The quote binds the agent's nonce and the claims, not the quote itself.
    assert_ne!(
        requests[2].qualifying_data(&[1; 32]),
        req.qualifying_data(&[1; 32])
    );
    assert_ne!(
        requests[3].qualifying_data(&[1; 32]),
        req.qualifying_data(&[1; 32])
    );
    assert_ne!(req.qualifying_data(&[2; 32]), req.qualifying_data(&[1; 32]));
    let variants = [
        AttestResponse {
            machine_id: s("other"),
            ..base.clone()
        },
        AttestResponse {
            status: Status::Locked,
            ..base.clone()
        },
        AttestResponse {
            action: Action::Wipe,
            ..base.clone()
        },
        AttestResponse {
            config_url: None,
            ..base.clone()
        },
        AttestResponse {
            config_sha384: Some(Hex([0xc6; 48])),
            ..base.clone()
        },
        AttestResponse {
            config_sha384: None,
            ..base.clone()
        },
        AttestResponse {
            seconds_to_next_attestation: 1,
            ..base.clone()
        },
    ];
    for v in variants {
        assert_ne!(v.signed_context_for(&req), ctx, "{v:?}");
    }
    // The signature itself is not part of what it signs.
    let resigned = AttestResponse {
        signature: NonceSignature([0; 96]),
        ..base
    };
    assert_eq!(resigned.signed_context_for(&req), ctx);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn postcard_decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = from_postcard::<LinkRequest>(&bytes);
        let _ = from_postcard::<LinkResponse>(&bytes);
        let _ = from_postcard::<TpmReceipt>(&bytes);
    }

    #[test]
    fn mutated_postcard_never_panics(at in 0usize..4096, byte in proptest::num::u8::ANY) {
        let link = LinkRequest { seq: 1, body: LinkRequestBody::Register(register_max()) };
        let mut bin = to_postcard(&link).unwrap();
        let at = at % bin.len();
        bin[at] = byte;
        if let Ok(decoded) = from_postcard::<LinkRequest>(&bin) {
            // Whatever decodes re-encodes to the same bytes.
            proptest::prop_assert_eq!(to_postcard(&decoded).unwrap(), bin);
        }
    }

    #[test]
    fn json_decoders_never_panic(s in "\\PC{0,300}") {
        let _ = from_json::<AttestRequest>(s.as_bytes());
        let _ = from_json::<RegisterRequest>(s.as_bytes());
        let _ = from_json::<LinkResponse>(s.as_bytes());
    }

    #[test]
    fn mutated_json_never_panics(at in 0usize..8192, c in proptest::char::any()) {
        let mut json = serde_json::to_string(&attest_request()).unwrap();
        let mut at = at % json.len();
        while !json.is_char_boundary(at) { at -= 1; }
        json.insert(at, c);
        let _ = from_json::<AttestRequest>(json.as_bytes());
    }
}
