//! Who acts, and the one way a change is recorded: its audit entry, linked in the same
//! transaction, and its log line, emitted only once that transaction has committed.

use attest_common::lifecycle::Status;

use crate::audit::NewEntry;
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{RegistryTx, StoreError};

/// Who acts, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Operator identity for people and the audit log; `SYSTEM` for the break-glass token
    /// and the server itself; `agent` for machines.
    pub identity: String,
    /// Who it is for dual control: `oidc:<issuer>#<sub>` for OIDC operators, `break-glass`,
    /// `system`, `agent`.
    pub principal: String,
    pub source_ip: Option<String>,
}

/// The principal of the break-glass token.
pub const BREAK_GLASS: &str = "break-glass";

impl Actor {
    pub fn agent(source_ip: Option<String>) -> Actor {
        Actor {
            identity: "agent".into(),
            principal: "agent".into(),
            source_ip,
        }
    }

    /// The server itself (the liveness sweep).
    pub fn system() -> Actor {
        Actor {
            identity: "SYSTEM".into(),
            principal: "system".into(),
            source_ip: None,
        }
    }

    /// The break-glass token (`ITL_ADMIN_TOKEN`): `SYSTEM` in the audit log.
    pub fn break_glass(source_ip: Option<String>) -> Actor {
        Actor {
            identity: "SYSTEM".into(),
            principal: BREAK_GLASS.into(),
            source_ip,
        }
    }

    /// An operator authenticated by OIDC: shown as `identity`, counted as `principal`.
    pub fn operator(identity: &str, principal: &str, source_ip: Option<String>) -> Actor {
        Actor {
            identity: identity.into(),
            principal: format!("oidc:{principal}"),
            source_ip,
        }
    }

    pub fn is_break_glass(&self) -> bool {
        self.principal == BREAK_GLASS
    }
}

/// One audited change.
pub struct Change {
    level: crate::log::Level,
    action: AuditAction,
    machine_id: Option<String>,
    from: Option<Status>,
    to: Option<Status>,
    detail: String,
}

impl Change {
    /// A change to no machine in particular (a backup).
    pub fn global(action: AuditAction, detail: String) -> Change {
        Change {
            level: crate::log::Level::Info,
            action,
            machine_id: None,
            from: None,
            to: None,
            detail,
        }
    }

    /// A change to `record`, which was in state `from` (`None`: it is new) and is now in
    /// its current state.
    pub fn of(
        action: AuditAction,
        record: &MachineRecord,
        from: Option<Status>,
        detail: String,
    ) -> Change {
        Change {
            level: crate::log::Level::Info,
            action,
            machine_id: Some(record.id.clone()),
            from,
            to: Some(record.state.status),
            detail,
        }
    }

    /// Something that happened to `record` without changing its state (a refusal, a vote).
    pub fn about(action: AuditAction, record: &MachineRecord, detail: String) -> Change {
        Change::of(action, record, Some(record.state.status), detail)
    }

    /// About `record` if there is one, else about no machine (a refusal for an unknown EK).
    pub fn about_any(
        action: AuditAction,
        record: Option<&MachineRecord>,
        detail: String,
    ) -> Change {
        match record {
            Some(r) => Change::about(action, r, detail),
            None => Change::global(action, detail),
        }
    }

    /// Logged as a warning (the seed's level for contacts of locked and revoked machines).
    pub fn warning(mut self) -> Change {
        self.level = crate::log::Level::Warning;
        self
    }

    /// The record is gone after this change.
    pub fn deleted(mut self) -> Change {
        self.to = None;
        self
    }

    /// Appends the entry in `tx` and queues the log line (with the operator, when one acts).
    /// An OIDC operator's entry also names the principal (issuer and subject): display
    /// names are chosen by users and may repeat, the principal is who it was.
    pub fn record(self, tx: &impl RegistryTx, actor: &Actor, now: u64) -> Result<(), StoreError> {
        let detail = match actor.principal.starts_with("oidc:") {
            true => format!("{} [principal {}]", self.detail, actor.principal),
            false => self.detail,
        };
        let line = match actor.identity.as_str() {
            "agent" => detail.clone(),
            who => format!("{detail} by={}", crate::log::escape(who)),
        };
        tx.audit(
            NewEntry {
                operator_cn: actor.identity.clone(),
                action: self.action.as_str().into(),
                machine_id: self.machine_id,
                prev_state: self.from.map(|s| s.to_string()),
                new_state: self.to.map(|s| s.to_string()),
                detail,
                source_ip: actor.source_ip.clone(),
            },
            now,
        )?;
        tx.log_at(self.level, line);
        Ok(())
    }
}
