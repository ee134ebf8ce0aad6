//! Challenge nonces without a write per challenge (DESIGN.md §3.3).
//!
//! A challenge is asked for before every attestation and before every `/enroll`, so issuing
//! one must not cost a durable commit. The nonce is therefore derived, not stored:
//! `nonce_id = hex(expiry ‖ 64 random bits ‖ tag)` with `tag = HMAC-SHA384(key, "id" ‖
//! expiry ‖ random)[..8]` (ids sort by expiry), and `nonce = HMAC-SHA384(key, "nonce" ‖
//! nonce_id)[..32]`. Only the server holds the key (in the registry, so challenges survive
//! a restart): an id it did not hand out is refused before anything is written (so nobody
//! can fill the used-nonce table with ids of their own), nobody can compute the nonce of
//! an id, and the random part makes every nonce unpredictable before it is issued.
//!
//! An id's expiry is believed only up to `now + lifetime` (`ITL_CHALLENGE_LIFETIME_SECONDS`):
//! this server never issues a later one, so an id that carries one was made by someone else
//! holding the key (it is kept in the registry, and therefore in its backups) and is refused
//! as not ours, whatever its tag says. Such a holder cannot make an id that lives longer
//! than a challenge does; the README ("A leaked registry backup") says what else the key allows.
//!
//! Single use is kept where it matters: the id is recorded as used in the same write
//! transaction that records the attestation or enrolment, so a restart cannot reopen a used
//! nonce, and the record is purged once the nonce has expired anyway.

use aws_lc_rs::hmac;

/// Characters of a nonce id: 16 hex digits each of expiry, randomness and tag.
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
    /// Not an id this server issued.
    Malformed,
    /// Issued, but its lifetime is over (at the carried expiry, seconds since the epoch).
    Expired(u64),
    /// Its tag is right but its expiry (carried) is later than this server issues: made
    /// with the key by someone else.
    Overlong(u64),
}

impl ChallengeKey {
    pub fn new(secret: &[u8]) -> ChallengeKey {
        ChallengeKey(hmac::Key::new(hmac::HMAC_SHA384, secret))
    }

    /// A fresh challenge expiring at `expires_at`, made unpredictable by `random`: its id
    /// and nonce.
    pub fn issue(&self, expires_at: u64, random: [u8; 8]) -> (String, [u8; 32]) {
        let body = format!("{expires_at:016x}{}", crate::audit::hex(&random));
        let id = format!("{body}{}", crate::audit::hex(&self.tag(&body)));
        let nonce = self.nonce(&id);
        (id, nonce)
    }

    /// The nonce of an id this server issued, when it has not expired at `now`, with its
    /// expiry. Ids are issued to live `lifetime` seconds: one that expires later than
    /// `now + lifetime` was not issued here, whoever made its tag.
    pub fn open(&self, id: &str, now: u64, lifetime: u64) -> Result<([u8; 32], u64), Unusable> {
        let expires_at = expiry(id).ok_or(Unusable::Malformed)?;
        let mut tag = [0u8; 8];
        attest_common::hex::decode_into(&id[32..], &mut tag).map_err(|_| Unusable::Malformed)?;
        let want = self.tag(&id[..32]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], &want[..])) {
            return Err(Unusable::Malformed);
        }
        if now > expires_at {
            return Err(Unusable::Expired(expires_at));
        }
        if expires_at > now.saturating_add(lifetime) {
            return Err(Unusable::Overlong(expires_at));
        }
        Ok((self.nonce(id), expires_at))
    }

    /// The activation secret of an (EK, AK) pair: the secret MakeCredential seals for that
    /// AK's Name to that EK (DESIGN.md §3.2), derived with the activation key (a key of its
    /// own, kept outside the registry: `service::Service::with_activation_key`), not with the
    /// challenge key. Derived, not stored: registering the same pair
    /// again (an agent that lost its state, or anyone replaying its public parts) always
    /// gets a credential for the same secret and writes nothing, and only the TPM holding
    /// both keys can open it. Domain-separated from the nonces.
    pub fn activation_secret(&self, ek_fingerprint: &str, ak_name: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"activation");
        ctx.update(&(ek_fingerprint.len() as u32).to_be_bytes());
        ctx.update(ek_fingerprint.as_bytes());
        ctx.update(ak_name);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&ctx.sign().as_ref()[..32]);
        secret
    }

    fn tag(&self, body: &str) -> [u8; 8] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"id");
        ctx.update(body.as_bytes());
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&ctx.sign().as_ref()[..8]);
        tag
    }

    fn nonce(&self, id: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"nonce");
        ctx.update(id.as_bytes());
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&ctx.sign().as_ref()[..32]);
        nonce
    }
}

