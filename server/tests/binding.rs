//! Every answer bound to the machine that asked (issue 25, DESIGN.md §3.7), attacked by a man
//! in the middle between the agents and the real server: two machines' requests swapped, a
//! request's EK fingerprint rewritten, a register answer meant for another request. Both
//! agents (the host agent binary on swtpm, and the firmware agent through a real relay
//! process) are attacked; neither acts, nothing of theirs changes, and both keep attesting.

/// Not in `support` itself: the CLI's tests share it, without the firmware.
#[path = "support/firmware.rs"]
mod firmware;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use attest_common::Fingerprint;
use attest_common::lifecycle::Status;
use attest_common::wire::{LinkRequest, LinkRequestBody, from_postcard};
use attest_firmware::agent::{AgentError, Mode, Outcome};
use attest_swtpm::Swtpm;
use firmware::{boot, server_key};
use serde_json::Value;
use support::agent::{AgentCli, agent, approve, machine};
use support::mitm::{self, Mitm};
use support::{ADMIN, Server, start_with_configs};

/// Every file of a state directory, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn audit_total(server: &Server) -> u64 {
    server.audit_total()
}

fn via(a: &AgentCli, url: &str) -> AgentCli {
    AgentCli {
        tcti: a.tcti.clone(),
        state: a.state.clone(),
        server: url.to_owned(),
    }
}

/// Two host-agent machines, self-registered and approved.
fn two_machines(server: &Server, tpms: [&Swtpm; 2], dir: &Path) -> Vec<(AgentCli, String)> {
    tpms.into_iter()
        .zip(["a", "b"])
        .map(|(swtpm, name)| {
            let m = agent(swtpm, &server.url, dir, name);
            let id = m.ok(&["self-register"])["machine_id"].clone();
            approve(server, &id, "worker-app", name);
            (m, id)
        })
        .collect()
}

