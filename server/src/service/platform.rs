//! Time and randomness, given to the service from outside (as quinn-proto and rustls take
//! them): the service itself never reads the clock or the operating system's random number
//! generator, so its tests set the time instead of sleeping and every decision it makes can
//! be replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// Unpredictable bytes (machine ids, config tokens, challenge ids, credential secrets).
pub trait Random: Send + Sync {
    fn fill(&self, buf: &mut [u8]);
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The operating system's random number generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        // Without randomness no secret can be made safely; this is not recoverable.
        getrandom::fill(buf).expect("the operating system's random number generator failed");
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(now: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(now)))
    }

    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the service takes from the machine it runs on.
#[derive(Clone)]
pub struct Platform {
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl Default for Platform {
    /// The wall clock and the operating system's randomness.
    fn default() -> Platform {
        Platform {
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
        }
    }
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Platform(..)")
    }
}

impl Platform {
    /// The wall clock and `clock`'s time otherwise (tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Platform {
        Platform {
            clock,
            ..Platform::default()
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.random.fill(&mut b);
        b
    }

    /// A random (version 4) UUID.
    pub fn machine_id(&self) -> String {
        let mut b: [u8; 16] = self.bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = crate::audit::hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// A config token: 256 random bits, hex.
    pub fn token(&self) -> String {
        crate::audit::hex(&self.bytes::<32>())
    }

    /// The randomness as `attest-common`'s entropy source (MakeCredential, certificates).
    pub fn entropy(&self) -> Entropy<'_> {
        Entropy(self.random.as_ref())
    }
}

/// [`Random`] as `attest_common`'s entropy source.
pub struct Entropy<'a>(&'a dyn Random);

impl attest_common::tpm::credential::Entropy for Entropy<'_> {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_version_4_uuids() {
        let id = Platform::default().machine_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        let platform = Platform::with_clock(clock.clone());
        assert_eq!(platform.now(), 1_000);
        clock.advance(61);
        assert_eq!(platform.now(), 1_061);
    }
}
