//! Push-model attestation with the real `attest-agent` binary: a real swtpm, the real server
//! binary, real HTTP. Zero-touch and USB paths, hooks, liveness, PCR policy with lock, wipe
//! once, and the attacks of issue 5, each refused with an audit entry and the machine left
//! as it was.
//!
//! The agent binary comes from the same workspace build (`cargo test --workspace` builds it;
//! with `-p attest-server` alone, build it first with `cargo build -p attest-host-agent`).

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use attest_common::tpm::credential::{Entropy, OsEntropy};
use attest_common::tpm::hash::{HashAlg, hmac};
use attest_common::wire::{AttestRequest, Blob, ChallengeResponse, Hex, from_json};
use attest_host_agent::tpm::{Ak, AkType, EkType, Tpm};
use attest_swtpm::Swtpm;
use base64ct::Encoding as _;
use serde_json::Value;
use support::agent::{AgentCli, agent, approve, machine, tampering_proxy};
use support::start_with_configs as start_server;
use support::{ADMIN, Server};

fn admin(server: &Server, id: &str, action: &str, body: &str) -> Value {
    server.admin(id, action, body)
}

fn count(v: &[String], what: &str) -> usize {
    v.iter().filter(|a| a.as_str() == what).count()
}

#[test]
fn zero_touch_hooks_liveness_pcr_lock_and_wipe_once() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = d.join("pcr-policy.json");
    std::fs::write(
        &policy,
        r#"{"roles":{"worker-app":{"on_violation":"lock"}}}"#,
    )
    .unwrap();
    let server = start_server(
        d,
        &[
            ("ITL_ATTESTATION_INTERVAL_SECONDS", "1"),
            ("ITL_LIVENESS_FACTOR", "2"),
            ("ITL_PCR_POLICY_FILE", policy.to_str().unwrap()),
        ],
    );
    let a = agent(&swtpm, &server.url, d, "a");

    // Zero-touch: self-register, then pending until an operator approves.
    let reg = a.ok(&["self-register"]);
    assert_eq!(reg["status"], "pending_approval");
    let id = reg["machine_id"].clone();
    use std::os::unix::fs::PermissionsExt as _;
    for f in [
        "ak.priv",
        "ak.pub",
        "activation-secret",
        "enrollment.json",
        "server-key.pem",
    ] {
        let mode = std::fs::metadata(a.state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["status"].as_str()),
        ("pending", "pending_approval")
    );

    approve(&server, &id, "worker-app", "node-1");
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (
            r["action"].as_str(),
            r["status"].as_str(),
            r["hooks_run"].as_str()
        ),
        ("apply-config", "attested", "apply-config")
    );
    let yaml = std::fs::read_to_string(d.join("a-applied.yaml")).unwrap();
    support::validate(&yaml);
    let config: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(
        config
            .pointer("/machine/network/hostname")
            .and_then(Value::as_str),
        Some("node-1")
    );
    assert!(
        config.pointer("/machine/token").is_some(),
        "attested: with secrets"
    );
    assert!(
        a.state.join("activation-secret").exists(),
        "the secret is kept with its AK (it takes the AK back after another was bound)"
    );
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("none", "")
    );
    assert_eq!(machine(&server, &id)["pcr_baseline_pinned"], true);
    // A routine heartbeat moves last_attested_at and adds nothing to the audit log.
    let entries = server.audit_column(&id, "action").len();
    std::thread::sleep(Duration::from_millis(1100));
    let before = machine(&server, &id)["last_attested_at"].clone();
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    assert_ne!(machine(&server, &id)["last_attested_at"], before);
    assert_eq!(server.audit_column(&id, "action").len(), entries);

    // The loop keeps it attested; stopped, the machine turns stale, audited once.
    let mut looping = a
        .command(&["attest", "--loop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(looping.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        assert!(
            // The server advises 1 s; the agent waits at least 2 s whatever it is told.
            line.starts_with("attested ") && line.contains("action=none hooks_run= next=2s"),
            "{line}"
        );
    }
    let m = machine(&server, &id);
    assert_eq!(
        (m["status"].as_str(), m["stale"].as_bool()),
        (Some("attested"), Some(false))
    );
    looping.kill().unwrap();
    looping.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while machine(&server, &id)["stale"] != true {
        assert!(Instant::now() < deadline, "never became stale");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count(&server.audit_column(&id, "action"), "stale"),
        1,
        "audited once"
    );
    a.ok(&["attest", "--once"]);
    assert_eq!(machine(&server, &id)["stale"], false);

    // A changed PCR 7: refused, and the role's policy locks the machine.
    swtpm.tpm2(
        "tpm2_pcrextend",
        &[&format!("7:sha384={}", "ab".repeat(48))],
    );
    let out = a.run(&["attest", "--once"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("403 pcr_policy_violation") && out.stderr.contains("sha384:7 differs"),
        "{}",
        out.stderr
    );
    assert_eq!(machine(&server, &id)["status"], "locked");
    let details = server.audit_column(&id, "detail");
    assert!(
        details
            .last()
            .unwrap()
            .contains("machine locked by the PCR policy"),
        "{details:?}"
    );

    // Locked: the lock hook runs once, not at every heartbeat.
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("lock", "lock")
    );
    assert!(d.join("a-locked").exists());
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("lock", "")
    );
    // After a reboot (the state file says the hook ran in another boot), still locked: the
    // hook runs again, once.
    let file = a.state.join("enrollment.json");
    let mut e: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(e["lock_boot_id"].is_string(), "{e}");
    e["lock_boot_id"] = "00000000-0000-0000-0000-000000000000".into();
    std::fs::write(&file, serde_json::to_vec(&e).unwrap()).unwrap();
    std::fs::remove_file(d.join("a-locked")).unwrap();
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("lock", "lock")
    );
    assert!(d.join("a-locked").exists());
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(r["hooks_run"], "", "once per boot");

    // Revoke with wipe: the wipe order comes until the machine confirms the hook ran (its
    // next attestation, the confirmation bound into its quote); then the signed last word.
    admin(&server, &id, "revoke", r#"{"reason":"stolen","wipe":true}"#);
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("wipe", "wipe")
    );
    assert!(d.join("a-wiped").exists());
    assert_eq!(
        machine(&server, &id)["wipe_pending"],
        true,
        "sent, not confirmed"
    );
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (
            r["status"].as_str(),
            r["action"].as_str(),
            r["hooks_run"].as_str()
        ),
        ("revoked", "none", "")
    );
    assert_eq!(machine(&server, &id)["wipe_pending"], false, "confirmed");
    let actions = server.audit_column(&id, "action");
    assert_eq!(count(&actions, "wipe-confirmed"), 1, "{actions:?}");
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(v["valid"], true);
}

