//! Reconnect delays: exponential, capped, with jitter.
//!
//! Jitter matters when several bridges (or one bridge with several PBX links) lose the same
//! Asterisk at once: without it they would all reconnect in lock-step after a restart.
//! "Equal jitter": each delay is uniformly drawn from `[d/2, d]` where `d` doubles per attempt
//! up to the cap, so the delay never collapses to ~0 and never exceeds the cap.

use rand::Rng;
use std::time::Duration;

/// Exponential back-off with equal jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next_base: Duration,
    attempts: u32,
}

impl Backoff {
    /// `initial` is the first delay's upper bound; `max` caps every delay.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next_base: initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base;
        self.next_base = (base * 2).min(self.max);
        self.attempts += 1;
        let half = base / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the initial delay (after a session that got fully established).
    pub fn reset(&mut self) {
        self.next_base = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps_with_jitter_inside_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for base in bases {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base),
                "delay {d:?} outside [{}, {base}] ms",
                base / 2
            );
        }
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "no jitter: {seen:?}");
    }
}
