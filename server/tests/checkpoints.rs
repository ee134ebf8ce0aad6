//! Signed audit checkpoints (DESIGN.md §6) against the real server binary and, for the
//! operator's side, the real CLI: an honest log verifies and is checkpointed every
//! `ITL_AUDIT_CHECKPOINT_ENTRIES` entries and at every verification; a log rewritten and
//! re-chained offline, or cut short, is found by the server; a log whose checkpoints were
//! rewritten too (re-signed with another key, the server's key file replaced, or deleted) is
//! found by the CLI with a pinned key and an earlier export. The time-based checkpoint runs on
//! the service with a manual clock.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use attest_api::{AuditCheckpoint, AuditVerification, VerifyingKey};
use attest_server::audit::{self, AuditEntry};
use attest_server::service::platform::{ManualClock, Platform};
use attest_server::service::{Actor, AuditCheckpoints, ResponseKey, Service};
use attest_server::store::redb::RedbRegistry;
use base64ct::Encoding;
use redb::{ReadableDatabase, ReadableTable};
use serde_json::json;
use support::{ADMIN, Server};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");

const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
const CHECKPOINTS: redb::TableDefinition<u64, &[u8]> =
    redb::TableDefinition::new("audit_checkpoints");

/// A server on `data` that signs a checkpoint every 5 entries.
fn start(data: &Path) -> Server {
    Server::start_with(
        data,
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_AUDIT_CHECKPOINT_ENTRIES", "5"),
        ],
    )
}

