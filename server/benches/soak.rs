//! The soak (issue 21; `ci/soak.sh`, not part of `ci/test.sh`): the real server under mixed
//! load, killed with SIGKILL at random moments, every acknowledged change checked after each
//! restart; a disk filled and freed again; slow clients filling the connection cap while
//! requests go on. Prints one table per part.
//!
//! Usage: `cargo bench -p attest-server --bench soak -- [KILL_CYCLES] [DISK_CYCLES]`
//! (defaults 10 and 3). The disk part mounts a tmpfs, so it needs root; without root it says
//! so and is left out of the table.

mod support;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN: &str = "soak-admin-token";
const WRITERS: usize = 6;

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// A request: its status and JSON answer, or `None` when no answer came (the server died).
fn call(url: &str, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let agent = http();
    let full = format!("{url}{path}");
    let res = match (method, body) {
        ("GET", _) => agent
            .get(&full)
            .header("authorization", format!("Bearer {ADMIN}"))
            .call(),
        ("DELETE", _) => agent
            .delete(&full)
            .header("authorization", format!("Bearer {ADMIN}"))
            .call(),
        (_, Some(b)) => agent
            .post(&full)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .send(b.to_string().as_bytes()),
        (_, None) => agent
            .post(&full)
            .header("authorization", format!("Bearer {ADMIN}"))
            .send_empty(),
    };
    let mut res = res.ok()?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A registration body for a fresh software EK (no certificate).
fn pub_ek() -> Value {
    use attest_common::tpm::ek::EkType;
    use attest_common::tpm::ek_template::check_ek_public;
    use attest_common::tpm::public::{EccCurve, PublicKey};
    use base64ct::Encoding as _;
    let mut scalar = [0u8; 48];
    let key = loop {
        getrandom::fill(&mut scalar).unwrap();
        if let Ok(k) = p384::ecdsa::SigningKey::from_slice(&scalar) {
            break k;
        }
    };
    let point = key.verifying_key().to_sec1_point(false);
    let area = EkType::EccP384
        .template()
        .public_area(&PublicKey::Ecc {
            curve: EccCurve::P384,
            point: heapless::Vec::from_slice(point.as_bytes()).unwrap(),
        })
        .unwrap();
    let fingerprint = check_ek_public(&area).unwrap().fingerprint();
    serde_json::json!({
        "ek_fingerprint": fingerprint.to_string(),
        "ek_source": "pub",
        "ek_public": base64ct::Base64::encode_string(&area),
    })
}

/// What the writers know was acknowledged: per machine, the status its last acknowledged
/// change left, and the status an unanswered change would have left (either may be found).
#[derive(Default)]
struct Ledger {
    machines: HashMap<String, (String, Option<String>)>,
    acknowledged: u64,
}

/// One writer: registers machines and walks each through approve → revoke → delete, noting
/// every acknowledged change, until `stop`.
fn writer(url: &str, ledger: &Mutex<Ledger>, stop: &AtomicBool, n: usize) {
    let approve = serde_json::json!({"role": "worker-app", "hostname": format!("soak-{n}"), "assigned_ip": "10.9.0.1/24"});
    let revoke = serde_json::json!({"reason": "soak", "wipe": false});
    while !stop.load(Ordering::Relaxed) {
        let Some((201, reg)) = call(url, "POST", "/api/v1/self-register", Some(&pub_ek())) else {
            continue;
        };
        let id = reg["machine_id"].as_str().unwrap_or_default().to_owned();
        let ack = |status: &str| {
            let mut l = ledger.lock().unwrap();
            l.machines.insert(id.clone(), (status.to_owned(), None));
            l.acknowledged += 1;
        };
        ack("pending_approval");
        let steps: [(&str, String, Option<&Value>, &str); 3] = [
            (
                "POST",
                format!("/api/v1/machines/{id}/approve"),
                Some(&approve),
                "registered",
            ),
            (
                "POST",
                format!("/api/v1/machines/{id}/revoke"),
                Some(&revoke),
                "revoked",
            ),
            ("DELETE", format!("/api/v1/machines/{id}"), None, "deleted"),
        ];
        for (method, path, body, after) in steps {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            ledger.lock().unwrap().machines.get_mut(&id).unwrap().1 = Some(after.to_owned());
            match call(url, method, &path, body) {
                Some((200 | 204, _)) => ack(after),
                // No answer (the server died in between): either outcome may be on disk.
                _ => return,
            }
        }
    }
}

/// Checks every acknowledged change against the registry: answers (checked, lost).
fn verify(url: &str, ledger: &Mutex<Ledger>) -> (u64, Vec<String>) {
    let l = ledger.lock().unwrap();
    let mut lost = Vec::new();
    for (id, (acked, pending)) in &l.machines {
        let found = match call(url, "GET", &format!("/api/v1/machines/{id}"), None) {
            Some((200, m)) => m["status"].as_str().unwrap_or_default().to_owned(),
            Some((404, _)) => "deleted".to_owned(),
            other => format!("unreadable: {other:?}"),
        };
        if found != *acked && Some(&found) != pending.as_ref() {
            lost.push(format!("{id}: acknowledged {acked}, found {found}"));
        }
    }
    (l.machines.len() as u64, lost)
}

fn kill_cycles(cycles: usize) {
    println!(
        "\n== kill -9 under mixed load ({WRITERS} writers: register, approve, revoke, delete)"
    );
    println!(
        "| after kill | acknowledged so far | machines checked | lost | restart, repair included (ms) | audit chain |"
    );
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("ITL_ADMIN_TOKEN", ADMIN),
        ("ITL_MAX_UNVERIFIED_PENDING", "1000000"),
    ];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total_lost = 0;
    for cycle in 1..=cycles {
        let started = Instant::now();
        let (mut child, url) = support::start_server(&data, &env);
        let restart_ms = started.elapsed().as_millis();
        if cycle > 1 {
            // Everything acknowledged before the last kill is there.
            let (checked, lost) = verify(&url, &ledger);
            let (_, audit) = call(&url, "GET", "/api/v1/audit/verify", None).unwrap_or_default();
            total_lost += lost.len();
            let acked = ledger.lock().unwrap().acknowledged;
            println!(
                "| {} | {acked} | {checked} | {} | {restart_ms} | {} |",
                cycle - 1,
                lost.len(),
                if audit["valid"] == true {
                    "valid"
                } else {
                    "INVALID"
                }
            );
            for l in lost.iter().take(5) {
                println!("  lost: {l}");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let (url, ledger, stop) = (url.clone(), ledger.clone(), stop.clone());
                std::thread::spawn(move || writer(&url, &ledger, &stop, n))
            })
            .collect();
        // Killed at a random moment between 1 and 4 s of load.
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).unwrap();
        std::thread::sleep(Duration::from_millis(
            1000 + u64::from(u16::from_le_bytes(r)) % 3000,
        ));
        kill(&mut child);
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
    }
    let (mut child, url) = support::start_server(&data, &env);
    let (checked, lost) = verify(&url, &ledger);
    total_lost += lost.len();
    let acked = ledger.lock().unwrap().acknowledged;
    println!(
        "| {cycles} | - | {acked} | {checked} | {} | - | - |",
        lost.len()
    );
    println!("kill -9 cycles: {cycles}, acknowledged changes: {acked}, lost: {total_lost}");
    kill(&mut child);
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A tmpfs of `bytes` on `dir`; false when it cannot be mounted (not root).
fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "itl-soak"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn disk_cycles(cycles: usize) {
    println!("\n== disk full, then freed ({cycles} cycles on an 8 MiB tmpfs)");
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), 8 << 20) {
        println!("(left out: mounting a tmpfs needs root)");
        return;
    }
    let env = [
        ("ITL_ADMIN_TOKEN", ADMIN),
        ("ITL_MAX_UNVERIFIED_PENDING", "1000000"),
    ];
    let (mut child, url) = support::start_server(dir.path(), &env);
    println!(
        "| cycle | registrations before full | first refusal | 5xx other than 503/507 | healed after (ms) | acknowledged lost |"
    );
    println!("|---|---|---|---|---|---|");
    let mut ids = Vec::new();
    for cycle in 1..=cycles {
        let filler = dir.path().join("filler");
        {
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            while f.write_all(&chunk).is_ok() {}
            while f.write_all(&[0]).is_ok() {}
        }
        let (mut before, mut refusal, mut bad) = (0, String::from("-"), 0);
        for _ in 0..5000 {
            match call(&url, "POST", "/api/v1/self-register", Some(&pub_ek())) {
                Some((201, reg)) => {
                    before += 1;
                    ids.push(reg["machine_id"].as_str().unwrap_or_default().to_owned());
                }
                Some((status, answer)) => {
                    refusal = format!("{status} {}", answer["error"].as_str().unwrap_or("?"));
                    break;
                }
                None => bad += 1,
            }
        }
        for _ in 0..20 {
            if let Some((status, _)) = call(&url, "POST", "/api/v1/self-register", Some(&pub_ek()))
                && status >= 500
                && !matches!(status, 503 | 507)
            {
                bad += 1;
            }
        }
        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        let healed = loop {
            match call(&url, "POST", "/api/v1/self-register", Some(&pub_ek())) {
                Some((201, reg)) => {
                    ids.push(reg["machine_id"].as_str().unwrap_or_default().to_owned());
                    break freed.elapsed().as_millis().to_string();
                }
                _ if freed.elapsed() > Duration::from_secs(30) => break "never".into(),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let lost = ids
            .iter()
            .filter(|id| {
                !matches!(
                    call(&url, "GET", &format!("/api/v1/machines/{id}"), None),
                    Some((200, _))
                )
            })
            .count();
        println!("| {cycle} | {before} | {refusal} | {bad} | {healed} | {lost} |");
        // Room for the next cycle's registrations: delete what this one made.
        for id in ids.drain(..) {
            let _ = call(
                &url,
                "POST",
                &format!("/api/v1/machines/{id}/reject"),
                Some(&serde_json::json!({"reason": "soak"})),
            );
            let _ = call(&url, "DELETE", &format!("/api/v1/machines/{id}"), None);
        }
    }
    kill(&mut child);
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir.path())
        .status();
}

