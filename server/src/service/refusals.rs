//! Contacts that prove nothing (a forged or expired challenge id, an unknown EK, a quote
//! that does not verify, a replay) are refused without writing anything durable: anyone can
//! send them, and one client sent 50,000 in 15 s. They are counted per reason (for
//! `/metrics`) and logged at most once per reason per [`LOG_EVERY`] seconds, with the number
//! left out since; the log line is escaped like every other.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds between two log lines of one reason.
pub const LOG_EVERY: u64 = 10;

/// Why an unauthenticated contact was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A challenge id this server did not issue.
    UnknownNonce,
    /// A challenge past its lifetime.
    ExpiredNonce,
    /// A challenge already used (a replay).
    ReplayedNonce,
    /// An EK no machine has.
    UnknownEk,
    /// A quote that does not verify with the machine's AK.
    BadQuote,
    /// A quote over other PCRs than the challenge asked for.
    WrongPcrSelection,
    /// A missing or wrong activation proof.
    NoActivation,
    /// A contact from a machine whose state refuses it before any proof (rejected).
    RefusedState,
    /// An enrolment that did not prove its certificate.
    BadEnrollment,
    /// A known EK registered again (changes nothing; logged).
    Reregistration,
    /// An EK certificate that does not chain to a trusted CA (`ITL_EK_CHAIN=strict`).
    UntrustedEk,
    /// A long-lived config token used again (served its secret-free config; logged).
    ConfigRefetch,
    /// A registration of an unverified EK beyond `ITL_MAX_UNVERIFIED_PENDING`.
    RegistrationQuota,
    /// An attestation rotating to an AK the AK policy refuses (`ITL_AK_ALGORITHMS`).
    RefusedAk,
}

impl Refusal {
    pub const ALL: [Refusal; 14] = [
        Refusal::UnknownNonce,
        Refusal::ExpiredNonce,
        Refusal::ReplayedNonce,
        Refusal::UnknownEk,
        Refusal::BadQuote,
        Refusal::WrongPcrSelection,
        Refusal::NoActivation,
        Refusal::RefusedState,
        Refusal::BadEnrollment,
        Refusal::Reregistration,
        Refusal::UntrustedEk,
        Refusal::ConfigRefetch,
        Refusal::RegistrationQuota,
        Refusal::RefusedAk,
    ];

    /// The `reason` label of `itl_unauthenticated_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownNonce => "unknown_nonce",
            Refusal::ExpiredNonce => "expired_nonce",
            Refusal::ReplayedNonce => "replayed_nonce",
            Refusal::UnknownEk => "unknown_ek",
            Refusal::BadQuote => "bad_quote",
            Refusal::WrongPcrSelection => "wrong_pcr_selection",
            Refusal::NoActivation => "no_activation",
            Refusal::RefusedState => "refused_state",
            Refusal::BadEnrollment => "bad_enrollment",
            Refusal::Reregistration => "reregistration",
            Refusal::UntrustedEk => "untrusted_ek",
            Refusal::ConfigRefetch => "config_refetch",
            Refusal::RegistrationQuota => "registration_quota",
            Refusal::RefusedAk => "refused_ak",
        }
    }
}

/// Counts and a rate-limited log of unauthenticated contacts.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// Per reason: when it was last logged, and how many were left out since.
    logged: Mutex<HashMap<Refusal, (u64, u64)>>,
}

impl Refusals {
    /// Counts one; logs `line` unless this reason was logged less than [`LOG_EVERY`]
    /// seconds before `now`. Answers whether it logged.
    pub fn note(&self, why: Refusal, now: u64, line: impl FnOnce() -> String) -> bool {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let entry = logged.entry(why).or_insert((0, 0));
        if entry.0 != 0 && now < entry.0 + LOG_EVERY {
            entry.1 += 1;
            return false;
        }
        let left_out = std::mem::take(&mut entry.1);
        entry.0 = now.max(1);
        drop(logged);
        let mut text = line();
        if left_out > 0 {
            text.push_str(&format!(
                " ({left_out} more like it in the last {LOG_EVERY} s not logged)"
            ));
        }
        // The seed's levels: a re-registration and a config re-fetch are routine (INFO).
        match why {
            Refusal::Reregistration | Refusal::ConfigRefetch => crate::log::info(&text),
            _ => crate::log::warn(&text),
        }
        true
    }

    /// How many of each reason since start.
    pub fn counts(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_always_logged_once_per_interval() {
        let r = Refusals::default();
        assert!(r.note(Refusal::UnknownNonce, 100, || "a".into()));
        assert!(!r.note(Refusal::UnknownNonce, 105, || unreachable!()));
        assert!(r.note(Refusal::BadQuote, 105, || "other reason".into()));
        assert!(r.note(Refusal::UnknownNonce, 110, || "again".into()));
        let counts = r.counts();
        assert!(counts.contains(&(Refusal::UnknownNonce, 3)));
        assert!(counts.contains(&(Refusal::BadQuote, 1)));
    }
}
