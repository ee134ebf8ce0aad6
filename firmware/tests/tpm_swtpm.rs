//! The firmware's TPM client against a real swtpm over its TCP command port: the code that
//! runs over TIS in the image, checked against what the server and tpm2-tools expect.

use attest_common::tpm::credential::{EkKey, OsEntropy, make_credential};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::verify_quote;
use attest_common::wire::{HashAlg, HexVec, PcrValue};
use attest_firmware::tpm::{EkType, MAX_EK_CERT, PcrBank, Tpm, TpmError};
use attest_swtpm::Swtpm;

#[path = "support/swtpm_tcp.rs"]
mod swtpm_tcp;
use swtpm_tcp::SwtpmTcp;

const SHA384: u16 = 0x000c;
const SHA256: u16 = 0x000b;

fn client(tpm: &Swtpm) -> Tpm<SwtpmTcp> {
    Tpm::new(SwtpmTcp::from_tcti(&tpm.tcti()).expect("connect to swtpm"))
}

fn spki_of_cert(der: &[u8]) -> Vec<u8> {
    attest_common::der::parse_certificate(der)
        .unwrap()
        .spki
        .to_vec()
}

#[test]
fn ek_certificates_equal_what_tpm2_tools_reads_and_the_ek_is_the_certified_key() {
    let swtpm = Swtpm::start();
    // swtpm serves one connection at a time: tpm2-tools first, then our client.
    let tools: Vec<Vec<u8>> = EkType::PREFERENCE
        .iter()
        .map(|t| swtpm.ek_cert_der(t.cert_nv_index()))
        .collect();
    let mut tpm = client(&swtpm);
    assert!(
        !tpm.ensure_started().unwrap(),
        "swtpm runs with startup-clear"
    );
    assert_eq!(&tpm.manufacturer().unwrap().to_be_bytes(), b"IBM\0");
    for (ek_type, tools) in EkType::PREFERENCE.into_iter().zip(tools) {
        let mut buf = [0u8; MAX_EK_CERT];
        let len = tpm
            .ek_cert(ek_type, &mut buf)
            .unwrap()
            .expect("swtpm has both EK certs");
        let ours = &buf[..len];
        assert_eq!(ours, tools, "{ek_type:?}");

        // MakeCredential for the certificate's key and our AK's Name: only the EK we
        // recreated from the template can activate it, so it is the certified key.
        let ek = tpm.create_ek(ek_type).unwrap();
        let ak = tpm.create_ak().unwrap();
        let ak_public = TpmPublic::from_tpm2b(&ak.public).unwrap();
        assert!(ak_public.is_restricted_signing());
        assert_eq!(
            ak_public.name.as_slice(),
            ak.name.as_slice(),
            "our Name is the TPM's"
        );
        let ek_key = EkKey::from_spki(&spki_of_cert(ours)).unwrap();
        let secret = [0x42u8; 32];
        let cred = make_credential(&ek_key, &ak.name, &secret, &mut OsEntropy).unwrap();
        let got = tpm
            .activate_credential(
                &ak,
                &ek,
                ek_type,
                &cred.credential_blob,
                &cred.encrypted_secret,
            )
            .unwrap_or_else(|e| panic!("{ek_type:?}: {e}"));
        assert_eq!(got.as_slice(), secret, "{ek_type:?}");

        // Bound to the AK's Name: a credential for another name is refused by the TPM.
        let mut other_name = ak.name.clone();
        *other_name.last_mut().unwrap() ^= 1;
        let cred = make_credential(&ek_key, &other_name, &secret, &mut OsEntropy).unwrap();
        let refused = tpm.activate_credential(
            &ak,
            &ek,
            ek_type,
            &cred.credential_blob,
            &cred.encrypted_secret,
        );
        assert!(
            matches!(refused, Err(TpmError::Response { .. })),
            "{refused:?}"
        );
        tpm.flush(ak.handle).unwrap();
        tpm.flush(ek.handle).unwrap();
    }
    // A missing index is "none", not an error.
    assert_eq!(tpm.nv_size(0x01c0_000a).unwrap(), None);
}

#[test]
fn the_ak_is_the_same_key_at_every_boot() {
    let swtpm = Swtpm::start();
    let first = {
        let mut tpm = client(&swtpm);
        let ak = tpm.create_ak().unwrap();
        tpm.flush(ak.handle).unwrap();
        ak
    };
    let mut tpm = client(&swtpm);
    let again = tpm.create_ak().unwrap();
    assert_eq!(first.public, again.public);
    assert_eq!(first.name, again.name);
}

