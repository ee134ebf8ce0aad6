//! The trust promise, attacked (DESIGN.md §3.1, §3.7–3.9): nothing for a machine without its
//! TPM. Each test runs the real server, the real agent binary and swtpm, performs an attack,
//! shows it refused with nothing written, and the honest machine still served.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};

use attest_common::tpm::credential::{Entropy, OsEntropy};
use attest_common::wire::{AttestRequest, Blob, ChallengeResponse, Hex, from_json};
use attest_swtpm::Swtpm;
use base64ct::Encoding as _;
use serde_json::Value;
use support::agent::{AgentCli, agent, approve, machine, tampering_proxy};
use support::{ADMIN, Server, start_with_configs};

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsEntropy.fill(&mut b);
    b
}

fn audit_total(server: &Server) -> u64 {
    server.audit_total()
}

fn metric(server: &Server, name: &str) -> u64 {
    let (_, text) = server.call_text("GET", "/metrics", Some(ADMIN), None);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn challenge(server: &Server) -> ChallengeResponse {
    let (status, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
    assert_eq!(status, 200);
    from_json(c.to_string().as_bytes()).unwrap()
}

/// An attestation with a valid challenge and garbage evidence for `fingerprint`.
fn forged_attest(server: &Server, fingerprint: &str) -> (u16, Value) {
    let c = challenge(server);
    let req = AttestRequest {
        ek_fingerprint: fingerprint.parse().unwrap(),
        nonce_id: c.nonce_id,
        agent_nonce: Hex(random::<32>()),
        quote: Blob::from_slice(&random::<120>()).unwrap(),
        signature: Blob::from_slice(&random::<102>()).unwrap(),
        pcr_values: heapless::Vec::new(),
        activation_proof: Some(Hex(random::<48>())),
        ak_public: None,
        config_applied: None,
        wipe_done: false,
    };
    server.call(
        "POST",
        "/api/v1/attest",
        None,
        Some(&serde_json::to_string(&req).unwrap()),
    )
}

/// An approved, attested machine with its config applied (hooks write files in `dir`),
/// and its id.
fn attested(
    server: &Server,
    swtpm: &Swtpm,
    dir: &std::path::Path,
    name: &str,
) -> (AgentCli, String) {
    let a = agent(swtpm, &server.url, dir, name);
    let id = a.ok(&["self-register"])["machine_id"].clone();
    approve(server, &id, "worker-app", name);
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    (a, id)
}

/// Attacks 2, 6 and 8: forged challenge ids, an invented EK and a garbage quote for a
/// revoked machine's EK write nothing and change nothing; the revoked machine, proving
/// itself, still gets its wipe.
#[test]
fn contacts_that_prove_nothing_write_nothing() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "a");
    let fp = machine(&server, &id)["ek_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let written = audit_total(&server);

    // 300 challenge ids this server never issued.
    for i in 0..300 {
        let body = format!(
            r#"{{"ek_fingerprint":"{fp}","nonce_id":"{:048x}","agent_nonce":"{}","quote":"AAAA","signature":"AAAA","pcr_values":[]}}"#,
            i,
            "00".repeat(32)
        );
        let (status, err) = server.call("POST", "/api/v1/attest", None, Some(&body));
        assert_eq!(
            (status, err["error"].as_str()),
            (404, Some("unknown_nonce"))
        );
    }
    // An EK nobody registered.
    let (status, err) = forged_attest(&server, &"ab".repeat(48));
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("unknown_machine"))
    );
    // Revoked with a wipe: a garbage quote naming its EK does not take the wipe.
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"wipe":true,"reason":"stolen"}"#),
    );
    assert_eq!(status, 200);
    let written = written + 1;
    let (status, err) = forged_attest(&server, &fp);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("quote_invalid")),
        "{err}"
    );

    assert_eq!(audit_total(&server), written, "nothing written");
    let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "no machine made for the invented EK"
    );
    assert_eq!(machine(&server, &id)["wipe_pending"], true);
    assert_eq!(
        metric(
            &server,
            "itl_unauthenticated_total{reason=\"unknown_nonce\"}"
        ),
        300
    );
    assert_eq!(
        metric(&server, "itl_unauthenticated_total{reason=\"unknown_ek\"}"),
        1
    );
    assert_eq!(
        metric(&server, "itl_unauthenticated_total{reason=\"bad_quote\"}"),
        1
    );
    let logged = server
        .log()
        .iter()
        .filter(|l| l.contains("is not a challenge id of this server"))
        .count();
    assert!(
        (1..=3).contains(&logged),
        "rate-limited log: {logged} lines"
    );

    // The real machine proves itself and is told to wipe; its hook runs.
    assert_eq!(a.ok(&["attest", "--once"])["action"], "wipe");
    assert!(dir.path().join("a-wiped").exists());
}

