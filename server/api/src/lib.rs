//! The operator API's answers as types: what `attestation-server` sends and what the operator
//! CLI `attestation` reads, defined once.
//!
//! Why a crate of its own: the server built these answers with `json!` literals and the CLI
//! read them back as untyped `Value["field"]`, so a renamed or retyped field broke the CLI
//! only at run time, and only where a test happened to look. With one definition on both
//! sides a change is a compile error in both, and a test checks each view against the OpenAPI
//! document the server serves (`server/tests/views.rs`). It also lets the CLI live in its own
//! crate: this one depends only on serde and the `no_std` core of `attest-common` (the
//! [`Status`], [`Role`] and [`EkSource`] enums, [`Timestamp`], [`Hex`]), never on the server,
//! redb or aws-lc-rs.
//!
//! The JSON is the contract (README, "API"; DESIGN.md §4): field names, JSON types and `null`
//! for absent values are exactly what the server has always sent, and the server's API tests
//! pin them. Views accept unknown fields, so a newer server's additions do not break an older
//! CLI.
//!
//! The list and page answers ([`MachineList`], [`AuditPage`]) are bare arrays of element
//! types that stand alone ([`Machine`], [`AuditEntry`]), as the seed answers them; counts and
//! paging travel in headers (`X-Total-Count`, `Link`).

use serde::{Deserialize, Serialize};

mod audit_action;
mod escape;
pub use audit_action::AuditAction;
pub use escape::escape;

pub use attest_common::fingerprint::EkSource;
pub use attest_common::lifecycle::Status;
pub use attest_common::nonce::{Domain, NonceError, NonceSignature, VerifyingKey};
pub use attest_common::wire::{Hex, Role, Timestamp};

/// A machine as the operator API shows it: `GET /api/v1/machines` (each element), the answer
/// to approve (200), reject, lock, unlock, revoke, reset-baseline and import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub machine_id: String,
    /// Lower-case hex SHA-384 of the EK certificate (or public key) DER.
    pub ek_fingerprint: String,
    pub ek_source: EkSource,
    pub status: Status,
    /// A revoke with wipe that the machine's agent has not yet been told.
    pub wipe_pending: bool,
    /// Set by approval.
    pub role: Option<Role>,
    pub hostname: Option<String>,
    pub assigned_ip: Option<String>,
    /// What the machine asked for when it registered.
    pub desired_role: Option<Role>,
    pub cluster_id: String,
    pub hw_uuid: Option<String>,
    pub hw_mac: Option<String>,
    pub hw_serial: Option<String>,
    pub hw_product: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_attested_at: Option<Timestamp>,
    /// Attested, but silent for longer than the interval × `ITL_LIVENESS_FACTOR`.
    pub stale: bool,
    /// A PCR baseline is pinned (by the first verified attestation after approval).
    pub pcr_baseline_pinned: bool,
    /// The machine's TPM has proven itself (activated the credential for its AK). Until
    /// then its hardware fields and desired role are only what someone claimed with its
    /// (public) EK certificate: an approver should know.
    pub tpm_proven: bool,
    /// The TPM's clock information of its last accepted quote (DESIGN.md §3.4): `null`
    /// until one.
    pub tpm_clock: Option<TpmClock>,
    /// Whether the EK certificate chains to a TPM vendor's CA (DESIGN.md §3.1): what the
    /// approver should know before approving.
    pub ek_chain: EkChain,
}

/// TPMS_CLOCK_INFO and firmwareVersion, as the machine's last accepted quote signed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmClock {
    /// TPM Resets (reboots) since the TPM was made.
    pub reset_count: u32,
    /// TPM Restarts and Resumes since the last reset.
    pub restart_count: u32,
    /// Milliseconds the TPM has been powered.
    pub clock_ms: u64,
    /// False: the clock may have been reported higher before (a power loss).
    pub safe: bool,
    /// The TPM's firmware version, 16 hex digits.
    pub firmware_version: String,
}

/// The EK certificate chain check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EkChain {
    /// Not checked (`ITL_EK_CHAIN=off`, or registered before the check existed).
    Unchecked,
    /// Chains to this trust anchor.
    Verified { by: String },
    /// Does not chain to a trusted CA.
    Unverified { reason: String },
}