/// The expiry an id carries, when the id has this server's form (not yet authenticated).
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
        let (id, nonce) = key.issue(1_000, [1; 8]);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(key.open(&id, 999, 60), Ok((nonce, 1_000)));
        assert_eq!(key.open(&id, 1_000, 60), Ok((nonce, 1_000)));
        assert_eq!(key.open(&id, 1_001, 60), Err(Unusable::Expired(1_000)));
        let (other, other_nonce) = key.issue(1_000, [2; 8]);
        assert_ne!((id.as_str(), nonce), (other.as_str(), other_nonce));
    }

    #[test]
    fn an_expiry_past_now_plus_the_lifetime_is_not_ours() {
        let key = ChallengeKey::new(&[7; 48]);
        // Issued at 1_000 to live 60 s: usable until 1_060.
        let (id, nonce) = key.issue(1_060, [1; 8]);
        assert_eq!(key.open(&id, 1_000, 60), Ok((nonce, 1_060)));
        // The same key, ten years: a valid tag, and refused.
        let ten_years = 1_000 + 10 * 365 * 86_400;
        let (forged, _) = key.issue(ten_years, [1; 8]);
        assert_eq!(
            key.open(&forged, 1_000, 60),
            Err(Unusable::Overlong(ten_years))
        );
        // One second past the lifetime is already too long; at u64::MAX nothing overflows.
        let (just_over, _) = key.issue(1_061, [1; 8]);
        assert_eq!(
            key.open(&just_over, 1_000, 60),
            Err(Unusable::Overlong(1_061))
        );
        let (max, _) = key.issue(u64::MAX, [1; 8]);
        assert_eq!(
            key.open(&max, u64::MAX - 1, 60).map(|(_, at)| at),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn activation_secrets_are_per_ek_and_ak_and_per_key() {
        let key = ChallengeKey::new(&[7; 48]);
        let s = key.activation_secret("ab", b"name-1");
        assert_eq!(s, key.activation_secret("ab", b"name-1"));
        assert_ne!(s, key.activation_secret("ab", b"name-2"));
        assert_ne!(s, key.activation_secret("abn", b"ame-1"));
        assert_ne!(
            s,
            ChallengeKey::new(&[8; 48]).activation_secret("ab", b"name-1")
        );
        assert_ne!(&s[..], &key.nonce("ab")[..]);
    }

    #[test]
    fn ids_are_authenticated() {
        let key = ChallengeKey::new(&[7; 48]);
        let (id, _) = key.issue(1_000, [1; 8]);
        // Another server's id, and ours with a later expiry or other random bits.
        let (theirs, _) = ChallengeKey::new(&[8; 48]).issue(1_000, [1; 8]);
        let later = format!("{:016x}{}", 2_000u64, &id[16..]);
        let mut flipped = id.clone().into_bytes();
        flipped[20] = if flipped[20] == b'0' { b'1' } else { b'0' };
        for forged in [theirs, later, String::from_utf8(flipped).unwrap()] {
            assert_eq!(
                key.open(&forged, 0, u64::MAX),
                Err(Unusable::Malformed),
                "{forged}"
            );
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        let key = ChallengeKey::new(&[7; 48]);
        let (id, _) = key.issue(1_000, [1; 8]);
        for bad in [
            "",
            &id[1..],
            &format!("{id}0"),
            &id.to_uppercase(),
            &format!("{}g", &id[..47]),
            "ффффффффффффффффффффффффффффффффффффффффффффффф",
        ] {
            assert_eq!(key.open(bad, 0, 60), Err(Unusable::Malformed), "{bad:?}");
        }
    }
}