/// The USB path: a machine that boots before its approval waits (`pending`, still
/// `registered`: no TPM proof makes a machine attested without an operator), and attests
/// once approved; approval before the first boot works as well.
#[test]
fn usb_boot_before_and_after_approval() {
    let swtpm_a = Swtpm::start();
    let swtpm_b = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    for (swtpm, name, approve_first) in [(&swtpm_a, "early", true), (&swtpm_b, "late", false)] {
        let a = agent(swtpm, &server.url, dir.path(), name);
        let id = a.ok(&["register", "--role", "worker-app"])["machine_id"].clone();
        if approve_first {
            approve(&server, &id, "worker-app", name);
        } else {
            let out = a.ok(&["attest", "--once"]);
            assert_eq!(out["action"], "pending");
            assert_eq!(machine(&server, &id)["status"], "registered");
            approve(&server, &id, "worker-app", name);
        }
        let out = a.ok(&["attest", "--once"]);
        assert_eq!(out["action"], "apply-config");
        // The single-use URL is a bearer link to the secrets: the agent does not print it.
        assert!(
            out["config_url"].ends_with("/api/v1/config/<token, not shown>"),
            "{out:?}"
        );
        assert_eq!(out["config_sha384"].len(), 96);
        assert_eq!(machine(&server, &id)["status"], "attested");
        assert!(dir.path().join(format!("{name}-applied.yaml")).exists());
    }
}

/// A machine reset (its agent's state lost: a reinstall) registers again with a new AK,
/// activates it with the same EK and attests again without an operator (audited
/// `ak-rotated`, and its config offered again); a locked machine reset stays locked.
#[test]
fn a_reset_machine_re_attests_alone() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "a");

    std::fs::remove_dir_all(&a.state).unwrap();
    let again = a.ok(&["self-register"]);
    assert_eq!(
        again["machine_id"], "",
        "a known EK's answer names no machine"
    );
    let r = a.ok(&["attest", "--once"]);
    assert_eq!(
        (&r["action"][..], &r["machine_id"]),
        ("apply-config", &id),
        "the same machine"
    );
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    let actions = server.audit_column(&id, "action");
    assert_eq!(
        actions.iter().filter(|a| *a == "ak-rotated").count(),
        1,
        "{actions:?}"
    );

    server.admin(&id, "lock", r#"{"reason":"lost"}"#);
    std::fs::remove_dir_all(&a.state).unwrap();
    a.ok(&["self-register"]);
    assert_eq!(a.ok(&["attest", "--once"])["action"], "lock");
    assert_eq!(machine(&server, &id)["status"], "locked");
}

static TAMPER_CONFIG: AtomicBool = AtomicBool::new(false);
static TAMPER_PCRS: AtomicBool = AtomicBool::new(false);

fn tamper(path: &str, body: String) -> String {
    if TAMPER_CONFIG.load(Ordering::SeqCst) && path.starts_with("/api/v1/config/") {
        return body.replace("hostname: ", "hostname: evil-");
    }
    if TAMPER_PCRS.load(Ordering::SeqCst) && path == "/api/v1/attest/challenge" {
        return body.replace("\"pcrs\":[0,1,2,3,4,5,6,7]", "\"pcrs\":[16]");
    }
    body
}