impl EkChain {
    /// One word for tables: `verified`, `unverified` or `unchecked`.
    pub fn word(&self) -> &'static str {
        match self {
            EkChain::Unchecked => "unchecked",
            EkChain::Verified { .. } => "verified",
            EkChain::Unverified { .. } => "unverified",
        }
    }
}

/// `GET /api/v1/machines/{id}`: the machine and its approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDetail {
    #[serde(flatten)]
    pub machine: Machine,
    pub approvals: Vec<Approval>,
}

/// `GET /api/v1/machines[?status=]`: a bare array, as the seed answers it (`jq '.[] |
/// select(...)'`); the count is in `X-Total-Count`, records left out as damaged in
/// `X-Damaged-Records`.
pub type MachineList = Vec<Machine>;

/// Whether a vote is part of a completed approval or still waiting for the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteState {
    Approved,
    Pending,
}

impl VoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteState::Approved => "approved",
            VoteState::Pending => "pending",
        }
    }
}

impl core::fmt::Display for VoteState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approval vote: approved ones first, then pending ones (dual control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub state: VoteState,
    /// The identity that voted (`SYSTEM` for break-glass).
    pub operator: String,
    pub role: Role,
    pub hostname: String,
    pub assigned_ip: String,
    pub at: Timestamp,
}

/// `GET /api/v1/machines/{id}/approvals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// The `status` of an [`ApprovePending`] answer: always `pending_second_approval` (the seed's
/// name, also when the quorum is larger than two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    PendingSecondApproval,
}

/// `POST /api/v1/machines/{id}/approve` answered 202: the vote is recorded, dual control
/// needs more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovePending {
    pub status: PendingStatus,
    pub approvals_received: u64,
    pub approvals_required: u64,
    /// When the window closes; the votes so far expire then.
    pub expires_at: Timestamp,
}

/// One audit entry (DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// Seconds since the epoch (a number, unlike the machine view's times).
    pub timestamp: u64,
    /// Who: an operator identity, `SYSTEM` for break-glass, `agent` for machines.
    pub operator_cn: String,
    pub action: String,
    pub machine_id: Option<String>,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub detail: String,
    pub source_ip: Option<String>,
    pub prev_hash: Hex<48>,
    pub entry_hash: Hex<48>,
}

/// `GET /api/v1/audit[?page=&per_page=&machine_id=]`: a bare array, newest first (page 1 is
/// the most recent); the count of matching entries is in `X-Total-Count`, the pages in `Link`.
pub type AuditPage = Vec<AuditEntry>;

/// `GET /api/v1/audit/verify`: the hash chain recomputed, and checked against the server's
/// signed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub valid: bool,
    /// Entries checked (up to and including the first bad one).
    pub entries: u64,
    /// Hex of the last good entry's hash (96 zeros for an empty log).
    pub root_hash: String,
    pub first_invalid_id: Option<u64>,
    pub error: Option<String>,
    /// Signed checkpoints found good (up to the first bad one).
    pub checkpoints: u64,
    /// The newest checkpoint (the one this verification made, if the head had moved), for
    /// the client to keep; `null` when there is none or the log is not valid.
    pub latest_checkpoint: Option<AuditCheckpoint>,
}

/// A signed statement by the server's response key that its audit chain's entry `seq` had
/// hash `entry_hash` at `timestamp` (DESIGN.md §6). Each element of
/// `GET /api/v1/audit/checkpoints`; kept by the server in its registry and, copied, by
/// operators where the server cannot rewrite them.
///
/// The signature (ECDSA P-384 / SHA-384, r ‖ s, base64 in JSON) covers
/// `attest_common::nonce`'s message for the `audit-checkpoint` domain, with the entry hash as
/// the nonce and `u64be(seq) ‖ u64be(timestamp)` as the context:
///
/// ```text
/// "itl-attestation/v1/audit-checkpoint" ‖ 0x00 ‖ u32be(48) ‖ entry_hash
///     ‖ u32be(16) ‖ u64be(seq) ‖ u64be(timestamp)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The sequence number of the entry vouched for (the chain head when signed).
    pub seq: u64,
    /// That entry's hash.
    pub entry_hash: Hex<48>,
    /// When it was signed, seconds since the epoch.
    pub timestamp: u64,
    pub signature: NonceSignature,
}

