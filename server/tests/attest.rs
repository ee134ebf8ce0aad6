//! Push-model attestation end to end: a real swtpm driven by the agent library (tss-esapi),
//! the real server binary over HTTP, a real redb file. Credential activation, quotes, PCR
//! baseline, lifecycle actions, and the server's signature on every answer.

mod support;

use attest_common::lifecycle::Action;
use attest_common::nonce::{Domain, verify, verifying_key_from_spki};
use attest_common::tpm::credential::{Entropy, OsEntropy};
use attest_common::tpm::hash::{HashAlg, hmac};
use attest_common::wire::{
    AttestRequest, AttestResponse, Blob, ChallengeResponse, Hex, RegisterResponse, from_json,
};
use attest_host_agent::tpm::{Ak, AkType, EkType, Tpm};
use attest_swtpm::Swtpm;
use base64ct::Encoding;
use serde_json::Value;
use support::{ADMIN, Server};

struct Agent {
    tpm: Tpm,
    ak: Ak,
    fingerprint: attest_common::Fingerprint,
    server_key: p384::ecdsa::VerifyingKey,
    /// The SHA-384 of the config it applied, reported with each attestation.
    applied: Option<[u8; 48]>,
    /// Reported once its wipe ran (DESIGN §3.7).
    wipe_done: bool,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsEntropy.fill(&mut b);
    b
}

impl Agent {
    /// Attests once; `proof` is the activated secret on the first attestation.
    fn attest(
        &mut self,
        server: &Server,
        secret: Option<&[u8]>,
        tamper: bool,
    ) -> (u16, Value, Option<AttestResponse>) {
        let (status, c) = server.call("POST", "/api/v1/attest/challenge", None, None);
        assert_eq!(status, 200);
        let c: ChallengeResponse = from_json(c.to_string().as_bytes()).unwrap();
        let agent_nonce = Hex(random::<32>());
        let mut req = AttestRequest {
            ek_fingerprint: self.fingerprint,
            nonce_id: c.nonce_id.clone(),
            agent_nonce,
            quote: Blob::default(),
            signature: Blob::default(),
            pcr_values: heapless::Vec::new(),
            activation_proof: secret.map(|s| {
                let mac = hmac(HashAlg::Sha384, s, &[&c.nonce.0]).unwrap();
                Hex(mac.as_slice().try_into().unwrap())
            }),
            ak_public: None,
            config_applied: self.applied.map(Hex),
            wipe_done: self.wipe_done,
        };
        // Quoted over the binding of the nonces and the request's claims (DESIGN §3.7).
        let (quote, signature) = self
            .tpm
            .quote(
                self.ak.handle,
                &req.qualifying_data(&c.nonce.0),
                &c.pcr_selection,
            )
            .unwrap();
        let mut values = self.tpm.pcr_values(&c.pcr_selection).unwrap();
        if tamper {
            values[0].value.0[0] ^= 1;
        }
        req.quote = Blob::from_slice(&quote).unwrap();
        req.signature = Blob::from_slice(&signature).unwrap();
        req.pcr_values = heapless::Vec::from_slice(&values).unwrap();
        let body = serde_json::to_string(&req).unwrap();
        let (status, value) = server.call("POST", "/api/v1/attest", None, Some(&body));
        let response = (status == 200).then(|| {
            let r: AttestResponse = from_json(value.to_string().as_bytes()).unwrap();
            // Every answer is signed over our nonce; a changed field would not verify.
            verify(
                &self.server_key,
                Domain::Action,
                &agent_nonce.0,
                &r.signed_context_for(&req),
                &r.signature,
            )
            .expect("the server's signature verifies with the pinned key");
            r
        });
        // Replaying the same request (same nonce) is refused.
        if status == 200 {
            let (again, err) = server.call("POST", "/api/v1/attest", None, Some(&body));
            assert_eq!(
                (again, err["error"].as_str()),
                (409, Some("nonce_replayed"))
            );
        }
        (status, value, response)
    }
}