/// A man in the middle between the agent and the server (config URLs included) changes the
/// config it serves, then the PCRs a challenge asks for: the agent refuses the config, the
/// server refuses the quote, nothing is applied or written, and with the man gone the
/// machine gets its config.
#[test]
fn a_man_in_the_middle_cannot_change_the_config_or_the_pcr_selection() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    // The proxy's address must be known before the server starts (ITL_SERVICE_URL): it
    // forwards to a port reserved now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("http://127.0.0.1:{port}");
    let proxy = tampering_proxy(upstream.clone(), tamper);
    let listen = format!("127.0.0.1:{port}");
    let server = start_with_configs(
        dir.path(),
        &[("ITL_LISTEN", &listen), ("ITL_SERVICE_URL", &proxy)],
    );
    assert_eq!(server.url, upstream);
    let a = agent(&swtpm, &proxy, dir.path(), "a");
    let id = a.ok(&["self-register"])["machine_id"].clone();
    approve(&server, &id, "worker-app", "node-a");
    let applied = dir.path().join("a-applied.yaml");

    TAMPER_CONFIG.store(true, Ordering::SeqCst);
    let out = a.run(&["attest", "--once"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not the one the server signed"),
        "{}",
        out.stderr
    );
    assert!(!applied.exists(), "nothing applied");
    TAMPER_CONFIG.store(false, Ordering::SeqCst);

    let written = audit_total(&server);
    TAMPER_PCRS.store(true, Ordering::SeqCst);
    let out = a.run(&["attest", "--once"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("pcr_selection_mismatch"),
        "{}",
        out.stderr
    );
    TAMPER_PCRS.store(false, Ordering::SeqCst);
    assert_eq!(audit_total(&server), written, "nothing written");

    // The man gone: offered again, applied, and reported applied.
    assert_eq!(a.ok(&["attest", "--once"])["action"], "apply-config");
    let yaml = std::fs::read_to_string(&applied).unwrap();
    assert!(
        yaml.contains("hostname: node-a") && !yaml.contains("evil"),
        "{yaml}"
    );
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
}

/// Attack 6 and DESIGN §3.1: an EK that does not chain to a trusted TPM vendor CA is
/// refused under `ITL_EK_CHAIN=strict` (nothing written) and shown `unverified` under
/// `warn`; swtpm's EK verifies once its manufacturer CA is trusted (`ITL_EK_CA_DIR`).
#[test]
fn ek_chains_strict_warn_and_verified() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let cas = dir.path().join("ek-cas");
    std::fs::create_dir_all(&cas).unwrap();
    for name in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
        std::fs::copy(swtpm.manufacturer_ca_dir().join(name), cas.join(name)).unwrap();
    }
    let cases = [
        ("strict", None, Some("ek_untrusted")),
        ("warn", None, None),
        ("strict", Some(cas.to_str().unwrap()), None),
    ];
    for (i, (policy, ca_dir, refused)) in cases.into_iter().enumerate() {
        let mut env = vec![("ITL_EK_CHAIN", policy)];
        if let Some(ca_dir) = ca_dir {
            env.push(("ITL_EK_CA_DIR", ca_dir));
        }
        let server = start_with_configs(&dir.path().join(i.to_string()), &env);
        let a = agent(&swtpm, &server.url, &dir.path().join(i.to_string()), "a");
        let out = a.run(&["self-register"]);
        let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
        match refused {
            Some(code) => {
                assert_ne!(out.code, 0);
                assert!(out.stderr.contains(code), "{}", out.stderr);
                assert_eq!(list.as_array().unwrap().len(), 0, "nothing written");
                assert_eq!(audit_total(&server), 0);
            }
            None => {
                assert_eq!(out.code, 0, "{}", out.stderr);
                let chain = &list[0]["ek_chain"];
                match ca_dir {
                    None => assert_eq!(chain["status"], "unverified", "{chain}"),
                    Some(_) => {
                        assert_eq!(chain["status"], "verified", "{chain}");
                        assert!(chain["by"].as_str().unwrap().contains("swtpm"), "{chain}");
                    }
                }
            }
        }
    }
}

