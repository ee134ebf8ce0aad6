//! AK algorithms pinned (DESIGN.md §3.2, review finding 4), against the real server binary.
//! AKs a TPM would refuse to make (scheme NULL) or that no provider here verifies (ECDAA, SM2,
//! ECSCHNORR) are made in software and refused at registration with a 422 naming the scheme;
//! P-256 and RSA AKs made by swtpm are refused by a default server and, when
//! `ITL_AK_ALGORITHMS` allows them, registered, activated and attested with. Refusals write
//! nothing.

mod support;

use attest_common::tpm::ak::scheme_id::{ECDAA, ECDSA, ECSCHNORR, NULL, SM2};
use attest_common::tpm::credential::{Entropy, OsEntropy};
use attest_common::tpm::hash::{HashAlg, hmac};
use attest_common::wire::{
    AttestRequest, Blob, ChallengeResponse, Hex, RegisterResponse, from_json,
};
use attest_host_agent::tpm::{Ak, AkType, EkType, Tpm};
use attest_swtpm::Swtpm;
use serde_json::Value;
use support::{ADMIN, Server, register_request};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const AK_ATTRIBUTES: u32 = 0x0005_0072;
const SHA256: u16 = 0x000b;
const SHA384: u16 = 0x000c;

fn tpm2b(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u16).to_be_bytes()[..], body].concat()
}

/// A software AK's TPM2B_PUBLIC: a real P-256 (curve 3) or P-384 (4) point, any scheme
/// (ECDAA with its count, as a TPM writes it; NULL without details).
fn software_ak(curve: u16, name_alg: u16, scheme: u16, hash: u16) -> Vec<u8> {
    let point = match curve {
        // P-256's generator: a point on the curve (the server has no P-256 signer to make one).
        3 => hex(concat!(
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        )),
        _ => p384::ecdsa::SigningKey::from_slice(&[9; 48])
            .unwrap()
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
    };
    let details = match scheme {
        NULL => vec![],
        ECDAA => [&hash.to_be_bytes()[..], &[0, 1]].concat(),
        _ => hash.to_be_bytes().to_vec(),
    };
    let n = (point.len() - 1) / 2;
    tpm2b(
        &[
            &0x0023u16.to_be_bytes()[..],
            &name_alg.to_be_bytes(),
            &AK_ATTRIBUTES.to_be_bytes(),
            &tpm2b(&[]),
            &NULL.to_be_bytes(),
            &scheme.to_be_bytes(),
            &details,
            &curve.to_be_bytes(),
            &NULL.to_be_bytes(),
            &tpm2b(&point[1..1 + n]),
            &tpm2b(&point[1 + n..]),
        ]
        .concat(),
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Self-registers the fixture EK with `ak`; the status and answer.
fn register_fixture(server: &Server, ak: &[u8]) -> (u16, Value) {
    let mut buf = [0u8; 3072];
    let (der, _) = attest_common::fingerprint::decode_ek(EK_P384.as_bytes(), &mut buf).unwrap();
    let fp = attest_common::ek_fingerprint(der).unwrap().fingerprint;
    let req = register_request(fp, der, ak);
    server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&serde_json::to_string(&req).unwrap()),
    )
}

fn written(server: &Server) -> (u64, u64) {
    (server.audit_total(), server.machines().len() as u64)
}

