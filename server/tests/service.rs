//! The service layer on a real redb file: lifecycle rows reachable without attestation,
//! refusals that change nothing, the audit chain (and its tamper detection with redb
//! directly), and a restart on the same file.

use std::path::Path;

use attest_common::fingerprint::{EkSource, Fingerprint, ek_fingerprint};
use attest_common::lifecycle::Status;
use attest_common::wire::{CertificateDer, RegisterRequest, Role};
use attest_server::audit::AuditEntry;
use attest_server::record::MachineRecord;
use attest_server::service::platform::{Clock as _, ManualClock, Platform};
use attest_server::service::{Actor, Approval, ApproveOutcome, DualControl, ErrorKind, Service};
use attest_server::store::redb::RedbRegistry;
use redb::ReadableTable;

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../common/tests/fixtures/swtpm-ek-rsa2048.pem");

fn request(pem: &str) -> RegisterRequest {
    let mut buf = [0u8; 3072];
    let cert = CertificateDer::from_pem_or_der(pem.as_bytes(), &mut buf).unwrap();
    RegisterRequest {
        ek_fingerprint: ek_fingerprint(pem.as_bytes()).unwrap().fingerprint,
        ek_cert_pem: Some(cert),
        ek_public: None,
        ek_source: EkSource::Cert,
        hw_uuid: Some(heapless::String::try_from("4c4c4544-0042").unwrap()),
        hw_mac: None,
        hw_serial: Some(heapless::String::try_from("SN-1").unwrap()),
        hw_product: None,
        desired_role: Some(Role::WorkerApp),
        cluster_id: heapless::String::try_from("default").unwrap(),
        ak_public: None,
        agent_nonce: None,
    }
}

fn alice() -> Actor {
    Actor::operator(
        "alice",
        "https://sso.example#alice",
        Some("127.0.0.1".into()),
    )
}

fn approval() -> Approval {
    Approval {
        role: Role::Controlplane,
        hostname: "cp-1.example".into(),
        assigned_ip: "10.0.0.5/24".into(),
    }
}

fn approved(outcome: ApproveOutcome) -> MachineRecord {
    match outcome {
        ApproveOutcome::Approved(m) => *m,
        other => panic!("expected an approval, got {other:?}"),
    }
}

type Svc = Service<RedbRegistry>;

fn audit_len(svc: &Svc) -> usize {
    svc.registry().audit_page(None, 1, 10_000).unwrap().1
}

fn approved_record(svc: &Svc, id: &str, a: &Approval) -> MachineRecord {
    approved(svc.approve(id, a, &alice()).unwrap())
}

fn open(path: &Path) -> Svc {
    Service::new(RedbRegistry::open(path).unwrap())
}