/// Attacks 1 and 10: the long-lived token is handed out once and kept only as its hash (a
/// backup holds no token), and what it serves has no secret.
#[test]
fn tokens_are_hashes_and_serve_no_secrets() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let a = agent(&swtpm, &server.url, dir.path(), "usb");
    let id = a.ok(&["register"])["machine_id"].clone();
    approve(&server, &id, "controlplane", "cp-1");
    let (_, detail) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert!(detail.get("config_token").is_none());
    let state: Value =
        serde_json::from_slice(&std::fs::read(a.state.join("enrollment.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    let url = state["config_url"].as_str().map(str::to_owned);
    let backup = server.get_bytes("/api/v1/backup");
    if let Some(url) = url {
        let token = url.rsplit('/').next().unwrap();
        assert!(
            !backup.windows(token.len()).any(|w| w == token.as_bytes()),
            "the backup holds the token"
        );
        let (status, yaml) =
            server.call_text("GET", url.trim_start_matches(&server.url), None, None);
        assert_eq!(status, 200);
        for secret in ["token:", "key:", "secret"] {
            assert!(!yaml.contains(secret), "{secret} served: {yaml}");
        }
    } else {
        panic!("the USB registration kept no config URL: {state}");
    }
}

/// Review finding 1: the credential is made for exactly the EK that was fingerprinted. A
/// request naming a victim's EK public key (`ek_source: pub`) with a certificate of the
/// attacker's own key beside it is refused; the victim's own record keeps its EK.
#[test]
fn ek_material_other_than_the_fingerprinted_one_is_refused() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    // The victim's EK public area (public: the TPM reports it to anyone who asks).
    let (area, spki) = attest_host_agent::tpm::Tpm::open(&swtpm.tcti())
        .unwrap()
        .ek_public(attest_host_agent::tpm::EkType::EccP384)
        .unwrap();
    let fp = attest_common::ek_fingerprint(&spki).unwrap().fingerprint;
    let b64 = |b: &[u8]| base64ct::Base64::encode_string(b);
    let victim = serde_json::json!({
        "ek_fingerprint": fp.to_string(), "ek_source": "pub", "ek_public": b64(&area),
    });
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&victim.to_string()),
    );
    assert_eq!(status, 201, "{reg}");
    let written = audit_total(&server);
    // The attacker's certificate (any other EK certificate will do) beside the victim's key.
    let other = Swtpm::start();
    let other_cert = other.ek_cert_der(attest_host_agent::tpm::EkType::EccP384.cert_nv_index());
    let mut forged = victim.clone();
    forged["ek_cert_pem"] = Value::String(b64(&other_cert));
    let (status, err) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&forged.to_string()),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("ambiguous_ek_material")),
        "{err}"
    );
    assert_eq!(audit_total(&server), written);
}

/// Review finding 2: the keys activation secrets and challenges are derived with live beside
/// the registry (0600), not in it: a registry backup can make neither credentials nor
/// challenges.
#[test]
fn server_keys_are_not_in_the_registry() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let path = server.data_dir.join("activation-key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(key.trim().len(), 96);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let backup = server.get_bytes("/api/v1/backup");
    let mut bytes = [0u8; 48];
    attest_common::hex::decode_into(key.trim(), &mut bytes).unwrap();
    assert!(
        !backup.windows(48).any(|w| w == bytes),
        "the backup holds the key"
    );
    assert!(!backup.windows(96).any(|w| w == key.trim().as_bytes()));
    // Nor the challenge key: a backup must not mint challenge ids for later (review F2).
    let path = server.data_dir.join("challenge-key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    attest_common::hex::decode_into(key.trim(), &mut bytes).unwrap();
    assert!(
        !backup.windows(48).any(|w| w == bytes),
        "the backup holds the challenge key"
    );
}

/// Review finding 7, against the binary: a challenge id tagged with the server's own key
/// (read from its `challenge-key` file, as by someone who stole it) but expiring in ten
/// years is refused as not the server's (404, counted, nothing written); the same key's id
/// with an ordinary expiry passes the nonce check (and stops at the unknown EK).
#[test]
fn a_challenge_id_cannot_outlive_its_lifetime() {
    let server = Server::start();
    let data_dir = server.data_dir.clone();
    let dir = server.stop();
    let hex = std::fs::read_to_string(data_dir.join("challenge-key")).unwrap();
    let mut bytes = [0u8; 48];
    attest_common::hex::decode_into(hex.trim(), &mut bytes).unwrap();
    let key = attest_server::challenge::ChallengeKey::new(&bytes);
    let server = Server::start_with(&data_dir, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let written = audit_total(&server);
    let attest = |nonce_id: &str| {
        let body = format!(
            r#"{{"ek_fingerprint":"{}","nonce_id":"{nonce_id}","agent_nonce":"{}","quote":"AAAA","signature":"AAAA","pcr_values":[]}}"#,
            "ab".repeat(48),
            "00".repeat(32)
        );
        server.call("POST", "/api/v1/attest", None, Some(&body))
    };
    let (forged, _) = key.issue(now + 10 * 365 * 86_400, random());
    let (status, err) = attest(&forged);
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("unknown_nonce"))
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("ITL_CHALLENGE_LIFETIME_SECONDS (60 s)"),
        "{err}"
    );
    let (ordinary, _) = key.issue(now + 30, random());
    let (status, err) = attest(&ordinary);
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("unknown_machine")),
        "{err}"
    );
    assert_eq!(audit_total(&server), written, "nothing written");
    assert_eq!(
        metric(
            &server,
            "itl_unauthenticated_total{reason=\"unknown_nonce\"}"
        ),
        1
    );
    drop(dir);
}

