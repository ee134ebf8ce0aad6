//! Storage (DESIGN.md §7): the [`Registry`] traits the service works against, the types
//! they carry, and the backends: `redb` (one embedded file, the default).

pub mod redb;
mod registry;

pub use registry::{CheckpointSigner, Registry, RegistryTx};

/// One operator's vote toward a dual-control approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    /// Who voted, as the audit log shows it.
    pub identity: String,
    /// Who voted, as dual control counts it (`Actor::principal`).
    pub principal: String,
    pub role: attest_common::wire::Role,
    pub hostname: String,
    pub assigned_ip: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The principal prefix of a vote stored before principals existed (`legacy:<display
/// name>`): shown in the history, never counted toward a quorum.
pub const LEGACY_PRINCIPAL: &str = "legacy:";

/// A storage failure: the request cannot be served and nothing was written.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub message: String,
    pub fault: Fault,
}

/// What kind of storage failure: it decides the answer (500, 507, 503) and whether the
/// registry reopens its file (`redb::RedbRegistry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Stored data that does not decode, or a bug: 500.
    #[default]
    Data,
    /// The disk is full (ENOSPC, EDQUOT): 507; nothing was written, reads go on.
    DiskFull,
    /// An I/O error, or the registry closed after one and not reopened yet: 503.
    Io,
}

impl StoreError {
    /// A failure of the [`Fault::Data`] kind.
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            fault: Fault::Data,
        }
    }

    pub fn with_fault(message: impl Into<String>, fault: Fault) -> StoreError {
        StoreError {
            message: message.into(),
            fault,
        }
    }

    /// Of an I/O error: disk full or not.
    pub fn io(context: &str, e: &std::io::Error) -> StoreError {
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            || e.kind() == std::io::ErrorKind::StorageFull;
        StoreError::with_fault(
            format!("{context}: {e}"),
            if full { Fault::DiskFull } else { Fault::Io },
        )
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<crate::record::RecordError> for StoreError {
    fn from(e: crate::record::RecordError) -> Self {
        StoreError::new(e.to_string())
    }
}

/// A single-use URL to a machine's full config, minted by a verified attestation
/// (DESIGN.md §3.9), kept under the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigGrant {
    pub machine_id: String,
    /// Seconds since the epoch after which the URL answers 410.
    pub expires_at: u64,
    /// SHA-384 of the config the attestation answer named: the URL serves exactly it.
    pub sha384: Vec<u8>,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    pub machines: u64,
    pub audit_entries: u64,
}

/// How a config token is indexed: its SHA-256 (hex). The registry never stores a token.
pub fn token_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::audit::hex(&Sha256::digest(token.as_bytes()))
}
