//! A circuit breaker shared by the whole fleet through Redis (one hash per dependency), so that
//! when SES or Shopify is down, no worker keeps calling it.
//!
//! closed ──(threshold consecutive transient failures)──▶ open ──(cool-down over)──▶ half-open
//! half-open lets at most `probes` calls through per cool-down interval; a success closes the
//! breaker, a failure opens it again. All transitions run in one Lua script on Redis's clock,
//! so workers on different machines agree.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};

#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before probing, and the probe interval when half-open.
    pub cool_down: Duration,
    /// Calls let through per interval while half-open.
    pub probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead as a probe, and report the result.
    Probe,
    /// Open: do not call; try again after this long.
    Denied { retry_after: Duration },
}

#[derive(Clone)]
pub struct CircuitBreaker {
    key: String,
    name: &'static str,
    settings: BreakerSettings,
    conn: ConnectionManager,
}

// KEYS[1] the breaker hash. ARGV: op (allow|success|failure), threshold, cool-down ms, probes.
// Returns {decision (1 allowed, 2 probe, 0 denied, 3 recorded), retry_after_ms, state, transitioned}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, threshold, cooldown, probes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local used = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
local function set(s, f, u, p) redis.call('HSET', KEYS[1], 'state', s, 'failures', f, 'until', u, 'probes', p) end
if op == 'allow' then
  if state == 'closed' then return {1, 0, state, 0} end
  local transitioned = 0
  if now >= until_ms then
    -- a new probe interval
    if state == 'open' then transitioned = 1 end
    state = 'half_open'; until_ms = now + cooldown; used = 0
  end
  if state == 'half_open' and used < probes then
    set(state, failures, until_ms, used + 1)
    return {2, 0, state, transitioned}
  end
  set(state, failures, until_ms, used)
  return {0, until_ms - now, state, transitioned}
elseif op == 'success' then
  if state ~= 'closed' then set('closed', 0, 0, 0); return {3, 0, 'closed', 1} end
  if failures > 0 then redis.call('HSET', KEYS[1], 'failures', 0) end
  return {3, 0, state, 0}
else
  if state == 'half_open' then set('open', failures + 1, now + cooldown, 0); return {3, 0, 'open', 1} end
  if state == 'open' then return {3, 0, state, 0} end
  failures = failures + 1
  if failures >= threshold then set('open', failures, now + cooldown, 0); return {3, 0, 'open', 1} end
  redis.call('HSET', KEYS[1], 'failures', failures)
  return {3, 0, state, 0}
end
"#;

impl CircuitBreaker {
    /// `name` is the dependency (`ses`, `shopify`); `namespace` the deployment's Redis prefix.
    pub fn new(namespace: &str, name: &'static str, settings: BreakerSettings, conn: ConnectionManager) -> Self {
        Self { key: format!("{namespace}:breaker:{name}"), name, settings, conn }
    }

    async fn invoke(&self, op: &str) -> redis::RedisResult<(i64, i64, String, i64)> {
        let mut conn = self.conn.clone();
        let result: (i64, i64, String, i64) = Script::new(SCRIPT)
            .key(&self.key)
            .arg(op)
            .arg(self.settings.failure_threshold)
            .arg(self.settings.cool_down.as_millis() as u64)
            .arg(self.settings.probes)
            .invoke_async(&mut conn)
            .await?;
        if result.3 == 1 {
            tracing::warn!(dependency = self.name, state = %result.2, "circuit breaker changed state");
            metrics::counter!("levelup_breaker_transitions_total", "dependency" => self.name, "to" => result.2.clone())
                .increment(1);
        }
        let gauge = match result.2.as_str() {
            "closed" => 0.0,
            "half_open" => 1.0,
            _ => 2.0,
        };
        metrics::gauge!("levelup_breaker_state", "dependency" => self.name).set(gauge);
        Ok(result)
    }

    /// May we call the dependency now?
    pub async fn permit(&self) -> redis::RedisResult<Permit> {
        let (decision, retry_after_ms, _, _) = self.invoke("allow").await?;
        Ok(match decision {
            1 => Permit::Allowed,
            2 => Permit::Probe,
            _ => Permit::Denied { retry_after: Duration::from_millis(retry_after_ms.max(1) as u64) },
        })
    }

    pub async fn record_success(&self) -> redis::RedisResult<()> {
        self.invoke("success").await.map(drop)
    }

    /// Records a transient failure of the dependency (5xx, timeout, connection error).
    pub async fn record_failure(&self) -> redis::RedisResult<()> {
        self.invoke("failure").await.map(drop)
    }

    pub async fn state(&self) -> redis::RedisResult<String> {
        let mut conn = self.conn.clone();
        let state: Option<String> = redis::cmd("HGET").arg(&self.key).arg("state").query_async(&mut conn).await?;
        Ok(state.unwrap_or_else(|| "closed".into()))
    }
}