/// Review finding 5: an AK rotation takes effect only with an accepted attestation. A reset
/// machine whose PCRs no longer match its baseline is refused, and its new AK is not bound.
#[test]
fn a_refused_attestation_rotates_nothing() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "a");
    std::fs::remove_dir_all(&a.state).unwrap();
    swtpm.tpm2(
        "tpm2_pcrextend",
        &[&format!("0:sha384={}", "11".repeat(48))],
    );
    a.ok(&["self-register"]);
    let out = a.run(&["attest", "--once"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("pcr_policy_violation"),
        "{}",
        out.stderr
    );
    let actions = server.audit_column(&id, "action");
    assert!(!actions.iter().any(|a| a == "ak-rotated"), "{actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("attest-failed"));
}

/// Review finding (EK squatting): someone who knows a machine's EK certificate (public) and
/// owns a TPM of their own registers that certificate with their own TPM's AK before the
/// machine first boots. They cannot activate the credential (it is made for the victim's
/// EK), so their AK is never bound; the honest machine then registers its own AK, activates
/// it, and attests after the operator's approval.
#[test]
fn an_ek_registered_first_by_someone_else_is_still_the_machines() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let cert = swtpm.ek_cert_der(attest_host_agent::tpm::EkType::EccP384.cert_nv_index());
    let fp = attest_common::ek_fingerprint(&cert).unwrap().fingerprint;

    // The squatter's AK: a restricted signing key of their own TPM.
    let theirs = Swtpm::start();
    let (ak, ctx) = (
        dir.path().join("squatter-ak.pub"),
        dir.path().join("squatter.ctx"),
    );
    theirs.tpm2(
        "tpm2_createprimary",
        &[
            "-C",
            "e",
            "-G",
            "ecc384:ecdsa-sha384:null",
            "-g",
            "sha384",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "-c",
            ctx.to_str().unwrap(),
        ],
    );
    theirs.tpm2(
        "tpm2_readpublic",
        &["-c", ctx.to_str().unwrap(), "-o", ak.to_str().unwrap()],
    );
    let b64 = |b: &[u8]| base64ct::Base64::encode_string(b);
    let squat = serde_json::json!({
        "ek_fingerprint": fp.to_string(), "ek_source": "cert", "ek_cert_pem": b64(&cert),
        "ak_public": b64(&std::fs::read(&ak).unwrap()), "hw_serial": "squatter",
    });
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&squat.to_string()),
    );
    assert_eq!(status, 201, "{reg}");
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    // The approver sees that nothing about it is proven yet (review F1).
    assert_eq!(machine(&server, &id)["tpm_proven"], false);
    approve(&server, &id, "worker-app", "victim");

    // The honest machine: same EK, its own AK, activated with the same EK.
    let a = agent(&swtpm, &server.url, dir.path(), "victim");
    assert_eq!(a.ok(&["self-register"])["machine_id"], "");
    let r = a.ok(&["attest", "--once"]);
    assert_eq!((&r["action"][..], &r["machine_id"]), ("apply-config", &id));
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    assert_eq!(machine(&server, &id)["status"], "attested");
    assert_eq!(machine(&server, &id)["tpm_proven"], true);
    assert!(dir.path().join("victim-applied.yaml").exists());
    let details = server.audit_column(&id, "detail");
    assert!(
        details
            .iter()
            .any(|d| d.contains("AK rotated") && d.contains("never activated")),
        "{details:?}"
    );
}

