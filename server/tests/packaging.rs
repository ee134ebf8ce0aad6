//! The service packaging (issue 22): the systemd units of the server
//! (`server/deploy/itl-attestation.service`, named as the service it replaces) and of the host
//! agent (`host-agent/deploy/attest-agent.service`) pass `systemd-analyze verify` with no
//! complaint (the binaries' paths pointed at the ones just built).

mod support;

use std::path::Path;
use std::process::Command;

fn verify(unit: &Path, binary: &str, built: &Path) {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: run ./ci/setup.sh (installs systemd)"
    );
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    let installed = format!("/usr/local/bin/{binary}");
    assert!(
        text.contains(&installed),
        "{}: no {installed}",
        unit.display()
    );
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&copy, text.replace(&installed, built.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {said}", unit.display());
    // Unknown keys and other mistakes are warnings, not failures: none is allowed.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains(copy.to_str().unwrap()))
        .collect();
    assert!(ours.is_empty(), "{}: {ours:#?}", unit.display());
}

#[test]
fn the_systemd_units_verify() {
    let repo = support::repo_dir();
    verify(
        &repo.join("server/deploy/itl-attestation.service"),
        "attestation-server",
        &support::server_bin(),
    );
    verify(
        &repo.join("host-agent/deploy/attest-agent.service"),
        "attest-agent",
        &support::agent_bin(),
    );
}