#[test]
fn schemes_and_algorithms_outside_the_policy_are_refused_by_name() {
    let server = Server::start();
    let cases = [
        (
            "NULL scheme",
            software_ak(4, SHA384, NULL, 0),
            "invalid_ak",
            "scheme is TPM_ALG_NULL",
        ),
        (
            "ECDAA",
            software_ak(4, SHA384, ECDAA, SHA384),
            "invalid_ak",
            "scheme ECDAA",
        ),
        (
            "SM2",
            software_ak(4, SHA384, SM2, SHA384),
            "invalid_ak",
            "scheme SM2",
        ),
        (
            "ECSCHNORR",
            software_ak(4, SHA384, ECSCHNORR, SHA384),
            "invalid_ak",
            "scheme ECSCHNORR",
        ),
        (
            "P-256",
            software_ak(3, SHA256, ECDSA, SHA256),
            "ak_algorithm_refused",
            "ak_public is an ecc-p256 key; this server accepts ecc-p384 (ITL_AK_ALGORITHMS)",
        ),
        (
            "P-384 signing with SHA-256",
            software_ak(4, SHA384, ECDSA, SHA256),
            "ak_algorithm_refused",
            "ak_public scheme hash is sha256",
        ),
        (
            "P-384 named with SHA-256",
            software_ak(4, SHA256, ECDSA, SHA384),
            "ak_algorithm_refused",
            "ak_public nameAlg is sha256",
        ),
    ];
    for (what, ak, code, words) in cases {
        let (status, err) = register_fixture(&server, &ak);
        assert_eq!(
            (status, err["error"].as_str()),
            (422, Some(code)),
            "{what}: {err}"
        );
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(words), "{what}: {message}");
    }
    assert_eq!(written(&server), (0, 0), "nothing written");
    // The pinned form itself registers.
    let (status, reg) = register_fixture(&server, &software_ak(4, SHA384, ECDSA, SHA384));
    assert_eq!(status, 201, "{reg}");
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsEntropy.fill(&mut b);
    b
}

/// One attestation with `ak` (and the activation proof of `secret`): its status and answer.
fn attest(server: &Server, tpm: &mut Tpm, ak: &Ak, fp: &str, secret: &[u8]) -> (u16, Value) {
    attest_with(server, tpm, ak, fp, secret, None)
}

/// As [`attest`], naming the AK in the request (`ak_public`: a rotation when it is not the
/// bound one).
fn attest_with(
    server: &Server,
    tpm: &mut Tpm,
    ak: &Ak,
    fp: &str,
    secret: &[u8],
    ak_public: Option<&[u8]>,
) -> (u16, Value) {
    let (_, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
    let c: ChallengeResponse = from_json(c.to_string().as_bytes()).unwrap();
    let agent_nonce = random::<32>();
    // The quote is over the binding of both nonces and the request's claims (DESIGN §3.7).
    let fingerprint: attest_common::Fingerprint = fp.parse().unwrap();
    let claims = attest_common::binding::claims(&fingerprint, &c.nonce_id, None, false);
    let qualifying = attest_common::binding::qualifying_data(&c.nonce.0, &agent_nonce, &claims);
    let (quote, signature) = tpm.quote(ak.handle, &qualifying, &c.pcr_selection).unwrap();
    let values = tpm.pcr_values(&c.pcr_selection).unwrap();
    let proof = hmac(HashAlg::Sha384, secret, &[&c.nonce.0]).unwrap();
    let req = AttestRequest {
        ek_fingerprint: fingerprint,
        nonce_id: c.nonce_id,
        agent_nonce: Hex(agent_nonce),
        quote: Blob::from_slice(&quote).unwrap(),
        signature: Blob::from_slice(&signature).unwrap(),
        pcr_values: heapless::Vec::from_slice(&values).unwrap(),
        activation_proof: Some(Hex(proof.as_slice().try_into().unwrap())),
        ak_public: ak_public.map(|p| Blob::from_slice(p).unwrap()),
        config_applied: None,
        wipe_done: false,
    };
    server.call(
        "POST",
        "/api/v1/attest",
        None,
        Some(&serde_json::to_string(&req).unwrap()),
    )
}

#[test]
fn p256_and_rsa_aks_only_when_configured_then_end_to_end() {
    let default = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let allowing = Server::start_with(
        dir.path(),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_AK_ALGORITHMS", "ecc-p384,ecc-p256,rsa-2048"),
        ],
    );
    assert!(
        allowing
            .startup
            .iter()
            .any(|l| l.contains("AK algorithms accepted: ecc-p384,ecc-p256,rsa-2048")),
        "{:#?}",
        allowing.startup
    );
    for (ak_type, ek_type) in [
        (AkType::EccP256, EkType::EccP384),
        (AkType::Rsa2048, EkType::Rsa2048),
    ] {
        let swtpm = Swtpm::start();
        let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
        let ek = tpm.ek(ek_type).unwrap();
        let cert = tpm.ek_cert(ek_type).unwrap().unwrap();
        let ak = tpm.create_ak(ek, ak_type).unwrap();
        let fp = attest_common::ek_fingerprint(&cert).unwrap().fingerprint;
        let body = serde_json::to_string(&register_request(fp, &cert, &ak.public_tpm2b)).unwrap();

        let (status, err) = default.call("POST", "/api/v1/self-register", None, Some(&body));
        assert_eq!(
            (status, err["error"].as_str()),
            (422, Some("ak_algorithm_refused")),
            "{ak_type:?}: {err}"
        );
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains(&format!("ak_public is an {} key", ak_type.name())),
            "{err}"
        );

        let (status, reg) = allowing.call("POST", "/api/v1/self-register", None, Some(&body));
        assert_eq!(status, 201, "{ak_type:?}: {reg}");
        let reg: RegisterResponse = from_json(reg.to_string().as_bytes()).unwrap();
        let cred = reg.credential.expect("a credential for the AK");
        let secret = tpm
            .activate_credential(
                ak.handle,
                ek,
                ek_type,
                &cred.credential_blob,
                &cred.encrypted_secret,
            )
            .unwrap();
        let (status, answer) = attest(&allowing, &mut tpm, &ak, &fp.to_string(), &secret);
        assert_eq!(
            (status, answer["action"].as_str()),
            (200, Some("pending")),
            "{ak_type:?}: {answer}"
        );
    }
    assert_eq!(
        written(&default),
        (0, 0),
        "the default server wrote nothing"
    );
}

