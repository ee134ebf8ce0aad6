//! Approval (DESIGN.md §2, §5): an operator gives a machine its role, hostname and address.
//! Under dual control for the role it is a vote, and the quorum-th distinct identity naming
//! the same values within the window approves.

use std::net::IpAddr;

use attest_common::lifecycle::{Event, transition};
use attest_common::wire::Role;

use super::operate::apply_event;
use super::{Actor, Change, Service, ServiceError, not_found};
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::store::{LEGACY_PRINCIPAL, Registry, RegistryTx, Vote};

/// An operator's approval: what the machine becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub role: Role,
    pub hostname: String,
    /// Static address with prefix, e.g. `10.0.0.5/24`.
    pub assigned_ip: String,
}

/// Dual control: approvals for these roles need `quorum` votes from distinct identities,
/// all naming the same role, hostname and address, within `window_seconds` of the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualControl {
    pub roles: Vec<Role>,
    pub quorum: usize,
    pub window_seconds: u64,
    /// `ITL_DUAL_CONTROL_BREAK_GLASS`: whether the break-glass token's vote counts.
    pub break_glass_counts: bool,
}

impl Default for DualControl {
    fn default() -> Self {
        DualControl {
            roles: Vec::new(),
            quorum: 2,
            window_seconds: 600,
            break_glass_counts: false,
        }
    }
}

/// What an approval vote achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// The machine is approved (single control, or the quorum-th vote).
    Approved(Box<MachineRecord>),
    /// More votes are needed.
    Pending {
        approvals_received: usize,
        approvals_required: usize,
        /// Seconds since the epoch when the window closes.
        expires_at: u64,
    },
}

/// What `GET /machines/{id}/approvals` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Approvals {
    /// The votes that approved the machine (one without dual control), oldest first.
    pub approved: Vec<Vote>,
    /// Dual-control votes inside the window, not yet at the quorum.
    pub pending: Vec<Vote>,
}

/// Checks a hostname (RFC 1123: dot-separated labels of letters, digits and hyphens).
pub fn check_hostname(h: &str) -> Result<(), ServiceError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        return Ok(());
    }
    Err(ServiceError::bad_request(
        "invalid_hostname",
        format!(
            "'{}' is not a hostname (letters, digits, '-', dot-separated labels)",
            crate::log::escape(h)
        ),
    ))
}