/// Review finding (durable writes without a TPM): under `ITL_EK_CHAIN=warn` a made-up EK
/// gets a record for the approver, but at most `ITL_MAX_UNVERIFIED_PENDING` of them wait at
/// once; beyond that registrations of unverified EKs are refused with nothing written, while
/// an EK that chains to a TPM vendor is still accepted, and an operator's rejection makes
/// room again.
#[test]
fn made_up_eks_cannot_fill_the_registry() {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let cas = dir.path().join("ek-cas");
    std::fs::create_dir_all(&cas).unwrap();
    for name in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
        std::fs::copy(swtpm.manufacturer_ca_dir().join(name), cas.join(name)).unwrap();
    }
    let server = start_with_configs(
        dir.path(),
        &[
            ("ITL_MAX_UNVERIFIED_PENDING", "3"),
            ("ITL_EK_CA_DIR", cas.to_str().unwrap()),
        ],
    );
    // Software keys in the EK template's public area: without a certificate a made-up EK
    // that looks right is still possible, which is what the quota is for.
    let made_up = || {
        let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        support::pub_ek_body(key.public_key().as_ref()).to_string()
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, reg) = server.call("POST", "/api/v1/self-register", None, Some(&made_up()));
        assert_eq!(status, 201, "{reg}");
        ids.push(reg["machine_id"].as_str().unwrap().to_owned());
    }
    let written = audit_total(&server);
    for _ in 0..20 {
        let (status, err) = server.call("POST", "/api/v1/self-register", None, Some(&made_up()));
        assert_eq!(
            (status, err["error"].as_str()),
            (503, Some("registration_quota")),
            "{err}"
        );
    }
    assert_eq!(audit_total(&server), written, "nothing written");
    let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(
        metric(
            &server,
            "itl_unauthenticated_total{reason=\"registration_quota\"}"
        ),
        20
    );

    // A real TPM's EK (chains to its manufacturer's CA) is not counted.
    let (a, id) = attested(&server, &swtpm, dir.path(), "honest");
    assert_eq!(machine(&server, &id)["ek_chain"]["status"], "verified");
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");

    // Rejecting one makes room for one.
    server.admin(&ids[0], "reject", r#"{"reason":"not ours"}"#);
    let (status, reg) = server.call("POST", "/api/v1/self-register", None, Some(&made_up()));
    assert_eq!(status, 201, "{reg}");
    let (status, _) = server.call("POST", "/api/v1/self-register", None, Some(&made_up()));
    assert_eq!(status, 503);
}

/// Review finding F8: two agents of one TPM (the firmware and the installed system, or two
/// installations) each bind their own AK by proof. Each takes the record back with its
/// activation proof instead of being locked out with `activation_failed`.
#[test]
fn two_agents_of_one_tpm_each_prove_their_ak() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "first");
    let b = agent(&swtpm, &server.url, dir.path(), "second");
    assert_eq!(b.ok(&["self-register"])["machine_id"], "");
    for round in 0..2 {
        for (who, agent) in [("first", &a), ("second", &b)] {
            let out = agent.run(&["attest", "--once"]);
            assert_eq!(out.code, 0, "round {round}, {who}: {}", out.stderr);
            assert_eq!(out.kv["status"], "attested", "round {round}, {who}");
        }
    }
    let actions = server.audit_column(&id, "action");
    assert!(
        actions.iter().filter(|a| *a == "ak-rotated").count() >= 3,
        "{actions:?}"
    );
}

