//! EK identity to the letter of DESIGN.md §3.1: one EK key is one machine, whatever encoding
//! brings it. Against the real server binary, with swtpm's EK certificates: a re-encoded
//! certificate (non-minimal length, bytes after the signature) is refused with the offset
//! named; the same EK key under another fingerprint (its public area, `pub`) is refused while
//! its machine is attested, locked or revoked; the honest machine keeps attesting. A TPM
//! without an EK certificate is named by its EK's public area, which must be exactly a TCG
//! EK template's: the honest one registers, is approved and attests; a bare key, and keys a
//! TPM really holds that are not EKs (a decryption key that is not restricted, a signing key,
//! a key with userWithAuth, a key with another policy), are refused with nothing written.

mod support;

use attest_common::tpm::ek::{EkType, POLICY_A_SHA256, POLICY_A_SHA384, POLICY_B_SHA384};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::spki;
use attest_swtpm::{NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048, Swtpm};
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

/// The TPM2B_PUBLIC of the swtpm's EK of `ek_type`, made from its template (the host agent's
/// way: `Tpm::ek_public`).
fn ek_public_area(swtpm: &Swtpm, ek_type: EkType) -> Vec<u8> {
    attest_host_agent::tpm::Tpm::open(&swtpm.tcti())
        .unwrap()
        .ek_public(ek_type)
        .unwrap()
        .0
}

/// A `pub` registration of the key in `area` (TPM2B_PUBLIC), fingerprinted by its key's
/// SubjectPublicKeyInfo: only the template check stands between it and a record.
fn by_public_area(area: &[u8]) -> Value {
    let key = TpmPublic::from_tpm2b(area).unwrap().key;
    let fp = attest_common::Fingerprint::of_der(&spki::encode(&key).unwrap());
    json!({"ek_fingerprint": fp.to_string(), "ek_source": "pub", "ek_public": b64(area)})
}

fn audit_total(server: &Server) -> u64 {
    server.audit_total()
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

    // Its EK key under another fingerprint: the EK's public area, as a TPM without a
    // certificate would send it (fingerprinted by the key's SubjectPublicKeyInfo).
    let by_key = by_public_area(&ek_public_area(&swtpm, EkType::EccP384));
    assert_eq!(
        by_key["ek_fingerprint"],
        attest_common::Fingerprint::of_der(
            attest_common::der::parse_certificate(&cert).unwrap().spki
        )
        .to_string(),
        "the key's SPKI is the certificate's"
    );
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
        // Whoever holds a public EK certificate learns no machine from the refusal.
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("one EK key is one machine") && !message.contains(&id),
            "{state}: {message}"
        );
        assert_eq!(audit_total(&server), written, "{state}: nothing written");
        let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
        assert_eq!(
            list.as_array().unwrap().len(),
            1,
            "{state}: no second machine"
        );
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
            // Refused until an operator forgets the reference (a vTPM restored on purpose).
            assert_ne!(a.run(&["attest", "--once"]).code, 0);
            server.admin(&id, "reset-baseline", r#"{"reason":"restored on purpose"}"#);
            assert_eq!(machine(&server, &id)["tpm_clock"], Value::Null);
            let out = a.run(&["attest", "--once"]);
            assert_eq!(out.code, 0, "{}", out.stderr);
        } else {
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(
                resets(&now) < resets(&after),
                "the new values are the reference"
            );
        }
    }
}

