//! Fleet-wide rate limiting: a GCRA slot reservation in Redis (on Redis's clock), so all worker
//! processes together stay under a dependency's rate, with `governor` in each process in front
//! of it so one process never bursts past the fleet rate on its own.
//!
//! Back-pressure: when the dependency answers "throttled" (SES 429), [`FleetRateLimiter::throttled`]
//! halves the effective rate for the penalty period instead of retrying blindly.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::{Script, aio::ConnectionManager};

/// How long granted slots stay in the grants log: the fleet's recent sends, for operators (its
/// current rate) and for checking the limiter's own bound.
pub const GRANTS_KEPT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct FleetRateLimiter {
    key: String,
    penalty_key: String,
    grants_key: String,
    /// Requests per second for the whole fleet; `None` = unlimited.
    rate: Option<f64>,
    penalty: Duration,
    local: Option<Arc<DefaultDirectRateLimiter>>,
    conn: ConnectionManager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go after waiting this long (already waited when returned from `acquire`).
    Granted,
    /// The next free slot is further away than the caller wants to wait.
    TooFar { retry_after: Duration },
}

// KEYS[1] theoretical arrival time (ms), KEYS[2] penalty flag, KEYS[3] the grants log (a sorted
// set of granted slot times, kept for GRANTS_KEPT_MS). ARGV: interval ms, max wait ms, kept ms.
// Returns {granted 1/0, wait ms}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then interval = interval * 2 end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return {0, math.ceil(wait)} end
-- Kept to the microsecond: Lua's tostring keeps 14 digits, i.e. 0.1 ms of a time in ms, which let
-- two slots come 19.95 ms apart at 50/s.
redis.call('SET', KEYS[1], string.format('%.3f', tat + interval), 'PX', math.ceil(wait + interval + 60000))
-- Slots only grow (each is at least one interval after the last), so the slot names its entry.
local kept = tonumber(ARGV[3])
redis.call('ZADD', KEYS[3], tat, string.format('%.3f', tat))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - kept))
redis.call('PEXPIRE', KEYS[3], math.ceil(wait + kept))
return {1, math.ceil(wait)}
"#;

impl FleetRateLimiter {
    pub fn new(namespace: &str, name: &str, rate_per_second: f64, penalty: Duration, conn: ConnectionManager) -> Self {
        let rate = (rate_per_second > 0.0).then_some(rate_per_second);
        let local = rate.map(|r| {
            let per_second = NonZeroU32::new(r.ceil() as u32).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(Quota::per_second(per_second).allow_burst(NonZeroU32::MIN)))
        });
        Self {
            key: format!("{namespace}:ratelimit:{name}"),
            penalty_key: format!("{namespace}:ratelimit:{name}:penalty"),
            grants_key: format!("{namespace}:ratelimit:{name}:grants"),
            rate,
            penalty,
            local,
            conn,
        }
    }

    /// Waits for this process's share, then reserves the next fleet-wide slot and sleeps until
    /// it. Gives up (without reserving) when the slot is more than `max_wait` away.
    pub async fn acquire(&self, max_wait: Duration) -> redis::RedisResult<Reservation> {
        let Some(rate) = self.rate else { return Ok(Reservation::Granted) };
        if let Some(local) = &self.local {
            local.until_ready().await;
        }
        let interval_ms = 1000.0 / rate;
        let mut conn = self.conn.clone();
        let (granted, wait_ms): (i64, i64) = Script::new(SCRIPT)
            .key(&self.key)
            .key(&self.penalty_key)
            .key(&self.grants_key)
            .arg(interval_ms)
            .arg(max_wait.as_millis() as u64)
            .arg(GRANTS_KEPT.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let wait = Duration::from_millis(wait_ms.max(0) as u64);
        if granted == 0 {
            return Ok(Reservation::TooFar { retry_after: wait });
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(Reservation::Granted)
    }

    /// The slots granted to the whole fleet in the last [`GRANTS_KEPT`] (and those reserved ahead),
    /// in milliseconds on Redis's clock, oldest first. Empty when the rate is unlimited.
    pub async fn recent_grants(&self) -> redis::RedisResult<Vec<f64>> {
        let mut conn = self.conn.clone();
        let grants: Vec<(String, f64)> =
            redis::cmd("ZRANGE").arg(&self.grants_key).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut conn).await?;
        Ok(grants.into_iter().map(|(_, slot)| slot).collect())
    }

    /// The dependency said we are too fast: halve the rate for the penalty period.
    pub async fn throttled(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(&self.penalty_key)
            .arg(1)
            .arg("PX")
            .arg(self.penalty.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
    }
}