/// Issue 25, item 3: the agent never prints a config token (the long-lived one of the USB
/// path, the single-use one of an attestation, in its output or in an error naming the
/// URL) or its activation secret. Everything it prints over a registration, an
/// attestation and a failed config fetch is searched for each, as text, hex and base64.
#[test]
fn the_agent_prints_no_token_and_no_secret() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    // Config URLs that point nowhere: the fetch fails, and its error names the URL.
    let server = start_with_configs(dir.path(), &[("ITL_SERVICE_URL", "http://127.0.0.1:9")]);
    let a = agent(&swtpm, &server.url, dir.path(), "a");
    let enrollment = || -> Value {
        serde_json::from_slice(&std::fs::read(a.state.join("enrollment.json")).unwrap()).unwrap()
    };
    let mut printed = String::new();
    let mut run = |args: &[&str]| {
        let out = a.run(args);
        printed.push_str(&out.stderr);
        for (k, v) in &out.kv {
            printed.push_str(&format!("{k}={v}\n"));
        }
        out
    };
    assert_eq!(run(&["register", "--role", "worker-app"]).code, 0);
    let long_lived = enrollment()["config_url"].as_str().unwrap().to_owned();
    let id = enrollment()["machine_id"].as_str().unwrap().to_owned();
    approve(&server, &id, "worker-app", "a");
    let out = run(&["attest", "--once"]);
    assert_ne!(out.code, 0, "the fetch must fail");
    assert!(
        out.stderr.contains("/api/v1/config/<token, not shown>"),
        "{}",
        out.stderr
    );
    let single_use = enrollment()["config_url"].as_str().unwrap().to_owned();
    let secret = std::fs::read(a.state.join("activation-secret")).unwrap();

    let token = |url: &str| url.rsplit_once('/').unwrap().1.to_owned();
    let mut needles = vec![token(&long_lived), token(&single_use)];
    let mut hex = String::new();
    for b in &secret {
        hex.push_str(&format!("{b:02x}"));
    }
    needles.push(hex);
    needles.push(base64ct::Base64::encode_string(&secret));
    assert_ne!(needles[0], needles[1]);
    for needle in &needles {
        assert!(needle.len() >= 32, "{needle}");
        assert!(
            !printed.contains(needle.as_str()),
            "printed: {needle}\n{printed}"
        );
    }
}

static FIRST_ANSWER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A man in the middle that answers every attestation with the first answer it saw.
fn replay_first_answer(path: &str, body: String) -> String {
    if path != "/api/v1/attest" {
        return body;
    }
    let mut kept = FIRST_ANSWER.lock().unwrap();
    kept.get_or_insert(body).clone()
}

