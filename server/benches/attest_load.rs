//! Full attestations per second through the real `attestation-server` binary over loopback
//! HTTP, next to raw P-384 verifies per second (aws-lc-rs) on all cores, in the same run.
//! Run by `ci/bench.sh`.
//!
//! The load generator enrols software AKs straight into the registry (attested machines
//! with a PCR baseline) and signs their quotes with aws-lc-rs outside the timed phases, so
//! that what is timed is the server's work: issuing challenges (timed phase 1) and, for
//! each, verifying the quote, checking policy and committing the result (timed phase 2).
//! Quotes are the same TPMS_ATTEST / TPMT_SIGNATURE encoding a TPM makes.
//!
//! Settings: BENCH_SECONDS (raw verify time, default 3), BENCH_AGENTS (machines, 2000),
//! BENCH_ROUNDS (attestations per machine, 3), BENCH_CLIENTS (concurrent agents, 16).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attest_common::crypto::CryptoProvider as _;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::lifecycle::{State, Status};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::signature::Signature;
use attest_common::wire::{
    AttestRequest, Blob, ChallengeResponse, HashAlg, Hex, HexVec, PcrValue, Role, from_json,
};
use attest_common::{EkSource, Fingerprint};
use attest_server::record::MachineRecord;
use attest_server::store::RegistryTx as _;
use attest_server::store::redb::RedbRegistry;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest as _, Sha384};

mod support;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// TPMT_PUBLIC of a restricted ECDSA P-384 / SHA-384 signing key (as a TPM makes an AK).
fn ak_public(point: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    t.extend_from_slice(&0x000cu16.to_be_bytes()); // nameAlg SHA384
    t.extend_from_slice(&0x0005_0072u32.to_be_bytes()); // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign
    t.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric NULL
    t.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
    t.extend_from_slice(&0x000cu16.to_be_bytes()); //   SHA384
    t.extend_from_slice(&0x0004u16.to_be_bytes()); // NIST P-384
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
    t.extend_from_slice(&tpm2b(&point[1..49]));
    t.extend_from_slice(&tpm2b(&point[49..97]));
    t
}

/// TPMS_ATTEST of a quote over sha384 PCRs 0-7 with `nonce`.
fn quote(name: &[u8], nonce: &[u8], values: &[PcrValue]) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    q.extend_from_slice(&0x8018u16.to_be_bytes()); // TPM_ST_ATTEST_QUOTE
    q.extend_from_slice(&tpm2b(name));
    q.extend_from_slice(&tpm2b(nonce));
    q.extend_from_slice(&[0u8; 17]); // clockInfo
    q.extend_from_slice(&[0u8; 8]); // firmwareVersion
    q.extend_from_slice(&1u32.to_be_bytes());
    q.extend_from_slice(&0x000cu16.to_be_bytes());
    q.extend_from_slice(&[3, 0xff, 0, 0]);
    let mut h = Sha384::new();
    for v in values {
        h.update(&v.value.0);
    }
    q.extend_from_slice(&tpm2b(&h.finalize()));
    q
}

fn signature(key: &EcdsaKeyPair, attest: &[u8]) -> Vec<u8> {
    let sig = key.sign(&SystemRandom::new(), attest).expect("sign");
    let rs = sig.as_ref();
    let mut t = Vec::new();
    t.extend_from_slice(&0x0018u16.to_be_bytes());
    t.extend_from_slice(&0x000cu16.to_be_bytes());
    t.extend_from_slice(&tpm2b(&rs[..48]));
    t.extend_from_slice(&tpm2b(&rs[48..]));
    t
}

struct Machine {
    key: EcdsaKeyPair,
    name: Vec<u8>,
    fingerprint: Fingerprint,
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs `work(i)` for i in 0..n on `threads` threads with per-thread HTTP agents; answers
/// the elapsed time and each call's latency.
fn timed<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(&ureq::Agent, usize) -> T + Sync,
) -> (Duration, Vec<Duration>, Vec<(usize, T)>) {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let http = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .new_agent();
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return out;
                        }
                        let t = Instant::now();
                        let r = work(&http, i);
                        out.push((t.elapsed(), i, r));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = start.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _, _)| *d).collect();
    latencies.sort();
    (
        elapsed,
        latencies,
        results.into_iter().map(|(_, i, r)| (i, r)).collect(),
    )
}

