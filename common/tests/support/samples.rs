//! Sample values of every wire type, at their largest and smallest: what the wire tests
//! round-trip and what the mutation tests start from.

#![allow(dead_code)]

use attest_common::fingerprint::{EkSource, Fingerprint};
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::NonceSignature;
use attest_common::wire::*;
use heapless::{String, Vec};

pub const EK_PEM: &str = include_str!("../fixtures/swtpm-ek-rsa2048.pem");

pub fn s<const N: usize>(v: &str) -> String<N> {
    String::try_from(v).unwrap()
}

pub fn full<const N: usize>(c: char) -> String<N> {
    let mut out = String::new();
    while out.push(c).is_ok() {}
    out
}

pub fn blob<const N: usize>(len: usize) -> Blob<N> {
    Blob::from_slice(&(0..len).map(|i| i as u8).collect::<std::vec::Vec<_>>()).unwrap()
}

pub fn fp() -> Fingerprint {
    Fingerprint([0xab; 48])
}

pub fn cert() -> CertificateDer {
    let mut buf = [0u8; attest_common::fingerprint::MAX_EK_DER];
    CertificateDer::from_pem_or_der(EK_PEM.as_bytes(), &mut buf).unwrap()
}

pub fn register_max() -> RegisterRequest {
    RegisterRequest {
        ek_fingerprint: fp(),
        ek_cert_pem: Some(cert()),
        ek_public: Some(blob(MAX_EK_PUBLIC)),
        ek_source: EkSource::Cert,
        hw_uuid: Some(full('u')),
        hw_mac: Some(full('m')),
        hw_serial: Some(full('s')),
        hw_product: Some(full('é')),
        desired_role: Some(Role::WorkerInfra),
        cluster_id: full('c'),
        ak_public: Some(blob(MAX_TPM2B_PUBLIC)),
        agent_nonce: Some(Hex([0xa5; 32])),
    }
}

pub fn register_min() -> RegisterRequest {
    RegisterRequest {
        ek_fingerprint: fp(),
        ek_cert_pem: None,
        ek_public: None,
        ek_source: EkSource::Pub,
        hw_uuid: None,
        hw_mac: None,
        hw_serial: None,
        hw_product: None,
        desired_role: None,
        cluster_id: s("default"),
        ak_public: None,
        agent_nonce: None,
    }
}

pub fn register_response() -> RegisterResponse {
    RegisterResponse {
        machine_id: full('i'),
        role: Some(Role::Controlplane),
        status: Status::Registered,
        iso_url: Some(full('a')),
        config_token: Some(full('t')),
        config_url: Some(full('b')),
        credential: Some(CredentialChallenge {
            credential_blob: blob(MAX_CREDENTIAL_BLOB),
            encrypted_secret: blob(MAX_ENCRYPTED_SECRET),
        }),
        signature: Some(NonceSignature([0x11; 96])),
    }
}

pub fn pcr_value(i: u8) -> PcrValue {
    PcrValue {
        hash_alg: HashAlg::Sha512,
        index: i,
        value: HexVec(Vec::from_slice(&[i; 64]).unwrap()),
    }
}

pub fn attest_request() -> AttestRequest {
    AttestRequest {
        ek_fingerprint: fp(),
        nonce_id: full('n'),
        agent_nonce: Hex([7; 32]),
        quote: blob(MAX_QUOTE),
        signature: blob(MAX_TPMT_SIGNATURE),
        pcr_values: (0..MAX_PCR_VALUES as u8).map(pcr_value).collect(),
        activation_proof: Some(Hex([9; 48])),
        ak_public: Some(Blob::from_slice(&[0x5a; 640]).unwrap()),
        config_applied: Some(Hex([0xa9; 48])),
        wipe_done: false,
    }
}

pub fn challenge_response() -> ChallengeResponse {
    ChallengeResponse {
        nonce_id: full('n'),
        nonce: Hex([1; 32]),
        expires_at: Timestamp(1_795_332_600),
        pcr_selection: (0..4)
            .map(|_| PcrBank {
                hash_alg: HashAlg::Sha384,
                pcrs: (0..24).collect(),
            })
            .collect(),
        hash_alg: HashAlg::Sha384,
    }
}

pub fn attest_response() -> AttestResponse {
    AttestResponse {
        machine_id: full('i'),
        status: Status::Attested,
        action: Action::ApplyConfig,
        config_url: Some(full('u')),
        config_sha384: Some(Hex([0xc5; 48])),
        seconds_to_next_attestation: u32::MAX,
        signature: NonceSignature([0x42; 96]),
    }
}

pub fn enroll_request() -> EnrollRequest {
    EnrollRequest {
        cert_pem: cert(),
        nonce_id: full('n'),
        signature: NonceSignature([3; 96]),
    }
}

pub fn receipt() -> TpmReceipt {
    TpmReceipt {
        format: TpmReceipt::FORMAT,
        identity: register_max(),
        agent_version: full('v'),
        created_at: Timestamp(0),
    }
}