/// A TPM without EK certificates (its NV certificates undefined) registers by its EK's
/// public area: shown to the approver as `ek_source: pub` with an unverified chain (no
/// certificate), never attested before an operator approves it, then attested; its agent's
/// fingerprint is the one on record, and an AK rotation (the machine reinstalled) is made a
/// credential from the stored public area.
#[test]
fn a_tpm_without_an_ek_certificate_registers_is_approved_and_attests() {
    let swtpm = Swtpm::start();
    for index in [NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048] {
        swtpm.tpm2("tpm2_nvundefine", &[&format!("{index:#010x}"), "-C", "p"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let a = agent(&swtpm, &server.url, dir.path(), "a");
    let fingerprint = a.ok(&["fingerprint", "--tpm", &swtpm.tcti()]);
    assert_eq!(fingerprint["ek_source"], "pub");

    let reg = a.ok(&["self-register"]);
    let id = reg["machine_id"].clone();
    assert_eq!(reg["status"], "pending_approval");
    let m = machine(&server, &id);
    assert_eq!(m["ek_source"], "pub", "{m}");
    assert_eq!(
        m["ek_fingerprint"].as_str(),
        Some(fingerprint["ek_fingerprint"].as_str())
    );
    assert_eq!(m["ek_chain"]["status"], "unverified", "{m}");
    assert!(
        m["ek_chain"]["reason"]
            .as_str()
            .unwrap()
            .contains("no EK certificate"),
        "{m}"
    );
    // The credential was activated (the TPM holds the EK of that public area), but no
    // attestation makes it attested before an operator approves it.
    assert_eq!(a.ok(&["attest", "--once"])["action"], "pending");
    assert_eq!(machine(&server, &id)["status"], "pending_approval");

    approve(&server, &id, "worker-app", "a");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    let m = machine(&server, &id);
    assert_eq!(
        (m["status"].as_str(), m["tpm_proven"].as_bool()),
        (Some("attested"), Some(true)),
        "{m}"
    );

    // Reinstalled: a new AK, its credential made for the stored EK public area.
    std::fs::remove_dir_all(&a.state).unwrap();
    assert_eq!(
        a.ok(&["self-register"])["machine_id"],
        "",
        "a known EK's answer names none"
    );
    let r = a.ok(&["attest", "--once"]);
    assert_eq!((&r["action"][..], &r["machine_id"]), ("apply-config", &id));
    let actions = server.audit_column(&id, "action");
    assert_eq!(
        actions.iter().filter(|a| *a == "ak-rotated").count(),
        1,
        "{actions:?}"
    );
}

/// Creates a primary key in swtpm's endorsement hierarchy with tpm2-tools and returns its
/// TPM2B_PUBLIC: keys a TPM really holds, which are not EKs.
fn tpm_key(swtpm: &Swtpm, name_alg: &str, alg: &str, attributes: &str, policy: &[u8]) -> Vec<u8> {
    let path = |name: &str| swtpm.scratch_dir().join(name).to_str().unwrap().to_owned();
    let mut args = vec!["-C", "e", "-g", name_alg, "-G", alg, "-a", attributes];
    let (policy_path, ctx, public) = (path("policy.bin"), path("key.ctx"), path("key.pub"));
    if !policy.is_empty() {
        std::fs::write(&policy_path, policy).unwrap();
        args.extend(["-L", &policy_path]);
    }
    args.extend(["-c", &ctx, "-o", &public]);
    swtpm.tpm2("tpm2_createprimary", &args);
    // No resource manager: the transient key goes before the next one.
    swtpm.tpm2("tpm2_flushcontext", &["-t"]);
    std::fs::read(&public).unwrap()
}

/// Review finding 3: on the `pub` path only an EK's public area, exactly a TCG template's, is
/// taken. A bare SubjectPublicKeyInfo and keys of a real TPM that are not EKs are refused
/// (422 `not_an_ek`, naming what differs) on `/self-register` and `/register`, with nothing
/// written; the TPM's EK itself is accepted.
#[test]
fn keys_that_are_not_eks_are_refused_on_the_pub_path() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let ek = ek_public_area(&swtpm, EkType::EccP384);
    let ek_key = TpmPublic::from_tpm2b(&ek).unwrap().key;
    let ek_spki = spki::encode(&ek_key).unwrap();

    let ek_like = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|adminwithpolicy";
    let not_restricted = tpm_key(
        &swtpm,
        "sha384",
        "ecc384:null:null",
        &format!("{ek_like}|decrypt"),
        &POLICY_B_SHA384,
    );
    let signing = tpm_key(
        &swtpm,
        "sha384",
        "ecc384:ecdsa-sha384:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
        &[],
    );
    // L-1 with userWithAuth: usable with the (empty) endorsement password, not only by policy.
    let user_with_auth = tpm_key(
        &swtpm,
        "sha256",
        "rsa2048:null:aes128cfb",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|adminwithpolicy|restricted|decrypt",
        &POLICY_A_SHA256,
    );
    // H-3 in every field but its policy: PolicyA alone instead of PolicyB.
    let other_policy = tpm_key(
        &swtpm,
        "sha384",
        "ecc384:null:aes256cfb",
        &format!("{ek_like}|restricted|decrypt"),
        &POLICY_A_SHA384,
    );
    let bare_spki = json!({
        "ek_fingerprint": attest_common::Fingerprint::of_der(&ek_spki).to_string(),
        "ek_source": "pub",
        "ek_public": b64(&ek_spki),
    });
    let cases = [
        (
            "a bare SubjectPublicKeyInfo",
            bare_spki,
            "SubjectPublicKeyInfo",
        ),
        (
            "a decryption key that is not restricted",
            by_public_area(&not_restricted),
            "objectAttributes (restricted clear",
        ),
        (
            "a signing key",
            by_public_area(&signing),
            "decrypt clear; sign set",
        ),
        (
            "an RSA-2048 key with userWithAuth",
            by_public_area(&user_with_auth),
            "template L-1 in objectAttributes (userWithAuth set",
        ),
        (
            "a key with another policy",
            by_public_area(&other_policy),
            "template H-3 in authPolicy (not the EK policy PolicyB, SHA-384)",
        ),
    ];
    for (what, body, names) in &cases {
        for path in ["/api/v1/self-register", "/api/v1/register"] {
            let (status, err) = server.call("POST", path, None, Some(&body.to_string()));
            assert_eq!(
                (status, err["error"].as_str()),
                (422, Some("not_an_ek")),
                "{what} on {path}: {err}"
            );
            let message = err["message"].as_str().unwrap();
            assert!(message.starts_with("ek_public: "), "{what}: {message}");
            assert!(message.contains(names), "{what}: {message}");
        }
    }
    assert_eq!(audit_total(&server), 0, "nothing written");
    let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(list.as_array().unwrap().len(), 0);

    // The EK itself, in the same form.
    let (status, reg) = self_register(&server, by_public_area(&ek));
    assert_eq!(status, 201, "{reg}");
}

/// Review (issue 24, finding 2): the key index holds proven keys only. Someone who knows a
/// machine's EK (its public area, or its certificate re-signed: a different fingerprint,
/// the same key) registers it first; nobody proved that record, so the machine's own
/// registration is not blocked and it attests; the squatter's record stays unproven (its
/// first proof would be refused, the key being the machine's: `Service::proven_elsewhere`).
#[test]
fn an_unproven_registration_does_not_hold_the_key() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let squat = by_public_area(&ek_public_area(&swtpm, EkType::EccP384));
    let (status, reg) = self_register(&server, squat.clone());
    assert_eq!(status, 201, "{reg}");
    let squatter = reg["machine_id"].as_str().unwrap().to_owned();

    let a = agent(&swtpm, &server.url, dir.path(), "a");
    let id = a.ok(&["self-register"])["machine_id"].clone();
    assert_ne!(id, squatter);
    approve(&server, &id, "worker-app", "a");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    assert_eq!(machine(&server, &squatter)["tpm_proven"], false);
    // Its own registration again changes nothing (idempotent), and the key names the
    // machine now: an operator deleting the squatter's record loses nothing.
    let (status, _) = self_register(&server, squat);
    assert_eq!(status, 200);
}
