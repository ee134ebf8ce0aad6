//! EK identity to the letter of DESIGN.md §3.1: one EK key is one machine, whatever encoding
//! brings it. Against the real server binary, with swtpm's EK certificates: a re-encoded
//! certificate (non-minimal length, bytes after the signature) is refused with the offset
//! named; the same EK key under another fingerprint (its bare public key) is refused while
//! its machine is attested, locked or revoked; the honest machine keeps attesting.

mod support;

use attest_swtpm::Swtpm;
use base64ct::Encoding as _;
use serde_json::{Value, json};
use support::agent::{agent, approve, machine};
use support::{ADMIN, Server, start_with_configs};

fn b64(bytes: &[u8]) -> String {
    base64ct::Base64::encode_string(bytes)
}

fn self_register(server: &Server, body: Value) -> (u16, Value) {
    server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&body.to_string()),
    )
}

fn by_cert(cert: &[u8]) -> Value {
    let fp = attest_common::Fingerprint::of_der(cert);
    json!({"ek_fingerprint": fp.to_string(), "ek_source": "cert", "ek_cert_pem": b64(cert)})
}

fn audit_total(server: &Server) -> u64 {
    let (_, page) = server.call("GET", "/api/v1/audit?per_page=1", Some(ADMIN), None);
    page["total"].as_u64().unwrap()
}

/// The certificate with its outer length written one byte longer than DER allows.
fn non_minimal(cert: &[u8]) -> Vec<u8> {
    assert_eq!(cert[1], 0x82, "a certificate of 256 to 65535 bytes");
    [&[0x30, 0x83, 0x00][..], &cert[2..]].concat()
}

/// The certificate with a NULL after its signature, inside the outer SEQUENCE.
fn extra_field(cert: &[u8]) -> Vec<u8> {
    let len = u16::from_be_bytes([cert[2], cert[3]]) + 2;
    let [hi, lo] = len.to_be_bytes();
    [&[0x30, 0x82, hi, lo][..], &cert[4..], &[0x05, 0x00]].concat()
}

#[test]
fn one_ek_key_is_one_machine() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let cert = swtpm.ek_cert_der(attest_host_agent::tpm::EkType::EccP384.cert_nv_index());

    // Re-encodings of the machine's certificate are not DER: refused, the offset named.
    for (what, bytes, expected) in [
        (
            "non-minimal length",
            non_minimal(&cert),
            "non-minimal length encoding (not DER) at byte offset 0",
        ),
        (
            "a field after the signature",
            extra_field(&cert),
            "bytes after the last field",
        ),
    ] {
        let (status, err) = self_register(&server, by_cert(&bytes));
        assert_eq!(status, 400, "{what}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(expected), "{what}: {message}");
    }
    assert_eq!(audit_total(&server), 0, "nothing written");

    // The honest machine registers by its certificate and attests.
    let a = agent(&swtpm, &server.url, dir.path(), "a");
    let id = a.ok(&["self-register"])["machine_id"].clone();
    approve(&server, &id, "worker-app", "a");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");

    // Its EK key under another fingerprint (the bare SubjectPublicKeyInfo of the same key).
    let spki = attest_common::der::parse_certificate(&cert)
        .unwrap()
        .spki
        .to_vec();
    let fp = attest_common::Fingerprint::of_der(&spki);
    let by_key =
        json!({"ek_fingerprint": fp.to_string(), "ek_source": "pub", "ek_public": b64(&spki)});
    for (state, action) in [
        ("attested", None),
        ("locked", Some(("lock", r#"{"reason":"lost"}"#))),
        (
            "revoked",
            Some(("revoke", r#"{"reason":"stolen","wipe":false}"#)),
        ),
    ] {
        if let Some((action, body)) = action {
            server.admin(&id, action, body);
        }
        let written = audit_total(&server);
        let (status, err) = self_register(&server, by_key.clone());
        assert_eq!(
            (status, err["error"].as_str()),
            (409, Some("ek_key_known")),
            "{state}: {err}"
        );
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(&id) && message.contains(state),
            "{state}: {message}"
        );
        assert_eq!(audit_total(&server), written, "{state}: nothing written");
        let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
        assert_eq!(list["total"], 1, "{state}: no second machine");
        if state == "attested" {
            assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
        }
    }
    assert_eq!(machine(&server, &id)["status"], "revoked");

    // Once an operator deletes the revoked record, the TPM may come back (DESIGN.md §2).
    let (status, _) = server.call(
        "DELETE",
        &format!("/api/v1/machines/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 204);
    let (status, reg) = self_register(&server, by_key);
    assert_eq!(status, 201, "{reg}");
}

/// DESIGN.md §3.4: the TPM's clock information is kept per machine. A power cycle (a TPM
/// Reset) shows as a reboot in the audit and the view; a TPM state rolled back to an earlier
/// snapshot (a vTPM restored: resetCount lower than the last one seen) is refused by
/// default and audited, the machine unchanged; under a role policy that only flags it, it
/// is accepted and audited.
#[test]
fn reboots_are_seen_and_rolled_back_tpms_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"roles": {"worker-infra": {"on_clock_rollback": "flag"}}}"#,
    )
    .unwrap();
    let server = start_with_configs(
        dir.path(),
        &[("ITL_PCR_POLICY_FILE", policy.to_str().unwrap())],
    );
    let resets = |m: &Value| m["tpm_clock"]["reset_count"].as_u64().unwrap();
    for (name, role, refused) in [("a", "worker-app", true), ("b", "worker-infra", false)] {
        let mut swtpm = Swtpm::start();
        let a = agent(&swtpm, &server.url, dir.path(), name);
        let id = a.ok(&["self-register"])["machine_id"].clone();
        approve(&server, &id, role, name);
        assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
        let first = resets(&machine(&server, &id));

        let snapshot = dir.path().join(format!("{name}-tpm-snapshot"));
        swtpm.save_state(&snapshot);
        swtpm.power_cycle();
        a.ok(&["attest", "--once"]);
        let after = machine(&server, &id);
        assert_eq!(resets(&after), first + 2, "{name}");
        let details = server.audit_column(&id, "detail");
        assert!(
            details.last().unwrap().contains("rebooted: resetCount"),
            "{name}: {details:?}"
        );

        // Rolled back to the snapshot.
        swtpm.restore_state(&snapshot);
        let out = a.run(&["attest", "--once"]);
        let last = server.audit_column(&id, "detail").pop().unwrap();
        assert!(last.contains("resetCount went back"), "{name}: {last}");
        let now = machine(&server, &id);
        assert_eq!(now["status"], "attested");
        if refused {
            assert_ne!(out.code, 0);
            assert!(out.stderr.contains("tpm_clock_rollback"), "{}", out.stderr);
            assert!(last.contains("Attestation failed"), "{last}");
            assert_eq!(now["tpm_clock"], after["tpm_clock"], "nothing changed");
        } else {
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(
                resets(&now) < resets(&after),
                "the new values are the reference"
            );
        }
    }
}
