//! Earlier versions of the machine record, as earlier releases wrote them: read and
//! upgraded to the current one in code (`MachineRecord::decode`), never written. Each keeps
//! its exact field list (postcard is positional); a stored fixture of each is read in the
//! tests of `record`.

use attest_common::fingerprint::EkSource;
use attest_common::lifecycle::State;
use attest_common::wire::Role;
use serde::{Deserialize, Serialize};

use super::{EkChainStatus, MachineRecord};

/// Version 3 (before the TPM clock): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MachineRecordV3 {
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
            // The next accepted quote is the reference.
            tpm_clock: None,
            // A `pub` EK of version 3 was registered by its bare SubjectPublicKeyInfo.
            ek_public_area: None,
        }
    }
}

/// Version 2 (the config token in clear): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MachineRecordV2 {
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
            tpm_clock: None,
            ek_public_area: None,
        }
    }
}

/// Version 1 (before config tokens): read and upgraded, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MachineRecordV1 {
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
