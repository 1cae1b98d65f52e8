//! Retry policy: exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
//! and Jitter"), capped, with an attempt budget per job kind. Delays are computed here and the
//! retry is scheduled in the delivery ledger, so neither the AWS SDK's retries (disabled) nor
//! apalis-redis's fixed backend retries decide.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts allowed before the job is dead-lettered (the first attempt counts).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The ceiling of the delay after `attempt` (1-based) failed: `base × 2^(attempt-1)`, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Full jitter: uniformly random in `[0, ceiling]`, so retries of many jobs spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64))
    }

    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_full_jitter_and_a_cap() {
        let policy =
            RetryPolicy { max_attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(3), Duration::from_millis(400));
        assert_eq!(policy.ceiling(10), Duration::from_secs(1));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
        let delays: Vec<_> = (0..200).map(|_| policy.delay(4)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "jittered, not fixed");
        assert!(!policy.exhausted(4) && policy.exhausted(5));
    }
}