/// Checks an address with prefix length (`10.0.0.5/24`, `fd00::5/64`).
pub fn check_cidr(c: &str) -> Result<(), ServiceError> {
    let bad = || {
        ServiceError::bad_request(
            "invalid_assigned_ip",
            format!(
                "'{}' is not an address with prefix length such as 10.0.0.5/24",
                crate::log::escape(c)
            ),
        )
    };
    let (addr, prefix) = c.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

fn approval_detail(id: &str, a: &Approval, note: &str) -> String {
    format!(
        "Machine approved: id={id} role={} hostname={} ip={}{note}",
        a.role, a.hostname, a.assigned_ip
    )
}

/// How the votes of a pending approval disagree with `approval`, if they do.
fn differences(first: &Vote, approval: &Approval) -> Vec<String> {
    let mut out = Vec::new();
    if first.role != approval.role {
        out.push(format!("role {} vs {}", first.role, approval.role));
    }
    if first.hostname != approval.hostname {
        out.push(format!(
            "hostname {} vs {}",
            first.hostname, approval.hostname
        ));
    }
    if first.assigned_ip != approval.assigned_ip {
        out.push(format!(
            "assigned_ip {} vs {}",
            first.assigned_ip, approval.assigned_ip
        ));
    }
    out
}

impl<R: Registry> Service<R> {
    /// An operator's approval. Under dual control for the role this is a vote: it answers
    /// `Pending` until the quorum-th distinct identity agrees.
    pub fn approve(
        &self,
        id: &str,
        approval: &Approval,
        actor: &Actor,
    ) -> Result<ApproveOutcome, ServiceError> {
        let outcome = self.vote(id, approval, actor);
        // An approved machine no longer waits: counted again at the next registration.
        self.unverified_quota.forget();
        outcome
    }

    fn vote(
        &self,
        id: &str,
        approval: &Approval,
        actor: &Actor,
    ) -> Result<ApproveOutcome, ServiceError> {
        check_hostname(&approval.hostname)?;
        check_cidr(&approval.assigned_ip)?;
        let now = self.platform.now();
        let vote = Vote {
            identity: actor.identity.clone(),
            principal: actor.principal.clone(),
            role: approval.role,
            hostname: approval.hostname.clone(),
            assigned_ip: approval.assigned_ip.clone(),
            at: now,
        };
        let dc = &self.dual_control;
        let set = |r: &mut MachineRecord| {
            let changed = r.role != Some(approval.role)
                || r.hostname.as_deref() != Some(approval.hostname.as_str())
                || r.assigned_ip.as_deref() != Some(approval.assigned_ip.as_str());
            r.role = Some(approval.role);
            r.hostname = Some(approval.hostname.clone());
            r.assigned_ip = Some(approval.assigned_ip.clone());
            if changed {
                // Its config changed: offered again at its next verified attestation.
                r.config_delivered_at = None;
            }
        };
        if !dc.roles.contains(&approval.role) {
            let detail = approval_detail(id, approval, "");
            return self.registry.write(|tx| {
                let record = apply_event(tx, id, Event::Approve, actor, detail, now, set)?;
                tx.put_approving_votes(id, &[vote])?;
                Ok(ApproveOutcome::Approved(Box::new(
                    record.expect("approve keeps the record"),
                )))
            });
        }
        self.registry.write(|tx| {
            let record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
            // Refuse before counting: a vote for a machine that cannot be approved is void.
            transition(Some(record.state), Event::Approve)?;
            let mut votes = tx.pending_votes(id)?;
            // Votes cast before principals existed name only a display name, which cannot
            // tell one person from another: they do not count; their operators vote again.
            votes.retain(|v| !v.principal.starts_with(LEGACY_PRINCIPAL));
            if votes
                .first()
                .is_some_and(|f| now > f.at + dc.window_seconds)
            {
                votes.clear();
            }
            if let Some(first) = votes.first() {
                let differences = differences(first, approval);
                if !differences.is_empty() {
                    return Err(ServiceError::conflict(
                        "approval_mismatch",
                        format!(
                            "this vote disagrees with the pending approval: {}",
                            differences.join(", ")
                        ),
                    ));
                }
            }
            if actor.is_break_glass() && !dc.break_glass_counts {
                return Err(ServiceError::forbidden(
                    "break_glass_not_counted",
                    format!(
                        "role {} is under dual control and the break-glass token does not count \
                         toward its quorum (ITL_DUAL_CONTROL_BREAK_GLASS=true to allow it)",
                        approval.role
                    ),
                ));
            }
            if votes.iter().any(|v| v.principal == actor.principal) {
                return Err(ServiceError::conflict(
                    "duplicate_approval",
                    format!(
                        "{} has already approved machine {id}; dual control needs another operator",
                        actor.identity
                    ),
                ));
            }
            votes.push(vote);
            let received = votes.len();
            let expires_at = votes[0].at + dc.window_seconds;
            if received >= dc.quorum {
                // The quorum-th vote approves, in the same transaction that moves the votes
                // from pending to the record of who approved.
                tx.put_pending_votes(id, &[])?;
                tx.put_approving_votes(id, &votes)?;
                let voters: Vec<_> = votes.iter().map(|v| v.identity.as_str()).collect();
                let note = format!(" (dual control: {})", voters.join(", "));
                let detail = approval_detail(id, approval, &note);
                let record = apply_event(tx, id, Event::Approve, actor, detail, now, set)?;
                return Ok(ApproveOutcome::Approved(Box::new(
                    record.expect("approve keeps the record"),
                )));
            }
            tx.put_pending_votes(id, &votes)?;
            let detail = format!(
                "Approval vote {received}/{}: id={id} role={} hostname={} ip={}",
                dc.quorum, approval.role, approval.hostname, approval.assigned_ip
            );
            Change::about(AuditAction::ApproveVote, &record, detail).record(tx, actor, now)?;
            Ok(ApproveOutcome::Pending {
                approvals_received: received,
                approvals_required: dc.quorum,
                expires_at,
            })
        })
    }

    /// The votes that approved a machine, and the dual-control votes still pending.
    pub fn approvals(&self, id: &str) -> Result<Approvals, ServiceError> {
        self.machine(id)?;
        let (mut pending, approved) = self.registry.votes(id)?;
        pending.retain(|v| !v.principal.starts_with(LEGACY_PRINCIPAL));
        let window = self.dual_control.window_seconds;
        if pending
            .first()
            .is_some_and(|f| self.platform.now() > f.at + window)
        {
            pending.clear();
        }
        Ok(Approvals { approved, pending })
    }
}
