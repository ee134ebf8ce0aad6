//! Liveness (DESIGN.md §3.5): an attested machine that has not pushed within interval ×
//! `ITL_LIVENESS_FACTOR` is shown `stale` (a derived fact, not a lifecycle state), and a
//! sweep audits it once; its next good attestation clears the mark.

use attest_common::lifecycle::Status;
use attest_common::wire::Timestamp;

use super::{Actor, Change, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// Whether an attested machine has been silent longer than the liveness limit at `now`.
    pub fn is_stale_at(&self, record: &MachineRecord, now: u64) -> bool {
        record.state.status == Status::Attested
            && record
                .last_attested_at
                .is_some_and(|t| now.saturating_sub(t) > self.challenges.liveness_seconds())
    }

    /// Whether it is stale now.
    pub fn is_stale(&self, record: &MachineRecord) -> bool {
        self.is_stale_at(record, self.platform.now())
    }

    /// Audits machines that became stale since the last sweep, once each. Answers how many
    /// were newly marked.
    pub fn sweep_stale(&self) -> Result<usize, ServiceError> {
        let now = self.platform.now();
        let mut candidates: Vec<String> = Vec::new();
        // Already marked ones were audited when they turned stale: skipped without a write.
        self.registry.each_machine(|m, marked| {
            if !marked && self.is_stale_at(&m, now) {
                candidates.push(m.id);
            }
            std::ops::ControlFlow::Continue(())
        })?;
        let mut marked = 0;
        for id in candidates {
            marked += self.registry.write(|tx| {
                // Re-read inside the transaction: the machine may have attested since.
                let Some(m) = tx.machine(&id)? else {
                    return Ok::<_, ServiceError>(0);
                };
                if !self.is_stale_at(&m, now) || !tx.mark_stale(&id, now)? {
                    return Ok(0);
                }
                let c = &self.challenges;
                let detail = format!(
                    "Machine stale: id={id} last_attested_at={} (no attestation for more than {}s = interval {}s x {})",
                    m.last_attested_at
                        .map(|t| Timestamp(t).to_string())
                        .unwrap_or_default(),
                    c.liveness_seconds(),
                    c.interval_seconds,
                    c.liveness_factor
                );
                Change::about(AuditAction::Stale, &m, detail).record(tx, &Actor::system(), now)?;
                Ok(1)
            })?;
        }
        Ok(marked)
    }

    /// How often the liveness sweep should run: `min(interval, 60 s)`.
    pub fn sweep_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.challenges.interval_seconds).clamp(1, 60))
    }
}