#[test]
fn quotes_verify_with_common_and_see_pcr_changes() {
    let swtpm = Swtpm::start();
    let mut tpm = client(&swtpm);
    let ak = tpm.create_ak().unwrap();
    let ak_public = TpmPublic::from_tpm2b(&ak.public).unwrap();
    // 8 + 8 + 2 PCRs: more than one PCR_Read answer holds.
    let banks = [
        PcrBank {
            hash_alg: SHA384,
            mask: 0xff,
        },
        PcrBank {
            hash_alg: SHA256,
            mask: 0xff | 1 << 16 | 1 << 23,
        },
    ];
    let values = |tpm: &mut Tpm<SwtpmTcp>| -> Vec<PcrValue> {
        let read = tpm.pcr_read::<24>(&banks).unwrap();
        read.iter()
            .map(|p| PcrValue {
                hash_alg: if p.hash_alg == SHA384 {
                    HashAlg::Sha384
                } else {
                    HashAlg::Sha256
                },
                index: p.index,
                value: HexVec(heapless::Vec::from_slice(&p.value).unwrap()),
            })
            .collect()
    };
    let before = values(&mut tpm);
    assert_eq!(before.len(), 18);
    let nonce = [7u8; 32];
    let q = tpm.quote(&ak, &nonce, &banks).unwrap();
    let provider = attest_common::crypto::default_provider();
    verify_quote(
        provider,
        &ak_public,
        &q.attest,
        &q.signature,
        &nonce,
        &before,
    )
    .expect("our quote verifies with common");
    assert!(
        verify_quote(
            provider,
            &ak_public,
            &q.attest,
            &q.signature,
            &[8; 32],
            &before
        )
        .is_err()
    );

    // Extend PCR 7 with tpm2-tools: the old values no longer match a new quote.
    tpm.flush(ak.handle).unwrap();
    drop(tpm);
    swtpm.tpm2(
        "tpm2_pcrextend",
        &[&format!("7:sha384={}", "ab".repeat(48))],
    );
    let mut tpm = client(&swtpm);
    let ak = tpm.create_ak().unwrap();
    let after = values(&mut tpm);
    assert_ne!(before, after);
    let q = tpm.quote(&ak, &nonce, &banks).unwrap();
    assert!(
        verify_quote(
            provider,
            &ak_public,
            &q.attest,
            &q.signature,
            &nonce,
            &before
        )
        .is_err()
    );
    verify_quote(
        provider,
        &ak_public,
        &q.attest,
        &q.signature,
        &nonce,
        &after,
    )
    .unwrap();
    tpm.flush(ak.handle).unwrap();
}

/// Issue 25: a line that never stops talking (noise, never an answer) cannot keep the agent
/// waiting: each wait is bounded by the bytes heard as well as by silence, so the boot ends
/// after its resends.
#[test]
fn a_chattering_line_ends_the_boot() {
    use attest_firmware::agent::{ATTEMPTS, Agent, AgentError, Mode, Outcome};
    use attest_firmware::run::{Link, LinkError, MAX_BYTES_PER_WAIT, Platform, boot};

    /// Sends into the void; every read returns a full buffer of bytes that never make a frame
    /// (no 0x00 delimiter).
    struct Chatter {
        sends: usize,
        reads: usize,
        x: u32,
    }
    impl Link for Chatter {
        fn send(&mut self, _: &[u8]) -> Result<(), LinkError> {
            self.sends += 1;
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
            self.reads += 1;
            assert!(self.reads < 100_000, "the agent keeps listening to noise");
            for b in buf.iter_mut() {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 17;
                self.x ^= self.x << 5;
                *b = (self.x % 255) as u8 + 1;
            }
            Ok(buf.len())
        }
    }

    let swtpm = Swtpm::start();
    let mut tpm = client(&swtpm);
    let mut link = Chatter {
        sends: 0,
        reads: 0,
        x: 0x9e37_79b9,
    };
    let mut agent = Box::new(Agent::idle());
    let outcome = boot(
        &mut agent,
        &mut tpm,
        &mut link,
        Mode::Receipt,
        &Platform::default(),
        None,
    );
    assert_eq!(outcome, Outcome::Failed(AgentError::NoAnswer));
    assert_eq!(
        link.sends,
        usize::from(ATTEMPTS),
        "sent, then resent, then gave up"
    );
    let per_wait = MAX_BYTES_PER_WAIT / 256 + 1;
    assert!(
        link.reads <= usize::from(ATTEMPTS) * per_wait,
        "{} reads for {} waits of at most {per_wait}",
        link.reads,
        ATTEMPTS
    );
}
