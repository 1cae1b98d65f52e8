//! Shopify's cost-based leaky bucket, mirrored in Redis so the whole fleet spends one budget.
//!
//! Every Shopify GraphQL response reports `extensions.cost.throttleStatus` (maximum, currently
//! available, restore rate). [`CostBucket::observe`] stores it; [`CostBucket::reserve`] refills the
//! stored level at the restore rate (on Redis's clock), takes a request's estimated cost from it
//! and says how long to wait when there is not enough. Workers therefore wait for the bucket to
//! refill instead of being answered `THROTTLED`. Shopify's own report always wins: every response
//! overwrites the estimate.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};

#[derive(Clone)]
pub struct CostBucket {
    key: String,
    conn: ConnectionManager,
}

/// `extensions.cost.throttleStatus` of a response.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    pub maximum_available: f64,
    pub currently_available: f64,
    pub restore_rate: f64,
}

impl ThrottleStatus {
    /// How long until `cost` points are available.
    pub fn wait_for(&self, cost: f64) -> Duration {
        let missing = (cost.min(self.maximum_available) - self.currently_available).max(0.0);
        if self.restore_rate <= 0.0 {
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64(missing / self.restore_rate)
    }
}

// KEYS[1] the bucket hash. ARGV: 'reserve', cost | 'observe', available, maximum, restore rate.
// Returns the wait in ms (reserve: 0 = taken).
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'observe' then
  redis.call('HSET', KEYS[1], 'available', ARGV[2], 'maximum', ARGV[3], 'rate', ARGV[4], 'at', now)
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return 0
end
local available = tonumber(redis.call('HGET', KEYS[1], 'available'))
if not available then return 0 end
local maximum = tonumber(redis.call('HGET', KEYS[1], 'maximum'))
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
local at = tonumber(redis.call('HGET', KEYS[1], 'at'))
local level = math.min(maximum, available + rate * (now - at) / 1000)
local cost = math.min(tonumber(ARGV[2]), maximum)
if level >= cost then
  redis.call('HSET', KEYS[1], 'available', tostring(level - cost), 'at', now)
  return 0
end
if rate <= 0 then return 1000 end
return math.ceil((cost - level) * 1000 / rate)
"#;

impl CostBucket {
    pub fn new(namespace: &str, name: &str, conn: ConnectionManager) -> Self {
        Self { key: format!("{namespace}:costbucket:{name}"), conn }
    }

    /// Takes `cost` points if the bucket (as last reported, refilled since) holds them; otherwise
    /// returns how long until it will. Unknown bucket (no response seen yet): go.
    pub async fn reserve(&self, cost: f64) -> redis::RedisResult<Duration> {
        let mut conn = self.conn.clone();
        let wait_ms: i64 = Script::new(SCRIPT).key(&self.key).arg("reserve").arg(cost).invoke_async(&mut conn).await?;
        Ok(Duration::from_millis(wait_ms.max(0) as u64))
    }

    /// Records the bucket as Shopify reported it.
    pub async fn observe(&self, status: &ThrottleStatus) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        Script::new(SCRIPT)
            .key(&self.key)
            .arg("observe")
            .arg(status.currently_available)
            .arg(status.maximum_available)
            .arg(status.restore_rate)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
    }
}
