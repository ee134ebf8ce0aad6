//! Every cell of the lifecycle table: each (state, wipe flag, event) is either a row of
//! DESIGN.md §2, written out again here independently, or a refusal naming state and event.

use attest_common::lifecycle::{Action, Event, Refused, State, Status, Transition, transition};

const EVENTS: [Event; 11] = [
    Event::SelfRegister,
    Event::Register,
    Event::Attest,
    Event::Enroll,
    Event::Approve,
    Event::Reject,
    Event::Lock,
    Event::Unlock,
    Event::Revoke { wipe: false },
    Event::Revoke { wipe: true },
    Event::Delete,
];

fn st(status: Status, wipe_pending: bool) -> State {
    State {
        status,
        wipe_pending,
    }
}

/// DESIGN.md §2, row by row: (from, event) → (to, action, re-registration).
fn expected(from: Option<State>, event: Event) -> Option<Transition> {
    use Status::*;
    let t = |to: Option<State>, action: Option<Action>, rereg: bool| {
        Some(Transition {
            to,
            action,
            reregistration: rereg,
        })
    };
    let s = |status| Some(st(status, false));
    match (from, event) {
        // (none) → pending_approval by self-register. An /attest of an unknown EK proves
        // nothing and is refused (DESIGN.md §3.8).
        (None, Event::SelfRegister) => t(s(PendingApproval), None, false),
        // (none) → registered by register (USB agent) or import (receipt).
        (None, Event::Register) => t(s(Registered), None, false),
        // Re-registration of a known EK changes nothing (a new AK takes effect only once
        // activated); revoked and rejected EKs are refused.
        (Some(cur), Event::Register | Event::SelfRegister)
            if matches!(cur.status, PendingApproval | Registered | Attested | Locked) =>
        {
            t(Some(cur), None, true)
        }
        // Approve: pending → registered; registered → registered (role/hostname/ip change).
        (Some(cur), Event::Approve) if matches!(cur.status, PendingApproval | Registered) => {
            t(s(Registered), None, false)
        }
        (Some(cur), Event::Reject) if cur.status == PendingApproval => t(s(Rejected), None, false),
        // Agent contact: pending keeps waiting; registered → attested with the config;
        // attested stays attested; locked is told to lock; revoked with a pending wipe is
        // told to wipe once (flag cleared); every other contact is refused.
        (Some(cur), Event::Attest) if cur.status == PendingApproval => {
            t(Some(cur), Some(Action::Pending), false)
        }
        (Some(cur), Event::Attest) if cur.status == Registered => {
            t(s(Attested), Some(Action::ApplyConfig), false)
        }
        (Some(cur), Event::Attest) if cur.status == Attested => {
            t(s(Attested), Some(Action::None), false)
        }
        (Some(cur), Event::Attest) if cur.status == Locked => {
            t(Some(cur), Some(Action::Lock), false)
        }
        (Some(cur), Event::Attest) if cur.status == Revoked && cur.wipe_pending => {
            // Told until confirmed: the state (and its pending wipe) stays.
            t(Some(cur), Some(Action::Wipe), false)
        }
        // Enrollment (air-gapped path): an approved machine proving its enrollment key
        // stays as it is (only a quote attests); everything else is refused.
        (Some(cur), Event::Enroll) if matches!(cur.status, Registered | Attested) => {
            t(Some(cur), None, false)
        }
        (Some(cur), Event::Lock) if cur.status == Attested => t(s(Locked), None, false),
        (Some(cur), Event::Unlock) if cur.status == Locked => t(s(Attested), None, false),
        (Some(cur), Event::Revoke { wipe })
            if matches!(cur.status, Attested | Locked | Registered) =>
        {
            t(Some(st(Revoked, wipe)), None, false)
        }
        (Some(cur), Event::Delete) if matches!(cur.status, Revoked | Rejected) => {
            t(None, None, false)
        }
        _ => None,
    }
}

#[test]
fn every_cell_of_the_table() {
    let mut froms = vec![None];
    for status in Status::ALL {
        froms.push(Some(st(status, false)));
        if status == Status::Revoked {
            froms.push(Some(st(status, true)));
        }
    }
    let mut allowed = 0;
    let mut refused = 0;
    for from in &froms {
        for event in EVENTS {
            let got = transition(*from, event);
            match expected(*from, event) {
                Some(want) => {
                    allowed += 1;
                    assert_eq!(got, Ok(want), "{from:?} + {event:?}");
                }
                None => {
                    refused += 1;
                    assert_eq!(
                        got,
                        Err(Refused {
                            from: from.map(|s| s.status),
                            event
                        }),
                        "{from:?} + {event:?} must be refused"
                    );
                }
            }
        }
    }
    // 8 starting points × 11 events; the table allows 31 of them.
    assert_eq!((allowed, refused), (31, 57));
}

/// DESIGN §3.7: the wipe is told until the machine confirms it (the server clears
/// `wipe_pending` on a quote-bound confirmation); without a pending wipe a revoked machine
/// cannot attest.
#[test]
fn wipe_is_told_until_confirmed() {
    let revoked = transition(
        Some(st(Status::Attested, false)),
        Event::Revoke { wipe: true },
    )
    .unwrap()
    .to;
    assert_eq!(revoked, Some(st(Status::Revoked, true)));
    let first = transition(revoked, Event::Attest).unwrap();
    assert_eq!(first.action, Some(Action::Wipe));
    assert_eq!(first.to, revoked, "still pending");
    let second = transition(first.to, Event::Attest).unwrap();
    assert_eq!(second.action, Some(Action::Wipe));
    let confirmed = transition(Some(st(Status::Revoked, false)), Event::Attest);
    assert_eq!(
        confirmed.unwrap_err().to_string(),
        "cannot attest a machine in state revoked"
    );
}

#[test]
fn refusals_name_state_and_event() {
    let e = transition(Some(st(Status::Locked, false)), Event::Approve).unwrap_err();
    assert_eq!(e.to_string(), "cannot approve a machine in state locked");
    let e = transition(Some(st(Status::Revoked, false)), Event::Register).unwrap_err();
    assert!(e.to_string().contains("delete the revoked record"), "{e}");
    let e = transition(None, Event::Lock).unwrap_err();
    assert_eq!(e.to_string(), "cannot lock: the machine is not registered");
}

#[test]
fn refused_states_and_names() {
    for s in Status::ALL {
        assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
        assert_eq!(
            s.is_refused(),
            matches!(s, Status::Locked | Status::Revoked | Status::Rejected)
        );
    }
    for a in [
        Action::None,
        Action::Pending,
        Action::ApplyConfig,
        Action::Lock,
        Action::Wipe,
    ] {
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            format!("\"{}\"", a.as_str())
        );
    }
    assert_eq!(Action::ApplyConfig.as_str(), "apply-config");
}
