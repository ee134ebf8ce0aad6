//! Damaged files and full disks (issue 21), against the real binary: a registry file that is
//! empty, foreign or truncated, keys missing beside a registry with machines, a damaged
//! machine record, and a disk that fills up and empties again.

mod support;

use std::path::Path;
use std::process::Command;

use base64ct::Encoding as _;
use serde_json::{Value, json};
use support::{ADMIN, Server, server_bin};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../common/tests/fixtures/swtpm-ek-rsa2048.pem");

/// A start that must be refused: its exit status and what it said.
fn refused_start(data: &Path) -> (i32, String) {
    support::refused_start(data, &[("ITL_ADMIN_TOKEN", ADMIN)])
}

fn register(server: &Server, ek_pem: &str) -> String {
    let fp = attest_common::ek_fingerprint(ek_pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    let body = json!({
        "ek_fingerprint": fp,
        "ek_cert_pem": base64ct::Base64::encode_string(ek_pem.as_bytes()),
    });
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{reg}");
    reg["machine_id"].as_str().unwrap().to_owned()
}

/// Stops the server as its supervisor would (SIGTERM): the registry closed cleanly.
fn stop(mut server: Server) {
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(20))
            .success()
    );
}

fn restore(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Every file of a data directory, by path, for "nothing was written".
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push((e.display().to_string(), std::fs::read(&e).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Issue 21 (3, 8): a registry file that is empty, is not a registry, or is cut short is
/// refused, naming the file and what to do, and left exactly as it was; the server never
/// starts an empty registry over it.
#[test]
fn a_registry_file_that_is_not_one_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let file = data.join("attestation.redb");

    std::fs::write(&file, b"").unwrap();
    let (code, err) = refused_start(data);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("is empty (0 bytes)"),
        "{err}"
    );
    assert!(err.contains("Restore the registry from a backup"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"", "still empty");

    std::fs::write(&file, b"machines: []\n").unwrap();
    let (code, err) = refused_start(data);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a registry (no redb header)"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"machines: []\n");

    // A real registry cut in half (a copy that stopped short).
    std::fs::remove_file(&file).unwrap();
    let server = Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    register(&server, EK_P384);
    stop(server);
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let before = snapshot(data);
    let (code, err) = refused_start(data);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot open") && err.contains("restored from a backup"),
        "{err}"
    );
    assert_eq!(snapshot(data), before, "a refused start writes nothing");
}

/// Issue 21 (4): the response key, the activation key or the Enrollment CA missing beside a
/// registry that has machines stops the start (nothing made, nothing written), saying what
/// to restore; `attestation-server rotate` replaces one on purpose, audited, and the server
/// starts again.
#[test]
fn keys_missing_beside_machines_are_refused_until_rotated_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let id = register(&server, EK_P384);
    let (_, old_key) = server.call("GET", "/api/v1/server-key", None, None);
    stop(server);

    for (file, rotate) in [
        ("response-key", "response-key"),
        ("activation-key", "activation-key"),
        ("enrollment-ca/ca.key", "enrollment-ca"),
    ] {
        let path = data.join(file);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let ca_cert = (rotate == "enrollment-ca").then(|| {
            let cert = data.join("enrollment-ca/ca.pem");
            let bytes = std::fs::read(&cert).unwrap();
            std::fs::remove_file(&cert).unwrap();
            (cert, bytes)
        });
        let before = snapshot(data);
        let (code, err) = refused_start(data);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("missing beside a registry that has machines")
                && err.contains(&format!("attestation-server rotate {rotate}")),
            "{file}: {err}"
        );
        assert_eq!(
            snapshot(data),
            before,
            "{file}: a refused start writes nothing"
        );
        // Restored from the backup (0600, as backed up): starts again.
        restore(&path, &kept);
        if let Some((cert, bytes)) = ca_cert {
            restore(&cert, &bytes);
        }
        stop(Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]));
    }

    // Replaced on purpose: the old key kept beside, the new one served, the audit says so.
    let out = Command::new(server_bin())
        .env_clear()
        .env("ITL_DATA_DIR", data)
        .args(["rotate", "response-key"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("Response key rotated: the old one kept as"),
        "{said}"
    );
    let retired = std::fs::read_dir(data)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("response-key.retired-")
        })
        .count();
    assert_eq!(retired, 1);
    let server = Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let (_, new_key) = server.call("GET", "/api/v1/server-key", None, None);
    assert_ne!(new_key["public_key_der"], old_key["public_key_der"]);
    let (_, page) = server.call("GET", "/api/v1/audit?per_page=100", Some(ADMIN), None);
    let entries = page.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "key-rotated"
            && e["detail"]
                .as_str()
                .unwrap()
                .starts_with("Response key rotated")),
        "{page}"
    );
    let (status, _) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(status, 200, "the machines are still there");
}

