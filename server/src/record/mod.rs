//! The stored machine record, versioned.
//!
//! Every record starts with a version byte, then the postcard encoding of that version's
//! struct. Reading an older version upgrades it in code (`decode`); writing always writes the
//! current version. A record of an unknown (newer) version is an error, never a guess.

use attest_common::fingerprint::EkSource;
use attest_common::lifecycle::State;
use attest_common::wire::Role;
use serde::{Deserialize, Serialize};

mod legacy;

use legacy::{MachineRecordV1, MachineRecordV2, MachineRecordV3};

/// The version `encode` writes.
pub const CURRENT_VERSION: u8 = 4;

/// A machine as the registry knows it (version 4: the TPM's clock information of its last
/// accepted quote and a `pub` EK's public area; version 3: the config token kept only as its
/// hash, config delivery and the EK chain verdict recorded).
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
    /// TPMS_CLOCK_INFO and firmwareVersion of the last accepted quote (`service::tpm_clock`).
    pub tpm_clock: Option<TpmClock>,
    /// The TPM2B_PUBLIC of a `pub` EK, exactly a TCG EK template's
    /// (`attest_common::tpm::ek_template`, checked at registration); every credential for
    /// the machine is made from it. `None` for a `cert` EK, and for a `pub` EK registered
    /// before version 4 (by its bare SubjectPublicKeyInfo, `ek_public_der`).
    pub ek_public_area: Option<Vec<u8>>,
}

/// The TPM's clock information, as its last accepted quote signed it (DESIGN.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmClock {
    /// Milliseconds the TPM has been powered (its `clock`).
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    /// False: the clock may have been reported higher before (a power loss before it was
    /// saved).
    pub safe: bool,
    pub firmware_version: u64,
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
            tpm_clock: None,
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
            tpm_clock: None,
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
        let stored = include_bytes!("../../tests/fixtures/machine-record-v1.bin");
        assert_eq!(stored[0], 1);
        assert_eq!(MachineRecord::decode(stored), Ok(sample()));
    }

    /// A version-2 record (the config token in clear, a stored activation secret), as the
    /// previous release wrote it: the token becomes its hash (the index already held that
    /// hash, so the long-lived URL keeps working), the old secret is kept for the agent
    /// that holds it, and the attested machine counts as having its config.
    #[test]
    fn reads_a_stored_version_2_record() {
        let stored = include_bytes!("../../tests/fixtures/machine-record-v2.bin");
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

    /// A version-3 record as the previous release wrote it (a `pub` EK by its bare
    /// SubjectPublicKeyInfo): read with no public area and no TPM clock (its next accepted
    /// quote is the reference), everything else kept.
    #[test]
    fn reads_a_stored_version_3_record() {
        let stored = include_bytes!("../../tests/fixtures/machine-record-v3.bin");
        assert_eq!(stored[0], 3);
        let r = MachineRecord::decode(stored).unwrap();
        assert_eq!((r.id.as_str(), r.ek_source), ("m-3", EkSource::Pub));
        let spki = r.ek_public_der.clone().unwrap();
        assert_eq!(
            r.ek_fingerprint,
            attest_common::Fingerprint::of_der(&spki).to_string()
        );
        assert_eq!((r.ek_public_area.as_ref(), r.tpm_clock), (None, None));
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
