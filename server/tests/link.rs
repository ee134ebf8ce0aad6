//! The firmware path without QEMU: the firmware's own TPM client on swtpm, the serial
//! framing, the `attest-agent relay` binary, and the server's `/api/v1/link`: register,
//! activate the credential, approve, challenge, quote, attest, all in postcard frames.

mod support;

#[path = "../../firmware/tests/support/swtpm_tcp.rs"]
mod swtpm_tcp;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use attest_common::frame::{Deframer, encode, max_encoded_len};
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::{Domain, verify, verifying_key_from_spki};
use attest_common::tpm::hash::{HashAlg as TpmHash, hmac};
use attest_common::wire::{
    AttestRequest, Blob, CertificateDer, ChallengeRequest, HashAlg, Hex, HexVec, LinkRequest,
    LinkRequestBody, LinkResponse, LinkResponseBody, PcrValue, RegisterRequest, from_postcard,
};
use attest_firmware::tpm::{EkType, MAX_EK_CERT, PcrBank, Tpm};
use attest_swtpm::Swtpm;
use base64ct::Encoding as _;
use support::{ADMIN, Server, agent_bin};
use swtpm_tcp::SwtpmTcp;

/// The firmware's end of the serial line.
struct Line {
    stream: TcpStream,
    deframer: Box<Deframer<8192>>,
    seq: u32,
}

impl Line {
    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn call(&mut self, body: LinkRequestBody) -> LinkResponseBody {
        self.seq += 1;
        let bytes = postcard::to_allocvec(&LinkRequest {
            seq: self.seq,
            body,
        })
        .unwrap();
        let mut out = vec![0u8; max_encoded_len(bytes.len())];
        let n = encode(&bytes, &mut out).unwrap();
        self.send_raw(&out[..n]);
        let mut b = [0u8; 1];
        loop {
            self.stream.read_exact(&mut b).unwrap();
            if let Some(frame) = self.deframer.push(b[0]) {
                let r: LinkResponse = from_postcard(frame.unwrap()).unwrap();
                assert_eq!(r.seq, self.seq, "answers pair with requests");
                return r.body;
            }
        }
    }
}

#[test]
fn firmware_tpm_client_over_the_relay_registers_and_attests() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    // The serial line as QEMU offers it (-serial tcp:...,server=on); the relay connects.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = Command::new(agent_bin())
        .env_clear()
        .args(["relay", "--server", &server.url, "--serial"])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut line = Line {
        stream,
        deframer: Box::new(Deframer::new()),
        seq: 0,
    };
    // Line noise first: dropped, the link carries on.
    line.send_raw(&[0x13, 0x37, 0x42, 0x00]);

    let mut tpm = Tpm::new(SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap());
    tpm.ensure_started().unwrap();
    let mut cert = [0u8; MAX_EK_CERT];
    let len = tpm.ek_cert(EkType::EccP384, &mut cert).unwrap().unwrap();
    let cert = &cert[..len];
    let fp = attest_common::ek_fingerprint(cert).unwrap().fingerprint;
    let ek = tpm.create_ek(EkType::EccP384).unwrap();
    let ak = tpm.create_ak().unwrap();
    let register = RegisterRequest {
        ek_fingerprint: fp,
        ek_cert_pem: Some(CertificateDer::from_der(cert).unwrap()),
        ek_public: None,
        ek_source: attest_common::EkSource::Cert,
        hw_uuid: None,
        hw_mac: None,
        hw_serial: None,
        hw_product: None,
        desired_role: None,
        cluster_id: heapless::String::try_from("default").unwrap(),
        ak_public: Some(Blob::from_slice(&ak.public).unwrap()),
    };
    let LinkResponseBody::Register(reg) = line.call(LinkRequestBody::Register(register.clone()))
    else {
        panic!("not a register answer")
    };
    assert!(
        matches!(reg.status, Status::PendingApproval | Status::Registered),
        "{reg:?}"
    );
    let id = reg.machine_id.to_string();
    let cred = reg.credential.expect("a credential for the AK");
    let secret = tpm
        .activate_credential(
            &ak,
            &ek,
            EkType::EccP384,
            &cred.credential_blob,
            &cred.encrypted_secret,
        )
        .unwrap();

    // An error travels inside the envelope with the JSON API's status.
    let mut bad = register.clone();
    let mut other = fp.to_string().into_bytes();
    other[0] = if other[0] == b'a' { b'b' } else { b'a' };
    bad.ek_fingerprint = std::str::from_utf8(&other).unwrap().parse().unwrap();
    match line.call(LinkRequestBody::Register(bad)) {
        LinkResponseBody::Error { status, body } => {
            assert_eq!((status, body.error.as_str()), (422, "fingerprint_mismatch"))
        }
        other => panic!("{other:?}"),
    }

    let (s, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(r#"{"role":"worker-app","hostname":"fw-1","assigned_ip":"10.0.9.1/24"}"#),
    );
    assert_eq!(s, 200, "{m}");

    let LinkResponseBody::Challenge(ch) =
        line.call(LinkRequestBody::Challenge(ChallengeRequest::default()))
    else {
        panic!("not a challenge answer")
    };
    let banks: Vec<PcrBank> = ch
        .pcr_selection
        .iter()
        .map(|b| PcrBank {
            hash_alg: match b.hash_alg {
                HashAlg::Sha256 => 0x000b,
                HashAlg::Sha384 => 0x000c,
                other => panic!("{other:?}"),
            },
            mask: b.pcrs.iter().fold(0, |m, &i| m | 1 << i),
        })
        .collect();
    let pcrs = tpm.pcr_read::<24>(&banks).unwrap();
    let quote = tpm.quote(&ak, &ch.nonce.0, &banks).unwrap();
    let proof = hmac(TpmHash::Sha384, &secret, &[&ch.nonce.0]).unwrap();
    let agent_nonce = [0x33u8; 32];
    let attest = AttestRequest {
        ek_fingerprint: fp,
        nonce_id: ch.nonce_id.clone(),
        agent_nonce: Hex(agent_nonce),
        quote: Blob::from_slice(&quote.attest).unwrap(),
        signature: Blob::from_slice(&quote.signature).unwrap(),
        pcr_values: pcrs
            .iter()
            .map(|p| PcrValue {
                hash_alg: if p.hash_alg == 0x000c {
                    HashAlg::Sha384
                } else {
                    HashAlg::Sha256
                },
                index: p.index,
                value: HexVec(heapless::Vec::from_slice(&p.value).unwrap()),
            })
            .collect(),
        activation_proof: Some(Hex(proof.as_slice().try_into().unwrap())),
    };
    let LinkResponseBody::Attest(answer) = line.call(LinkRequestBody::Attest(attest)) else {
        panic!("not an attest answer")
    };
    assert_eq!(
        (answer.status, answer.action),
        (Status::Attested, Action::ApplyConfig)
    );
    let (_, key) = server.call("GET", "/api/v1/server-key", None, None);
    let spki = base64ct::Base64::decode_vec(key["public_key_der"].as_str().unwrap()).unwrap();
    let key = verifying_key_from_spki(&spki).unwrap();
    verify(
        &key,
        Domain::Action,
        &agent_nonce,
        &answer.signed_context(),
        &answer.signature,
    )
    .expect("the answer is signed over the firmware's nonce");
    let (_, detail) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(detail["status"], "attested", "{detail}");

    // The line closes: the relay reports what it did and exits.
    drop(line);
    let out = relay.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "frames=4\ndropped=1\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropped a frame from the line"));
}
