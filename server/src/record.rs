//! The stored machine record, versioned.
//!
//! Every record starts with a version byte, then the postcard encoding of that version's
//! struct. Reading an older version upgrades it in code (`decode`); writing always writes the
//! current version. A record of an unknown (newer) version is an error, never a guess.

use attest_common::fingerprint::EkSource;
use attest_common::lifecycle::State;
use attest_common::wire::Role;
use serde::{Deserialize, Serialize};

/// The version `encode` writes.
pub const CURRENT_VERSION: u8 = 4;

/// A machine as the registry knows it (version 3: the config token kept only as its hash,
/// config delivery and the EK chain verdict recorded; version 4: a `pub` EK's public area).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    /// Lower-case hex SHA-384.
    pub ek_fingerprint: String,
    pub ek_source: EkSource,
    pub ek_cert_der: Option<Vec<u8>>,
    pub ek_public_der: Option<Vec<u8>>,
    /// TPM2B_PUBLIC of the AK, when the agent sent one.
    pub ak_public: Option<Vec<u8>>,
    pub hw_uuid: Option<String>,
    pub hw_mac: Option<String>,
    pub hw_serial: Option<String>,
    pub hw_product: Option<String>,
    pub desired_role: Option<Role>,
    pub cluster_id: String,
    pub state: State,
    /// Set by approval.
    pub role: Option<Role>,
    pub hostname: Option<String>,
    pub assigned_ip: Option<String>,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
    pub last_attested_at: Option<u64>,
    /// SHA-256 (hex) of the machine's long-lived config token (`/register`, offline
    /// bundles), which yields only its secret-free config; the token itself is never stored.
    pub config_token_hash: Option<String>,
    /// Whether the config token has been used once ("Config token consumed").
    pub config_fetched: bool,
    /// When a verified attestation of the machine reported its current full config applied
    /// (`AttestRequest::config_applied`); `None` until then and after an approval changes it:
    /// until then each attestation offers it again (`apply-config`).
    pub config_delivered_at: Option<u64>,
    /// A version-2 record's stored activation secret (never written since: the secret is
    /// derived from the registry's key, `ChallengeKey::activation_secret`). An agent that
    /// activated a credential of the old kind still proves itself with it.
    pub activation_secret: Option<Vec<u8>>,
    /// The AK has been proven to live next to the EK (credential activated).
    pub ak_activated: bool,
    /// PCR values pinned by the first verified attestation after approval.
    pub pcr_baseline: Option<Vec<attest_common::wire::PcrValue>>,
    /// What the EK certificate chain check said at registration.
    pub ek_chain: EkChainStatus,
    /// Version 4: the TPM2B_PUBLIC of a `pub` EK, exactly a TCG EK template's
    /// (`attest_common::tpm::ek_template`, checked at registration); every credential for
    /// the machine is made from it. `None` for a `cert` EK, and for a `pub` EK registered
    /// before version 4 (by its bare SubjectPublicKeyInfo, `ek_public_der`).
    pub ek_public_area: Option<Vec<u8>>,
}

/// The EK certificate chain check's verdict, kept with the machine (DESIGN.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EkChainStatus {
    /// Not checked (`ITL_EK_CHAIN=off`, or a record from before the check).
    #[default]
    Unchecked,
    /// Chains to this trust anchor.
    Verified { by: String },
    /// Does not chain to any trusted CA, for this reason.
    Unverified { reason: String },
}

/// Version 3 (before `ek_public_area`): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MachineRecordV3 {
    id: String,
    ek_fingerprint: String,
    ek_source: EkSource,
    ek_cert_der: Option<Vec<u8>>,
    ek_public_der: Option<Vec<u8>>,
    ak_public: Option<Vec<u8>>,
    hw_uuid: Option<String>,
    hw_mac: Option<String>,
    hw_serial: Option<String>,
    hw_product: Option<String>,
    desired_role: Option<Role>,
    cluster_id: String,
    state: State,
    role: Option<Role>,
    hostname: Option<String>,
    assigned_ip: Option<String>,
    created_at: u64,
    updated_at: u64,
    last_attested_at: Option<u64>,
    config_token_hash: Option<String>,
    config_fetched: bool,
    config_delivered_at: Option<u64>,
    activation_secret: Option<Vec<u8>>,
    ak_activated: bool,
    pcr_baseline: Option<Vec<attest_common::wire::PcrValue>>,
    ek_chain: EkChainStatus,
}

