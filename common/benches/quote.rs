//! Quotes verified per second (the whole `verify_quote`) against raw P-384 ECDSA verifies
//! per second with the same provider, in the same run, on one core. Run by `ci/bench.sh`.

use std::time::{Duration, Instant};

use attest_common::crypto::CryptoProvider;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::crypto::rustcrypto::RustCrypto;
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::signature::Signature;
use attest_common::tpm::verify_quote;
use attest_common::wire::{PcrValue, from_json};
use base64ct::Encoding;

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/quote-p384.json")).unwrap();
    let b64 = |k: &str| base64ct::Base64::decode_vec(v[k].as_str().unwrap()).unwrap();
    let ak = TpmPublic::from_tpm2b(&b64("ak_public")).unwrap();
    let attest = b64("quote");
    let sig_bytes = b64("signature");
    let sig = Signature::parse(&sig_bytes, &ak.key).unwrap();
    let nonce: Vec<u8> = (0..32u8).collect();
    let values: Vec<PcrValue> = from_json(v["pcr_values"].to_string().as_bytes()).unwrap();
    let budget = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );

    println!("provider     raw P-384 verify/s   verify_quote/s   ratio");
    for provider in [&RustCrypto as &dyn CryptoProvider, &AwsLc] {
        let raw = rate(budget, || {
            provider.verify(&ak.key, &sig, &attest).unwrap();
        });
        let full = rate(budget, || {
            verify_quote(provider, &ak, &attest, &sig_bytes, &nonce, &values).unwrap();
        });
        println!(
            "{:<12} {:>18.0}   {:>14.0}   {:>5.2}",
            provider.name(),
            raw,
            full,
            full / raw
        );
    }
}
