//! Tests of EK chain validation: the bundled vendor store, swtpm's EK certificates, chains
//! made here (x509-cert builder, P-384; RSA and RSA-PSS through openssl), tampering, mutated
//! certificates, and AIA fetching from a stand-in HTTP server on 127.0.0.1.

mod aia;
mod algorithms;
mod mutation;
mod quirks;
mod store;
mod swtpm;
mod tampering;
mod testca;
mod vendor;

use std::time::{Duration, Instant};

use super::{ChainVerdict, EkChain, TrustStore};
use testca::Made;

/// A verifier whose store holds exactly `anchors` (no vendor certificates).
fn chain_of(anchors: &[&Made]) -> EkChain {
    let mut store = TrustStore::empty();
    for a in anchors {
        store.add("test", &a.der).unwrap();
    }
    EkChain::new(store)
}

/// The reason of an Unverified verdict; panics on Verified.
fn reason(v: &ChainVerdict) -> &str {
    match v {
        ChainVerdict::Unverified { reason } => reason,
        v => panic!("expected Unverified, got {v:?}"),
    }
}

/// `(by, path)` of a Verified verdict; panics on Unverified.
fn verified(v: &ChainVerdict) -> (&str, Vec<&str>) {
    match v {
        ChainVerdict::Verified { by, path, .. } => (by, path.iter().map(String::as_str).collect()),
        v => panic!("expected Verified, got {v:?}"),
    }
}

/// Runs `f`, asserting it took less than `limit`.
fn quickly<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < limit, "took {took:?} (limit {limit:?})");
    out
}

#[test]
fn verifier_is_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<EkChain>();
}