#[test]
fn lifecycle_rows_and_refusals_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(&dir.path().join("data/attestation.redb"));
    let agent = Actor::agent(Some("127.0.0.1".into()));

    // (none) → pending_approval by self-register; again: idempotent, same id.
    let first = svc.register(&request(EK_P384), true, &agent).unwrap();
    assert!(first.created);
    assert_eq!(first.machine.state.status, Status::PendingApproval);
    let again = svc.register(&request(EK_P384), true, &agent).unwrap();
    assert!(!again.created);
    assert_eq!(again.machine.id, first.machine.id);
    let id = first.machine.id.clone();

    // pending → registered by approve; registered → registered by approve (changes).
    let approved = approved(svc.approve(&id, &approval(), &alice()).unwrap());
    assert_eq!(approved.state.status, Status::Registered);
    assert_eq!(approved.hostname.as_deref(), Some("cp-1.example"));
    let changed = Approval {
        hostname: "cp-2".into(),
        ..approval()
    };
    assert_eq!(
        approved_record(&svc, &id, &changed).hostname.as_deref(),
        Some("cp-2")
    );

    // Undefined events: 409, state and audit untouched.
    let before = (svc.machine(&id).unwrap(), audit_len(&svc));
    for result in [
        svc.lock(&id, "x", &alice()).map(|_| ()),
        svc.unlock(&id, "x", &alice()).map(|_| ()),
        svc.reject(&id, "x", &alice()).map(|_| ()),
        svc.delete(&id, &alice()),
    ] {
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("registered"), "{e}");
    }
    assert_eq!((svc.machine(&id).unwrap(), audit_len(&svc)), before);

    // registered → revoked (wipe), then refused for register, deleted, then registrable.
    let revoked = svc.revoke(&id, true, "stolen", &alice()).unwrap();
    assert_eq!(revoked.state.status, Status::Revoked);
    assert!(revoked.state.wipe_pending);
    let e = svc.register(&request(EK_P384), false, &agent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("revoked"), "{e}");
    svc.delete(&id, &alice()).unwrap();
    assert_eq!(svc.machine(&id).unwrap_err().kind, ErrorKind::NotFound);
    let back = svc.register(&request(EK_P384), false, &agent).unwrap();
    assert!(back.created);
    assert_ne!(back.machine.id, id);
    assert_eq!(back.machine.state.status, Status::Registered);

    // pending → rejected; rejected refuses approve; delete allowed.
    let other = svc
        .register(&request(EK_RSA), true, &agent)
        .unwrap()
        .machine
        .id;
    svc.reject(&other, "unknown hardware", &alice()).unwrap();
    assert_eq!(
        svc.approve(&other, &approval(), &alice()).unwrap_err().kind,
        ErrorKind::Conflict
    );
    assert_eq!(svc.machines(Some(Status::Rejected)).unwrap().len(), 1);
    svc.delete(&other, &alice()).unwrap();

    // Unknown ids: 404, nothing written.
    let n = audit_len(&svc);
    assert_eq!(
        svc.lock("nope", "x", &alice()).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(audit_len(&svc), n);

    let v = svc.registry().audit_verify().unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.entries as usize, n);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(&dir.path().join("a.redb"));
    let agent = Actor::agent(None);

    let mut wrong_fp = request(EK_P384);
    wrong_fp.ek_fingerprint = Fingerprint([7; 48]);
    let e = svc.register(&wrong_fp, true, &agent).unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Unprocessable, "fingerprint_mismatch")
    );

    let mut no_cert = request(EK_P384);
    no_cert.ek_cert_pem = None;
    assert_eq!(
        svc.register(&no_cert, true, &agent).unwrap_err().kind,
        ErrorKind::BadRequest
    );

    let mut bad_ak = request(EK_P384);
    bad_ak.ak_public = Some(attest_common::wire::Blob::from_slice(&[0, 2, 0, 1]).unwrap());
    assert_eq!(
        svc.register(&bad_ak, true, &agent).unwrap_err().code,
        "invalid_ak"
    );

    let id = svc
        .register(&request(EK_P384), true, &agent)
        .unwrap()
        .machine
        .id;
    for (hostname, ip) in [
        ("bad_host", "10.0.0.1/24"),
        ("ok", "10.0.0.1"),
        ("ok", "10.0.0.1/33"),
        ("-x", "fd00::1/64"),
    ] {
        let a = Approval {
            role: Role::WorkerInfra,
            hostname: hostname.into(),
            assigned_ip: ip.into(),
        };
        assert_eq!(
            svc.approve(&id, &a, &alice()).unwrap_err().kind,
            ErrorKind::BadRequest,
            "{hostname} {ip}"
        );
    }
    assert_eq!(
        svc.machine(&id).unwrap().state.status,
        Status::PendingApproval
    );
    assert_eq!(audit_len(&svc), 1, "only the registration was audited");
}

#[test]
fn restart_keeps_everything_and_tampering_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attestation.redb");
    let id = {
        let svc = open(&path);
        let id = svc
            .register(&request(EK_P384), true, &Actor::agent(None))
            .unwrap()
            .machine
            .id;
        approved(svc.approve(&id, &approval(), &alice()).unwrap());
        svc.register(&request(EK_RSA), false, &Actor::agent(None))
            .unwrap();
        id
    };
    // Restart on the same file: nothing lost.
    {
        let svc = open(&path);
        assert_eq!(svc.machine(&id).unwrap().state.status, Status::Registered);
        assert_eq!(svc.machines(None).unwrap().len(), 2);
        let v = svc.registry().audit_verify().unwrap();
        assert!(v.valid && v.entries == 3, "{v:?}");
    }

    // Edit entry 2 behind the server's back, with redb directly.
    const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            let mut entry = {
                let v = table.get(2).unwrap().unwrap();
                AuditEntry::decode(v.value()).unwrap()
            };
            entry.operator_cn = "mallory".into();
            table.insert(2, entry.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let v = open(&path).registry().audit_verify().unwrap();
    assert!(!v.valid);
    assert_eq!(v.first_invalid_id, Some(2), "{v:?}");

    // Deleting an entry is found too (at the first gap).
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(AUDIT).unwrap().remove(1).unwrap();
        txn.commit().unwrap();
    }
    let v = open(&path).registry().audit_verify().unwrap();
    assert_eq!(v.first_invalid_id, Some(2), "{v:?}");
    assert!(v.error.unwrap().contains("entry 1 is missing"));
}

