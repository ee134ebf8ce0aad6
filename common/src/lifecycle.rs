//! The machine lifecycle of DESIGN.md §2 as one pure function.
//!
//! The server, the agents, the tests and the documentation share this table, so there is
//! exactly one place that says which event is allowed in which state. Anything not in the
//! table is an error that names the state and the event; the HTTP layer turns it into a 409.

use core::fmt;

/// Where a machine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    PendingApproval,
    Registered,
    Attested,
    Locked,
    Revoked,
    Rejected,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::PendingApproval,
        Status::Registered,
        Status::Attested,
        Status::Locked,
        Status::Revoked,
        Status::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingApproval => "pending_approval",
            Status::Registered => "registered",
            Status::Attested => "attested",
            Status::Locked => "locked",
            Status::Revoked => "revoked",
            Status::Rejected => "rejected",
        }
    }

    /// Locked, revoked and rejected machines are refused on every path (attest, enroll,
    /// config fetch, offline bundle).
    pub fn is_refused(self) -> bool {
        matches!(self, Status::Locked | Status::Revoked | Status::Rejected)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

/// A status string that is none of the six.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownStatus;

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown status (expected one of pending_approval, registered, attested, locked, revoked, rejected)")
    }
}

/// What the agent is told to do in an attestation response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do; attest again after the interval.
    None,
    /// Waiting for an operator's approval.
    Pending,
    /// Fetch the machine config from `config_url` and apply it.
    ApplyConfig,
    /// The machine is locked: stop serving, keep data.
    Lock,
    /// The machine is revoked with wipe: erase it.
    Wipe,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Pending => "pending",
            Action::ApplyConfig => "apply-config",
            Action::Lock => "lock",
            Action::Wipe => "wipe",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can happen to a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// `POST /api/v1/self-register` (zero-touch).
    SelfRegister,
    /// `POST /api/v1/register` (USB agent) or `POST /machines/import` (TPM receipt).
    Register,
    /// An agent contacts the server with a valid attestation (or, for an unknown EK, its
    /// first attestation, which enrols it for approval).
    Attest,
    /// A node proves it holds the key of its enrollment certificate (`POST /api/v1/enroll`,
    /// the air-gapped path).
    Enroll,
    /// An operator approves (role, hostname, address).
    Approve,
    Reject,
    Lock,
    Unlock,
    Revoke {
        wipe: bool,
    },
    /// An operator deletes the record (revoked or rejected machines only).
    Delete,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::SelfRegister => "self-register",
            Event::Register => "register",
            Event::Attest => "attest",
            Event::Enroll => "enroll",
            Event::Approve => "approve",
            Event::Reject => "reject",
            Event::Lock => "lock",
            Event::Unlock => "unlock",
            Event::Revoke { .. } => "revoke",
            Event::Delete => "delete",
        }
    }
}

/// The lifecycle part of a machine record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct State {
    pub status: Status,
    /// A revoke asked for a wipe that the machine has not been told yet.
    pub wipe_pending: bool,
}

impl State {
    pub const fn new(status: Status) -> Self {
        State {
            status,
            wipe_pending: false,
        }
    }
}

/// The result of an allowed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transition {
    /// The state afterwards; `None` when the record is deleted.
    pub to: Option<State>,
    /// What the agent is told, for agent-facing events (`Attest`); `None` for the others.
    pub action: Option<Action>,
    /// `Register`/`SelfRegister` of an EK already known: same record, nothing changed
    /// without TPM proof (a new AK only after it is activated, DESIGN.md §3.8).
    pub reregistration: bool,
}

/// An event the table does not allow in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refused {
    /// The state the machine is in (`None`: no such machine).
    pub from: Option<Status>,
    pub event: Event,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.event) {
            (None, e) => write!(f, "cannot {}: the machine is not registered", e.name()),
            (Some(Status::Revoked), Event::Register | Event::SelfRegister) => f.write_str(
                "cannot register: this TPM belongs to a revoked machine; an operator must \
                 delete the revoked record first",
            ),
            (Some(s), e) => write!(f, "cannot {} a machine in state {s}", e.name()),
        }
    }
}

impl core::error::Error for Refused {}

/// The one transition function of DESIGN.md §2.
pub fn transition(from: Option<State>, event: Event) -> Result<Transition, Refused> {
    use Status::*;
    let refuse = || Refused {
        from: from.map(|s| s.status),
        event,
    };
    let to = |status| Some(State::new(status));
    let plain = |to| Transition {
        to,
        action: None,
        reregistration: false,
    };
    let tell = |to, action| Transition {
        to,
        action: Some(action),
        reregistration: false,
    };
    let Some(state) = from else {
        return match event {
            Event::SelfRegister => Ok(plain(to(PendingApproval))),
            Event::Register => Ok(plain(to(Registered))),
            _ => Err(refuse()),
        };
    };
    match (state.status, event) {
        (
            PendingApproval | Registered | Attested | Locked,
            Event::Register | Event::SelfRegister,
        ) => Ok(Transition {
            to: Some(state),
            action: None,
            reregistration: true,
        }),
        (PendingApproval | Registered, Event::Approve) => Ok(plain(to(Registered))),
        (PendingApproval, Event::Reject) => Ok(plain(to(Rejected))),
        (PendingApproval, Event::Attest) => Ok(tell(Some(state), Action::Pending)),
        (Registered, Event::Attest) => Ok(tell(to(Attested), Action::ApplyConfig)),
        (Attested, Event::Attest) => Ok(tell(to(Attested), Action::None)),
        // Proof of the enrollment key, not of the TPM (the key is a file on the stick): the
        // state does not change; only a verified quote makes a machine attested (§3.8).
        (Registered | Attested, Event::Enroll) => Ok(plain(Some(state))),
        (Attested, Event::Lock) => Ok(plain(to(Locked))),
        (Locked, Event::Unlock) => Ok(plain(to(Attested))),
        (Locked, Event::Attest) => Ok(tell(Some(state), Action::Lock)),
        (Attested | Locked | Registered, Event::Revoke { wipe }) => Ok(plain(Some(State {
            status: Revoked,
            wipe_pending: wipe,
        }))),
        // The wipe is told until the machine confirms it (`wipe_pending` stays; the
        // server clears it on a quote-bound confirmation, DESIGN §3.7).
        (Revoked, Event::Attest) if state.wipe_pending => Ok(tell(Some(state), Action::Wipe)),
        (Revoked | Rejected, Event::Delete) => Ok(plain(None)),
        _ => Err(refuse()),
    }
}
