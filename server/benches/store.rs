//! How many durable registry writes per second one caller gets: each is one redb write
//! transaction (a challenge nonce marked used) that waits for its durable commit. With one caller, group commit has
//! nobody to share the fsync with, so this is the floor; concurrent callers share it
//! (`attest_load`). Run by `ci/bench.sh`.

use std::time::{Duration, Instant};

use attest_server::store::redb::RedbRegistry;
use attest_server::store::{RegistryTx as _, StoreError};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbRegistry::open(&dir.path().join("bench.redb")).expect("store");
    let mut i = 0u64;
    let mut write = || {
        i += 1;
        let id = format!("{:016x}{i:032x}", u64::MAX);
        store
            .write::<_, StoreError>(|tx| tx.use_nonce(&id, i))
            .expect("write");
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for _ in 0..20 {
        write();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        write();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("durable redb write transactions (nonce marked used): {rate:.0}/s on one thread");
}
