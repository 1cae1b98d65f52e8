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

/// Work on the Shopify sync queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShopifyJob {
    /// Fetch and apply page `page` of sync `sync_id` (the cursor is in the sync row).
    SyncPage { sync_id: i64, page: i32 },
    /// Write an unsubscribe back to Shopify.
    WriteBack { writeback_id: i64 },
}
