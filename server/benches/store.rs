//! How many durable registry writes per second one caller gets: each challenge is one redb
//! write transaction that waits for its durable commit. With one caller, group commit has
//! nobody to share the fsync with, so this is the floor; concurrent callers share it
//! (`attest_load`). Run by `ci/bench.sh`.

use std::time::{Duration, Instant};

use attest_server::service::Service;
use attest_server::store::Store;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = Service::new(Store::open(&dir.path().join("bench.redb")).expect("store"));
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for _ in 0..20 {
        service.challenge().expect("challenge");
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        service.challenge().expect("challenge");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("durable redb write transactions (challenge issue): {rate:.0}/s on one thread");
}