/// Issue 21 (5): one machine record that does not decode is skipped and counted — the
/// listing shows the others (header and trailer say one is damaged), `/metrics` and
/// `/readyz` name it, its own GET says what to do — never a 500 for the whole list.
#[test]
fn a_damaged_record_is_skipped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    let ids: Vec<String> = [EK_P384, EK_RSA]
        .into_iter()
        .map(|pem| register(&server, pem))
        .collect();
    stop(server);
    {
        const MACHINES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("machines");
        let db = redb::Database::open(data.join("attestation.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(MACHINES)
            .unwrap()
            .insert(ids[0].as_str(), &[0xff, 0x00, 0x13][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let server = Server::start_with(data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
    assert!(
        server
            .startup
            .iter()
            .chain(server.log().iter())
            .any(|l| l.contains(&format!("Machine record damaged: id={}", ids[0]))),
        "{:#?}",
        server.startup
    );
    let (status, headers, body) = server.get_full("/api/v1/machines", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("x-damaged-records").map(String::as_str),
        Some("1")
    );
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["machine_id"], ids[1].as_str());

    let (_, metrics) = server.call_text("GET", "/metrics", Some(ADMIN), None);
    assert!(
        metrics.contains("\nitl_registry_damaged_records 1\n"),
        "{metrics}"
    );
    let (status, ready) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 200);
    assert_eq!(ready["damaged_records"], 1, "{ready}");
    assert_eq!(ready["damaged_ids"][0], ids[0].as_str(), "{ready}");
    let (status, err) = server.call(
        "GET",
        &format!("/api/v1/machines/{}", ids[0]),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 500, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("is damaged"),
        "{err}"
    );
    // The other machine is served as before.
    let (status, _) = server.call(
        "GET",
        &format!("/api/v1/machines/{}", ids[1]),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
}

/// A tmpfs of `bytes` on a fresh directory, unmounted when dropped. Mounting needs root (CI
/// runs as root); anywhere else the test says so and fails, it does not skip.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "itl-test"])
            .arg(dir.path())
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it: run it as root (ci/test.sh does in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A registration of a fresh software EK (no certificate): status and answer.
fn register_pub(server: &Server) -> (u16, Value) {
    let mut scalar = [0u8; 48];
    let key = loop {
        getrandom::fill(&mut scalar).unwrap();
        if let Ok(k) = p384::ecdsa::SigningKey::from_slice(&scalar) {
            break k;
        }
    };
    let point = key.verifying_key().to_sec1_point(false);
    let body = support::pub_ek_body(point.as_bytes()).to_string();
    server.call("POST", "/api/v1/self-register", None, Some(&body))
}

/// Fills the file system at `dir` with one file, to the last byte it takes.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    path
}

/// Issue 21 (1): a full disk refuses writes with 507 `disk_full` (nothing written), reads
/// go on as far as they can, `/readyz` says so; once space is freed the same process writes
/// again — no restart, nothing acknowledged lost.
#[test]
fn a_full_disk_refuses_writes_with_507_and_heals_without_a_restart() {
    let disk = Tmpfs::mount(8 << 20);
    let server = Server::start_with(
        disk.path(),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_MAX_UNVERIFIED_PENDING", "100000"),
        ],
    );
    let pid = server.pid();
    let mut ids = Vec::new();
    let (status, reg) = register_pub(&server);
    assert_eq!(status, 201, "{reg}");
    ids.push(reg["machine_id"].as_str().unwrap().to_owned());

    let filler = fill(disk.path());
    let mut refused = None;
    for _ in 0..5000 {
        let (status, answer) = register_pub(&server);
        match status {
            201 => ids.push(answer["machine_id"].as_str().unwrap().to_owned()),
            _ => {
                refused = Some((status, answer));
                break;
            }
        }
    }
    let (status, answer) = refused.expect("the disk never filled");
    assert_eq!(
        (status, answer["error"].as_str()),
        (507, Some("disk_full")),
        "{answer}"
    );
    // More writes while full: refused the same way or, while the file is reopened, 503;
    // never a 500, never a crash.
    for _ in 0..5 {
        let (status, answer) = register_pub(&server);
        assert!(matches!(status, 503 | 507), "{status} {answer}");
    }
    // redb must repair the file it reopens, which takes space: until some is freed the
    // registry stays closed, and `/readyz` says why.
    let (status, ready) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("free disk space"),
        "{ready}"
    );

    std::fs::remove_file(filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        let (status, answer) = register_pub(&server);
        if status == 201 || std::time::Instant::now() > deadline {
            break (status, answer);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(again.0, 201, "healed without a restart: {}", again.1);
    assert_eq!(server.pid(), pid);
    let (status, ready) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 200, "{ready}");
    // Every registration acknowledged before the disk filled is there.
    for id in &ids {
        let (status, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
        assert_eq!(status, 200, "{id}: {m}");
    }
}