/// A rotation is an AK offered too: an attestation rotating to an AK the policy refuses is
/// refused before any proof is looked at (422, counted as `refused_ak`, nothing written),
/// and the bound AK keeps working.
#[test]
fn a_rotation_to_a_refused_ak_is_refused() {
    let server = Server::start();
    let swtpm = Swtpm::start();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let ek_type = EkType::EccP384;
    let ek = tpm.ek(ek_type).unwrap();
    let cert = tpm.ek_cert(ek_type).unwrap().unwrap();
    let fp = attest_common::ek_fingerprint(&cert).unwrap().fingerprint;
    let mut activated = |ak_type| {
        let ak = tpm.create_ak(ek, ak_type).unwrap();
        let body = serde_json::to_string(&register_request(fp, &cert, &ak.public_tpm2b)).unwrap();
        let (_, reg) = server.call("POST", "/api/v1/self-register", None, Some(&body));
        (ak, reg)
    };
    let (good, reg) = activated(AkType::EccP384);
    let reg: RegisterResponse = from_json(reg.to_string().as_bytes()).unwrap();
    let cred = reg.credential.unwrap();
    let secret = tpm
        .activate_credential(
            good.handle,
            ek,
            ek_type,
            &cred.credential_blob,
            &cred.encrypted_secret,
        )
        .unwrap();
    let fp = fp.to_string();
    let (status, _) = attest(&server, &mut tpm, &good, &fp, &secret);
    assert_eq!(status, 200);
    let before = written(&server);

    let p256 = tpm.create_ak(ek, AkType::EccP256).unwrap();
    let (status, err) = attest_with(
        &server,
        &mut tpm,
        &p256,
        &fp,
        &secret,
        Some(&p256.public_tpm2b),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("ak_algorithm_refused")),
        "{err}"
    );
    assert_eq!(written(&server), before, "nothing written");
    let (_, metrics) = server.call_text("GET", "/metrics", Some(ADMIN), None);
    assert!(
        metrics.contains("itl_unauthenticated_total{reason=\"refused_ak\"} 1"),
        "{metrics}"
    );
    let (status, _) = attest(&server, &mut tpm, &good, &fp, &secret);
    assert_eq!(status, 200, "the bound AK still attests");
}
