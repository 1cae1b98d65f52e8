//! The apalis-redis queues. One place decides their settings so the API, the scheduler and the
//! workers always agree on keys.

use std::time::Duration;

use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisStorage};

use crate::{Config, jobs};

/// How often an idle worker looks for new jobs, renews its leases and re-enqueues the jobs of
/// dead workers. apalis-redis wakes an idle worker only on this beat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker silent for this many beats is dead and its jobs go back to the queue.
pub const MISSED_HEARTBEATS: usize = 10;

pub fn email_queue_config(config: &Config) -> QueueConfig {
    QueueConfig::default()
        .queue(jobs::email_queue(config))
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .batch_size(config.email_concurrency.max(1))
}

pub fn email_storage(config: &Config, conn: ConnectionManager) -> RedisStorage<jobs::SendChallengeEmail> {
    RedisStorage::new(conn).with_config(email_queue_config(config))
}

pub fn sync_queue_config(config: &Config) -> QueueConfig {
    QueueConfig::default()
        .queue(jobs::sync_queue(config))
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .batch_size(config.sync_concurrency.max(1))
}

pub fn sync_storage(config: &Config, conn: ConnectionManager) -> RedisStorage<jobs::ShopifyJob> {
    RedisStorage::new(conn).with_config(sync_queue_config(config))
}

/// Jobs in the email queue's Redis structures (waiting, scheduled for retry, in flight).
/// apalis-redis's own stats commands do not work in 1.0.0, so we count the keys ourselves.
pub async fn email_queue_depth(config: &Config, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    queue_depth(&email_queue_config(config), conn).await
}

/// Jobs in the Shopify sync queue's Redis structures.
pub async fn sync_queue_depth(config: &Config, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    queue_depth(&sync_queue_config(config), conn).await
}

async fn queue_depth(queue: &QueueConfig, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    let (waiting, scheduled, workers): (u64, u64, Vec<String>) = redis::pipe()
        .llen(queue.active_jobs_list())
        .zcard(queue.scheduled_jobs_set())
        .zrange(queue.workers_set(), 0, -1)
        .query_async(conn)
        .await?;
    // Members of the workers set are the workers' in-flight set keys.
    let mut pipe = redis::pipe();
    for key in &workers {
        pipe.scard(key);
    }
    let inflight: Vec<u64> = if workers.is_empty() { Vec::new() } else { pipe.query_async(conn).await? };
    Ok(QueueDepth { waiting, scheduled, inflight: inflight.iter().sum() })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    pub waiting: u64,
    pub scheduled: u64,
    pub inflight: u64,
}
