//! Resilience around SES and Shopify, shared by the whole worker fleet through Redis:
//! a circuit breaker per dependency, a fleet-wide rate limiter per dependency, and the retry
//! policy (exponential backoff with full jitter, capped).

pub mod breaker;
pub mod cost_bucket;
pub mod rate_limit;
pub mod retry;
