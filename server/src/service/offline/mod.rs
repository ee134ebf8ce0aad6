//! The air-gapped half (DESIGN.md §3.6): offline bundles with an enrollment certificate,
//! `/enroll` with it, and TPM receipts imported by an operator.
//!
//! A machine that never reaches the server before it boots gets everything on a stick: its
//! ISO URL, its full MachineConfig with an enrollment certificate and key as Talos
//! `machine.files`, the Enrollment CA and the server's response key. When it does reach the
//! server it proves it holds that key over a server nonce; the certificate names its id and
//! its TPM, so a bundle copied elsewhere proves nothing for another machine.

mod bundle;
mod enroll;
mod import;

use super::{ErrorKind, Service, ServiceError};
use crate::enrollment::EnrollmentCa;
use crate::record::MachineRecord;
use crate::store::Registry;

/// Where the bundle's files land on the node (Talos lets machine.files write under /var).
pub const FILES_DIR: &str = "/var/lib/itl";

/// What `GET /machines/{id}/offline-bundle` answers (the API's view, `attest-api`).
pub use attest_api::OfflineBundle;

/// The answer to an enrolment or import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub machine: MachineRecord,
    /// False when nothing new was created (an import of a known EK).
    pub created: bool,
}

/// The Enrollment CA and how long its machine certificates last.
pub struct Enrollment {
    pub ca: EnrollmentCa,
    pub cert_days: u32,
}

impl<R: Registry> Service<R> {
    fn enrollment(&self) -> Result<&Enrollment, ServiceError> {
        self.enrollment.as_ref().ok_or_else(|| {
            ServiceError::new(
                ErrorKind::Unavailable,
                "enrollment_unavailable",
                "the Enrollment CA is not loaded",
            )
        })
    }
}