impl AuditCheckpoint {
    /// The signature's domain.
    pub const DOMAIN: Domain = Domain::AuditCheckpoint;

    /// The signed message's context: `u64be(seq) ‖ u64be(timestamp)` (the entry hash is
    /// its nonce).
    pub fn context(seq: u64, timestamp: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&seq.to_be_bytes());
        out[8..].copy_from_slice(&timestamp.to_be_bytes());
        out
    }

    /// Whether `key` signed exactly this seq, entry hash and timestamp.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), NonceError> {
        attest_common::nonce::verify(
            key,
            Self::DOMAIN,
            &self.entry_hash.0,
            &Self::context(self.seq, self.timestamp),
            &self.signature,
        )
    }
}

/// Every error answer: `{error: <code>, message: <human sentence>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// `GET /api/v1/whoami`: the identity the server sees in the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub identity: String,
    /// The break-glass token (`ITL_ADMIN_TOKEN`), acting as `SYSTEM`.
    pub break_glass: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// `GET /api/v1/machines/{id}/offline-bundle`: everything an air-gapped machine needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineBundle {
    pub machine_id: String,
    pub role: Role,
    pub hostname: String,
    pub iso_url: Option<String>,
    pub config_token: String,
    pub config_url: Option<String>,
    /// The full MachineConfig (with secrets and the enrollment files), YAML.
    pub machineconfig: String,
    pub enrollment_cert_pem: String,
    pub enrollment_cert_serial: String,
    pub enrollment_cert_not_after: Timestamp,
    pub enrollment_ca_pem: String,
    pub server_key_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine() -> Machine {
        Machine {
            machine_id: "m-1".into(),
            ek_fingerprint: "ab".repeat(48),
            ek_source: EkSource::Cert,
            status: Status::PendingApproval,
            wipe_pending: false,
            role: None,
            hostname: None,
            assigned_ip: None,
            desired_role: Some(Role::WorkerApp),
            cluster_id: "default".into(),
            hw_uuid: None,
            hw_mac: None,
            hw_serial: Some("S1".into()),
            hw_product: None,
            created_at: Timestamp(1_700_000_000),
            updated_at: Timestamp(1_700_000_060),
            last_attested_at: None,
            stale: false,
            pcr_baseline_pinned: false,
            tpm_proven: false,
            tpm_clock: None,
            ek_chain: EkChain::Unverified {
                reason: "no trusted issuer".into(),
            },
        }
    }

    #[test]
    fn the_machine_view_has_the_seed_field_names_and_json_types() {
        let v = serde_json::to_value(machine()).unwrap();
        assert_eq!(v["status"], "pending_approval");
        assert_eq!(v["ek_source"], "cert");
        assert_eq!(
            v["ek_chain"],
            json!({"status": "unverified", "reason": "no trusted issuer"})
        );
        assert_eq!(v["desired_role"], "worker-app");
        assert_eq!(
            v["role"],
            json!(null),
            "absent values are null, not missing"
        );
        assert_eq!(v["created_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["last_attested_at"], json!(null));
        assert_eq!(v.as_object().unwrap().len(), 22);
        assert_eq!(v["tpm_proven"], false);
        assert_eq!(v["tpm_clock"], json!(null));
    }

    #[test]
    fn the_detail_is_the_machine_plus_approvals_and_round_trips() {
        let detail = MachineDetail {
            machine: machine(),
            approvals: vec![Approval {
                state: VoteState::Pending,
                operator: "alice".into(),
                role: Role::Controlplane,
                hostname: "cp-1".into(),
                assigned_ip: "10.0.0.5/24".into(),
                at: Timestamp(1_700_000_100),
            }],
        };
        let v = serde_json::to_value(&detail).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 23);
        assert_eq!(v["approvals"][0]["state"], "pending");
        assert_eq!(v["approvals"][0]["at"], "2023-11-14T22:15:00Z");
        let back: MachineDetail = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, detail);
        // A detail is also a machine (extra fields are accepted).
        let m: Machine = serde_json::from_value(v).unwrap();
        assert_eq!(m, detail.machine);
    }

    #[test]
    fn the_pending_answer_names_its_status() {
        let p = ApprovePending {
            status: PendingStatus::PendingSecondApproval,
            approvals_received: 1,
            approvals_required: 2,
            expires_at: Timestamp(0),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"status": "pending_second_approval", "approvals_received": 1,
                   "approvals_required": 2, "expires_at": "1970-01-01T00:00:00Z"})
        );
        let wrong = json!({"status": "approved", "approvals_received": 1,
                           "approvals_required": 2, "expires_at": "1970-01-01T00:00:00Z"});
        assert!(serde_json::from_value::<ApprovePending>(wrong).is_err());
    }

    /// The checkpoint's signed message: every field is covered, the domain is its own, and
    /// the message is exactly the documented bytes (so OpenSSL can check it too).
    #[test]
    fn a_checkpoint_signature_covers_seq_hash_and_timestamp() {
        use p384::ecdsa::SigningKey;
        let key = SigningKey::from_slice(&[7u8; 48]).unwrap();
        let other = SigningKey::from_slice(&[9u8; 48]).unwrap();
        let (seq, hash, timestamp) = (20u64, [0xab; 48], 1_700_000_000u64);
        let context = AuditCheckpoint::context(seq, timestamp);
        let signed = AuditCheckpoint {
            seq,
            entry_hash: Hex(hash),
            timestamp,
            signature: attest_common::nonce::sign(&key, Domain::AuditCheckpoint, &hash, &context),
        };
        let vk = key.verifying_key();
        assert_eq!(signed.verify(vk), Ok(()));
        let changed = [
            AuditCheckpoint {
                seq: 21,
                ..signed.clone()
            },
            AuditCheckpoint {
                entry_hash: Hex([0xac; 48]),
                ..signed.clone()
            },
            AuditCheckpoint {
                timestamp: timestamp + 1,
                ..signed.clone()
            },
        ];
        for c in &changed {
            assert_eq!(c.verify(vk), Err(NonceError::BadSignature), "{c:?}");
        }
        assert_eq!(
            signed.verify(other.verifying_key()),
            Err(NonceError::BadSignature)
        );
        // The same bytes signed for another purpose do not make a checkpoint.
        let action = AuditCheckpoint {
            signature: attest_common::nonce::sign(&key, Domain::Action, &hash, &context),
            ..signed.clone()
        };
        assert_eq!(action.verify(vk), Err(NonceError::BadSignature));

        let mut message = Vec::new();
        attest_common::nonce::message_parts(Domain::AuditCheckpoint, &hash, &context, |p| {
            message.extend_from_slice(p)
        });
        let mut want = b"itl-attestation/v1/audit-checkpoint\0".to_vec();
        want.extend_from_slice(&48u32.to_be_bytes());
        want.extend_from_slice(&hash);
        want.extend_from_slice(&16u32.to_be_bytes());
        want.extend_from_slice(&seq.to_be_bytes());
        want.extend_from_slice(&timestamp.to_be_bytes());
        assert_eq!(message, want);

        // JSON: hex hash, base64 signature, numbers; and back.
        let v = serde_json::to_value(&signed).unwrap();
        assert_eq!(v["entry_hash"], "ab".repeat(48));
        assert_eq!(v["seq"], 20);
        assert_eq!(v["signature"].as_str().unwrap().len(), 128);
        assert_eq!(
            serde_json::from_value::<AuditCheckpoint>(v).unwrap(),
            signed
        );
    }

    #[test]
    fn audit_hashes_are_hex_and_times_are_seconds() {
        let e = AuditEntry {
            seq: 1,
            timestamp: 1_700_000_000,
            operator_cn: "agent".into(),
            action: "self-register".into(),
            machine_id: Some("m-1".into()),
            prev_state: None,
            new_state: Some("pending_approval".into()),
            detail: String::new(),
            source_ip: None,
            prev_hash: Hex([0; 48]),
            entry_hash: Hex([0xab; 48]),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["timestamp"], 1_700_000_000u64);
        assert_eq!(v["prev_hash"], "0".repeat(96));
        assert_eq!(v["entry_hash"], "ab".repeat(48));
        assert_eq!(serde_json::from_value::<AuditEntry>(v).unwrap(), e);
    }
}