/// Issue 25, item 1 (DESIGN §3.7): an answer is bound to the request it answers. A man in
/// the middle hands machine B the (genuinely signed) answer to machine A's attestation: B
/// refuses it — no hook runs, nothing is applied — and both machines keep attesting.
#[test]
fn an_answer_to_another_machine_is_refused() {
    let swtpm_a = Swtpm::start();
    let swtpm_b = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let proxy = tampering_proxy(server.url.clone(), replay_first_answer);
    let via_proxy = |a: &AgentCli| AgentCli {
        tcti: a.tcti.clone(),
        state: a.state.clone(),
        server: proxy.clone(),
    };
    let mut ids = Vec::new();
    for (swtpm, name) in [(&swtpm_a, "a"), (&swtpm_b, "b")] {
        let m = agent(swtpm, &server.url, dir.path(), name);
        let id = m.ok(&["self-register"])["machine_id"].clone();
        approve(&server, &id, "worker-app", name);
        ids.push((m, id));
    }
    let (a, b) = (&ids[0].0, &ids[1].0);
    assert_eq!(
        via_proxy(a).ok(&["attest", "--once"])["action"],
        "apply-config"
    );
    assert!(dir.path().join("a-applied.yaml").exists());

    let out = via_proxy(b).run(&["attest", "--once"]);
    assert_ne!(out.code, 0, "B acted on A's answer");
    assert!(
        out.stderr.contains("not signed by the pinned server key"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("b-applied.yaml").exists(), "no hook ran");

    // Both keep attesting (directly).
    assert_eq!(b.ok(&["attest", "--once"])["action"], "apply-config");
    assert!(dir.path().join("b-applied.yaml").exists());
    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    assert_eq!(machine(&server, &ids[1].1)["status"], "attested");
}

/// Issue 25: an agent from before protocol v2 (its quote over the bare challenge nonce) gets
/// a clear refusal, 400 `agent_outdated`, not a silent downgrade; nothing is written.
#[test]
fn an_agent_of_protocol_v1_is_told_to_upgrade() {
    use attest_host_agent::tpm::{EkType, Tpm};
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "a");
    let written = audit_total(&server);
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let ek = tpm.ek(EkType::EccP384).unwrap();
    let ak_pub = std::fs::read(a.state.join("ak.pub")).unwrap();
    let ak_priv = std::fs::read(a.state.join("ak.priv")).unwrap();
    let ak = tpm.load_ak(ek, &ak_pub, &ak_priv).unwrap();
    let c = challenge(&server);
    let (quote, signature) = tpm.quote(ak.handle, &c.nonce.0, &c.pcr_selection).unwrap();
    let values = tpm.pcr_values(&c.pcr_selection).unwrap();
    // swtpm has no resource manager: leave no object behind for the agent.
    tpm.flush(ak.handle).unwrap();
    tpm.flush(ek).unwrap();
    drop(tpm);
    let fp = machine(&server, &id)["ek_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = AttestRequest {
        ek_fingerprint: fp.parse().unwrap(),
        nonce_id: c.nonce_id,
        agent_nonce: Hex(random::<32>()),
        quote: Blob::from_slice(&quote).unwrap(),
        signature: Blob::from_slice(&signature).unwrap(),
        pcr_values: heapless::Vec::from_slice(&values).unwrap(),
        activation_proof: None,
        ak_public: None,
        config_applied: None,
        wipe_done: false,
    };
    let (status, err) = server.call(
        "POST",
        "/api/v1/attest",
        None,
        Some(&serde_json::to_string(&req).unwrap()),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("agent_outdated")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("upgrade the agent"),
        "{err}"
    );
    assert_eq!(audit_total(&server), written, "nothing written");
    assert_eq!(
        a.ok(&["attest", "--once"])["action"],
        "none",
        "the current agent attests"
    );
}

static DROPPED_WIPE: AtomicBool = AtomicBool::new(false);

/// A network that loses the first wipe answer (garbled on the way).
fn lose_first_wipe(path: &str, body: String) -> String {
    if path == "/api/v1/attest"
        && body.contains("\"action\":\"wipe\"")
        && !DROPPED_WIPE.swap(true, Ordering::SeqCst)
    {
        return "{\"lost\":true}".into();
    }
    body
}

/// Issue 25, item 2: a wipe answer that never arrives loses nothing: the wipe is told again
/// at the next contact, runs, and the audit shows it sent, then confirmed.
#[test]
fn a_lost_wipe_answer_is_told_again() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let (a, id) = attested(&server, &swtpm, dir.path(), "a");
    let proxy = tampering_proxy(server.url.clone(), lose_first_wipe);
    let lossy = AgentCli {
        tcti: a.tcti.clone(),
        state: a.state.clone(),
        server: proxy,
    };
    server.admin(&id, "revoke", r#"{"reason":"stolen","wipe":true}"#);
    let out = lossy.run(&["attest", "--once"]);
    assert_ne!(out.code, 0, "the answer was lost");
    assert!(!dir.path().join("a-wiped").exists());
    assert_eq!(machine(&server, &id)["wipe_pending"], true);

    let r = lossy.ok(&["attest", "--once"]);
    assert_eq!(
        (r["action"].as_str(), r["hooks_run"].as_str()),
        ("wipe", "wipe")
    );
    assert!(dir.path().join("a-wiped").exists());
    let r = lossy.ok(&["attest", "--once"]);
    assert_eq!(
        (r["status"].as_str(), r["action"].as_str()),
        ("revoked", "none")
    );
    let details = server.audit_column(&id, "detail");
    let sent = details
        .iter()
        .filter(|d| d.starts_with("Wipe sent"))
        .count();
    let confirmed = details
        .iter()
        .position(|d| d.starts_with("Wipe confirmed"))
        .expect("confirmed");
    assert_eq!(sent, 2, "told twice: {details:?}");
    assert_eq!(confirmed, details.len() - 1, "{details:?}");
    assert_eq!(machine(&server, &id)["wipe_pending"], false);
}