fn get(server: &Server, path: &str) -> serde_json::Value {
    let (status, body) = server.call("GET", path, Some(ADMIN), None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn verify(server: &Server) -> AuditVerification {
    serde_json::from_value(get(server, "/api/v1/audit/verify")).unwrap()
}

fn checkpoints(server: &Server) -> Vec<AuditCheckpoint> {
    serde_json::from_value(get(server, "/api/v1/audit/checkpoints")).unwrap()
}

fn seqs(cps: &[AuditCheckpoint]) -> Vec<u64> {
    cps.iter().map(|c| c.seq).collect()
}

/// The server's public key as it publishes it.
fn server_key(server: &Server) -> (VerifyingKey, String) {
    let key = get(server, "/api/v1/server-key");
    let der = base64ct::Base64::decode_vec(key["public_key_der"].as_str().unwrap()).unwrap();
    (
        attest_common::nonce::verifying_key_from_spki(&der).unwrap(),
        key["public_key_pem"].as_str().unwrap().to_owned(),
    )
}

/// One self-registered machine, then reset-baseline calls: `n` audit entries in all.
fn entries(server: &Server, machine: Option<&str>, n: usize) -> String {
    let mut made = 0;
    let id = match machine {
        Some(id) => id.to_owned(),
        None => {
            let fp = attest_common::ek_fingerprint(EK_P384.as_bytes())
                .unwrap()
                .fingerprint
                .to_string();
            let body = json!({
                "ek_fingerprint": fp,
                "ek_cert_pem": base64ct::Base64::encode_string(EK_P384.as_bytes()),
                "desired_role": "worker-app",
            });
            let (status, reg) = server.call(
                "POST",
                "/api/v1/self-register",
                None,
                Some(&body.to_string()),
            );
            assert_eq!(status, 201, "{reg}");
            made += 1;
            reg["machine_id"].as_str().unwrap().to_owned()
        }
    };
    for i in made..n {
        server.admin(
            &id,
            "reset-baseline",
            &json!({"reason": format!("step {i}")}).to_string(),
        );
    }
    id
}

fn db(data: &Path) -> PathBuf {
    data.join("attestation.redb")
}

/// Every entry of the file, in seq order (the server stopped).
fn read_entries(path: &Path) -> Vec<AuditEntry> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(AUDIT).unwrap();
    table
        .iter()
        .unwrap()
        .map(|item| AuditEntry::decode(item.unwrap().1.value()).unwrap())
        .collect()
}

/// What an attacker with the file does: entry `at` rewritten, every later `prev_hash` and
/// `entry_hash` recomputed with the chain's own hashing, written back.
fn rewrite_and_rechain(path: &Path, at: u64, detail: &str) {
    let mut all = read_entries(path);
    let mut prev = all[at as usize - 2].entry_hash.0;
    for e in &mut all[at as usize - 1..] {
        if e.seq == at {
            e.detail = detail.into();
        }
        let fields = audit::NewEntry {
            operator_cn: e.operator_cn.clone(),
            action: e.action.clone(),
            machine_id: e.machine_id.clone(),
            prev_state: e.prev_state.clone(),
            new_state: e.new_state.clone(),
            detail: e.detail.clone(),
            source_ip: e.source_ip.clone(),
        };
        *e = AuditEntry::seal(fields, e.seq, e.timestamp, prev);
        prev = e.entry_hash.0;
    }
    assert!(audit::verify(all.iter().map(|e| (e.seq, Some(e.clone())))).valid);
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        for e in &all[at as usize - 1..] {
            table.insert(e.seq, e.encode().as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Deletes the entries after `keep`.
fn cut_tail(path: &Path, keep: u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        let last = table.last().unwrap().unwrap().0.value();
        for seq in keep + 1..=last {
            table.remove(seq).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A key that is not the server's.
fn mallory() -> (p384::ecdsa::SigningKey, ResponseKey) {
    let key = p384::ecdsa::SigningKey::from_slice(&[0x42; 48]).unwrap();
    let response = ResponseKey::new(&key).unwrap();
    (key, response)
}

/// Replaces the checkpoints table with checkpoints of the file's current entries at the same
/// seqs, signed by `by`.
fn resign_checkpoints(path: &Path, by: &ResponseKey) {
    let entries = read_entries(path);
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(CHECKPOINTS).unwrap();
        let old: Vec<(u64, u64)> = table
            .iter()
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                let c = audit::decode_checkpoint(v.value()).unwrap();
                (k.value(), c.timestamp)
            })
            .collect();
        for (seq, timestamp) in old {
            let e = &entries[seq as usize - 1];
            let forged = by.sign_checkpoint(seq, &e.entry_hash.0, timestamp);
            table
                .insert(seq, audit::encode_checkpoint(&forged).as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

fn delete_checkpoints(path: &Path) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.delete_table(CHECKPOINTS).unwrap();
    txn.commit().unwrap();
}

/// The operator CLI as break-glass, with its own config directory.
struct Cli {
    home: tempfile::TempDir,
    api: String,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn new(server: &Server) -> Cli {
        Cli {
            home: tempfile::tempdir().unwrap(),
            api: server.url.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(support::cli_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("ATTESTATION_API_URL", &self.api)
            .env("ITL_ADMIN_TOKEN", ADMIN)
            .args(args)
            .output()
            .expect("run attestation");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn an_honest_log_is_checkpointed_every_n_entries_and_at_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (key, _) = server_key(&server);

    // Empty: valid, nothing to sign.
    let v = verify(&server);
    assert!(v.valid && v.entries == 0 && v.checkpoints == 0, "{v:?}");
    assert_eq!(v.latest_checkpoint, None);
    assert!(checkpoints(&server).is_empty());

    // 23 entries: a checkpoint in the transaction of entries 5, 10, 15 and 20.
    let id = entries(&server, None, 23);
    let cps = checkpoints(&server);
    assert_eq!(seqs(&cps), [5, 10, 15, 20]);
    let page = get(&server, "/api/v1/audit?per_page=200");
    let mut logged: Vec<attest_api::AuditEntry> = serde_json::from_value(page).unwrap();
    logged.reverse();
    for c in &cps {
        c.verify(&key).unwrap();
        assert_eq!(c.entry_hash, logged[c.seq as usize - 1].entry_hash);
        assert!(c.timestamp >= logged[c.seq as usize - 1].timestamp);
    }
    assert!(cps.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

    // The verification checks them and signs the head.
    let v = verify(&server);
    assert!(v.valid, "{v:?}");
    assert_eq!((v.entries, v.checkpoints), (23, 5));
    let head = v.latest_checkpoint.clone().expect("the head is signed");
    assert_eq!(head.seq, 23);
    assert_eq!(head.entry_hash, logged[22].entry_hash);
    assert_eq!(v.root_hash, audit::hex(&head.entry_hash.0));
    head.verify(&key).unwrap();
    assert_eq!(seqs(&checkpoints(&server)), [5, 10, 15, 20, 23]);
    // Nothing new: no new checkpoint, the same one answered.
    let again = verify(&server);
    assert_eq!(again.latest_checkpoint, Some(head));
    assert_eq!(again.checkpoints, 5);
    assert_eq!(checkpoints(&server).len(), 5);
    // Entries 24 and 25: 25 is checkpointed with its entry.
    entries(&server, Some(&id), 2);
    assert_eq!(seqs(&checkpoints(&server)), [5, 10, 15, 20, 23, 25]);
    let v = verify(&server);
    assert!(v.valid && v.checkpoints == 6, "{v:?}");
    assert_eq!(v.latest_checkpoint.unwrap().seq, 25);

    // A live backup copies the checkpoints table.
    let copy = dir.path().join("copy.redb");
    let mut res = ureq::get(&format!("{}/api/v1/backup", server.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    std::io::copy(
        &mut res.body_mut().as_reader(),
        &mut std::fs::File::create(&copy).unwrap(),
    )
    .unwrap();
    let listed = checkpoints(&server);
    assert_eq!(RedbRegistry::audit_checkpoints_file(&copy).unwrap(), listed);
    let v = RedbRegistry::audit_verify_file_with(&copy, Some(&key)).unwrap();
    assert!(v.valid && v.checkpoints == listed.len() as u64, "{v:?}");

    // The CLI agrees, checking every signature with the pinned key.
    let (_, pem) = server_key(&server);
    let cli = Cli::new(&server);
    let pinned = cli.file("server-key.pem", &pem);
    let exported = cli.run(&["audit", "checkpoints"]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let kept: Vec<AuditCheckpoint> = serde_json::from_str(&exported.stdout).unwrap();
    assert_eq!(kept, listed);
    let kept_file = cli.file("kept.json", &exported.stdout);
    let ok = cli.run(&[
        "audit",
        "verify",
        "--server-key",
        pinned.to_str().unwrap(),
        "--checkpoints",
        kept_file.to_str().unwrap(),
    ]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stderr, ok.stdout);
    // 26: the backup is audited; the verification signs it.
    assert!(ok.stdout.starts_with("valid: 26 entries"), "{}", ok.stdout);
    assert!(
        ok.stdout
            .contains("checkpoints: 7 signed by the pinned server key"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout
            .contains("latest seq 26\nkept checkpoints: all 6 in"),
        "{}",
        ok.stdout
    );
    assert!(ok.stderr.is_empty(), "{}", ok.stderr);
    // Unpinned: the same verdict, with a warning.
    let unpinned = cli.run(&["audit", "verify"]);
    assert_eq!(unpinned.code, 0, "{}", unpinned.stderr);
    assert!(
        unpinned
            .stderr
            .contains("warning: the server's key was fetched"),
        "{}",
        unpinned.stderr
    );
    // Files that are not what they should be: said, exit 1, before asking the server.
    let junk = cli.file("junk", "hello");
    let bad = cli.run(&["audit", "verify", "--server-key", junk.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("no PUBLIC KEY block"), "{}", bad.stderr);
    let bad = cli.run(&["audit", "verify", "--checkpoints", junk.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("is not a list of checkpoints"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_rewritten_and_rechained_entry_is_found_by_the_server_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let id = entries(&server, None, 23);
    assert!(verify(&server).valid);
    let (_, pem) = server_key(&server);
    let before = checkpoints(&server);
    drop(server.stop());

    // Entry 17 rewritten; 17..23 re-chained: the chain alone verifies.
    rewrite_and_rechain(&db(dir.path()), 17, "Nothing happened here");

    let server = start(dir.path());
    let v = verify(&server);
    assert!(!v.valid, "{v:?}");
    assert_eq!(v.first_invalid_id, Some(16), "{v:?}");
    let error = v.error.clone().unwrap();
    assert!(
        error.starts_with("entry 20 differs from the signed checkpoint at seq 20"),
        "{error}"
    );
    assert!(
        error.contains("the rewrite is in entries 16 to 20 and the chain after it was recomputed"),
        "{error}"
    );
    assert_eq!(v.checkpoints, 3, "5, 10 and 15 still match");
    assert_eq!(v.latest_checkpoint, None);
    assert_eq!(
        checkpoints(&server),
        before,
        "an invalid log's head is not signed"
    );

    // The CLI: exit 5, the server's words.
    let cli = Cli::new(&server);
    let pinned = cli.file("server-key.pem", &pem);
    let out = cli.run(&["audit", "verify", "--server-key", pinned.to_str().unwrap()]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the audit chain is NOT valid: first bad entry 16: entry 20 differs from the signed checkpoint at seq 20"
        ),
        "{}",
        out.stderr
    );
    // JSON still prints the verdict, and exits 5.
    let out = cli.run(&["audit", "verify", "-o", "json"]);
    assert_eq!(out.code, 5);
    let v: AuditVerification = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.first_invalid_id, Some(16));

    // The log grows on: still invalid (the checkpoint at 20 stays; 25 is signed over the
    // rewritten chain, which changes nothing about 20).
    entries(&server, Some(&id), 2);
    assert_eq!(seqs(&checkpoints(&server)), [5, 10, 15, 20, 23, 25]);
    let v = verify(&server);
    assert!(!v.valid);
    assert_eq!(v.first_invalid_id, Some(16));
}

#[test]
fn a_cut_tail_is_found_and_stays_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let id = entries(&server, None, 23);
    assert_eq!(verify(&server).latest_checkpoint.unwrap().seq, 23);
    drop(server.stop());

    cut_tail(&db(dir.path()), 12);

    let server = start(dir.path());
    let v = verify(&server);
    assert!(!v.valid, "{v:?}");
    assert_eq!(
        v.error.as_deref(),
        Some("the log ends at seq 12 but a checkpoint signed seq 23")
    );
    assert_eq!(v.first_invalid_id, Some(13));
    assert_eq!((v.entries, v.checkpoints), (12, 2));
    let out = Cli::new(&server).run(&["audit", "verify"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the log ends at seq 12 but a checkpoint signed seq 23"),
        "{}",
        out.stderr
    );

    // Grown back past the cut: the old checkpoints are kept, not replaced, so the new
    // entry 15 is found to differ from what was signed.
    entries(&server, Some(&id), 13);
    assert_eq!(seqs(&checkpoints(&server)), [5, 10, 15, 20, 23, 25]);
    let v = verify(&server);
    assert!(!v.valid);
    assert!(
        v.error
            .as_deref()
            .unwrap()
            .starts_with("entry 15 differs from the signed checkpoint at seq 15"),
        "{v:?}"
    );
}

#[test]
fn rewritten_checkpoints_are_found_with_a_pinned_key_and_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    entries(&server, None, 23);
    assert!(verify(&server).valid);
    let (key, pem) = server_key(&server);
    // What the operator kept elsewhere: the key and an export.
    let cli = Cli::new(&server);
    let pinned = cli.file("server-key.pem", &pem);
    let export = cli.run(&["audit", "checkpoints"]);
    assert_eq!(export.code, 0, "{}", export.stderr);
    let kept = cli.file("kept.json", &export.stdout);
    let (pinned, kept) = (
        pinned.to_str().unwrap().to_owned(),
        kept.to_str().unwrap().to_owned(),
    );
    drop(server.stop());

    // 1. Entry 17 rewritten and the checkpoints re-signed with another key: the server,
    //    which checks with its own key, says so.
    rewrite_and_rechain(&db(dir.path()), 17, "forged");
    let (mallory_key, mallory) = mallory();
    resign_checkpoints(&db(dir.path()), &mallory);
    {
        let server = start(dir.path());
        let v = verify(&server);
        assert!(!v.valid, "{v:?}");
        assert_eq!(
            v.error.as_deref(),
            Some("checkpoint 5's signature does not verify")
        );
        assert_eq!(v.first_invalid_id, Some(5));
        let out = Cli::new(&server).run(&["audit", "verify", "--server-key", &pinned]);
        assert_eq!(out.code, 5, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("first bad entry 5: checkpoint 5's signature does not verify"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(
                "5 of the server's 5 checkpoints do not verify with the pinned server key"
            ),
            "{}",
            out.stderr
        );
    }

    // 2. ... and the server's key file replaced by that key: the server is satisfied (its
    //    key signed everything), the CLI with the pinned key and the export is not.
    let key_file = dir.path().join("response-key");
    let real_key = std::fs::read_to_string(&key_file).unwrap();
    let mut hex = [0u8; 96];
    let text = attest_common::hex::encode(&mallory_key.to_bytes(), &mut hex).to_owned();
    std::fs::write(&key_file, format!("{text}\n")).unwrap();
    {
        let server = start(dir.path());
        assert_ne!(server_key(&server).0, key);
        let v = verify(&server);
        assert!(v.valid, "the server cannot tell: {v:?}");
        let cli = Cli::new(&server);
        // Unpinned, without the export: fooled too (and warned).
        let fooled = cli.run(&["audit", "verify"]);
        assert_eq!(fooled.code, 0, "{}", fooled.stderr);
        assert!(fooled.stderr.contains("not pinned"), "{}", fooled.stderr);
        // Pinned: every checkpoint is refused.
        let out = cli.run(&["audit", "verify", "--server-key", &pinned]);
        assert_eq!(out.code, 5, "{}", out.stderr);
        assert!(
            out.stderr.contains(
                "5 of the server's 5 checkpoints do not verify with the pinned server key"
            ),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("(seq 5, 10, 15, 20, 23)"),
            "{}",
            out.stderr
        );
        // The export alone (key fetched): the re-signed checkpoints name other hashes.
        let out = cli.run(&["audit", "verify", "--checkpoints", &kept]);
        assert_eq!(out.code, 5, "{}", out.stderr);
        assert!(
            out.stderr.contains("5 of the 5 checkpoints in ")
                && out.stderr.contains(
                    "do not verify with the server's key (fetched, not pinned) (seq 5, 10, 15, 20, 23)"
                ),
            "the kept checkpoints were signed by the real key: {}",
            out.stderr
        );
        // Pinned and exported: the kept ones verify, and 20 and 23 no longer match.
        let out = cli.run(&[
            "audit",
            "verify",
            "--server-key",
            &pinned,
            "--checkpoints",
            &kept,
        ]);
        assert_eq!(out.code, 5, "{}", out.stderr);
        assert!(
            out.stderr.contains("checkpoint 20 in ")
                && out.stderr.contains("the server's checkpoint 20 has"),
            "{}",
            out.stderr
        );
    }

    // 3. The checkpoints table deleted (and the real key back): the server cannot tell;
    //    the export can.
    std::fs::write(&key_file, real_key).unwrap();
    delete_checkpoints(&db(dir.path()));
    {
        let server = start(dir.path());
        assert_eq!(server_key(&server).0, key);
        let v = verify(&server);
        assert!(v.valid, "nothing left to compare with: {v:?}");
        let out = Cli::new(&server).run(&["audit", "verify", "--checkpoints", &kept]);
        assert_eq!(out.code, 5, "{}", out.stderr);
        assert!(
            out.stderr.contains("checkpoint 5 in ")
                && out.stderr.contains("is gone from the server's log"),
            "{}",
            out.stderr
        );
    }
}

/// The time-based checkpoint, on the service with a clock that moves when told.
#[test]
fn a_checkpoint_at_least_every_n_minutes_while_entries_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_800_000_000);
    let key = p384::ecdsa::SigningKey::from_slice(&[7; 48]).unwrap();
    let svc = Service::new(RedbRegistry::open(&dir.path().join("a.redb")).unwrap())
        .with_platform(Platform::with_clock(clock.clone()))
        .with_audit_checkpoints(AuditCheckpoints {
            entries: 1000,
            minutes: 60,
        })
        .with_response_key(ResponseKey::new(&key).unwrap());
    // Audited changes, as the service makes them (`Change` in the change's transaction).
    let change = |n: usize| {
        for _ in 0..n {
            svc.registry()
                .write(|tx| {
                    attest_server::service::Change::global(
                        attest_server::audit_action::AuditAction::Backup,
                        "x".into(),
                    )
                    .record(tx, &Actor::system(), svc.now())
                })
                .unwrap();
        }
    };
    // Nothing logged: nothing to sign.
    assert_eq!(svc.checkpoint_if_due().unwrap(), None);
    change(3);
    // No checkpoint yet: one at once.
    let first = svc.checkpoint_if_due().unwrap().expect("due");
    assert_eq!((first.seq, first.timestamp), (3, 1_800_000_000));
    first.verify(key.verifying_key()).unwrap();
    // New entries, but not an hour yet.
    change(2);
    clock.advance(59 * 60);
    assert_eq!(svc.checkpoint_if_due().unwrap(), None);
    clock.advance(60);
    let second = svc.checkpoint_if_due().unwrap().expect("an hour later");
    assert_eq!(second.seq, 5);
    // An hour more without entries: nothing to sign.
    clock.advance(3600);
    assert_eq!(svc.checkpoint_if_due().unwrap(), None);
    // A clock set back never dates a checkpoint before the previous one.
    change(1);
    clock.set(1_700_000_000);
    let v = svc.audit_verify().unwrap();
    assert!(v.valid, "{v:?}");
    let made = v.latest_checkpoint.unwrap();
    assert_eq!(made.seq, 6);
    assert_eq!(made.timestamp, second.timestamp);
    assert_eq!(
        svc.audit_checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        [3, 5, 6]
    );
}