fn operator(name: &str) -> Actor {
    Actor::operator(name, &format!("https://sso.example#{name}"), None)
}

/// A service under dual control for controlplane, on a clock that moves when told.
fn dual(path: &Path, quorum: usize, window_seconds: u64) -> (Svc, std::sync::Arc<ManualClock>) {
    let clock = ManualClock::at(1_800_000_000);
    let svc = Service::new(RedbRegistry::open(path).unwrap())
        .with_platform(Platform::with_clock(clock.clone()))
        .with_dual_control(DualControl {
            roles: vec![Role::Controlplane],
            quorum,
            window_seconds,
            break_glass_counts: false,
        });
    (svc, clock)
}

#[test]
fn dual_control_with_quorum_two_and_three() {
    let dir = tempfile::tempdir().unwrap();
    for quorum in [2usize, 3] {
        let (svc, _) = dual(&dir.path().join(format!("q{quorum}.redb")), quorum, 600);
        let id = svc
            .register(&request(EK_P384), true, &Actor::agent(None))
            .unwrap()
            .machine
            .id;
        let names = ["alice", "bob", "carol"];
        for (i, name) in names.iter().take(quorum - 1).enumerate() {
            match svc.approve(&id, &approval(), &operator(name)).unwrap() {
                ApproveOutcome::Pending {
                    approvals_received,
                    approvals_required,
                    ..
                } => {
                    assert_eq!((approvals_received, approvals_required), (i + 1, quorum));
                }
                other => panic!("vote {} of {quorum} approved early: {other:?}", i + 1),
            }
            // The same identity again does not count.
            let e = svc.approve(&id, &approval(), &operator(name)).unwrap_err();
            assert_eq!(
                (e.kind, e.code),
                (ErrorKind::Conflict, "duplicate_approval")
            );
        }
        assert_eq!(svc.approvals(&id).unwrap().pending.len(), quorum - 1);
        assert_eq!(
            svc.machine(&id).unwrap().state.status,
            Status::PendingApproval
        );
        // A disagreeing vote is refused and names the difference.
        let other = Approval {
            hostname: "cp-9".into(),
            ..approval()
        };
        let e = svc.approve(&id, &other, &operator("mallory")).unwrap_err();
        assert_eq!(e.code, "approval_mismatch");
        assert!(e.message.contains("hostname cp-1.example vs cp-9"), "{e}");
        // The quorum-th distinct identity completes it.
        let m = approved(
            svc.approve(&id, &approval(), &operator(names[quorum - 1]))
                .unwrap(),
        );
        assert_eq!(m.state.status, Status::Registered);
        assert_eq!(m.hostname.as_deref(), Some("cp-1.example"));
        let approvals = svc.approvals(&id).unwrap();
        assert!(approvals.pending.is_empty());
        let voters: Vec<_> = approvals
            .approved
            .iter()
            .map(|v| v.identity.as_str())
            .collect();
        assert_eq!(voters, names[..quorum], "who approved is kept");
        // Roles outside ITL_DUAL_CONTROL_ROLES need one approval.
        let worker = Approval {
            role: Role::WorkerApp,
            ..approval()
        };
        assert_eq!(
            approved(svc.approve(&id, &worker, &operator("alice")).unwrap()).role,
            Some(Role::WorkerApp)
        );
        assert!(svc.registry().audit_verify().unwrap().valid);
    }
}

#[test]
fn dual_control_window_expiry_restarts_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, clock) = dual(&dir.path().join("w.redb"), 2, 60);
    let id = svc
        .register(&request(EK_P384), true, &Actor::agent(None))
        .unwrap()
        .machine
        .id;
    assert!(matches!(
        svc.approve(&id, &approval(), &operator("alice")).unwrap(),
        ApproveOutcome::Pending { .. }
    ));
    clock.advance(60);
    assert_eq!(
        svc.approvals(&id).unwrap().pending.len(),
        1,
        "inside the window"
    );
    clock.advance(1);
    assert!(
        svc.approvals(&id).unwrap().pending.is_empty(),
        "expired votes are not shown"
    );
    // Bob's vote after the window is the first of a new count, not the second of the old.
    match svc.approve(&id, &approval(), &operator("bob")).unwrap() {
        ApproveOutcome::Pending {
            approvals_received, ..
        } => assert_eq!(approvals_received, 1),
        other => panic!("expired vote counted: {other:?}"),
    }
    assert_eq!(
        approved(svc.approve(&id, &approval(), &operator("alice")).unwrap())
            .state
            .status,
        Status::Registered
    );
}

