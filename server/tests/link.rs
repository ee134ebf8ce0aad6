//! The firmware path without QEMU: the firmware's own TPM client on swtpm, the serial
//! framing, the `attest-agent relay` binary, and the server's `/api/v1/link`: register,
//! activate the credential, approve, challenge, quote, attest, all in postcard frames.

/// Not in `support` itself: the CLI's tests share it, without the firmware.
#[path = "support/firmware.rs"]
mod firmware;
mod support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use attest_common::frame::{Deframer, encode, max_encoded_len};
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::{Domain, verify, verifying_key_from_spki};
use attest_common::tpm::hash::{HashAlg as TpmHash, hmac};
use attest_common::wire::{
    AttestRequest, Blob, ChallengeRequest, HashAlg, Hex, HexVec, LinkRequest, LinkRequestBody,
    LinkResponse, LinkResponseBody, PcrValue, from_postcard,
};
use attest_firmware::tpm::{EkType, MAX_EK_CERT, PcrBank, Tpm};
use attest_swtpm::Swtpm;
use firmware::swtpm_tcp::SwtpmTcp;
use firmware::{boot, server_key};
use support::{ADMIN, Server, agent_bin};

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
    let server = support::start_with_configs(dir.path(), &[]);
    // The serial line as QEMU offers it (-serial tcp:...,server=on); the relay connects.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = Command::new(agent_bin())
        .env_clear()
        // The test server speaks plain HTTP on loopback.
        .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
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
    let register = support::register_request(fp, cert, &ak.public);
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

    server.admin(
        &id,
        "approve",
        r#"{"role":"worker-app","hostname":"fw-1","assigned_ip":"10.0.9.1/24"}"#,
    );

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
    let proof = hmac(TpmHash::Sha384, &secret, &[&ch.nonce.0]).unwrap();
    let agent_nonce = [0x33u8; 32];
    // Quoted over the binding of both nonces and the request's claims (DESIGN §3.7).
    let claims = attest_common::binding::claims(&fp, &ch.nonce_id, None, false);
    let qualifying = attest_common::binding::qualifying_data(&ch.nonce.0, &agent_nonce, &claims);
    let quote = tpm.quote(&ak, &qualifying, &banks).unwrap();
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
        ak_public: None,
        config_applied: None,
        wipe_done: false,
    };
    let LinkResponseBody::Attest(answer) = line.call(LinkRequestBody::Attest(attest.clone()))
    else {
        panic!("not an attest answer")
    };
    assert_eq!(
        (answer.status, answer.action),
        (Status::Attested, Action::ApplyConfig)
    );
    let key = verifying_key_from_spki(&server_key(&server)).unwrap();
    verify(
        &key,
        Domain::Action,
        &agent_nonce,
        &answer.signed_context_for(&attest),
        &answer.signature,
    )
    .expect("the answer is signed over the firmware's nonce and its request");
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
    assert!(
        stdout.starts_with("frames=4\ndropped=1\nfirst_frame_ms="),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropped a frame from the line"));
}

