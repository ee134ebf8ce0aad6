//! The test bed's power cycle and state rollback do what the attestation tests rely on:
//! a power cycle is a TPM Reset (resetCount up), a restored snapshot brings the counters
//! back.

use attest_swtpm::Swtpm;

fn reset_count(tpm: &Swtpm) -> u64 {
    let out = String::from_utf8(tpm.tpm2("tpm2_readclock", &[])).unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("reset_count:"))
        .unwrap_or_else(|| panic!("no reset_count in {out}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn power_cycles_count_and_snapshots_roll_back() {
    let mut tpm = Swtpm::start();
    let first = reset_count(&tpm);
    let snapshot = tempfile::tempdir().unwrap();
    tpm.save_state(&snapshot.path().join("state"));
    let saved = reset_count(&tpm);
    assert!(saved > first, "{first} → {saved}");
    tpm.power_cycle();
    tpm.power_cycle();
    let later = reset_count(&tpm);
    assert_eq!(later, saved + 2);
    tpm.restore_state(&snapshot.path().join("state"));
    let restored = reset_count(&tpm);
    assert!(restored < later, "{later} → {restored}");
}