#[test]
fn challenge_nonces_are_single_use_expire_and_survive_restart() {
    use attest_server::service::Challenges;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.redb");
    let short = Challenges {
        lifetime_seconds: 1,
        ..Challenges::default()
    };
    let clock = ManualClock::at(1_800_000_000);
    // The key the binary keeps in ITL_DATA_DIR/challenge-key, beside the registry.
    let key = || attest_server::challenge::ChallengeKey::new(&[7u8; 48]);
    let clocked = |path: &Path| {
        open(path)
            .with_challenges(short.clone())
            .with_platform(Platform::with_clock(clock.clone()))
            .with_challenge_key(key())
    };
    let (used_id, expiring_id, unused) = {
        let svc = clocked(&path);
        let c = svc.challenge();
        assert_eq!(
            c.pcr_selection[0].pcrs.as_slice(),
            &[0, 1, 2, 3, 4, 5, 6, 7]
        );
        let now = clock.now();
        let nonce = svc
            .registry()
            .write(|tx| svc.use_nonce(tx, &c.nonce_id, now))
            .unwrap();
        assert_eq!(nonce, c.nonce.0);
        let e = svc
            .registry()
            .write(|tx| svc.use_nonce(tx, &c.nonce_id, now))
            .unwrap_err();
        assert_eq!((e.kind, e.code), (ErrorKind::Conflict, "nonce_replayed"));
        let unknown = svc
            .registry()
            .write(|tx| svc.use_nonce(tx, "00000000deadbeef", now))
            .unwrap_err();
        assert_eq!(unknown.kind, ErrorKind::NotFound);
        (
            c.nonce_id.to_string(),
            svc.challenge().nonce_id.to_string(),
            svc.challenge(),
        )
    };
    // A restart does not reopen a used nonce.
    let svc = clocked(&path);
    let now = clock.now();
    let e = svc
        .registry()
        .write(|tx| svc.use_nonce(tx, &used_id, now))
        .unwrap_err();
    assert_eq!(e.code, "nonce_replayed");
    // A challenge issued before the restart still opens to its nonce, once.
    let nonce = svc
        .registry()
        .write(|tx| svc.use_nonce(tx, &unused.nonce_id, now))
        .unwrap();
    assert_eq!(nonce, unused.nonce.0);
    // Past its lifetime: 410, and the attempt does not make it usable later.
    let e = svc
        .registry()
        .write(|tx| svc.use_nonce(tx, &expiring_id, now + 5))
        .unwrap_err();
    assert_eq!((e.kind, e.code), (ErrorKind::Gone, "nonce_expired"));
    drop(svc);
    // The registry alone (a backup, without the key file beside it) opens no challenge.
    let other = attest_server::challenge::ChallengeKey::new(&[8u8; 48]);
    let fresh = clocked(&path).with_challenge_key(other);
    let e = fresh
        .registry()
        .write(|tx| fresh.use_nonce(tx, &expiring_id, now))
        .unwrap_err();
    assert_eq!(e.code, "unknown_nonce");
}

/// Review finding 7: the challenge key is in the registry (and its backups), so whoever has
/// a copy can tag ids of their own. An id made with the real key but an expiry years away
/// is refused as not ours (404, nothing written); made to live no longer than a challenge
/// does, the same key's id opens, so it is the expiry alone that is refused.
#[test]
fn a_forged_long_expiry_is_refused_whatever_its_tag() {
    use attest_server::challenge::ChallengeKey;
    use attest_server::service::Challenges;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_800_000_000);
    let svc = open(&dir.path().join("f.redb"))
        .with_challenges(Challenges {
            lifetime_seconds: 60,
            ..Challenges::default()
        })
        .with_platform(Platform::with_clock(clock.clone()))
        .with_challenge_key(ChallengeKey::new(&[5u8; 48]));
    let now = clock.now();
    let key = ChallengeKey::new(&[5u8; 48]);
    let written = audit_len(&svc);
    let use_once = |id: &str, at: u64| svc.registry().write(|tx| svc.use_nonce(tx, id, at));

    let ten_years = now + 10 * 365 * 86_400;
    let (forged, _) = key.issue(ten_years, [9; 8]);
    for at in [now, now + 3_600, ten_years - 61] {
        let e = use_once(&forged, at).unwrap_err();
        assert_eq!((e.kind, e.code), (ErrorKind::NotFound, "unknown_nonce"));
        assert!(
            e.message.contains("ITL_CHALLENGE_LIFETIME_SECONDS (60 s)"),
            "{e}"
        );
    }
    let (one_second_more, _) = key.issue(now + 61, [9; 8]);
    assert_eq!(
        use_once(&one_second_more, now).unwrap_err().code,
        "unknown_nonce"
    );
    assert_eq!(audit_len(&svc), written, "nothing written");

    let (within, nonce) = key.issue(now + 60, [9; 8]);
    assert_eq!(use_once(&within, now).unwrap(), nonce);
    // The bound: an id made with the key lives one lifetime, no longer (its holder still
    // chooses which one; README, "A leaked registry backup").
    assert!(use_once(&forged, ten_years - 60).is_ok());
}

