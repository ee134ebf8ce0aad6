//! A bound on machines waiting for approval with an EK nobody vouches for (DESIGN.md §3.1,
//! §3.8): under `ITL_EK_CHAIN=warn` (the default) or `off`, a registration whose EK does not
//! chain to a TPM vendor gets a record for a human to look at. A real TPM has one EK per
//! key type, but a self-made "EK" costs nothing, so without a bound anyone could fill the
//! registry and the approver's list. Registrations of unverified EKs are refused (503
//! `registration_quota`, nothing written) while `ITL_MAX_UNVERIFIED_PENDING` such machines
//! wait; verified EKs (each needs a real TPM) are never counted.
//!
//! The number is counted by a registry scan (about 0.1 s at 100,000 machines), at most once
//! per [`RECOUNT_SECONDS`], and kept up to date in between by the registrations this process
//! makes; an operator's approval, rejection or deletion makes the next check count again.

use std::sync::Mutex;

use attest_common::lifecycle::Status;

use crate::record::{EkChainStatus, MachineRecord};
use crate::store::{Registry, StoreError};

/// Default of `ITL_MAX_UNVERIFIED_PENDING`.
pub const DEFAULT_MAX_UNVERIFIED_PENDING: u64 = 1000;
/// Seconds a count is trusted before the registry is scanned again.
pub const RECOUNT_SECONDS: u64 = 30;

/// Whether `record` counts against the quota: not approved yet, and its EK unverified.
pub fn counts(record: &MachineRecord) -> bool {
    let waiting = match record.state.status {
        Status::PendingApproval => true,
        Status::Registered => !record.approved(),
        _ => false,
    };
    waiting && !matches!(record.ek_chain, EkChainStatus::Verified { .. })
}

/// The quota and its cached count.
#[derive(Debug)]
pub struct UnverifiedQuota {
    /// `None`: no bound.
    limit: Option<u64>,
    /// The count, and when the registry was last scanned for it.
    cached: Mutex<Option<(u64, u64)>>,
}

impl Default for UnverifiedQuota {
    fn default() -> UnverifiedQuota {
        UnverifiedQuota::new(Some(DEFAULT_MAX_UNVERIFIED_PENDING))
    }
}

impl UnverifiedQuota {
    pub fn new(limit: Option<u64>) -> UnverifiedQuota {
        UnverifiedQuota {
            limit,
            cached: Mutex::new(None),
        }
    }

    /// `Err(limit)` when one more unverified machine would exceed the bound.
    pub fn check(&self, registry: &impl Registry, now: u64) -> Result<Result<(), u64>, StoreError> {
        let Some(limit) = self.limit else {
            return Ok(Ok(()));
        };
        let mut cached = self.lock();
        let count = match *cached {
            Some((count, at)) if now < at.saturating_add(RECOUNT_SECONDS) => count,
            _ => {
                let mut count = 0u64;
                registry.each_machine(|record, _| {
                    count += u64::from(counts(&record));
                    std::ops::ControlFlow::Continue(())
                })?;
                *cached = Some((count, now));
                count
            }
        };
        Ok(if count >= limit { Err(limit) } else { Ok(()) })
    }

    /// One more unverified machine was registered.
    pub fn added(&self) {
        if let Some((count, _)) = self.lock().as_mut() {
            *count += 1;
        }
    }

    /// An operator changed a machine's state: count again at the next check.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, u64)>> {
        // A plain number: a panic elsewhere cannot leave it half-written.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}