#[test]
fn usb_register_approve_attest_and_receipt() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let a = AgentCli {
        tcti: swtpm.tcti(),
        state: dir.path().join("usb"),
        server: server.url.clone(),
    };
    let reg = a.ok(&["register", "--role", "worker-infra"]);
    let id = reg["machine_id"].clone();
    assert_eq!(reg["status"], "registered");
    let fp = a.ok(&["fingerprint", "--tpm", &swtpm.tcti()])["ek_fingerprint"].clone();
    assert_eq!(machine(&server, &id)["ek_fingerprint"], fp.as_str());
    assert_eq!(machine(&server, &id)["desired_role"], "worker-infra");

    approve(&server, &id, "worker-infra", "infra-1");
    // No hook configured: the agent says so, and the machine is attested.
    let out = a.run(&["attest", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.kv["action"], "apply-config");
    assert!(out.stderr.contains("no hook configured"), "{}", out.stderr);
    assert_eq!(machine(&server, &id)["status"], "attested");

    // A receipt, written without any network, names the same EK.
    let receipt = dir.path().join("receipt.json");
    let r = a.ok(&["receipt", "--out", receipt.to_str().unwrap()]);
    assert_eq!(r["ek_fingerprint"], fp);
    let json: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(json["identity"]["ek_fingerprint"], fp.as_str());
    assert_eq!(json["format"], 1);

    // Imported by an operator into another registry (the air-gapped site): registered,
    // idempotent on the EK, and a receipt whose fingerprint lies is refused.
    let text = std::fs::read_to_string(&receipt).unwrap();
    let site = start_server(&dir.path().join("site"), &[]);
    let (s, e) = site.call("POST", "/api/v1/machines/import", None, Some(&text));
    assert_eq!(s, 401, "operators only: {e}");
    let (s, imported) = site.call("POST", "/api/v1/machines/import", Some(ADMIN), Some(&text));
    assert_eq!(s, 201, "{imported}");
    assert_eq!(
        (
            imported["status"].as_str(),
            imported["ek_fingerprint"].as_str()
        ),
        (Some("registered"), Some(fp.as_str()))
    );
    let site_id = imported["machine_id"].as_str().unwrap().to_owned();
    let (s, twice) = site.call("POST", "/api/v1/machines/import", Some(ADMIN), Some(&text));
    assert_eq!(
        (s, twice["machine_id"].as_str()),
        (200, Some(site_id.as_str())),
        "{twice}"
    );
    let mut lying = json.clone();
    lying["identity"]["ek_fingerprint"] = Value::String("ab".repeat(48));
    let (s, e) = site.call(
        "POST",
        "/api/v1/machines/import",
        Some(ADMIN),
        Some(&lying.to_string()),
    );
    assert_eq!(
        (s, e["error"].as_str()),
        (422, Some("fingerprint_mismatch")),
        "{e}"
    );
    let (_, list) = site.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        site.audit_column(&site_id, "action"),
        ["import"],
        "one entry: the second import changed nothing"
    );
    // Importing into the registry that knows the EK answers the machine as it is.
    let (s, known) = server.call("POST", "/api/v1/machines/import", Some(ADMIN), Some(&text));
    assert_eq!(
        (s, known["machine_id"].as_str(), known["status"].as_str()),
        (200, Some(id.as_str()), Some("attested"))
    );
    // Once it has network, the imported machine's agent registers (same record, now with a
    // credential for its AK) and attests.
    approve(&site, &site_id, "worker-infra", "infra-1");
    let at_site = AgentCli {
        tcti: swtpm.tcti(),
        state: dir.path().join("usb-site"),
        server: site.url.clone(),
    };
    assert_eq!(
        at_site.ok(&["register"])["machine_id"],
        "",
        "known there: named by none"
    );
    let r = at_site.run(&["attest", "--once"]);
    assert_eq!(
        (r.code, r.kv["action"].as_str()),
        (0, "apply-config"),
        "{}",
        r.stderr
    );
    assert_eq!(machine(&site, &site_id)["status"], "attested");

    // Configuration errors are exit status 2 with a sentence.
    let unregistered = AgentCli {
        state: dir.path().join("empty"),
        ..a
    };
    let out = unregistered.run(&["attest", "--once"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not registered"), "{}", out.stderr);
}

/// A man in the middle that turns every `"action":"none"` of `/attest` into a wipe.
fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsEntropy.fill(&mut b);
    b
}