/// Dual control counts principals: the break-glass token only when
/// `ITL_DUAL_CONTROL_BREAK_GLASS=true`, and one OIDC subject once whatever it is called.
#[test]
fn dual_control_counts_principals_and_break_glass_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for counts in [false, true] {
        let (svc, _) = dual(&dir.path().join(format!("bg-{counts}.redb")), 2, 600);
        let svc = svc.with_dual_control(DualControl {
            roles: vec![Role::Controlplane],
            quorum: 2,
            window_seconds: 600,
            break_glass_counts: counts,
        });
        let id = svc
            .register(&request(EK_P384), true, &Actor::agent(None))
            .unwrap()
            .machine
            .id;
        let same = Actor::operator("alice", "https://sso.example#a-1", None);
        let renamed = Actor::operator("Alice B.", "https://sso.example#a-1", None);
        assert!(matches!(
            svc.approve(&id, &approval(), &same).unwrap(),
            ApproveOutcome::Pending { .. }
        ));
        let e = svc.approve(&id, &approval(), &renamed).unwrap_err();
        assert_eq!(e.code, "duplicate_approval");
        let break_glass = svc.approve(&id, &approval(), &Actor::break_glass(None));
        match counts {
            false => {
                let e = break_glass.unwrap_err();
                assert_eq!(
                    (e.kind, e.code),
                    (ErrorKind::Forbidden, "break_glass_not_counted")
                );
                assert_eq!(svc.approvals(&id).unwrap().pending.len(), 1);
            }
            true => {
                let m = approved(break_glass.unwrap());
                assert_eq!(m.state.status, Status::Registered);
            }
        }
    }
}

/// Review finding: a vote stored before principals (a display name only, read back as
/// `legacy:<name>`) cannot tell whether its voter is the operator voting now; it does not
/// count, is not shown as pending, and the quorum needs two principals of today. An
/// operator's audit entry names their principal.
#[test]
fn votes_from_before_principals_do_not_count() {
    use attest_server::store::{LEGACY_PRINCIPAL, RegistryTx as _, Vote};
    let dir = tempfile::tempdir().unwrap();
    let (svc, clock) = dual(&dir.path().join("legacy.redb"), 2, 600);
    let id = svc
        .register(&request(EK_P384), true, &Actor::agent(None))
        .unwrap()
        .machine
        .id;
    let a = approval();
    let legacy = Vote {
        identity: "alice".into(),
        principal: format!("{LEGACY_PRINCIPAL}alice"),
        role: a.role,
        hostname: a.hostname.clone(),
        assigned_ip: a.assigned_ip.clone(),
        at: clock.now(),
    };
    svc.registry()
        .write(|tx| tx.put_pending_votes(&id, &[legacy]))
        .unwrap();
    assert!(svc.approvals(&id).unwrap().pending.is_empty());
    match svc.approve(&id, &a, &operator("alice")).unwrap() {
        ApproveOutcome::Pending {
            approvals_received, ..
        } => assert_eq!(approvals_received, 1, "the legacy vote counted"),
        other => panic!("approved by one person: {other:?}"),
    }
    let record = approved(svc.approve(&id, &a, &operator("bob")).unwrap());
    assert_eq!(record.state.status, Status::Registered);
    let details: Vec<String> = svc
        .registry()
        .audit_page(Some(&id), 1, 100)
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.ends_with("[principal oidc:https://sso.example#bob]")),
        "{details:?}"
    );
}