#[test]
fn zero_touch_attestation_end_to_end() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("base");
    std::fs::create_dir_all(&cfg).unwrap();
    let talos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/talos");
    for (from, to) in [
        ("controlplane", "controlplane"),
        ("worker", "worker-infra"),
        ("worker", "worker-app"),
    ] {
        std::fs::copy(
            talos.join(format!("{from}.yaml")),
            cfg.join(format!("{to}.yaml")),
        )
        .unwrap();
    }
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_CONFIG_DIR", cfg.to_str().unwrap()),
        ],
    );
    let (_, key) = server.call("GET", "/api/v1/server-key", None, None);
    let server_key = verifying_key_from_spki(
        &base64ct::Base64::decode_vec(key["public_key_der"].as_str().unwrap()).unwrap(),
    )
    .unwrap();

    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let ek = tpm.ek(EkType::EccP384).unwrap();
    let cert = tpm.ek_cert(EkType::EccP384).unwrap().unwrap();
    let ak = tpm.create_ak(ek, AkType::EccP384).unwrap();
    let fingerprint = attest_common::ek_fingerprint(&cert).unwrap().fingerprint;
    let register = support::register_request(fingerprint, &cert, &ak.public_tpm2b);
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&serde_json::to_string(&register).unwrap()),
    );
    assert_eq!(status, 201, "{reg}");
    let reg: RegisterResponse = from_json(reg.to_string().as_bytes()).unwrap();
    let cred = reg.credential.expect("a credential for the AK");
    let secret = tpm
        .activate_credential(
            ak.handle,
            ek,
            EkType::EccP384,
            &cred.credential_blob,
            &cred.encrypted_secret,
        )
        .unwrap();
    let id = reg.machine_id.to_string();
    let mut agent = Agent {
        tpm,
        ak,
        fingerprint,
        server_key,
        applied: None,
        wipe_done: false,
    };

    // Without the activation proof nothing is trusted, and nothing is written.
    let before = server.audit_total();
    let (status, err, _) = agent.attest(&server, None, false);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("activation_failed")),
        "{err}"
    );
    let (status, err, _) = agent.attest(&server, Some(&[0u8; 32]), false);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("activation_failed"))
    );
    assert_eq!(before, server.audit_total(), "refusals write nothing");
    // Pending approval, with the proof: told to wait (the AK is bound now).
    let (_, _, r) = agent.attest(&server, Some(&secret), false);
    assert_eq!(r.unwrap().action, Action::Pending);
    let (_, _, r) = agent.attest(&server, None, false);
    assert_eq!(
        r.unwrap().action,
        Action::Pending,
        "activated once is enough"
    );

    let approve = r#"{"role":"worker-app","hostname":"node-1","assigned_ip":"10.0.0.21/24"}"#;
    assert_eq!(
        server
            .call(
                "POST",
                &format!("/api/v1/machines/{id}/approve"),
                Some(ADMIN),
                Some(approve)
            )
            .0,
        200
    );

    // Approved: attested, and told to apply its config, with the config's digest.
    let (status, body, r) = agent.attest(&server, None, false);
    assert_eq!(status, 200, "{body}");
    let r = r.unwrap();
    assert_eq!(
        (r.action, r.status),
        (Action::ApplyConfig, attest_common::Status::Attested)
    );
    let url = r.config_url.as_ref().unwrap().to_string();
    let agent_http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let fetch = |url: &str| {
        let mut res = agent_http.get(url).call().unwrap();
        (
            res.status().as_u16(),
            res.body_mut().read_to_string().unwrap(),
        )
    };
    let (status, yaml) = fetch(&url);
    assert_eq!(status, 200, "{yaml}");
    let digest = attest_common::tpm::hash::digest(HashAlg::Sha384, &[yaml.as_bytes()]).unwrap();
    assert_eq!(
        r.config_sha384.map(|h| h.0.to_vec()),
        Some(digest.to_vec()),
        "the signed answer names the config's SHA-384"
    );
    let config: Value = serde_norway::from_str(&yaml).unwrap();
    assert!(
        config.pointer("/machine/token").is_some(),
        "attested: the config carries its secrets"
    );
    assert_eq!(
        config
            .pointer("/machine/network/hostname")
            .and_then(Value::as_str),
        Some("node-1")
    );
    // The URL works once.
    let (status, again) = fetch(&url);
    assert_eq!(status, 404, "{again}");
    // Until an attestation reports it applied, the config is offered again (a new URL).
    let (_, _, again) = agent.attest(&server, None, false);
    let again = again.unwrap();
    assert_eq!(again.action, Action::ApplyConfig);
    assert_ne!(again.config_url, r.config_url);
    // One live URL per machine: a newer answer's URL voids the one before it (review F9).
    let (_, _, newest) = agent.attest(&server, None, false);
    let newest = newest.unwrap().config_url.unwrap().to_string();
    let (status, _) = fetch(again.config_url.as_ref().unwrap());
    assert_eq!(status, 404, "an older, unused URL still served");
    let (status, _) = fetch(&newest);
    assert_eq!(status, 200);
    agent.applied = Some(digest.as_slice().try_into().unwrap());

    // Attested: plain heartbeat.
    let (_, _, r) = agent.attest(&server, None, false);
    assert_eq!(r.unwrap().action, Action::None);
    // A PCR value that does not match the quote.
    let (status, err, _) = agent.attest(&server, None, true);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("quote_invalid")),
        "{err}"
    );
    // A changed PCR after the baseline: refused, naming it.
    agent
        .tpm
        .pcr_extend(0, b"unexpected firmware", &[HashAlg::Sha384])
        .unwrap();
    let (status, err, _) = agent.attest(&server, None, false);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("pcr_policy_violation"))
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("sha384:0 differs"),
        "{err}"
    );

    // Lock and revoke with wipe: the agent is told, signed; then refused.
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/lock"),
        Some(ADMIN),
        Some(r#"{"reason":"test"}"#),
    );
    assert_eq!(status, 200);
    let (_, _, r) = agent.attest(&server, None, false);
    assert_eq!(r.unwrap().action, Action::Lock);
    // locked → attested by unlock; the changed PCR 0 is still refused against the baseline.
    let (status, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/unlock"),
        Some(ADMIN),
        Some(r#"{"reason":"checked"}"#),
    );
    assert_eq!((status, m["status"].as_str()), (200, Some("attested")));
    let (status, err, _) = agent.attest(&server, None, false);
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("pcr_policy_violation"))
    );
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/lock"),
        Some(ADMIN),
        Some(r#"{"reason":"again"}"#),
    );
    assert_eq!(status, 200);
    server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"wipe":true,"reason":"stolen"}"#),
    );
    // The wipe is told until the machine confirms it (a lost answer loses nothing), then
    // the signed last word: revoked, nothing to do.
    for _ in 0..2 {
        let (_, _, r) = agent.attest(&server, None, false);
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.action),
            (attest_common::Status::Revoked, Action::Wipe)
        );
    }
    agent.wipe_done = true;
    for _ in 0..2 {
        let (status, body, r) = agent.attest(&server, None, false);
        assert_eq!(status, 200, "{body}");
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.action),
            (attest_common::Status::Revoked, Action::None)
        );
    }
    let actions = server.audit_column(&id, "action");
    assert_eq!(
        actions.iter().filter(|a| *a == "wipe-confirmed").count(),
        1,
        "{actions:?}"
    );

    // Only what proved itself is in the audit log: the two verified attestations the PCR
    // policy refused. Bad proofs, the forged PCR value and the six replays wrote nothing.
    let (_, audit) = server.call(
        "GET",
        &format!("/api/v1/audit?machine_id={id}&per_page=200"),
        Some(ADMIN),
        None,
    );
    let failures: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "attest-failed")
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(failures.iter().all(|d| d.contains("PCR policy violated")));
    let (_, v) = server.call("GET", "/api/v1/audit/verify", Some(ADMIN), None);
    assert_eq!(v["valid"], true);

    // An EK the server never saw proves nothing: refused, and no record is made.
    let mut stranger = agent;
    stranger.fingerprint = attest_common::Fingerprint(random::<48>());
    let (status, err, _) = stranger.attest(&server, None, false);
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("unknown_machine")),
        "{err}"
    );

    // What an operator's Prometheus sees of all that.
    let (status, _) = server.call_text("GET", "/metrics", None, None);
    assert_eq!(status, 401, "metrics are for operators");
    let (status, text) = server.call_text("GET", "/metrics", Some(ADMIN), None);
    assert_eq!(status, 200, "{text}");
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(sample("itl_machines{status=\"revoked\"}"), 1);
    assert_eq!(sample("itl_machines{status=\"pending_approval\"}"), 0);
    assert_eq!(sample("itl_machines{status=\"attested\"}"), 0);
    // Accepted: pending twice, apply-config three times, the heartbeat, lock, the wipe
    // twice, the confirmation and the revoked machine's last contact. Refused: two bad
    // activation proofs, the forged PCR value, two policy violations, the stranger, and the
    // eleven replays (without a challenge; each accepted attestation is replayed once).
    assert_eq!(sample("itl_attestations_total{result=\"accepted\"}"), 11);
    assert_eq!(sample("itl_attestations_total{result=\"refused\"}"), 17);
    assert_eq!(sample("itl_challenges_issued_total"), 17);
    assert_eq!(
        sample("itl_unauthenticated_total{reason=\"replayed_nonce\"}"),
        11
    );
    assert_eq!(
        sample("itl_unauthenticated_total{reason=\"no_activation\"}"),
        2
    );
    assert_eq!(sample("itl_unauthenticated_total{reason=\"bad_quote\"}"), 1);
    assert_eq!(
        sample("itl_unauthenticated_total{reason=\"unknown_ek\"}"),
        1
    );
    // Through the batched path: the replay of the heartbeat (found used there, then
    // refused by the full path). The heartbeat itself reported the config applied, a
    // change, so it took the full path.
    assert_eq!(sample("itl_heartbeat_writes_total"), 1);
    assert_eq!(sample("itl_heartbeat_commits_total"), 1);
}
