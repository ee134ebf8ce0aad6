//! Challenges (DESIGN.md §3.3): what an attestation must quote, and its single-use nonce.
//! Issuing one writes nothing (the nonce is derived from its id, `crate::challenge`); using
//! one is recorded in the transaction of what it authorises.

use attest_common::wire::{ChallengeResponse, HashAlg, Hex, PcrBank, PcrSelection, Timestamp};

use super::refusals::Refusal;
use super::{ErrorKind, Service, ServiceError};
use crate::store::{Registry, RegistryTx};

/// What a challenge asks for, and how often agents come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenges {
    /// `ITL_CHALLENGE_LIFETIME_SECONDS`.
    pub lifetime_seconds: u64,
    /// `ITL_PCR_SELECTION`.
    pub pcr_selection: PcrSelection,
    /// `ITL_ATTESTATION_INTERVAL_SECONDS`: when agents are told to attest again.
    pub interval_seconds: u32,
    /// `ITL_LIVENESS_FACTOR`: an attested machine silent for interval × factor is stale.
    pub liveness_factor: u32,
}

impl Challenges {
    /// How long an attested machine may stay silent before it is stale.
    pub fn liveness_seconds(&self) -> u64 {
        u64::from(self.interval_seconds) * u64::from(self.liveness_factor)
    }
}

impl Default for Challenges {
    fn default() -> Self {
        Challenges {
            lifetime_seconds: 60,
            pcr_selection: parse_pcr_selection("sha384:0-7").expect("the default selection parses"),
            interval_seconds: 60,
            liveness_factor: 5,
        }
    }
}

/// Parses `sha384:0-7,14+sha256:0` (banks joined by `+`, PCRs as lists and ranges).
pub fn parse_pcr_selection(text: &str) -> Result<PcrSelection, String> {
    let mut out = PcrSelection::new();
    for bank in text.split('+') {
        let (alg, pcrs) = bank
            .split_once(':')
            .ok_or_else(|| format!("'{bank}' is not <bank>:<pcrs>, e.g. sha384:0-7"))?;
        let hash_alg = match alg.trim() {
            "sha256" => HashAlg::Sha256,
            "sha384" => HashAlg::Sha384,
            "sha512" => HashAlg::Sha512,
            other => {
                return Err(format!(
                    "unknown PCR bank '{other}' (sha256, sha384, sha512)"
                ));
            }
        };
        let mut mask = 0u32;
        for part in pcrs.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |v: &str| {
                v.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|i| *i < 24)
                    .ok_or_else(|| format!("'{v}' is not a PCR index 0-23"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("'{part}' is an empty range"));
            }
            for i in lo..=hi {
                mask |= 1 << i;
            }
        }
        if out.iter().any(|b: &PcrBank| b.hash_alg == hash_alg) {
            return Err(format!("the {} bank is listed twice", alg.trim()));
        }
        let pcrs = (0u8..24).filter(|i| mask & (1 << i) != 0).collect();
        out.push(PcrBank { hash_alg, pcrs })
            .map_err(|_| "at most four PCR banks".to_owned())?;
    }
    Ok(out)
}