fn slow_clients() {
    println!("\n== slow clients filling the connection cap (64), 3 attacks of 128 sockets each");
    println!("| attack | requests served | median (ms) | max (ms) | failed |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ITL_ADMIN_TOKEN", ADMIN),
        ("ITL_MAX_CONNECTIONS", "64"),
        ("ITL_IDLE_TIMEOUT_SECONDS", "60"),
        ("ITL_MAX_CONNECTIONS_PER_PEER", "1000"),
    ];
    let (mut child, url) = support::start_server(dir.path(), &env);
    let addr = url.trim_start_matches("http://").to_owned();
    let attacks: [(&str, &[u8]); 3] = [
        ("silent sockets", b""),
        (
            "head a byte at a time",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a",
        ),
        (
            "body a byte at a time",
            b"POST /api/v1/attest HTTP/1.1\r\nHost: x\r\ncontent-length: 4000\r\n\r\n{",
        ),
    ];
    for (what, first) in attacks {
        let held: Vec<TcpStream> = (0..128)
            .filter_map(|_| {
                let mut s = TcpStream::connect(&addr).ok()?;
                s.write_all(first).ok()?;
                Some(s)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut times = Vec::new();
        let mut failed = 0;
        for _ in 0..50 {
            let t = Instant::now();
            match call(&url, "POST", "/api/v1/attest/challenge", None) {
                Some((200, _)) => times.push(t.elapsed().as_millis()),
                _ => failed += 1,
            }
        }
        times.sort();
        println!(
            "| {what} | {} | {} | {} | {failed} |",
            times.len(),
            times.get(times.len() / 2).copied().unwrap_or(0),
            times.last().copied().unwrap_or(0)
        );
        drop(held);
    }
    kill(&mut child);
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let kills = args.first().copied().unwrap_or(10);
    let disks = args.get(1).copied().unwrap_or(3);
    kill_cycles(kills);
    disk_cycles(disks);
    slow_clients();
}
