//! Job payloads and queue names. Payloads carry ids only: the worker reads the current state
//! from Postgres, so a job is safe to run twice and never carries stale or personal data.

use serde::{Deserialize, Serialize};

use crate::Config;

/// Send one subscriber's weekly email: the delivery row says what and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendChallengeEmail {
    pub delivery_id: i64,
}

/// Queue (apalis-redis namespace) for email sending.
pub fn email_queue(config: &Config) -> String {
    format!("{}:email", config.redis_namespace)
}

/// Queue for Shopify sync work: separate from email so one cannot starve the other.
pub fn sync_queue(config: &Config) -> String {
    format!("{}:shopify-sync", config.redis_namespace)
}