/// A quote by `ak` over a fresh challenge, as an attestation request for `fp`, with an
/// activation proof made from `proof_secret` when given.
fn attest_request(
    server: &Server,
    tpm: &mut Tpm,
    ak: &Ak,
    fp: attest_common::Fingerprint,
    proof_secret: Option<&[u8]>,
) -> AttestRequest {
    let (_, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
    let c: ChallengeResponse = from_json(c.to_string().as_bytes()).unwrap();
    let agent_nonce = random::<32>();
    // The quote is over the binding of both nonces and the request's claims (DESIGN §3.7).
    let fingerprint: attest_common::Fingerprint = fp;
    let claims = attest_common::binding::claims(&fingerprint, &c.nonce_id, None, false);
    let qualifying = attest_common::binding::qualifying_data(&c.nonce.0, &agent_nonce, &claims);
    let (quote, signature) = tpm.quote(ak.handle, &qualifying, &c.pcr_selection).unwrap();
    let values = tpm.pcr_values(&c.pcr_selection).unwrap();
    AttestRequest {
        ek_fingerprint: fingerprint,
        nonce_id: c.nonce_id,
        agent_nonce: Hex(agent_nonce),
        quote: Blob::from_slice(&quote).unwrap(),
        signature: Blob::from_slice(&signature).unwrap(),
        pcr_values: heapless::Vec::from_slice(&values).unwrap(),
        activation_proof: proof_secret.map(|secret| {
            let mac = hmac(HashAlg::Sha384, secret, &[&c.nonce.0]).unwrap();
            Hex(mac.as_slice().try_into().unwrap())
        }),
        ak_public: None,
        config_applied: None,
        wipe_done: false,
    }
}

#[test]
fn attacks_are_refused_audited_and_change_nothing() {
    let swtpm_a = Swtpm::start();
    let swtpm_b = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start_server(d, &[("ITL_CHALLENGE_LIFETIME_SECONDS", "4")]);
    let a = agent(&swtpm_a, &server.url, d, "a");
    let id = a.ok(&["self-register"])["machine_id"].clone();
    approve(&server, &id, "worker-app", "node-a");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    let snapshot = |m: &Value| {
        (
            m["status"].clone(),
            m["last_attested_at"].clone(),
            m["pcr_baseline_pinned"].clone(),
        )
    };
    let before = snapshot(&machine(&server, &id));
    // What an attacker sends proves nothing and writes nothing: the machine's audit trail
    // stays as it is through every attempt below.
    let entries = || server.audit_column(&id, "action").len();
    let written = entries();

    // Impersonation: a second TPM claims A's EK certificate (public). Registering its own
    // AK under it changes nothing (the credential it gets opens only in A's TPM), its
    // quotes are refused, and its AK cannot take A's place without A's EK.
    let cert_a = swtpm_a.ek_cert_der(EkType::EccP384.cert_nv_index());
    let fp_a = attest_common::ek_fingerprint(&cert_a).unwrap().fingerprint;
    let mut tpm_b = Tpm::open(&swtpm_b.tcti()).unwrap();
    let ek_b = tpm_b.ek(EkType::EccP384).unwrap();
    let ak_b = tpm_b.create_ak(ek_b, AkType::EccP384).unwrap();
    let forged = support::register_request(fp_a, &cert_a, &ak_b.public_tpm2b);
    let (status, err) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&serde_json::to_string(&forged).unwrap()),
    );
    assert_eq!(status, 200, "{err}");
    assert_eq!(err["machine_id"], "", "names no machine");
    assert!(err["config_token"].is_null(), "no token for a known EK");
    let cred = &err["credential"];
    let blob = base64ct::Base64::decode_vec(cred["credential_blob"].as_str().unwrap()).unwrap();
    let secret = base64ct::Base64::decode_vec(cred["encrypted_secret"].as_str().unwrap()).unwrap();
    assert!(
        tpm_b
            .activate_credential(ak_b.handle, ek_b, EkType::EccP384, &blob, &secret)
            .is_err(),
        "the credential is for A's EK"
    );
    // B's AK named as a new AK for A's EK: no activation proof B could make.
    let mut rotate = attest_request(&server, &mut tpm_b, &ak_b, fp_a, Some(&random::<32>()));
    rotate.ak_public = Some(Blob::from_slice(&ak_b.public_tpm2b).unwrap());
    let (status, err) = server.call(
        "POST",
        "/api/v1/attest",
        None,
        Some(&serde_json::to_string(&rotate).unwrap()),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("activation_failed")),
        "{err}"
    );
    let req = attest_request(&server, &mut tpm_b, &ak_b, fp_a, Some(&random::<32>()));
    let (status, err) = server.call(
        "POST",
        "/api/v1/attest",
        None,
        Some(&serde_json::to_string(&req).unwrap()),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("quote_invalid")),
        "{err}"
    );
    assert_eq!(entries(), written);
    assert_eq!(snapshot(&machine(&server, &id)), before);
    // A's own TPM still attests with its proven AK.
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    let before = snapshot(&machine(&server, &id));

    // A's real AK (loaded from the agent's saved blobs) for replay and expiry.
    let mut tpm_a = Tpm::open(&swtpm_a.tcti()).unwrap();
    let ek_a = tpm_a.ek(EkType::EccP384).unwrap();
    let ak_a = tpm_a
        .load_ak(
            ek_a,
            &std::fs::read(a.state.join("ak.pub")).unwrap(),
            &std::fs::read(a.state.join("ak.priv")).unwrap(),
        )
        .unwrap();
    // Replayed nonce.
    let body =
        serde_json::to_string(&attest_request(&server, &mut tpm_a, &ak_a, fp_a, None)).unwrap();
    assert_eq!(
        server.call("POST", "/api/v1/attest", None, Some(&body)).0,
        200
    );
    let before = {
        let _ = before;
        snapshot(&machine(&server, &id))
    };
    std::thread::sleep(Duration::from_millis(1100));
    let (status, err) = server.call("POST", "/api/v1/attest", None, Some(&body));
    assert_eq!(
        (status, err["error"].as_str()),
        (409, Some("nonce_replayed")),
        "{err}"
    );
    let written = entries();
    assert_eq!(snapshot(&machine(&server, &id)), before);
    // Expired nonce (lifetime 4 s: at least 3 s with whole seconds, so that a loaded CI
    // machine still builds its quotes in time).
    let late =
        serde_json::to_string(&attest_request(&server, &mut tpm_a, &ak_a, fp_a, None)).unwrap();
    std::thread::sleep(Duration::from_millis(5100));
    let (status, err) = server.call("POST", "/api/v1/attest", None, Some(&late));
    assert_eq!(
        (status, err["error"].as_str()),
        (410, Some("nonce_expired")),
        "{err}"
    );
    assert_eq!(entries(), written);
    assert_eq!(snapshot(&machine(&server, &id)), before);
    tpm_a.flush(ak_a.handle).unwrap();
    tpm_a.flush(ek_a).unwrap();
    drop(tpm_a);

    // A forged action: a man in the middle turns "none" into "wipe"; the signature no longer
    // verifies, so the agent refuses to act and the wipe hook never runs.
    let proxy = tampering_proxy(server.url.clone(), |path, text| match path {
        "/api/v1/attest" => text.replace("\"action\":\"none\"", "\"action\":\"wipe\""),
        _ => text,
    });
    let out = a.run(&["attest", "--once", "--server", &proxy]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not signed by the pinned server key"),
        "{}",
        out.stderr
    );
    assert!(!d.join("a-wiped").exists());
    // And a server key other than the pinned one is refused at registration.
    let other = p384::ecdsa::SigningKey::from_slice(&random::<48>()).unwrap();
    let other_pem = d.join("other.pem");
    std::fs::write(
        &other_pem,
        pem_rfc7468::encode_string(
            "PUBLIC KEY",
            pem_rfc7468::LineEnding::LF,
            &attest_common::nonce::verifying_key_to_spki(other.verifying_key()),
        )
        .unwrap(),
    )
    .unwrap();
    let out = a.run(&["register", "--server-key", other_pem.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("differs from the pinned one"),
        "{}",
        out.stderr
    );
    let out = a.run(&[
        "attest",
        "--once",
        "--server-key",
        other_pem.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not signed by the pinned server key"),
        "{}",
        out.stderr
    );
    assert_eq!(machine(&server, &id)["status"], "attested");
}
