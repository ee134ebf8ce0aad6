//! Challenge nonces without a write per challenge (DESIGN.md §3.3).
//!
//! A challenge is asked for before every attestation and before every `/enroll`, so issuing
//! one must not cost a durable commit. The nonce is therefore derived, not stored:
//! `nonce = HMAC-SHA384(challenge key, nonce_id)[..32]`, where `nonce_id` is the expiry (16
//! hex digits, so ids sort by expiry) followed by 128 random bits. Only the server holds
//! the key (in the registry, so challenges survive a restart), so nobody can compute the
//! nonce of an id the server did not hand out, and the random part makes every nonce
//! unpredictable before it is issued.
//!
//! Single use is kept where it matters: the id is recorded as used in the same write
//! transaction that records the attestation or enrolment, so a restart cannot reopen a used
//! nonce, and the record is purged once the nonce has expired anyway.

use aws_lc_rs::hmac;

/// Characters of a nonce id: 16 hex digits of expiry, 32 of randomness.
pub const ID_LEN: usize = 48;

/// The server's challenge key.
#[derive(Clone)]
pub struct ChallengeKey(hmac::Key);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(..)")
    }
}

/// Why a nonce id names no usable challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Not an id this server's format can have produced.
    Malformed,
    /// Issued, but its lifetime is over (at the carried expiry, seconds since the epoch).
    Expired(u64),
}

impl ChallengeKey {
    pub fn new(secret: &[u8]) -> ChallengeKey {
        ChallengeKey(hmac::Key::new(hmac::HMAC_SHA384, secret))
    }

    /// A fresh challenge expiring at `expires_at`: its id and nonce.
    pub fn issue(&self, expires_at: u64) -> (String, [u8; 32]) {
        let mut tag = [0u8; 16];
        getrandom::fill(&mut tag).expect("the operating system's random number generator failed");
        let id = format!("{expires_at:016x}{}", crate::audit::hex(&tag));
        let nonce = self.nonce(&id);
        (id, nonce)
    }

    /// The nonce of a well-formed id that has not expired at `now`, with its expiry.
    pub fn open(&self, id: &str, now: u64) -> Result<([u8; 32], u64), Unusable> {
        let expires_at = expiry(id).ok_or(Unusable::Malformed)?;
        if now > expires_at {
            return Err(Unusable::Expired(expires_at));
        }
        Ok((self.nonce(id), expires_at))
    }

    fn nonce(&self, id: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.0, id.as_bytes());
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&tag.as_ref()[..32]);
        nonce
    }
}

/// The expiry an id carries, when the id has this server's form.
pub fn expiry(id: &str) -> Option<u64> {
    let well_formed = id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    u64::from_str_radix(&id[..16], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_open_to_their_nonce_until_they_expire() {
        let key = ChallengeKey::new(&[7; 48]);
        let (id, nonce) = key.issue(1_000);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(key.open(&id, 999), Ok((nonce, 1_000)));
        assert_eq!(key.open(&id, 1_000), Ok((nonce, 1_000)));
        assert_eq!(key.open(&id, 1_001), Err(Unusable::Expired(1_000)));
        let (other, other_nonce) = key.issue(1_000);
        assert_ne!((id.as_str(), nonce), (other.as_str(), other_nonce));
    }

    #[test]
    fn another_key_gives_another_nonce() {
        let (id, nonce) = ChallengeKey::new(&[7; 48]).issue(1_000);
        let (theirs, _) = ChallengeKey::new(&[8; 48]).open(&id, 0).unwrap();
        assert_ne!(nonce, theirs);
    }

    #[test]
    fn malformed_ids_are_refused() {
        let key = ChallengeKey::new(&[7; 48]);
        let (id, _) = key.issue(1_000);
        for bad in [
            "",
            &id[1..],
            &format!("{id}0"),
            &id.to_uppercase(),
            &format!("{}g", &id[..47]),
            "ффффффффффффффффффффффффффффффффффффффффффффффф",
        ] {
            assert_eq!(key.open(bad, 0), Err(Unusable::Malformed), "{bad:?}");
        }
    }
}
