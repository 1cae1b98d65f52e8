//! Redis connections: one multiplexed, auto-reconnecting connection per process.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::Config;

/// Connects with timeouts raised above redis-rs's 500 ms default, which apalis-redis issue #76
/// reports turning into fatal errors under load.
pub async fn connect(config: &Config) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(config.redis_url.expose_secret()).context("REDIS_URL is not a valid Redis URL")?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(6)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, manager_config).await.context("connecting to Redis")
}
