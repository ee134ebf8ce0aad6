//! `GET /metrics` in the Prometheus text format (DESIGN.md §4), for the operator's scraper:
//! the registry by status and liveness, and counters since the process started. Counts are
//! read from the registry at scrape time, so they are never out of step with the API; the
//! counters are process-local and restart at zero (Prometheus' `rate()` expects that).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use attest_common::lifecycle::Status;

use crate::service::{Service, ServiceError};
use crate::store::Registry;

/// Agent-facing events counted since start.
#[derive(Debug, Default)]
pub struct Counters {
    pub challenges: AtomicU64,
    pub attest_accepted: AtomicU64,
    pub attest_refused: AtomicU64,
}

impl Counters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One metric: name, type, help, and its samples (labels, value).
type Family = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// The exposition text.
pub fn render<R: Registry>(service: &Service<R>, now: u64) -> Result<String, ServiceError> {
    let mut by_status = [0u64; Status::ALL.len()];
    let mut stale = 0u64;
    service.registry().each_machine(|m, _| {
        if let Some(i) = Status::ALL.iter().position(|s| *s == m.state.status) {
            by_status[i] += 1;
        }
        if service.is_stale_at(&m, now) {
            stale += 1;
        }
        std::ops::ControlFlow::Continue(())
    })?;
    let counters = service.counters();
    let (batches, batched) = service.registry().batch_counts();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let statuses: Vec<(String, u64)> = Status::ALL
        .iter()
        .zip(by_status)
        .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n))
        .collect();
    let refused: Vec<(String, u64)> = service
        .refusal_counts()
        .into_iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n))
        .collect();
    let damaged = service.registry().damaged_records().len() as u64;
    let families: [Family; 9] = [
        (
            "itl_machines",
            "gauge",
            "Registered machines by status.",
            statuses,
        ),
        (
            "itl_registry_damaged_records",
            "gauge",
            "Machine records that do not decode, skipped by listings and sweeps (restore from a backup).",
            vec![(String::new(), damaged)],
        ),
        (
            "itl_machines_stale",
            "gauge",
            "Attested machines silent for longer than the interval times ITL_LIVENESS_FACTOR.",
            vec![(String::new(), stale)],
        ),
        (
            "itl_challenges_issued_total",
            "counter",
            "Attestation challenges issued.",
            vec![(String::new(), load(&counters.challenges))],
        ),
        (
            "itl_attestations_total",
            "counter",
            "Attestations answered, by result.",
            vec![
                (
                    "{result=\"accepted\"}".into(),
                    load(&counters.attest_accepted),
                ),
                (
                    "{result=\"refused\"}".into(),
                    load(&counters.attest_refused),
                ),
            ],
        ),
        (
            "itl_unauthenticated_total",
            "counter",
            "Contacts refused before they proved anything (nothing written for them), by reason.",
            refused,
        ),
        (
            "itl_heartbeat_commits_total",
            "counter",
            "Durable commits of batched routine attestations.",
            vec![(String::new(), batches)],
        ),
        (
            "itl_heartbeat_writes_total",
            "counter",
            "Routine attestations through those commits (a replay found used there is then refused by the full path).",
            vec![(String::new(), batched)],
        ),
        (
            "itl_build_info",
            "gauge",
            "The server's version.",
            vec![(
                concat!("{version=\"", env!("CARGO_PKG_VERSION"), "\"}").into(),
                1,
            )],
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    Ok(out)
}