impl From<MachineRecordV3> for MachineRecord {
    fn from(v3: MachineRecordV3) -> MachineRecord {
        MachineRecord {
            id: v3.id,
            ek_fingerprint: v3.ek_fingerprint,
            ek_source: v3.ek_source,
            ek_cert_der: v3.ek_cert_der,
            ek_public_der: v3.ek_public_der,
            ak_public: v3.ak_public,
            hw_uuid: v3.hw_uuid,
            hw_mac: v3.hw_mac,
            hw_serial: v3.hw_serial,
            hw_product: v3.hw_product,
            desired_role: v3.desired_role,
            cluster_id: v3.cluster_id,
            state: v3.state,
            role: v3.role,
            hostname: v3.hostname,
            assigned_ip: v3.assigned_ip,
            created_at: v3.created_at,
            updated_at: v3.updated_at,
            last_attested_at: v3.last_attested_at,
            config_token_hash: v3.config_token_hash,
            config_fetched: v3.config_fetched,
            config_delivered_at: v3.config_delivered_at,
            activation_secret: v3.activation_secret,
            ak_activated: v3.ak_activated,
            pcr_baseline: v3.pcr_baseline,
            ek_chain: v3.ek_chain,
            // A `pub` EK of version 3 was registered by its bare SubjectPublicKeyInfo.
            ek_public_area: None,
        }
    }
}

/// Version 2 (the config token in clear): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MachineRecordV2 {
    id: String,
    ek_fingerprint: String,
    ek_source: EkSource,
    ek_cert_der: Option<Vec<u8>>,
    ek_public_der: Option<Vec<u8>>,
    ak_public: Option<Vec<u8>>,
    hw_uuid: Option<String>,
    hw_mac: Option<String>,
    hw_serial: Option<String>,
    hw_product: Option<String>,
    desired_role: Option<Role>,
    cluster_id: String,
    state: State,
    role: Option<Role>,
    hostname: Option<String>,
    assigned_ip: Option<String>,
    created_at: u64,
    updated_at: u64,
    last_attested_at: Option<u64>,
    config_token: Option<String>,
    config_fetched: bool,
    activation_secret: Option<Vec<u8>>,
    ak_activated: bool,
    pcr_baseline: Option<Vec<attest_common::wire::PcrValue>>,
}

impl From<MachineRecordV2> for MachineRecord {
    fn from(v2: MachineRecordV2) -> MachineRecord {
        MachineRecord {
            id: v2.id,
            ek_fingerprint: v2.ek_fingerprint,
            ek_source: v2.ek_source,
            ek_cert_der: v2.ek_cert_der,
            ek_public_der: v2.ek_public_der,
            ak_public: v2.ak_public,
            hw_uuid: v2.hw_uuid,
            hw_mac: v2.hw_mac,
            hw_serial: v2.hw_serial,
            hw_product: v2.hw_product,
            desired_role: v2.desired_role,
            cluster_id: v2.cluster_id,
            state: v2.state,
            role: v2.role,
            hostname: v2.hostname,
            assigned_ip: v2.assigned_ip,
            created_at: v2.created_at,
            updated_at: v2.updated_at,
            last_attested_at: v2.last_attested_at,
            config_token_hash: v2.config_token.as_deref().map(crate::store::token_key),
            config_fetched: v2.config_fetched,
            // An attested machine of version 2 got its config through the old token.
            config_delivered_at: v2
                .last_attested_at
                .filter(|_| v2.state.status != attest_common::lifecycle::Status::PendingApproval),
            activation_secret: v2.activation_secret,
            ak_activated: v2.ak_activated,
            pcr_baseline: v2.pcr_baseline,
            ek_chain: EkChainStatus::Unchecked,
            ek_public_area: None,
        }
    }
}

/// Version 1 (before config tokens): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MachineRecordV1 {
    id: String,
    ek_fingerprint: String,
    ek_source: EkSource,
    ek_cert_der: Option<Vec<u8>>,
    ek_public_der: Option<Vec<u8>>,
    ak_public: Option<Vec<u8>>,
    hw_uuid: Option<String>,
    hw_mac: Option<String>,
    hw_serial: Option<String>,
    hw_product: Option<String>,
    desired_role: Option<Role>,
    cluster_id: String,
    state: State,
    role: Option<Role>,
    hostname: Option<String>,
    assigned_ip: Option<String>,
    created_at: u64,
    updated_at: u64,
    last_attested_at: Option<u64>,
}

