//! The server's memory with a large registry (target: RSS ≤ 32 MB with 100,000 machines).
//! Run by `ci/bench.sh`.
//!
//! Writes BENCH_MACHINES (default 100,000) attested machines (software AK public areas, a
//! PCR baseline, role, hostname, address) into a registry file, starts the real
//! `attestation-server` on it with a one-second attestation interval, so that its liveness
//! sweep scans the whole registry every second, waits for several sweeps, looks machines
//! up over HTTP, and reads the server's VmRSS and VmHWM (peak) from /proc.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attest_common::lifecycle::{State, Status};
use attest_common::wire::{HashAlg, HexVec, PcrValue, Role};
use attest_common::{EkSource, Fingerprint};
use attest_server::record::MachineRecord;
use attest_server::store::redb::RedbRegistry;
use attest_server::store::{RegistryTx as _, StoreError};
use sha2::{Digest as _, Sha384};

mod support;
use support::proc_kib;

const ADMIN: &str = "bench-admin-token";

/// One GET on a fresh connection; the status code.
fn get(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..answer.len().min(64)])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let machines: usize = std::env::var("BENCH_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = data.join("attestation.redb");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let baseline: Vec<PcrValue> = (0..8)
        .map(|index| PcrValue {
            hash_alg: HashAlg::Sha384,
            index,
            value: HexVec(heapless::Vec::from_slice(&[index; 48]).unwrap()),
        })
        .collect();
    let started = Instant::now();
    support::make_keys(file.parent().expect("the registry's directory"));
    {
        let store = RedbRegistry::open(&file).expect("store");
        for chunk in (0..machines).collect::<Vec<_>>().chunks(10_000) {
            store
                .write(|tx| {
                    for &i in chunk {
                        let fp = Fingerprint(Sha384::digest((i as u64).to_be_bytes()).into());
                        let mut r = MachineRecord::new(
                            format!("m-{i:06}"),
                            fp.to_string(),
                            EkSource::Cert,
                            State::new(Status::Attested),
                            now,
                        );
                        // A TPM2B_PUBLIC's size for a P-384 AK, and its baseline.
                        r.ak_public = Some(vec![0x5a; 122]);
                        r.ak_activated = true;
                        r.role = Some(Role::WorkerApp);
                        r.hostname = Some(format!("node-{i}"));
                        r.assigned_ip = Some("10.20.0.1/16".into());
                        r.pcr_baseline = Some(baseline.clone());
                        r.last_attested_at = Some(now);
                        tx.put_machine(&r)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .expect("write machines");
        }
    }
    let file_mb = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    println!(
        "registry: {machines} machines written in {:.1} s, file {file_mb:.1} MB",
        started.elapsed().as_secs_f64()
    );

    let (mut child, url) = support::start_server(
        &data,
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            // The sweep runs every interval (1 s) over every machine; none is stale.
            ("ITL_ATTESTATION_INTERVAL_SECONDS", "1"),
            ("ITL_LIVENESS_FACTOR", "1000"),
        ],
    );
    let pid = child.id();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let at_start = proc_kib(pid, "VmRSS:");
    std::thread::sleep(Duration::from_secs(4));
    let mut ok = 0;
    for i in (0..machines).step_by((machines / 200).max(1)) {
        ok += usize::from(get(&addr, &format!("/api/v1/machines/m-{i:06}")) == 200);
    }
    // Prometheus scrapes: /metrics counts the registry at scrape time, while the sweeps
    // (every second here) scan it too.
    let scrapes = 10;
    let t = Instant::now();
    for _ in 0..scrapes {
        assert_eq!(get(&addr, "/metrics"), 200);
        std::thread::sleep(Duration::from_millis(150));
    }
    let scrape_ms = t.elapsed().as_secs_f64() * 1000.0 / scrapes as f64 - 150.0;
    let after = proc_kib(pid, "VmRSS:");
    // The operator's full listing, read to the end.
    let t = Instant::now();
    assert_eq!(get(&addr, "/api/v1/machines"), 200);
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after_list = proc_kib(pid, "VmRSS:");
    let peak = proc_kib(pid, "VmHWM:");
    // An online backup: a copy of the whole registry from one read transaction, then sent.
    let t = Instant::now();
    assert_eq!(get(&addr, "/api/v1/backup"), 200);
    let backup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after_backup = proc_kib(pid, "VmRSS:");
    let backup_peak = proc_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    println!("GET /metrics with {machines} machines: {scrape_ms:.0} ms per scrape");
    println!(
        "GET /api/v1/machines (all {machines}): {list_ms:.0} ms; RSS after it {:.1} MiB",
        after_list as f64 / 1024.0
    );
    println!(
        "server RSS with {machines} machines: {:.1} MiB after start, {:.1} MiB after ≥5 full liveness sweeps, {ok} lookups and {scrapes} scrapes, peak {:.1} MiB (target ≤ 32 MB)",
        at_start as f64 / 1024.0,
        after as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "GET /api/v1/backup ({machines} machines): {backup_ms:.0} ms; RSS after it {:.1} MiB, peak {:.1} MiB",
        after_backup as f64 / 1024.0,
        backup_peak as f64 / 1024.0
    );
}
