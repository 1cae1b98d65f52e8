//! The apalis-redis queues. One place decides their settings so the API, the scheduler and the
//! workers always agree on keys.

use std::time::Duration;

use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisStorage};

use crate::{
    Config,
    jobs::{Payload, Queue, SendChallengeEmail, SendTestEmail, ShopifyJob},
};

/// How often an idle worker looks for new jobs, renews its leases and re-enqueues the jobs of
/// dead workers. apalis-redis wakes an idle worker only on this beat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker silent for this many beats is dead and its jobs go back to the queue.
pub const MISSED_HEARTBEATS: usize = 10;

/// The apalis-redis settings of `queue`.
pub fn queue_config(queue: Queue, config: &Config) -> QueueConfig {
    QueueConfig::default()
        .queue(queue.redis_name(config))
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .batch_size(queue.concurrency(config).max(1))
}

/// Where `P` is pushed and fetched: its queue's storage.
pub fn storage<P: Payload>(config: &Config, conn: ConnectionManager) -> RedisStorage<P> {
    RedisStorage::new(conn).with_config(queue_config(P::QUEUE, config))
}

pub fn email_queue_config(config: &Config) -> QueueConfig {
    queue_config(Queue::Email, config)
}

pub fn email_storage(config: &Config, conn: ConnectionManager) -> RedisStorage<SendChallengeEmail> {
    storage(config, conn)
}

pub fn sync_queue_config(config: &Config) -> QueueConfig {
    queue_config(Queue::ShopifySync, config)
}

pub fn sync_storage(config: &Config, conn: ConnectionManager) -> RedisStorage<ShopifyJob> {
    storage(config, conn)
}

pub fn test_send_queue_config(config: &Config) -> QueueConfig {
    queue_config(Queue::TestSend, config)
}

pub fn test_send_storage(config: &Config, conn: ConnectionManager) -> RedisStorage<SendTestEmail> {
    storage(config, conn)
}

/// Jobs in the email queue's Redis structures (waiting, scheduled for retry, in flight).
pub async fn email_queue_depth(config: &Config, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    depth(Queue::Email, config, conn).await
}

/// Jobs in the Shopify sync queue's Redis structures.
pub async fn sync_queue_depth(config: &Config, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    depth(Queue::ShopifySync, config, conn).await
}

/// Jobs in `queue`'s Redis structures (waiting, scheduled for retry, in flight).
/// apalis-redis's own stats commands do not work in 1.0.0, so we count the keys ourselves.
pub async fn depth(queue: Queue, config: &Config, conn: &mut ConnectionManager) -> redis::RedisResult<QueueDepth> {
    queue_depth(&queue_config(queue, config), conn).await
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

/// Which of `task_ids` still exist in the queue (waiting, scheduled, in flight, or finished and
/// not yet swept). A pushed job that does not exist was lost (a Redis restart without
/// persistence, a crash between recording a push and making it) or ran without effect.
pub async fn jobs_exist(
    queue: &QueueConfig,
    conn: &mut ConnectionManager,
    task_ids: &[String],
) -> redis::RedisResult<Vec<bool>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    let data = queue.job_data_hash();
    let mut pipe = redis::pipe();
    for id in task_ids {
        pipe.hexists(&data, id);
    }
    pipe.query_async(conn).await
}

/// Finished jobs leave three things behind in apalis-redis 1.0 (their data, their `meta:<id>`
/// hash and an entry in the `done` or `dead` set), with no expiry. Removes up to `max` of them
/// per set in one atomic script; safe to run from any number of processes at any time, since a
/// job in `done`/`dead` is never fetched again.
const SWEEP_FINISHED: &str = r#"
local removed = 0
for s = 1, 2 do
  local ids = redis.call('SPOP', KEYS[s], tonumber(ARGV[2]))
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('DEL', ARGV[1] .. ':' .. id)
    removed = removed + 1
  end
end
return removed
"#;

/// Removes finished jobs (see [`SWEEP_FINISHED`]) until none is left; returns how many.
pub async fn sweep_finished(queue: &QueueConfig, conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
    const BATCH: u64 = 2_000;
    let script = redis::Script::new(SWEEP_FINISHED);
    let mut total = 0;
    loop {
        let removed: u64 = script
            .key(queue.done_jobs_set())
            .key(queue.dead_jobs_set())
            .key(queue.job_data_hash())
            .arg(queue.job_meta_hash())
            .arg(BATCH)
            .invoke_async(conn)
            .await?;
        total += removed;
        if removed < BATCH {
            return Ok(total);
        }
    }
}

/// apalis-redis keeps a `workers:metadata:<name>` hash for every worker process that ever ran,
/// and worker names are unique per process. Deletes those of workers that are no longer
/// registered (apalis removes a dead worker from the workers set when it re-enqueues its jobs).
pub async fn sweep_departed_workers(queue: &QueueConfig, conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
    let prefix = format!("{}:workers:metadata:", queue.queue.as_ref());
    let pattern = format!("{}*", escape_glob(&prefix));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(conn).await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut removed = 0;
    for key in keys {
        let name = &key[prefix.len()..];
        let registered: Option<f64> = redis::cmd("ZSCORE").arg(queue.workers_set()).arg(name).query_async(conn).await?;
        if registered.is_none() {
            removed += redis::cmd("DEL").arg(&key).query_async::<u64>(conn).await?;
        }
    }
    Ok(removed)
}

fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
