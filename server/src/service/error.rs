//! What went wrong, as the adapters need to know it: a kind (which they map to a status), a
//! stable code for machines and a sentence for people.

use attest_common::lifecycle::Refused;

use crate::store::StoreError;

/// What went wrong, as the HTTP layer needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: malformed input.
    BadRequest,
    /// 404.
    NotFound,
    /// 409: the lifecycle does not allow this now.
    Conflict,
    /// 403: the machine's state forbids it (locked, revoked, rejected).
    Forbidden,
    /// 422: well-formed but inconsistent (fingerprint does not match the certificate).
    Unprocessable,
    /// 410: expired (a challenge nonce).
    Gone,
    /// 503: a dependency or configuration is missing, or storage failed (it heals itself).
    Unavailable,
    /// 507: the disk is full; nothing was written.
    InsufficientStorage,
    /// 500: storage failure; nothing was written.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// Machine-readable code for the JSON error body.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// 403 with `code`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        use crate::store::Fault;
        match e.fault {
            Fault::Data => ServiceError::new(ErrorKind::Internal, "storage_error", e.to_string()),
            Fault::DiskFull => ServiceError::new(
                ErrorKind::InsufficientStorage,
                "disk_full",
                format!("{e}: nothing was written; free disk space (reads go on)"),
            ),
            Fault::Io => {
                ServiceError::new(ErrorKind::Unavailable, "storage_unavailable", e.to_string())
            }
        }
    }
}

impl From<Refused> for ServiceError {
    fn from(e: Refused) -> Self {
        ServiceError::conflict("invalid_transition", e.to_string())
    }
}

/// 404 for machine `id`.
pub fn not_found(id: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::NotFound,
        "not_found",
        format!("no machine with id '{}'", crate::log::escape(id)),
    )
}
