//! The operator API's answers, made from what the registry and the service hold.
//!
//! The answer types are `attest-api`'s (shared with the operator CLI, checked against the
//! OpenAPI document); this module only fills them, so the HTTP layer picks a view and
//! serialises it, and nothing here knows about HTTP.

use attest_api::{
    Approval, ApprovalList, ApprovePending, AuditPage, AuditVerification, Health, Hex, Machine,
    MachineDetail, PendingStatus, Timestamp, VoteState, Whoami,
};

use crate::audit::{AuditEntry, Verification};
use crate::record::{EkChainStatus, MachineRecord};
use crate::service::Approvals;
use crate::store::Vote;

/// The machine as the API shows it. `stale`: attested but silent for longer than
/// interval × ITL_LIVENESS_FACTOR (the service decides).
pub fn machine(m: &MachineRecord, stale: bool) -> Machine {
    Machine {
        machine_id: m.id.clone(),
        ek_fingerprint: m.ek_fingerprint.clone(),
        ek_source: m.ek_source,
        status: m.state.status,
        wipe_pending: m.state.wipe_pending,
        role: m.role,
        hostname: m.hostname.clone(),
        assigned_ip: m.assigned_ip.clone(),
        desired_role: m.desired_role,
        cluster_id: m.cluster_id.clone(),
        hw_uuid: m.hw_uuid.clone(),
        hw_mac: m.hw_mac.clone(),
        hw_serial: m.hw_serial.clone(),
        hw_product: m.hw_product.clone(),
        created_at: Timestamp(m.created_at),
        updated_at: Timestamp(m.updated_at),
        last_attested_at: m.last_attested_at.map(Timestamp),
        stale,
        pcr_baseline_pinned: m.pcr_baseline.is_some(),
        tpm_proven: m.ak_activated,
        tpm_clock: m.tpm_clock.map(|c| attest_api::TpmClock {
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            clock_ms: c.clock,
            safe: c.safe,
            firmware_version: format!("{:016x}", c.firmware_version),
        }),
        ek_chain: match &m.ek_chain {
            EkChainStatus::Unchecked => attest_api::EkChain::Unchecked,
            EkChainStatus::Verified { by } => attest_api::EkChain::Verified { by: by.clone() },
            EkChainStatus::Unverified { reason } => attest_api::EkChain::Unverified {
                reason: reason.clone(),
            },
        },
    }
}

/// The detail: the machine and its approvals.
pub fn detail(machine: Machine, approvals: Vec<Approval>) -> MachineDetail {
    MachineDetail { machine, approvals }
}

fn vote(state: VoteState, v: &Vote) -> Approval {
    Approval {
        state,
        operator: v.identity.clone(),
        role: v.role,
        hostname: v.hostname.clone(),
        assigned_ip: v.assigned_ip.clone(),
        at: Timestamp(v.at),
    }
}

/// Approved votes first, then pending ones, each saying which it is.
pub fn approvals(a: &Approvals) -> Vec<Approval> {
    let approved = a.approved.iter().map(|v| vote(VoteState::Approved, v));
    let pending = a.pending.iter().map(|v| vote(VoteState::Pending, v));
    approved.chain(pending).collect()
}

/// `GET /machines/{id}/approvals`.
pub fn approval_list(approvals: Vec<Approval>) -> ApprovalList {
    ApprovalList { approvals }
}

/// The 202 answer to an approval vote that did not complete the quorum.
pub fn approve_pending(
    approvals_received: usize,
    approvals_required: usize,
    expires_at: u64,
) -> ApprovePending {
    ApprovePending {
        status: PendingStatus::PendingSecondApproval,
        approvals_received: approvals_received as u64,
        approvals_required: approvals_required as u64,
        expires_at: Timestamp(expires_at),
    }
}

pub fn audit_entry(e: AuditEntry) -> attest_api::AuditEntry {
    attest_api::AuditEntry {
        seq: e.seq,
        timestamp: e.timestamp,
        operator_cn: e.operator_cn,
        action: e.action,
        machine_id: e.machine_id,
        prev_state: e.prev_state,
        new_state: e.new_state,
        detail: e.detail,
        source_ip: e.source_ip,
        prev_hash: Hex(e.prev_hash.0),
        entry_hash: Hex(e.entry_hash.0),
    }
}

/// One page of the audit log, newest first.
pub fn audit_page(entries: Vec<AuditEntry>) -> AuditPage {
    entries.into_iter().map(audit_entry).collect()
}

pub fn verification(v: Verification) -> AuditVerification {
    AuditVerification {
        valid: v.valid,
        entries: v.entries,
        root_hash: v.root_hash,
        first_invalid_id: v.first_invalid_id,
        error: v.error,
        checkpoints: v.checkpoints,
        latest_checkpoint: v.latest_checkpoint,
    }
}

/// The identity the server sees, and whether it is the break-glass token's (an OIDC user
/// cannot take the name `SYSTEM`: `oidc::Oidc::authenticate`).
pub fn whoami(identity: &str, break_glass: bool) -> Whoami {
    Whoami {
        identity: identity.to_owned(),
        break_glass,
    }
}

pub fn health() -> Health {
    Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_common::lifecycle::{State, Status};
    use attest_common::wire::Role;
    use serde_json::json;

    /// The server's error bodies come from `attest_common::wire::ErrorBody` (bounded, shared
    /// with the firmware link); the API's view of them must read and write the same JSON.
    #[test]
    fn the_error_view_is_the_wire_error_body() {
        let wire = attest_common::wire::ErrorBody::new("not_found", "no machine with id 'x'");
        let wire_json = serde_json::to_value(&wire).unwrap();
        let view: attest_api::ErrorBody = serde_json::from_value(wire_json.clone()).unwrap();
        assert_eq!(view.error, "not_found");
        assert_eq!(serde_json::to_value(&view).unwrap(), wire_json);
    }

    #[test]
    fn a_record_becomes_the_machine_view() {
        let mut r = MachineRecord::new(
            "m-1".into(),
            "ab".repeat(48),
            attest_common::EkSource::Pub,
            State::new(Status::Attested),
            1_700_000_000,
        );
        r.role = Some(Role::WorkerInfra);
        r.last_attested_at = Some(1_700_000_500);
        let v = serde_json::to_value(machine(&r, true)).unwrap();
        assert_eq!(v["machine_id"], "m-1");
        assert_eq!(v["ek_source"], "pub");
        assert_eq!(v["status"], "attested");
        assert_eq!(v["role"], "worker-infra");
        assert_eq!(v["last_attested_at"], "2023-11-14T22:21:40Z");
        assert_eq!(v["stale"], true);
        assert_eq!(v["pcr_baseline_pinned"], false);
        assert_eq!(v["hostname"], json!(null));

        let votes = Approvals {
            approved: vec![Vote {
                identity: "alice".into(),
                principal: "oidc:https://sso.example#a1".into(),
                role: Role::Controlplane,
                hostname: "cp-1".into(),
                assigned_ip: "10.0.0.5/24".into(),
                at: 10,
            }],
            pending: vec![Vote {
                identity: "bob".into(),
                principal: "oidc:https://sso.example#b2".into(),
                role: Role::Controlplane,
                hostname: "cp-2".into(),
                assigned_ip: "10.0.0.6/24".into(),
                at: 20,
            }],
        };
        let list = serde_json::to_value(approval_list(approvals(&votes))).unwrap();
        assert_eq!(list["approvals"][0]["state"], "approved");
        assert_eq!(list["approvals"][1]["operator"], "bob");
        assert_eq!(list["approvals"][1]["state"], "pending");
    }
}