impl<R: Registry> Service<R> {
    /// `POST /attest/challenge`: a single-use nonce with its lifetime and what to quote.
    pub fn challenge(&self) -> ChallengeResponse {
        crate::metrics::Counters::count(&self.counters.challenges);
        let expires_at = self.platform.now() + self.challenges.lifetime_seconds;
        let (nonce_id, nonce) = self.challenge_key.issue(expires_at, self.platform.bytes());
        ChallengeResponse {
            nonce_id: heapless::String::try_from(nonce_id.as_str()).unwrap_or_default(),
            nonce: Hex(nonce),
            expires_at: Timestamp(expires_at),
            pcr_selection: self.challenges.pcr_selection.clone(),
            hash_alg: HashAlg::Sha384,
        }
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// The nonce of a challenge id, checked without writing anything: an id this server
    /// did not issue → 404 (an expiry later than now + the lifetime included, whatever the
    /// tag), an expired one → 410 (both unauthenticated: counted, not stored).
    pub(super) fn open_nonce(&self, nonce_id: &str, now: u64) -> Result<[u8; 32], ServiceError> {
        use crate::challenge::Unusable;
        let shown = || crate::log::escape(nonce_id).into_owned();
        let lifetime = self.challenges.lifetime_seconds;
        match self.challenge_key.open(nonce_id, now, lifetime) {
            Ok((nonce, _)) => Ok(nonce),
            Err(Unusable::Malformed) => {
                Err(self.unauthenticated(Refusal::UnknownNonce, now, || {
                    ServiceError::new(
                        ErrorKind::NotFound,
                        "unknown_nonce",
                        format!("'{}' is not a challenge id of this server", shown()),
                    )
                }))
            }
            // A valid tag on an expiry this server never issues: someone else holds the
            // challenge key (a registry backup). Not ours, and logged as such.
            Err(Unusable::Overlong(at)) => {
                Err(self.unauthenticated(Refusal::UnknownNonce, now, || {
                    ServiceError::new(
                        ErrorKind::NotFound,
                        "unknown_nonce",
                        format!(
                            "'{}' is not a challenge id of this server: it expires at {}, \
                             later than ITL_CHALLENGE_LIFETIME_SECONDS ({lifetime} s) from \
                             now (made with the challenge key by someone else?)",
                            shown(),
                            Timestamp(at)
                        ),
                    )
                }))
            }
            Err(Unusable::Expired(at)) => {
                Err(self.unauthenticated(Refusal::ExpiredNonce, now, || {
                    ServiceError::new(
                        ErrorKind::Gone,
                        "nonce_expired",
                        format!("challenge {} expired at {}", shown(), Timestamp(at)),
                    )
                }))
            }
        }
    }

    /// Uses a challenge nonce once, in the transaction of what it authorises (call it only
    /// once what it authorises has proven itself): as [`Service::open_nonce`], and a used
    /// one → 409 (replay). Used nonces that have expired are purged here.
    pub fn use_nonce(
        &self,
        tx: &impl RegistryTx,
        nonce_id: &str,
        now: u64,
    ) -> Result<[u8; 32], ServiceError> {
        let nonce = self.open_nonce(nonce_id, now)?;
        self.mark_used(tx, nonce_id, now)?;
        Ok(nonce)
    }

    /// Records an opened challenge id as used in `tx`: a replay → 409 (unauthenticated:
    /// the caller rolls back). Used nonces that have expired are purged here.
    pub(super) fn mark_used(
        &self,
        tx: &impl RegistryTx,
        nonce_id: &str,
        now: u64,
    ) -> Result<(), ServiceError> {
        if !tx.use_nonce(nonce_id, now)? {
            return Err(self.unauthenticated(Refusal::ReplayedNonce, now, || {
                ServiceError::conflict(
                    "nonce_replayed",
                    format!(
                        "challenge {} was already used",
                        crate::log::escape(nonce_id)
                    ),
                )
            }));
        }
        tx.purge_nonces(now)?;
        Ok(())
    }

    /// A refusal of a contact that proved nothing: counted, logged at a bounded rate, and
    /// never written to the registry.
    pub(super) fn unauthenticated(
        &self,
        why: Refusal,
        now: u64,
        error: impl FnOnce() -> ServiceError,
    ) -> ServiceError {
        let e = error();
        self.refusals.note(why, now, || e.message.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selections() {
        let s = parse_pcr_selection("sha384:0-7,14+sha256:0").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].hash_alg, HashAlg::Sha384);
        assert_eq!(s[0].pcrs.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 14]);
        assert_eq!(s[1].pcrs.as_slice(), &[0]);
        for bad in [
            "sha1:0",
            "sha384",
            "sha384:24",
            "sha384:5-3",
            "sha384:x",
            "sha384:0-7+sha384:8",
            "",
        ] {
            assert!(parse_pcr_selection(bad).is_err(), "{bad}");
        }
    }
}
