//! Every TPM response parser of the client, fed random and mutated answers: an error,
//! never a panic (a TPM on a bus is as untrusted as a network peer).

use attest_firmware::tpm::transport::{TpmTransport, TransportError};
use attest_firmware::tpm::{EkType, Handle, Key, MAX_EK_CERT, PcrBank, Tpm};
use proptest::prelude::*;

/// Answers every command with the next of `answers` (then with the last one).
struct Scripted {
    answers: Vec<Vec<u8>>,
    next: usize,
}

impl TpmTransport for Scripted {
    fn transmit(&mut self, _command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        let a = &self.answers[self.next.min(self.answers.len() - 1)];
        self.next += 1;
        if a.len() > response.len() {
            return Err(TransportError::ResponseTooLarge { needed: a.len() });
        }
        response[..a.len()].copy_from_slice(a);
        Ok(a.len())
    }
}

/// A success header (with or without sessions) around `body`.
fn framed(sessions: bool, body: &[u8]) -> Vec<u8> {
    let mut f = if sessions {
        vec![0x80, 0x02]
    } else {
        vec![0x80, 0x01]
    };
    f.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(body);
    f
}

fn key() -> Key {
    Key {
        handle: Handle(0x8000_0000),
        public: heapless::Vec::new(),
        name: heapless::Vec::new(),
    }
}

fn run_all(answers: Vec<Vec<u8>>) {
    let mut tpm = Tpm::new(Scripted { answers, next: 0 });
    let _ = tpm.ensure_started();
    let _ = tpm.manufacturer();
    let _ = tpm.nv_size(0x01c0_0016);
    let mut buf = [0u8; MAX_EK_CERT];
    let _ = tpm.ek_cert(EkType::EccP384, &mut buf);
    let _ = tpm.nv_read(0x01c0_0002, &mut buf[..700]);
    let _ = tpm.create_ek(EkType::Rsa2048);
    let _ = tpm.create_ak();
    let _ = tpm.activate_credential(&key(), &key(), EkType::EccP384, &[0, 2, 1, 2], &[0, 1, 9]);
    let banks = [PcrBank {
        hash_alg: 0x000c,
        mask: 0xff,
    }];
    let _ = tpm.pcr_read::<24>(&banks);
    let _ = tpm.quote(&key(), &[1; 32], &banks);
    let _ = tpm.flush(Handle(0x8000_0001));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_answers_never_panic(answers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..8)) {
        run_all(answers);
    }

    #[test]
    fn random_bodies_in_valid_headers_never_panic(
        bodies in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..600)), 1..8)
    ) {
        run_all(bodies.into_iter().map(|(s, b)| framed(s, &b)).collect());
    }

    #[test]
    fn oversized_and_lying_size_fields_never_panic(size in any::<u32>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut f = vec![0x80, 0x01];
        f.extend_from_slice(&size.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&tail);
        run_all(vec![f]);
    }
}

#[test]
fn an_error_code_is_reported_with_the_command() {
    let mut tpm = Tpm::new(Scripted {
        answers: vec![vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x01]],
        next: 0,
    });
    let e = tpm.create_ak().unwrap_err();
    assert_eq!(
        e,
        attest_firmware::tpm::TpmError::Response {
            cc: 0x131,
            rc: 0x901
        }
    );
}
