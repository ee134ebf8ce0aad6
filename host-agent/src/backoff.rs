//! When to try again after a failed attestation: exponential backoff from 10 s to 300 s,
//! never sooner than the server's `Retry-After`.
//!
//! The delay is drawn from the upper half of the current step ("equal jitter"), so that a
//! fleet that lost its server at the same moment does not come back in lockstep.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            step: None,
        }
    }

    /// The delay after one more failure. `jitter` in [0, 1] picks a point in the upper half
    /// of the step; `retry_after` (the server's wish) is a floor.
    pub fn next(&mut self, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let step = match self.step {
            None => self.initial,
            Some(s) => s.saturating_mul(2).min(self.max),
        };
        self.step = Some(step);
        let jitter = jitter.clamp(0.0, 1.0);
        let delay = step / 2 + step.mul_f64(jitter) / 2;
        delay.max(retry_after.unwrap_or_default())
    }

    /// After a success: the next failure starts again from the initial delay.
    pub fn reset(&mut self) {
        self.step = None;
    }
}

/// A jitter value from the operating system's random source.
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_honours_retry_after_and_resets() {
        let mut b = Backoff::default();
        let steps: Vec<u64> = (0..8).map(|_| b.next(None, 1.0).as_secs()).collect();
        assert_eq!(steps, [10, 20, 40, 80, 160, 300, 300, 300]);
        b.reset();
        assert_eq!(b.next(None, 1.0), INITIAL);
        // Lower half of the jitter range: never below half the step.
        assert_eq!(b.next(None, 0.0), Duration::from_secs(10));
        // Retry-After longer than the step wins; shorter does not shorten it.
        assert_eq!(
            b.next(Some(Duration::from_secs(120)), 1.0),
            Duration::from_secs(120)
        );
        assert_eq!(
            b.next(Some(Duration::from_secs(1)), 1.0),
            Duration::from_secs(80)
        );
    }
}