fn main() {
    let seconds = env("BENCH_SECONDS", 3) as u64;
    let agents = env("BENCH_AGENTS", 2000);
    let rounds = env("BENCH_ROUNDS", 3);
    let clients = env("BENCH_CLIENTS", 16);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().expect("temp dir");

    // Enrol: attested machines with software AKs and a baseline of zeroed PCRs.
    let values: Vec<PcrValue> = (0..8)
        .map(|index| PcrValue {
            hash_alg: HashAlg::Sha384,
            index,
            value: HexVec(heapless::Vec::from_slice(&[0u8; 48]).unwrap()),
        })
        .collect();
    let rng = SystemRandom::new();
    let machines: Vec<Machine> = (0..agents)
        .map(|i| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .expect("keygen");
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let public = ak_public(key.public_key().as_ref());
            let mut name = 0x000cu16.to_be_bytes().to_vec();
            name.extend_from_slice(&Sha384::digest(&public));
            let mut fp = [0u8; 48];
            fp[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Machine {
                key,
                name,
                fingerprint: Fingerprint(Sha384::digest(fp).into()),
            }
        })
        .collect();
    let data = dir.path().join("data");
    support::make_keys(&data);
    {
        let store = RedbRegistry::open(&data.join("attestation.redb")).expect("store");
        store
            .write(|tx| {
                for (i, m) in machines.iter().enumerate() {
                    let public = tpm2b(&ak_public(m.key.public_key().as_ref()));
                    let mut r = MachineRecord::new(
                        format!("bench-{i:06}"),
                        m.fingerprint.to_string(),
                        EkSource::Cert,
                        State::new(Status::Attested),
                        0,
                    );
                    r.ak_public = Some(public);
                    r.ak_activated = true;
                    r.role = Some(Role::WorkerApp);
                    r.hostname = Some(format!("node-{i}"));
                    r.assigned_ip = Some("10.0.0.1/24".into());
                    r.pcr_baseline = Some(values.clone());
                    tx.put_machine(&r)?;
                }
                Ok::<_, attest_server::store::StoreError>(())
            })
            .expect("enrol");
    }

    // The real server.
    let (mut child, url) =
        support::start_server(&data, &[("ITL_CHALLENGE_LIFETIME_SECONDS", "3600")]);
    let rss_kib = || support::proc_kib(child.id(), "VmRSS:");

    // Raw P-384 verifies per second, all cores, same provider as the server.
    let sample = {
        let public = tpm2b(&ak_public(machines[0].key.public_key().as_ref()));
        let attest = quote(&machines[0].name, &[7; 32], &values);
        let sig = signature(&machines[0].key, &attest);
        (TpmPublic::from_tpm2b(&public).unwrap(), sig, attest)
    };
    let verifies = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let sig = Signature::parse(&sample.1, &sample.0.key).unwrap();
                let mut n = 0;
                while start.elapsed() < Duration::from_secs(seconds) {
                    for _ in 0..20 {
                        AwsLc.verify(&sample.0.key, &sig, &sample.2).unwrap();
                    }
                    n += 20;
                }
                verifies.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let raw = verifies.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    // Raw P-384 signatures per second, all cores: the answer's signature, the same signer
    // (aws-lc-rs) and message size as the server's.
    let signs = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let rng = SystemRandom::new();
                let mut n = 0;
                while start.elapsed() < Duration::from_secs(seconds.div_ceil(2)) {
                    for _ in 0..20 {
                        machines[0].key.sign(&rng, &[7; 160]).unwrap();
                    }
                    n += 20;
                }
                signs.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let raw_sign = signs.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();

    let total = agents * rounds;
    let server_pid = child.id().to_string();
    let cpu = || (cpu_seconds(&server_pid), cpu_seconds("self"));
    // Phase 0 (timed): the transport alone. GET /healthz does no work of its own, so its
    // cost on both sides is a floor for any request: HTTP, loopback TCP, wake-ups.
    let cpu_before_floor = cpu();
    let (t_floor, lat_floor, _) = timed(total, clients, |http, _| {
        let mut res = http.get(format!("{url}/healthz")).call().expect("healthz");
        assert_eq!(res.status().as_u16(), 200);
        let _ = res.body_mut().read_to_vec();
    });
    let cpu_after_floor = cpu();
    // Phase 1 (timed): challenges.
    let cpu_before_challenges = cpu();
    let (t_challenge, lat_challenge, challenges) = timed(total, clients, |http, _| {
        let mut res = http
            .post(format!("{url}/api/v1/attest/challenge"))
            .send_empty()
            .expect("challenge");
        assert_eq!(res.status().as_u16(), 200);
        let body = res.body_mut().read_to_vec().unwrap();
        from_json::<ChallengeResponse>(&body).expect("challenge decodes")
    });
    let cpu_after_challenges = cpu();
    // Untimed: each machine quotes its challenges.
    let bodies: Vec<String> = challenges
        .iter()
        .map(|(i, c)| {
            let m = &machines[i % agents];
            let claims = attest_common::binding::claims(&m.fingerprint, &c.nonce_id, None, false);
            let qualifying = attest_common::binding::qualifying_data(&c.nonce.0, &[1; 32], &claims);
            let attest = quote(&m.name, &qualifying, &values);
            let sig = signature(&m.key, &attest);
            serde_json::to_string(&AttestRequest {
                ek_fingerprint: m.fingerprint,
                nonce_id: c.nonce_id.clone(),
                agent_nonce: Hex([1; 32]),
                quote: Blob::from_slice(&attest).unwrap(),
                signature: Blob::from_slice(&sig).unwrap(),
                pcr_values: heapless::Vec::from_slice(&values).unwrap(),
                activation_proof: None,
                ak_public: None,
                config_applied: None,
                wipe_done: false,
            })
            .unwrap()
        })
        .collect();
    let bodies = Arc::new(bodies);
    // Phase 2 (timed): attestations.
    let cpu_before_attests = cpu();
    let (t_attest, lat_attest, statuses) = timed(total, clients, |http, i| {
        let mut res = http
            .post(format!("{url}/api/v1/attest"))
            .header("content-type", "application/json")
            .send(bodies[i].as_bytes())
            .expect("attest");
        let status = res.status().as_u16();
        let _ = res.body_mut().read_to_vec();
        status
    });
    let cpu_after_attests = cpu();
    let failed = statuses.iter().filter(|(_, s)| *s != 200).count();
    assert_eq!(failed, 0, "{failed} attestations were refused");
    let rss = rss_kib();
    let _ = child.kill();
    let _ = child.wait();

    let challenge_rate = total as f64 / t_challenge.as_secs_f64();
    let attest_rate = total as f64 / t_attest.as_secs_f64();
    let full_rate = total as f64 / (t_challenge + t_attest).as_secs_f64();
    println!("machines {agents}, attestations {total}, concurrent agents {clients}, cores {cores}");
    println!("raw P-384 verify (aws-lc-rs, {cores} threads):  {raw:>8.0}/s");
    println!(
        "challenge issue (HTTP):                  {challenge_rate:>8.0}/s   p50 {:.2} ms  p99 {:.2} ms",
        percentile(&lat_challenge, 0.5),
        percentile(&lat_challenge, 0.99)
    );
    println!(
        "attest (HTTP, verify + policy + commit): {attest_rate:>8.0}/s   p50 {:.2} ms  p99 {:.2} ms",
        percentile(&lat_attest, 0.5),
        percentile(&lat_attest, 0.99)
    );
    println!(
        "full attestation (challenge + attest):   {full_rate:>8.0}/s   ratio to raw verify {:.2} (target 0.80)",
        full_rate / raw
    );
    // CPU per call: the server's, and the load generator's (HTTP client) on the same cores.
    let per_call = |before: (f64, f64), after: (f64, f64)| {
        (
            (after.0 - before.0) / total as f64 * 1e6,
            (after.1 - before.1) / total as f64 * 1e6,
        )
    };
    let (sf, lf) = per_call(cpu_before_floor, cpu_after_floor);
    let (sc, lc) = per_call(cpu_before_challenges, cpu_after_challenges);
    let (sa, la) = per_call(cpu_before_attests, cpu_after_attests);
    println!(
        "CPU per call: challenge server {sc:.0} µs + load generator {lc:.0} µs; \
         attest server {sa:.0} µs + load generator {la:.0} µs; one raw verify {:.0} µs",
        cores as f64 / raw * 1e6
    );
    println!(
        "server CPU per full attestation {:.0} µs: ratio to one raw verify {:.2} (the load \
         generator's CPU left out)",
        sc + sa,
        cores as f64 / raw * 1e6 / (sc + sa)
    );
    // The ceiling this machine allows, from this run's own numbers: CPU of both cores per
    // full attestation can be no less than one verify plus two bare requests (challenge and
    // attest), and plus one signature while every answer is signed.
    let verify_us = cores as f64 / raw * 1e6;
    let sign_us = cores as f64 / raw_sign * 1e6;
    let request_us = sf + lf;
    let ceiling = |extra: f64| verify_us / (verify_us + extra);
    println!(
        "transport floor (GET /healthz, same agents): {:>8.0}/s   p50 {:.2} ms  p99 {:.2} ms; \
         CPU per request server {sf:.0} µs + load generator {lf:.0} µs",
        total as f64 / t_floor.as_secs_f64(),
        percentile(&lat_floor, 0.5),
        percentile(&lat_floor, 0.99)
    );
    println!(
        "ceiling ratio on these cores (verify {verify_us:.0} µs, sign {sign_us:.0} µs, bare request \
         {request_us:.0} µs): verify + 2 requests {:.2}; + signed answer {:.2}; verify + 1 \
         request {:.2}",
        ceiling(2.0 * request_us),
        ceiling(2.0 * request_us + sign_us),
        ceiling(request_us)
    );
    println!("server RSS after the run: {} KiB", rss);
}
