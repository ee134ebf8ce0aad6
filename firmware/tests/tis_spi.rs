//! The TIS FIFO driver and TIS over SPI, exercised against a simulated TPM front end whose
//! commands execute in a real swtpm: the microcontroller path runs the same client code as
//! the image, through the wait-state protocol, burst by burst.

#[path = "support/swtpm_tcp.rs"]
mod swtpm_tcp;
#[path = "support/tis_model.rs"]
mod tis_model;

use attest_common::tpm::credential::{EkKey, OsEntropy, make_credential};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::verify_quote;
use attest_common::wire::{HashAlg, HexVec, PcrValue};
use attest_firmware::tpm::spi::TisSpi;
use attest_firmware::tpm::tis::{Timeouts, Tis};
use attest_firmware::tpm::transport::TransportError;
use attest_firmware::tpm::{EkType, MAX_EK_CERT, PcrBank, Tpm, TpmError, TpmTransport};
use attest_swtpm::Swtpm;
use swtpm_tcp::SwtpmTcp;
use tis_model::{CountingDelay, SpiTpm, TisModel, wire};

/// Zero to three wait states, varying from transfer to transfer.
fn some_wait_states(n: u32) -> u32 {
    (n.wrapping_mul(2_654_435_761) >> 7) % 4
}

/// The full firmware sequence over any transport: EK certificate, EK, AK, credential
/// activation, PCR read and a quote that verifies.
fn full_sequence<T: TpmTransport>(tpm: &mut Tpm<T>, tools_cert: &[u8]) {
    tpm.ensure_started().unwrap();
    let mut buf = [0u8; MAX_EK_CERT];
    let len = tpm.ek_cert(EkType::EccP384, &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..len], tools_cert, "the certificate arrives intact");

    let ek = tpm.create_ek(EkType::EccP384).unwrap();
    let ak = tpm.create_ak().unwrap();
    let spki = attest_common::der::parse_certificate(&buf[..len])
        .unwrap()
        .spki
        .to_vec();
    let secret = [0x5au8; 32];
    let cred = make_credential(
        &EkKey::from_spki(&spki).unwrap(),
        &ak.name,
        &secret,
        &mut OsEntropy,
    )
    .unwrap();
    let got = tpm
        .activate_credential(
            &ak,
            &ek,
            EkType::EccP384,
            &cred.credential_blob,
            &cred.encrypted_secret,
        )
        .unwrap();
    assert_eq!(got.as_slice(), secret);

    let banks = [PcrBank {
        hash_alg: 0x000c,
        mask: 0xff,
    }];
    let pcrs: Vec<PcrValue> = tpm
        .pcr_read::<8>(&banks)
        .unwrap()
        .iter()
        .map(|p| PcrValue {
            hash_alg: HashAlg::Sha384,
            index: p.index,
            value: HexVec(heapless::Vec::from_slice(&p.value).unwrap()),
        })
        .collect();
    let nonce = [0x11u8; 32];
    let q = tpm.quote(&ak, &nonce, &banks).unwrap();
    verify_quote(
        attest_common::crypto::default_provider(),
        &TpmPublic::from_tpm2b(&ak.public).unwrap(),
        &q.attest,
        &q.signature,
        &nonce,
        &pcrs,
    )
    .expect("the quote verifies");
    tpm.flush(ak.handle).unwrap();
    tpm.flush(ek.handle).unwrap();
}

#[test]
fn tis_over_spi_with_wait_states_runs_the_whole_firmware_sequence_on_swtpm() {
    let swtpm = Swtpm::start();
    let cert = swtpm.ek_cert_der(EkType::EccP384.cert_nv_index());
    let backend = SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap();
    // A small burstCount, so commands and responses span many bursts and SPI transfers.
    let slave = SpiTpm::new(TisModel::new(backend, 48), some_wait_states);
    let (slave, bus, cs) = wire(slave);
    let mut tpm = Tpm::new(Tis::new(TisSpi::new(bus, cs), CountingDelay::default()));
    full_sequence(&mut tpm, &cert);

    let (spi, _) = tpm.into_transport().into_parts();
    let slave = slave.borrow();
    assert!(
        slave.model.violations.is_empty(),
        "{:?}",
        slave.model.violations
    );
    assert!(slave.model.commands >= 10, "{}", slave.model.commands);
    assert!(
        slave.wait_states_inserted > 100,
        "wait states exercised: {}",
        slave.wait_states_inserted
    );
    assert_eq!(spi.wait_states, slave.wait_states_inserted);
}

#[test]
fn tis_fifo_driver_runs_the_whole_sequence_over_register_access() {
    let swtpm = Swtpm::start();
    let cert = swtpm.ek_cert_der(EkType::EccP384.cert_nv_index());
    let backend = SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap();
    let mut tpm = Tpm::new(Tis::new(
        TisModel::new(backend, 100),
        CountingDelay::default(),
    ));
    full_sequence(&mut tpm, &cert);
    let (model, _) = tpm.into_transport().into_parts();
    assert!(model.violations.is_empty(), "{:?}", model.violations);
}

#[test]
fn a_tpm_that_holds_the_bus_in_wait_states_fails_with_a_timeout() {
    let swtpm = Swtpm::start();
    let backend = SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap();
    let slave = SpiTpm::new(TisModel::new(backend, 48), |_| u32::MAX);
    let (_slave, bus, cs) = wire(slave);
    let mut tpm = Tpm::new(Tis::new(TisSpi::new(bus, cs), CountingDelay::default()));
    assert!(matches!(
        tpm.manufacturer(),
        Err(TpmError::Transport(TransportError::Timeout))
    ));
}

#[test]
fn a_tpm_that_never_becomes_ready_fails_with_a_timeout_within_its_budget() {
    let swtpm = Swtpm::start();
    let backend = SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap();
    let mut model = TisModel::new(backend, 48);
    model.stuck = true;
    let timeouts = Timeouts {
        ready_us: 5_000,
        ..Timeouts::default()
    };
    let mut tpm = Tpm::new(Tis::new(model, CountingDelay::default()).with_timeouts(timeouts));
    assert!(matches!(
        tpm.manufacturer(),
        Err(TpmError::Transport(TransportError::Timeout))
    ));
    let (model, delay) = tpm.into_transport().into_parts();
    assert_eq!(model.commands, 0);
    // Waited the budget (in the driver's own time), not forever and not zero.
    assert!((5_000_000..6_000_000).contains(&delay.0), "{} ns", delay.0);
}