impl From<MachineRecordV1> for MachineRecord {
    fn from(v1: MachineRecordV1) -> MachineRecord {
        MachineRecordV2 {
            id: v1.id,
            ek_fingerprint: v1.ek_fingerprint,
            ek_source: v1.ek_source,
            ek_cert_der: v1.ek_cert_der,
            ek_public_der: v1.ek_public_der,
            ak_public: v1.ak_public,
            hw_uuid: v1.hw_uuid,
            hw_mac: v1.hw_mac,
            hw_serial: v1.hw_serial,
            hw_product: v1.hw_product,
            desired_role: v1.desired_role,
            cluster_id: v1.cluster_id,
            state: v1.state,
            role: v1.role,
            hostname: v1.hostname,
            assigned_ip: v1.assigned_ip,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            last_attested_at: v1.last_attested_at,
            config_token: None,
            config_fetched: false,
            activation_secret: None,
            ak_activated: false,
            pcr_baseline: None,
        }
        .into()
    }
}

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    Empty,
    UnknownVersion(u8),
    Corrupt(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => f.write_str("empty record"),
            RecordError::UnknownVersion(v) => write!(
                f,
                "record version {v} is newer than this server understands ({CURRENT_VERSION}); \
                 upgrade the server"
            ),
            RecordError::Corrupt(e) => write!(f, "corrupt record: {e}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl MachineRecord {
    /// A record for an EK seen for the first time: identity only, nothing approved or proven.
    pub fn new(
        id: String,
        ek_fingerprint: String,
        ek_source: EkSource,
        state: State,
        now: u64,
    ) -> Self {
        MachineRecord {
            id,
            ek_fingerprint,
            ek_source,
            ek_cert_der: None,
            ek_public_der: None,
            ak_public: None,
            hw_uuid: None,
            hw_mac: None,
            hw_serial: None,
            hw_product: None,
            desired_role: None,
            cluster_id: "default".into(),
            state,
            role: None,
            hostname: None,
            assigned_ip: None,
            created_at: now,
            updated_at: now,
            last_attested_at: None,
            config_token_hash: None,
            config_fetched: false,
            config_delivered_at: None,
            activation_secret: None,
            ak_activated: false,
            pcr_baseline: None,
            ek_chain: EkChainStatus::Unchecked,
            ek_public_area: None,
        }
    }

    /// Whether an operator has approved it (role, hostname and address assigned).
    pub fn approved(&self) -> bool {
        self.role.is_some() && self.hostname.is_some() && self.assigned_ip.is_some()
    }

    /// The canonical id of the machine's EK key (`EkKey::canonical_id`, hex), which the
    /// registry indexes so that one EK key is one machine whatever encoding brought it;
    /// `None` for a key no credential can be made for (then nothing could prove it).
    pub fn ek_key_id(&self) -> Option<String> {
        let spki = match self.ek_source {
            EkSource::Cert => {
                let cert = self.ek_cert_der.as_deref()?;
                attest_common::der::parse_certificate(cert)
                    .ok()?
                    .spki
                    .to_vec()
            }
            EkSource::Pub => self.ek_public_der.clone()?,
        };
        let key = attest_common::tpm::credential::EkKey::from_spki(&spki).ok()?;
        Some(crate::audit::hex(&key.canonical_id()))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CURRENT_VERSION];
        // Every field is serialisable; postcard into a Vec cannot fail for them.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MachineRecord, RecordError> {
        match bytes.split_first() {
            None => Err(RecordError::Empty),
            Some((&1, body)) => postcard::from_bytes::<MachineRecordV1>(body)
                .map(MachineRecord::from)
                .map_err(|e| RecordError::Corrupt(e.to_string())),
            Some((&2, body)) => postcard::from_bytes::<MachineRecordV2>(body)
                .map(MachineRecord::from)
                .map_err(|e| RecordError::Corrupt(e.to_string())),
            Some((&3, body)) => postcard::from_bytes::<MachineRecordV3>(body)
                .map(MachineRecord::from)
                .map_err(|e| RecordError::Corrupt(e.to_string())),
            Some((&4, body)) => {
                postcard::from_bytes(body).map_err(|e| RecordError::Corrupt(e.to_string()))
            }
            Some((&v, _)) => Err(RecordError::UnknownVersion(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_common::lifecycle::Status;

    fn sample() -> MachineRecord {
        MachineRecord {
            id: "m-1".into(),
            ek_fingerprint: "ab".repeat(48),
            ek_source: EkSource::Cert,
            ek_cert_der: Some(vec![0x30, 0x00]),
            ek_public_der: None,
            ak_public: None,
            hw_uuid: Some("uuid".into()),
            hw_mac: None,
            hw_serial: None,
            hw_product: None,
            desired_role: Some(Role::WorkerApp),
            cluster_id: "default".into(),
            state: State::new(Status::PendingApproval),
            role: None,
            hostname: None,
            assigned_ip: None,
            created_at: 1,
            updated_at: 2,
            last_attested_at: None,
            config_token_hash: None,
            config_fetched: false,
            config_delivered_at: None,
            activation_secret: None,
            ak_activated: false,
            pcr_baseline: None,
            ek_chain: EkChainStatus::Unchecked,
            ek_public_area: None,
        }
    }

    #[test]
    fn round_trip_and_versions() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], CURRENT_VERSION);
        assert_eq!(MachineRecord::decode(&bytes), Ok(r));
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert_eq!(
            MachineRecord::decode(&newer),
            Err(RecordError::UnknownVersion(9))
        );
        assert_eq!(MachineRecord::decode(&[]), Err(RecordError::Empty));
        assert!(matches!(
            MachineRecord::decode(&bytes[..5]),
            Err(RecordError::Corrupt(_))
        ));
    }

    /// A version-1 record as the previous release wrote it, kept as bytes: it is read
    /// through the upgrade code (no config token yet).
    #[test]
    fn reads_a_stored_version_1_record() {
        let stored = include_bytes!("../tests/fixtures/machine-record-v1.bin");
        assert_eq!(stored[0], 1);
        assert_eq!(MachineRecord::decode(stored), Ok(sample()));
    }

    /// A version-2 record (the config token in clear, a stored activation secret), as the
    /// previous release wrote it: the token becomes its hash (the index already held that
    /// hash, so the long-lived URL keeps working), the old secret is kept for the agent
    /// that holds it, and the attested machine counts as having its config.
    #[test]
    fn reads_a_stored_version_2_record() {
        let stored = include_bytes!("../tests/fixtures/machine-record-v2.bin");
        assert_eq!(stored[0], 2);
        let r = MachineRecord::decode(stored).unwrap();
        assert_eq!(r.id, "m-2");
        assert_eq!(
            r.config_token_hash,
            Some(crate::store::token_key("a-long-lived-config-token"))
        );
        assert_eq!(r.activation_secret, Some(vec![7; 32]));
        assert_eq!(r.config_delivered_at, Some(300));
        assert_eq!(r.ek_chain, EkChainStatus::Unchecked);
        assert_eq!(
            (r.state.status, r.hostname.as_deref(), r.config_fetched),
            (Status::Attested, Some("cp-2"), true)
        );
        let written = r.encode();
        assert_eq!(written[0], CURRENT_VERSION);
        assert_eq!(MachineRecord::decode(&written), Ok(r));
    }

    /// A version-3 record of a `pub` EK (registered by its bare SubjectPublicKeyInfo), as
    /// the previous release wrote it: read with everything kept and no public area, so its
    /// credentials are still made from the SPKI and its EK key stays indexed.
    #[test]
    fn reads_a_stored_version_3_record() {
        let stored = include_bytes!("../tests/fixtures/machine-record-v3.bin");
        assert_eq!(stored[0], 3);
        let r = MachineRecord::decode(stored).unwrap();
        assert_eq!((r.id.as_str(), r.ek_source), ("m-3", EkSource::Pub));
        let spki = r.ek_public_der.clone().unwrap();
        assert_eq!(
            r.ek_fingerprint,
            attest_common::Fingerprint::of_der(&spki).to_string()
        );
        assert_eq!(r.ek_public_area, None);
        assert_eq!(
            r.config_token_hash,
            Some(crate::store::token_key("a-v3-token"))
        );
        assert_eq!(
            (r.state.status, r.hostname.as_deref(), r.ak_activated),
            (Status::Attested, Some("w-3"), true)
        );
        assert_eq!(
            r.ek_chain,
            EkChainStatus::Unverified {
                reason: "no EK certificate (EK public key only)".into()
            }
        );
        let key = attest_common::tpm::credential::EkKey::from_spki(&spki).unwrap();
        assert_eq!(r.ek_key_id(), Some(crate::audit::hex(&key.canonical_id())));
        let written = r.encode();
        assert_eq!(written[0], CURRENT_VERSION);
        assert_eq!(MachineRecord::decode(&written), Ok(r));
    }
}