#[test]
fn firmware_agent_registers_attests_is_locked_and_wiped_through_the_relay() {
    use attest_firmware::agent::{AgentError, Mode, Outcome};
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = support::start_with_configs(dir.path(), &[]);
    let key = server_key(&server);
    let relay = ["--server", server.url.as_str()];

    // Register mode: the USB stick's boot.
    let (outcome, _) = boot(&swtpm, &relay, Mode::Register, Some(&key));
    let Outcome::Registered {
        machine_id, status, ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(*status, Status::Registered);
    let id = machine_id.to_string();
    let (_, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(m["hw_serial"], "SN-FW-1", "{m}");

    // Approved: attest mode activates the credential, quotes, and gets apply-config.
    server.admin(
        &id,
        "approve",
        r#"{"role":"worker-app","hostname":"fw-2","assigned_ip":"10.0.9.2/24"}"#,
    );
    let (outcome, stdout) = boot(&swtpm, &relay, Mode::Attest, Some(&key));
    assert!(
        matches!(
            &outcome,
            Outcome::Attested {
                status: Status::Attested,
                action: Action::ApplyConfig,
                config_url: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 0);
    // self-register, challenge, attest
    assert!(stdout.starts_with("frames=3\n"), "{stdout}");
    // What installs the node fetches the config once and checks it against the signed
    // digest the firmware reported.
    let Outcome::Attested {
        config_url: Some(url),
        config_sha384: Some(digest),
        ..
    } = &outcome
    else {
        unreachable!()
    };
    let (status, yaml) = server.call_text("GET", url.trim_start_matches(&server.url), None, None);
    assert_eq!(status, 200);
    let got = attest_common::tpm::hash::digest(TpmHash::Sha384, &[yaml.as_bytes()]).unwrap();
    assert_eq!(got.as_slice(), &digest[..]);

    // The next boot: still attested, and offered the same config again (a new URL, the
    // same digest): the firmware installs nothing itself, and until the installed system's
    // agent reports it applied (`config_applied`), the server keeps offering it.
    let (again, _) = boot(&swtpm, &relay, Mode::Attest, Some(&key));
    let Outcome::Attested {
        status: Status::Attested,
        action: Action::ApplyConfig,
        config_url: Some(url_again),
        config_sha384: Some(digest_again),
        ..
    } = &again
    else {
        panic!("{again:?}")
    };
    assert_ne!(url_again, url);
    assert_eq!(digest_again, digest);

    // A key that is not the server's: the answer is refused, whatever it says.
    let other = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
    let other = attest_common::nonce::verifying_key_to_spki(other.verifying_key());
    let (outcome, _) = boot(&swtpm, &relay, Mode::Attest, Some(&other));
    assert_eq!(outcome, Outcome::Failed(AgentError::BadSignature));
    assert_eq!(outcome.exit_code(), 1);
    // Attest mode without a pinned key does not even start.
    let (outcome, stdout) = boot(&swtpm, &relay, Mode::Attest, None);
    assert_eq!(outcome, Outcome::Failed(AgentError::NoServerKey));
    assert!(stdout.starts_with("frames=0\n"), "{stdout}");

    server.admin(&id, "lock", r#"{"reason":"test"}"#);
    let (outcome, _) = boot(&swtpm, &relay, Mode::Attest, Some(&key));
    assert!(
        matches!(
            &outcome,
            Outcome::Attested {
                action: Action::Lock,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 3);

    server.admin(&id, "revoke", r#"{"reason":"stolen","wipe":true}"#);
    let (outcome, _) = boot(&swtpm, &relay, Mode::Attest, Some(&key));
    assert!(
        matches!(
            &outcome,
            Outcome::Attested {
                status: Status::Revoked,
                action: Action::Wipe,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 4);
    // The wipe is said again at every boot until a wipe is confirmed (the firmware hands
    // it to its platform and confirms nothing: a machine that comes back is told again).
    let (outcome, _) = boot(&swtpm, &relay, Mode::Attest, Some(&key));
    assert!(
        matches!(
            &outcome,
            Outcome::Attested {
                status: Status::Revoked,
                action: Action::Wipe,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 4);
}

#[test]
fn firmware_receipt_mode_writes_a_receipt_the_server_imports() {
    use attest_firmware::agent::{Mode, Outcome};
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("receipt.json");
    // No server at all: the relay only keeps receipts.
    let (outcome, stdout) = boot(
        &swtpm,
        &["--receipt-out", out.to_str().unwrap()],
        Mode::Receipt,
        None,
    );
    assert_eq!(outcome, Outcome::ReceiptSaved);
    assert!(stdout.contains("receipts=1\n"), "{stdout}");
    let receipt = std::fs::read_to_string(&out).unwrap();

    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (s, m) = server.call(
        "POST",
        "/api/v1/machines/import",
        Some(ADMIN),
        Some(&receipt),
    );
    assert!(s == 200 || s == 201, "{s} {m}");
    assert_eq!(m["status"], "registered", "{m}");
    let r: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    assert_eq!(m["ek_fingerprint"], r["identity"]["ek_fingerprint"], "{m}");
    let dated = r["created_at"].as_str().unwrap();
    assert!(!dated.starts_with("1970"), "dated by the relay: {dated}");

    // A register request to a relay without a server is answered, not left hanging.
    let key = p384::ecdsa::SigningKey::from_slice(&[7; 48]).unwrap();
    let spki = attest_common::nonce::verifying_key_to_spki(key.verifying_key());
    let (outcome, _) = boot(
        &swtpm,
        &["--receipt-out", out.to_str().unwrap()],
        Mode::Register,
        Some(&spki),
    );
    assert!(
        matches!(&outcome, Outcome::Refused { status: 400, code } if code == "no_server"),
        "{outcome:?}"
    );
}