/// A man in the middle swaps two machines' attestations in flight: each request is genuine
/// and reaches the server, but each machine gets the (genuinely signed) answer to the other's
/// — a worker would apply another's config, a machine run another's lock. Neither acts: no
/// hook runs, no state file changes; then both attest directly and are served.
#[test]
fn swapped_attestations_move_neither_host_agent() {
    let (swtpm_a, swtpm_b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let proxy = mitm::start(
        server.url.clone(),
        Mitm::Swap(Arc::new(|path: &str, _: &[u8]| path == "/api/v1/attest")),
    );
    let machines = two_machines(&server, [&swtpm_a, &swtpm_b], dir.path());
    let before: Vec<_> = machines.iter().map(|(m, _)| files(&m.state)).collect();

    let outs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = machines
            .iter()
            .map(|(m, _)| s.spawn(|| via(m, &proxy).run(&["attest", "--once"])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for ((m, _), out) in machines.iter().zip(&outs) {
        assert_ne!(
            out.code,
            0,
            "{} acted on the other's answer",
            m.state.display()
        );
        assert!(
            out.stderr.contains("not signed by the pinned server key"),
            "{}",
            out.stderr
        );
    }
    for name in ["a", "b"] {
        assert!(!dir.path().join(format!("{name}-applied.yaml")).exists());
    }
    let after: Vec<_> = machines.iter().map(|(m, _)| files(&m.state)).collect();
    assert_eq!(before, after, "no state file changed");

    for (m, id) in &machines {
        let r = m.ok(&["attest", "--once"]);
        assert_eq!((&r["action"][..], &r["machine_id"]), ("apply-config", id));
        assert_eq!(machine(&server, id)["status"], "attested");
    }
    for name in ["a", "b"] {
        assert!(dir.path().join(format!("{name}-applied.yaml")).exists());
    }
}

/// A man in the middle rewrites machine A's attestation to name machine B's EK: the quote's
/// claims (and B's AK) refuse it; nothing is written about either machine, no hook runs; both
/// keep attesting.
#[test]
fn a_rewritten_fingerprint_is_refused_and_changes_nothing() {
    let (swtpm_a, swtpm_b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let machines = two_machines(&server, [&swtpm_a, &swtpm_b], dir.path());
    for (m, _) in &machines {
        assert_eq!(m.ok(&["attest", "--once"])["action"], "apply-config");
        assert_eq!(m.ok(&["attest", "--once"])["action"], "none");
    }
    let fp_b = machine(&server, &machines[1].1)["ek_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = mitm::start(
        server.url.clone(),
        Mitm::Requests(Arc::new(move |path: &str, body: Vec<u8>| {
            if path != "/api/v1/attest" {
                return body;
            }
            let mut req: Value = serde_json::from_slice(&body).unwrap();
            req["ek_fingerprint"] = fp_b.clone().into();
            serde_json::to_vec(&req).unwrap()
        })),
    );
    let (a, b) = (&machines[0].0, &machines[1].0);
    let written = audit_total(&server);
    let views: Vec<Value> = machines
        .iter()
        .map(|(_, id)| machine(&server, id))
        .collect();
    let before = files(&a.state);
    std::fs::remove_file(dir.path().join("a-applied.yaml")).unwrap();

    let out = via(a, &proxy).run(&["attest", "--once"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert_eq!(audit_total(&server), written, "nothing written");
    let now: Vec<Value> = machines
        .iter()
        .map(|(_, id)| machine(&server, id))
        .collect();
    assert_eq!(views, now, "neither machine changed");
    assert_eq!(files(&a.state), before);
    assert!(!dir.path().join("a-applied.yaml").exists(), "no hook ran");

    assert_eq!(a.ok(&["attest", "--once"])["action"], "none");
    assert_eq!(b.ok(&["attest", "--once"])["action"], "none");
}

/// The register answer is signed over the request it answers: an answer with another
/// credential or ISO URL (here: machine A's answer handed to machine B's registration) is
/// refused, and B keeps nothing of it (no enrollment, no AK, no secret); registered
/// directly, B is served.
#[test]
fn a_register_answer_for_another_request_is_refused() {
    let (swtpm_a, swtpm_b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let proxy = mitm::start(
        server.url.clone(),
        Mitm::Answers(Arc::new(|path: &str, body: Vec<u8>| {
            static FIRST: std::sync::Mutex<Option<Vec<u8>>> = std::sync::Mutex::new(None);
            if path != "/api/v1/self-register" {
                return body;
            }
            FIRST.lock().unwrap().get_or_insert(body).clone()
        })),
    );
    let a = via(&agent(&swtpm_a, &server.url, dir.path(), "a"), &proxy);
    let b = via(&agent(&swtpm_b, &server.url, dir.path(), "b"), &proxy);
    let id_a = a.ok(&["self-register"])["machine_id"].clone();
    let out = b.run(&["self-register"]);
    assert_ne!(out.code, 0, "B took A's answer");
    assert!(
        out.stderr.contains("not signed by the pinned server key"),
        "{}",
        out.stderr
    );
    let kept: Vec<String> = files(&b.state).into_keys().collect();
    assert_eq!(
        kept,
        ["server-key.pem"],
        "only the key pinned before sending"
    );

    // B's request itself was genuine: the server has its record, and its next registration,
    // direct, is that of a known EK (named by none); the operator approves it from the list.
    let b = agent(&swtpm_b, &server.url, dir.path(), "b");
    assert_eq!(b.ok(&["self-register"])["machine_id"], "");
    let (_, list) = server.call("GET", "/api/v1/machines", Some(ADMIN), None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let id_b = ids.into_iter().find(|id| *id != id_a).unwrap().to_owned();
    approve(&server, &id_b, "worker-app", "b");
    assert_eq!(b.ok(&["attest", "--once"])["action"], "apply-config");
}

/// Whether a relayed postcard body is an attestation.
fn is_attest(path: &str, body: &[u8]) -> bool {
    path == "/api/v1/link"
        && matches!(
            from_postcard::<LinkRequest>(body),
            Ok(LinkRequest {
                body: LinkRequestBody::Attest(_),
                ..
            })
        )
}

/// Two firmware machines (register mode, approved), with the server key for attest mode.
fn two_firmware_machines(server: &Server, tpms: [&Swtpm; 2]) -> Vec<String> {
    let key = server_key(server);
    tpms.into_iter()
        .zip(["fw-a", "fw-b"])
        .map(|(swtpm, host)| {
            let (outcome, _) = boot(
                swtpm,
                &["--server", &server.url],
                Mode::Register,
                Some(&key),
            );
            let Outcome::Registered { machine_id, .. } = outcome else {
                panic!("{outcome:?}")
            };
            approve(server, &machine_id, "worker-app", host);
            machine_id.to_string()
        })
        .collect()
}

/// The firmware's relay sees every frame in clear: swapped between two machines, each
/// attestation gets the other's signed answer, and each firmware refuses it (no outcome to
/// act on: the boot fails with a bad signature); then both boot through an honest relay and
/// attest.
#[test]
fn swapped_attestations_move_neither_firmware() {
    let (swtpm_a, swtpm_b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let ids = two_firmware_machines(&server, [&swtpm_a, &swtpm_b]);
    let key = server_key(&server);
    let proxy = mitm::start(server.url.clone(), Mitm::Swap(Arc::new(is_attest)));

    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let boots: Vec<_> = [&swtpm_a, &swtpm_b]
            .into_iter()
            .map(|swtpm| {
                let (proxy, key) = (&proxy, &key);
                s.spawn(move || boot(swtpm, &["--server", proxy], Mode::Attest, Some(key)).0)
            })
            .collect();
        boots.into_iter().map(|b| b.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert_eq!(*outcome, Outcome::Failed(AgentError::BadSignature));
    }

    for (swtpm, id) in [&swtpm_a, &swtpm_b].into_iter().zip(&ids) {
        let (outcome, _) = boot(swtpm, &["--server", &server.url], Mode::Attest, Some(&key));
        let Outcome::Attested {
            machine_id, status, ..
        } = &outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            (machine_id.as_str(), *status),
            (id.as_str(), Status::Attested)
        );
    }
}

/// The relay rewrites firmware A's attestation to name firmware B's EK: refused by the
/// server (the quote's claims), nothing written about either machine; both attest after.
#[test]
fn a_rewritten_fingerprint_through_the_relay_is_refused() {
    let (swtpm_a, swtpm_b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_configs(dir.path(), &[]);
    let ids = two_firmware_machines(&server, [&swtpm_a, &swtpm_b]);
    let key = server_key(&server);
    let relay = ["--server", server.url.as_str()];
    for swtpm in [&swtpm_a, &swtpm_b] {
        let (outcome, _) = boot(swtpm, &relay, Mode::Attest, Some(&key));
        assert!(matches!(outcome, Outcome::Attested { .. }), "{outcome:?}");
    }
    let fp_b: Fingerprint = machine(&server, &ids[1])["ek_fingerprint"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = mitm::start(
        server.url.clone(),
        Mitm::Requests(Arc::new(move |path: &str, body: Vec<u8>| {
            if !is_attest(path, &body) {
                return body;
            }
            let mut req: LinkRequest = from_postcard(&body).unwrap();
            if let LinkRequestBody::Attest(a) = &mut req.body {
                a.ek_fingerprint = fp_b;
            }
            postcard::to_allocvec(&req).unwrap()
        })),
    );
    let written = audit_total(&server);
    let views: Vec<Value> = ids.iter().map(|id| machine(&server, id)).collect();

    let (outcome, _) = boot(&swtpm_a, &["--server", &proxy], Mode::Attest, Some(&key));
    assert!(
        matches!(&outcome, Outcome::Refused { status, .. } if (400..500).contains(status)),
        "{outcome:?}"
    );
    assert_eq!(audit_total(&server), written, "nothing written");
    let now: Vec<Value> = ids.iter().map(|id| machine(&server, id)).collect();
    assert_eq!(views, now, "neither machine changed");

    for swtpm in [&swtpm_a, &swtpm_b] {
        let (outcome, _) = boot(swtpm, &relay, Mode::Attest, Some(&key));
        assert!(matches!(outcome, Outcome::Attested { .. }), "{outcome:?}");
    }
}
