//! Configuration from the environment, parsed once at start-up into a typed struct.
//!
//! Every variable has a documented default (README, "Configuration"). A malformed value stops
//! start-up with one line naming the variable. Secrets are wrapped in [`SecretString`] so they
//! never reach a log line or a `Debug` print.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// Start-up configuration error: always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransportKind {
    /// Write each message as an `.eml` file in this folder (and record it): the default.
    Outbox { dir: PathBuf },
    /// Send through AWS SES v2.
    Ses,
}

#[derive(Debug, Clone)]
pub struct SesConfig {
    pub region: String,
    /// Overrides the SES endpoint (a local fake in tests); `None` uses AWS's.
    pub endpoint_url: Option<String>,
    pub configuration_set: Option<String>,
    pub timeout: Duration,
}

/// The Shopify store LevelUp syncs subscribers from (`None` in [`Config::shopify`]: no store).
#[derive(Debug, Clone)]
pub struct ShopifyConfig {
    /// `https://{shop}/admin/api/{version}/graphql.json` (or a local fake's URL).
    pub graphql_url: url::Url,
    pub access_token: SecretString,
    /// When set, only buyers of this product (recorded from `orders/paid` webhooks) are subscribers.
    pub product_gid: Option<String>,
    pub timeout: Duration,
    /// Customers per page (Shopify allows at most 250).
    pub page_size: u32,
    /// Stores with more subscribed customers than this are exported with a bulk operation
    /// (cursor pagination stops at 25,000 objects).
    pub bulk_threshold: u64,
    /// How often a running bulk operation is polled.
    pub bulk_poll_interval: Duration,
    /// Shopify requests per second for the whole fleet, on top of the cost-based bucket (`None`: unlimited).
    pub max_requests_per_second: Option<f64>,
}

/// The bounce and complaint rates at which a run pauses itself (SES reviews an account at 5%
/// bounces / 0.1% complaints and pauses its sending at 10% / 0.5%).
#[derive(Debug, Clone, Copy)]
pub struct ReputationConfig {
    /// Permanent bounces ÷ sends above which the run pauses (`LEVELUP_PAUSE_BOUNCE_RATE`).
    pub pause_bounce_rate: f64,
    /// Complaints ÷ sends above which the run pauses (`LEVELUP_PAUSE_COMPLAINT_RATE`).
    pub pause_complaint_rate: f64,
    /// Rates are judged only once the run has sent this many (`LEVELUP_PAUSE_MIN_SENDS`).
    pub pause_min_sends: i64,
}

/// How the subscriber sync runs (it needs [`ShopifyConfig`] to do anything).
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// When the scheduler starts a full sync (default daily at 03:00 in the schedule's time zone).
    pub cron: String,
    /// A page fetch claimed longer ago than this is presumed abandoned (its worker died).
    pub claim_timeout: Duration,
    /// Transient failures (5xx, timeouts) of one page or write-back before it gives up.
    pub retry: crate::resilience::retry::RetryPolicy,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub redis_url: SecretString,
    /// Prefix of every Redis key LevelUp writes; lets several deployments (or tests) share a Redis.
    pub redis_namespace: String,
    pub api_bind: SocketAddr,
    /// Base URL of the API as subscribers reach it; used to build links in emails.
    pub public_base_url: url::Url,
    pub admin_api_key: Option<SecretString>,
    /// HMAC keys for subscriber link tokens, `(key id, key)`; the first one signs.
    pub token_keys: Vec<(String, SecretString)>,
    pub token_ttl: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub mail_from: String,
    pub mail_transport: MailTransportKind,
    pub ses: SesConfig,
    pub schedule_cron: String,
    pub schedule_timezone: chrono_tz::Tz,
    pub worker_name: String,
    pub email_concurrency: usize,
    pub sync_concurrency: usize,
    pub shutdown_grace: Duration,
    /// API only: after SIGTERM, how long `/readyz` answers 503 while every other request is still
    /// served (each connection closed after its response), so load balancers take the replica
    /// out of rotation before it stops accepting connections. Then `shutdown_grace` applies.
    pub drain_period: Duration,
    /// A delivery claimed longer ago than this is presumed abandoned (its worker died) and may be
    /// claimed again, flagged ambiguous. Must exceed the SES timeout.
    pub claim_timeout: Duration,
    /// At most this many email jobs of a run are outstanding in Redis at once.
    pub queue_window: i64,
    /// Subscribers per fan-out page (one transaction each).
    pub fanout_page_size: i64,
    /// How often the scheduler checks for runs to start, resume or feed.
    pub scheduler_tick: Duration,
    /// A pushed job unfinished after this long is pushed again (its job may have been lost).
    pub repush_after: Duration,
    /// SES sends per second for the whole fleet (`None`: unlimited).
    pub ses_max_send_rate: Option<f64>,
    /// A delivery not sent this long after it became due is skipped as `expired`.
    pub send_deadline: Duration,
    /// When a run pauses itself to protect the sender's reputation.
    pub reputation: ReputationConfig,
    /// How long a throttling answer halves the send rate.
    pub throttle_penalty: Duration,
    pub email_retry: crate::resilience::retry::RetryPolicy,
    pub breaker: crate::resilience::breaker::BreakerSettings,
    /// Where the worker and scheduler serve Prometheus metrics (`None`: not served).
    pub metrics_bind: Option<SocketAddr>,
    /// Distinct challenges passed at a level that move a subscriber up one level.
    pub promotion_passes: i64,
    /// API requests per second per client (credential or address), and the burst allowed.
    pub api_rate_per_second: u32,
    pub api_burst: u32,
    /// API requests handled at once; more are shed with 503. Only handlers hold a slot: request
    /// bodies are read (within `api_body_timeout`) before the slot is taken.
    pub api_max_in_flight: usize,
    /// A request's headers (or, on a kept-alive connection, the next request) must arrive within this.
    pub api_header_timeout: Duration,
    /// A request's body must arrive within this once its headers have (else 408).
    pub api_body_timeout: Duration,
    /// Open connections per client address; more are closed at once.
    pub api_max_connections_per_client: usize,
    /// Webhook requests per second per client address, and the burst allowed.
    pub webhook_rate_per_second: u32,
    pub webhook_burst: u32,
    /// Test sends per operator per minute (`POST /v1/admin/challenges/{id}/test-send`).
    pub test_sends_per_minute: i64,
    pub shopify: Option<ShopifyConfig>,
    pub sync: SyncConfig,
    /// Shopify app secret that signs webhooks (`None`: the webhook endpoint is disabled).
    pub shopify_webhook_secret: Option<SecretString>,
    /// The store webhooks must come from (`X-Shopify-Shop-Domain`, and the `shop_domain` of
    /// redaction bodies), lower case; `None`: the webhook endpoint is disabled.
    pub shopify_shop_domain: Option<String>,
    /// URL prefixes trusted for SNS signing certificates besides `https://sns.<region>.amazonaws.com/`
    /// (for a local fake; empty in production).
    pub sns_trusted_prefixes: Vec<String>,
    /// The SNS topics whose messages the SES webhook accepts (empty: the endpoint answers 503).
    /// A valid signature only proves a message came from SNS, not from *our* topic.
    pub sns_topic_arns: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        let outbox_dir = PathBuf::from(env.string("LEVELUP_OUTBOX_DIR", "var/outbox"));
        let mail_transport = match env.string("LEVELUP_MAIL_TRANSPORT", "outbox").as_str() {
            "outbox" => MailTransportKind::Outbox { dir: outbox_dir },
            "ses" => MailTransportKind::Ses,
            other => {
                return Err(env.error("LEVELUP_MAIL_TRANSPORT", format!("expected `outbox` or `ses`, got `{other}`")));
            }
        };
        let log_format = match env.string("LEVELUP_LOG_FORMAT", "human").as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => return Err(env.error("LEVELUP_LOG_FORMAT", format!("expected `human` or `json`, got `{other}`"))),
        };
        let schedule_cron = env.string("LEVELUP_SCHEDULE_CRON", "0 0 9 * * Mon");
        if let Err(err) = schedule_cron.parse::<cron::Schedule>() {
            return Err(env.error(
                "LEVELUP_SCHEDULE_CRON",
                format!("not a cron expression (sec min hour day month weekday): {err}"),
            ));
        }
        let schedule_timezone = env
            .string("LEVELUP_SCHEDULE_TIMEZONE", "UTC")
            .parse::<chrono_tz::Tz>()
            .map_err(|err| env.error("LEVELUP_SCHEDULE_TIMEZONE", format!("not an IANA time zone: {err}")))?;
        let mut public_base_url = url::Url::parse(&env.string("LEVELUP_PUBLIC_BASE_URL", "http://localhost:8080"))
            .map_err(|err| env.error("LEVELUP_PUBLIC_BASE_URL", format!("not an absolute URL: {err}")))?;
        if public_base_url.cannot_be_a_base()
            || public_base_url.query().is_some()
            || public_base_url.fragment().is_some()
        {
            return Err(env.error("LEVELUP_PUBLIC_BASE_URL", "must be an http(s) URL without query or fragment".into()));
        }
        // Links are joined onto the base: `http://host/levelup` means the directory `/levelup/`,
        // not a file `levelup` in `/` (which `Url::join` would drop).
        if !public_base_url.path().ends_with('/') {
            let path = format!("{}/", public_base_url.path());
            public_base_url.set_path(&path);
        }
        let redis_namespace = env.string("LEVELUP_REDIS_NAMESPACE", "levelup");
        if redis_namespace.is_empty() || redis_namespace.contains(char::is_whitespace) {
            return Err(env.error("LEVELUP_REDIS_NAMESPACE", "must be non-empty without spaces".into()));
        }
        let sync_cron = env.string("LEVELUP_SYNC_CRON", "0 0 3 * * *");
        if let Err(err) = sync_cron.parse::<cron::Schedule>() {
            return Err(env
                .error("LEVELUP_SYNC_CRON", format!("not a cron expression (sec min hour day month weekday): {err}")));
        }
        let shopify = env.shopify()?;
        let config = Self {
            shopify,
            sync: SyncConfig {
                cron: sync_cron,
                claim_timeout: Duration::from_secs(env.parse("LEVELUP_SYNC_CLAIM_TIMEOUT_SECS", 120, positive)?),
                retry: crate::resilience::retry::RetryPolicy {
                    max_attempts: env.parse("LEVELUP_SYNC_MAX_ATTEMPTS", 6, positive)?,
                    base_delay: Duration::from_millis(env.parse("LEVELUP_RETRY_BASE_MS", 1000, positive)?),
                    max_delay: Duration::from_millis(env.parse("LEVELUP_SYNC_RETRY_MAX_MS", 60_000, positive)?),
                },
            },
            database_url: env.secret("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/levelup"),
            database_max_connections: env.parse("LEVELUP_DATABASE_MAX_CONNECTIONS", 10, positive)?,
            redis_url: env.secret("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_namespace,
            api_bind: env.parse("LEVELUP_API_BIND", "127.0.0.1:8080".parse().expect("valid default"), any)?,
            public_base_url,
            admin_api_key: env.optional_secret("LEVELUP_ADMIN_API_KEY", 16)?,
            token_keys: env.token_keys("LEVELUP_TOKEN_KEYS")?,
            token_ttl: Duration::from_secs(env.parse("LEVELUP_TOKEN_TTL_SECS", 30 * 24 * 3600, positive)?),
            log_format,
            log_filter: env.string("LEVELUP_LOG", "info"),
            mail_from: env.string("LEVELUP_MAIL_FROM", "LevelUp <challenges@levelup.localhost>"),
            mail_transport,
            ses: SesConfig {
                region: env.string("LEVELUP_SES_REGION", "us-east-1"),
                endpoint_url: env.optional_string("LEVELUP_SES_ENDPOINT_URL"),
                configuration_set: env.optional_string("LEVELUP_SES_CONFIGURATION_SET"),
                timeout: Duration::from_millis(env.parse("LEVELUP_SES_TIMEOUT_MS", 10_000, positive)?),
            },
            schedule_cron,
            schedule_timezone,
            worker_name: env.optional_string("LEVELUP_WORKER_NAME").unwrap_or_else(default_worker_name),
            email_concurrency: env.parse("LEVELUP_EMAIL_CONCURRENCY", 16, positive)?,
            sync_concurrency: env.parse("LEVELUP_SYNC_CONCURRENCY", 2, positive)?,
            shutdown_grace: Duration::from_secs(env.parse("LEVELUP_SHUTDOWN_GRACE_SECS", 30, any)?),
            drain_period: Duration::from_secs(env.parse("LEVELUP_DRAIN_SECS", 15, any)?),
            claim_timeout: Duration::from_secs(env.parse("LEVELUP_CLAIM_TIMEOUT_SECS", 60, positive)?),
            queue_window: env.parse("LEVELUP_QUEUE_WINDOW", 2000, |v: &i64| (1..=7000).contains(v))?,
            fanout_page_size: env.parse("LEVELUP_FANOUT_PAGE_SIZE", 1000, |v: &i64| (1..=10_000).contains(v))?,
            scheduler_tick: Duration::from_millis(env.parse("LEVELUP_SCHEDULER_TICK_MS", 1000, positive)?),
            repush_after: Duration::from_secs(env.parse("LEVELUP_REPUSH_AFTER_SECS", 60, positive)?),
            ses_max_send_rate: Some(
                env.parse("LEVELUP_SES_MAX_SEND_RATE", 14.0, |v: &f64| *v >= 0.0 && v.is_finite())?,
            )
            .filter(|rate| *rate > 0.0),
            throttle_penalty: Duration::from_secs(env.parse("LEVELUP_THROTTLE_PENALTY_SECS", 30, any)?),
            send_deadline: Duration::from_secs_f64(
                env.parse("LEVELUP_SEND_DEADLINE_HOURS", 24.0, |h: &f64| *h > 0.0 && *h <= 24.0 * 365.0)? * 3600.0,
            ),
            reputation: ReputationConfig {
                pause_bounce_rate: env.rate("LEVELUP_PAUSE_BOUNCE_RATE", 0.02)?,
                pause_complaint_rate: env.rate("LEVELUP_PAUSE_COMPLAINT_RATE", 0.0005)?,
                pause_min_sends: env.parse("LEVELUP_PAUSE_MIN_SENDS", 500, positive)?,
            },
            email_retry: crate::resilience::retry::RetryPolicy {
                max_attempts: env.parse("LEVELUP_EMAIL_MAX_ATTEMPTS", 8, positive)?,
                base_delay: Duration::from_millis(env.parse("LEVELUP_RETRY_BASE_MS", 1000, positive)?),
                max_delay: Duration::from_millis(env.parse("LEVELUP_RETRY_MAX_MS", 300_000, positive)?),
            },
            promotion_passes: env.parse("LEVELUP_PROMOTION_PASSES", 3, positive)?,
            api_rate_per_second: env.parse("LEVELUP_API_RATE_PER_SECOND", 20, positive)?,
            api_burst: env.parse("LEVELUP_API_BURST", 40, positive)?,
            api_max_in_flight: env.parse("LEVELUP_API_MAX_IN_FLIGHT", 256, positive)?,
            api_header_timeout: Duration::from_secs(env.parse("LEVELUP_API_HEADER_TIMEOUT_SECS", 10, positive)?),
            api_body_timeout: Duration::from_secs(env.parse("LEVELUP_API_BODY_TIMEOUT_SECS", 10, positive)?),
            api_max_connections_per_client: env.parse("LEVELUP_API_MAX_CONNECTIONS_PER_CLIENT", 64, positive)?,
            webhook_rate_per_second: env.parse("LEVELUP_WEBHOOK_RATE_PER_SECOND", 50, positive)?,
            webhook_burst: env.parse("LEVELUP_WEBHOOK_BURST", 200, positive)?,
            test_sends_per_minute: env.parse("LEVELUP_TEST_SENDS_PER_MINUTE", 5, |v: &i64| (1..=1000).contains(v))?,
            shopify_webhook_secret: env.optional_secret("LEVELUP_SHOPIFY_WEBHOOK_SECRET", 8)?,
            shopify_shop_domain: env.shopify_shop_domain()?,
            sns_trusted_prefixes: env
                .optional_string("LEVELUP_SNS_TRUSTED_CERT_PREFIXES")
                .map(|raw| raw.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect())
                .unwrap_or_default(),
            sns_topic_arns: env.sns_topic_arns("LEVELUP_SNS_TOPIC_ARNS")?,
            metrics_bind: match env.optional_string("LEVELUP_METRICS_BIND") {
                None => None,
                Some(raw) => Some(
                    raw.parse().map_err(|_| env.error("LEVELUP_METRICS_BIND", format!("invalid address `{raw}`")))?,
                ),
            },
            breaker: crate::resilience::breaker::BreakerSettings {
                failure_threshold: env.parse("LEVELUP_BREAKER_THRESHOLD", 5, positive)?,
                cool_down: Duration::from_millis(env.parse("LEVELUP_BREAKER_COOLDOWN_MS", 10_000, positive)?),
                probes: env.parse("LEVELUP_BREAKER_PROBES", 1, positive)?,
            },
        };
        // A claim must outlive the send it covers, or a slow send is re-claimed and duplicated.
        if config.claim_timeout <= config.ses.timeout {
            return Err(env.error(
                "LEVELUP_CLAIM_TIMEOUT_SECS",
                format!(
                    "must exceed LEVELUP_SES_TIMEOUT_MS ({} ms), got {} s",
                    config.ses.timeout.as_millis(),
                    config.claim_timeout.as_secs()
                ),
            ));
        }
        Ok(config)
    }

    pub fn admin_api_key_matches(&self, presented: &str) -> bool {
        use subtle_eq::constant_time_eq;
        self.admin_api_key
            .as_ref()
            .is_some_and(|key| constant_time_eq(key.expose_secret().as_bytes(), presented.as_bytes()))
    }
}

mod subtle_eq {
    /// Compares without an early exit so response time does not reveal how much of a key matched.
    pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Unique per process, so apalis never sees two live workers with one name.
fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() { "worker" } else { host };
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn is_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7 && b[4] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit())
}

fn positive<T: PartialOrd + Default>(value: &T) -> bool {
    *value > T::default()
}

fn any<T>(_: &T) -> bool {
    true
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn error(&self, var: &'static str, message: String) -> ConfigError {
        ConfigError { var, message }
    }

    fn optional_string(&self, var: &str) -> Option<String> {
        (self.lookup)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.optional_string(var).unwrap_or_else(|| default.to_owned())
    }

    fn secret(&self, var: &str, default: &str) -> SecretString {
        SecretString::from(self.string(var, default))
    }

    fn optional_secret(&self, var: &'static str, min_len: usize) -> Result<Option<SecretString>, ConfigError> {
        match self.optional_string(var) {
            None => Ok(None),
            Some(v) if v.len() < min_len => Err(self.error(var, format!("must be at least {min_len} characters"))),
            Some(v) => Ok(Some(SecretString::from(v))),
        }
    }

    /// A fraction in (0, 1], written `0.02` or `2%`.
    fn rate(&self, var: &'static str, default: f64) -> Result<f64, ConfigError> {
        let Some(raw) = self.optional_string(var) else { return Ok(default) };
        let value = match raw.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => raw.parse::<f64>(),
        };
        match value {
            Ok(rate) if rate > 0.0 && rate <= 1.0 => Ok(rate),
            _ => Err(self.error(var, format!("expected a rate such as `0.02` or `2%`, got `{raw}`"))),
        }
    }

    fn parse<T>(&self, var: &'static str, default: T, valid: fn(&T) -> bool) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
    {
        let Some(raw) = self.optional_string(var) else { return Ok(default) };
        match raw.parse::<T>() {
            Ok(value) if valid(&value) => Ok(value),
            _ => Err(self.error(var, format!("invalid value `{raw}`"))),
        }
    }

    /// `LEVELUP_SHOPIFY_SHOP` and `LEVELUP_SHOPIFY_ACCESS_TOKEN` together, or neither.
    fn shopify(&self) -> Result<Option<ShopifyConfig>, ConfigError> {
        let shop = self.optional_string("LEVELUP_SHOPIFY_SHOP");
        let token = self.optional_secret("LEVELUP_SHOPIFY_ACCESS_TOKEN", 8)?;
        let (shop, access_token) = match (shop, token) {
            (None, None) => return Ok(None),
            (Some(shop), Some(token)) => (shop, token),
            (Some(_), None) => {
                return Err(
                    self.error("LEVELUP_SHOPIFY_ACCESS_TOKEN", "required when LEVELUP_SHOPIFY_SHOP is set".into())
                );
            }
            (None, Some(_)) => {
                return Err(
                    self.error("LEVELUP_SHOPIFY_SHOP", "required when LEVELUP_SHOPIFY_ACCESS_TOKEN is set".into())
                );
            }
        };
        let version = self.string("LEVELUP_SHOPIFY_API_VERSION", "2025-10");
        if !is_api_version(&version) {
            return Err(self.error("LEVELUP_SHOPIFY_API_VERSION", format!("expected YYYY-MM, got `{version}`")));
        }
        // `my-store.myshopify.com`, or a full base URL (a local fake, a proxy).
        let base = if shop.starts_with("http://") || shop.starts_with("https://") {
            shop.trim_end_matches('/').to_owned()
        } else if shop.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') && shop.contains('.') {
            format!("https://{shop}")
        } else {
            return Err(
                self.error("LEVELUP_SHOPIFY_SHOP", format!("expected `my-store.myshopify.com` or a URL, got `{shop}`"))
            );
        };
        let graphql_url = url::Url::parse(&format!("{base}/admin/api/{version}/graphql.json"))
            .map_err(|err| self.error("LEVELUP_SHOPIFY_SHOP", format!("not a valid shop address: {err}")))?;
        let product_gid = match self.optional_string("LEVELUP_SHOPIFY_PRODUCT_ID") {
            None => None,
            Some(raw) => Some(crate::shopify::gid("Product", &raw).ok_or_else(|| {
                self.error("LEVELUP_SHOPIFY_PRODUCT_ID", format!("expected a product id, got `{raw}`"))
            })?),
        };
        Ok(Some(ShopifyConfig {
            graphql_url,
            access_token,
            product_gid,
            timeout: Duration::from_millis(self.parse("LEVELUP_SHOPIFY_TIMEOUT_MS", 10_000, positive)?),
            page_size: self.parse("LEVELUP_SHOPIFY_PAGE_SIZE", 250, |v: &u32| (1..=250).contains(v))?,
            bulk_threshold: self.parse("LEVELUP_SHOPIFY_BULK_THRESHOLD", 25_000, |v: &u64| *v <= 25_000)?,
            bulk_poll_interval: Duration::from_millis(self.parse("LEVELUP_SHOPIFY_BULK_POLL_MS", 2_000, positive)?),
            max_requests_per_second: Some(
                self.parse("LEVELUP_SHOPIFY_MAX_REQUESTS_PER_SECOND", 10.0, |v: &f64| *v >= 0.0 && v.is_finite())?,
            )
            .filter(|rate| *rate > 0.0),
        }))
    }

    /// `LEVELUP_SHOPIFY_SHOP_DOMAIN`, else `LEVELUP_SHOPIFY_SHOP` when that is a bare domain.
    fn shopify_shop_domain(&self) -> Result<Option<String>, ConfigError> {
        let is_domain =
            |d: &str| d.contains('.') && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if let Some(domain) = self.optional_string("LEVELUP_SHOPIFY_SHOP_DOMAIN") {
            if !is_domain(&domain) {
                return Err(self.error(
                    "LEVELUP_SHOPIFY_SHOP_DOMAIN",
                    format!("expected `my-store.myshopify.com`, got `{domain}`"),
                ));
            }
            return Ok(Some(domain.to_ascii_lowercase()));
        }
        Ok(self.optional_string("LEVELUP_SHOPIFY_SHOP").filter(|s| is_domain(s)).map(|s| s.to_ascii_lowercase()))
    }

    /// `arn:aws:sns:<region>:<account>:<topic>[,…]`.
    fn sns_topic_arns(&self, var: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.optional_string(var) else { return Ok(Vec::new()) };
        raw.split(',')
            .map(str::trim)
            .filter(|arn| !arn.is_empty())
            .map(|arn| {
                let parts: Vec<&str> = arn.split(':').collect();
                let valid = parts.len() == 6
                    && parts[0] == "arn"
                    && parts[1].starts_with("aws")
                    && parts[2] == "sns"
                    && parts[3..].iter().all(|p| !p.is_empty());
                if valid {
                    Ok(arn.to_owned())
                } else {
                    Err(self.error(var, format!("expected `arn:aws:sns:<region>:<account>:<topic>`, got `{arn}`")))
                }
            })
            .collect()
    }

    /// `kid1:secret1,kid2:secret2`; every secret at least 32 characters.
    fn token_keys(&self, var: &'static str) -> Result<Vec<(String, SecretString)>, ConfigError> {
        let Some(raw) = self.optional_string(var) else { return Ok(Vec::new()) };
        raw.split(',')
            .map(|entry| {
                let (kid, key) = entry
                    .split_once(':')
                    .ok_or_else(|| self.error(var, "expected `key-id:secret[,key-id:secret…]`".into()))?;
                if kid.is_empty() || !kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(self.error(var, "key ids must be non-empty [A-Za-z0-9_-]".into()));
                }
                if key.len() < 32 {
                    return Err(self.error(var, format!("secret of key `{kid}` must be at least 32 characters")));
                }
                Ok((kid.to_owned(), SecretString::from(key.to_owned())))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = config(&[]).expect("defaults are valid");
        assert_eq!(cfg.email_concurrency, 16);
        assert_eq!(cfg.redis_namespace, "levelup");
        assert!(matches!(cfg.mail_transport, MailTransportKind::Outbox { .. }));
        assert_eq!(cfg.api_bind.port(), 8080);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (var, value) in [
            ("LEVELUP_EMAIL_CONCURRENCY", "lots"),
            ("LEVELUP_EMAIL_CONCURRENCY", "0"),
            ("LEVELUP_API_BIND", "localhost"),
            ("LEVELUP_MAIL_TRANSPORT", "pigeon"),
            ("LEVELUP_SCHEDULE_CRON", "every monday"),
            ("LEVELUP_SCHEDULE_TIMEZONE", "Mars/Olympus"),
            ("LEVELUP_PUBLIC_BASE_URL", "not a url"),
            ("LEVELUP_TOKEN_KEYS", "k1:short"),
            ("LEVELUP_ADMIN_API_KEY", "tiny"),
            ("LEVELUP_SYNC_CRON", "daily"),
            ("LEVELUP_SNS_TOPIC_ARNS", "ses-events"),
            ("LEVELUP_SHOPIFY_SHOP_DOMAIN", "https://x.myshopify.com"),
            ("LEVELUP_SNS_TOPIC_ARNS", "arn:aws:sns:us-east-1:123:t,arn:aws:s3:::bucket"),
            ("LEVELUP_SEND_DEADLINE_HOURS", "0"),
            ("LEVELUP_PAUSE_BOUNCE_RATE", "2"),
            ("LEVELUP_PAUSE_BOUNCE_RATE", "0%"),
            ("LEVELUP_PAUSE_COMPLAINT_RATE", "often"),
            ("LEVELUP_PAUSE_MIN_SENDS", "0"),
        ] {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn pause_rates_are_fractions_or_percentages() {
        let cfg = config(&[("LEVELUP_PAUSE_BOUNCE_RATE", "3%"), ("LEVELUP_PAUSE_COMPLAINT_RATE", "0.001")]).unwrap();
        assert!((cfg.reputation.pause_bounce_rate - 0.03).abs() < 1e-12);
        assert!((cfg.reputation.pause_complaint_rate - 0.001).abs() < 1e-12);
        let defaults = config(&[]).unwrap();
        assert!((defaults.reputation.pause_bounce_rate - 0.02).abs() < 1e-12);
        assert!((defaults.reputation.pause_complaint_rate - 0.0005).abs() < 1e-12);
        assert_eq!(defaults.reputation.pause_min_sends, 500);
        assert_eq!(defaults.send_deadline, Duration::from_secs(24 * 3600));
        assert_eq!(config(&[("LEVELUP_SEND_DEADLINE_HOURS", "0.5")]).unwrap().send_deadline, Duration::from_secs(1800));
    }

    #[test]
    fn a_public_base_url_with_a_path_keeps_it_in_every_link() {
        use crate::mail::render::{EmailBody, Links};
        for base in ["http://host/levelup", "http://host/levelup/"] {
            let cfg = config(&[("LEVELUP_PUBLIC_BASE_URL", base)]).unwrap();
            let links = Links::new(&cfg.public_base_url, &EmailBody::QuestionnaireInvite, "A", "U");
            assert_eq!(links.primary.as_str(), "http://host/levelup/questionnaire?token=A");
            assert_eq!(links.progress.as_str(), "http://host/levelup/level?token=A");
            assert_eq!(links.unsubscribe.as_str(), "http://host/levelup/unsubscribe?token=U");
        }
        let root = config(&[("LEVELUP_PUBLIC_BASE_URL", "https://levelup.example")]).unwrap();
        assert_eq!(root.public_base_url.as_str(), "https://levelup.example/");
        for bad in ["mailto:x@y.example", "http://host/?a=1", "http://host/#top"] {
            assert_eq!(config(&[("LEVELUP_PUBLIC_BASE_URL", bad)]).unwrap_err().var, "LEVELUP_PUBLIC_BASE_URL");
        }
    }

    #[test]
    fn a_claim_timeout_shorter_than_the_ses_timeout_is_refused() {
        let err = config(&[("LEVELUP_CLAIM_TIMEOUT_SECS", "5"), ("LEVELUP_SES_TIMEOUT_MS", "60000")]).unwrap_err();
        assert_eq!(err.var, "LEVELUP_CLAIM_TIMEOUT_SECS");
        assert!(err.to_string().contains("LEVELUP_SES_TIMEOUT_MS"), "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
        assert_eq!(config(&[("LEVELUP_CLAIM_TIMEOUT_SECS", "10")]).unwrap_err().var, "LEVELUP_CLAIM_TIMEOUT_SECS");
        assert!(config(&[("LEVELUP_CLAIM_TIMEOUT_SECS", "11")]).is_ok());
    }

    #[test]
    fn shopify_needs_shop_and_token_and_builds_the_graphql_url() {
        assert!(config(&[]).unwrap().shopify.is_none());
        let err = config(&[("LEVELUP_SHOPIFY_SHOP", "my-store.myshopify.com")]).unwrap_err();
        assert_eq!(err.var, "LEVELUP_SHOPIFY_ACCESS_TOKEN");
        let cfg = config(&[
            ("LEVELUP_SHOPIFY_SHOP", "my-store.myshopify.com"),
            ("LEVELUP_SHOPIFY_ACCESS_TOKEN", "shpat_0123456789"),
            ("LEVELUP_SHOPIFY_PRODUCT_ID", "42"),
        ])
        .unwrap();
        let shopify = cfg.shopify.unwrap();
        assert_eq!(shopify.graphql_url.as_str(), "https://my-store.myshopify.com/admin/api/2025-10/graphql.json");
        assert_eq!(shopify.product_gid.as_deref(), Some("gid://shopify/Product/42"));
        assert_eq!(shopify.page_size, 250);
        for (var, value) in [
            ("LEVELUP_SHOPIFY_API_VERSION", "latest"),
            ("LEVELUP_SHOPIFY_PAGE_SIZE", "251"),
            ("LEVELUP_SHOPIFY_SHOP", "my store"),
            ("LEVELUP_SHOPIFY_PRODUCT_ID", "gid://shopify/Customer/1"),
        ] {
            let mut vars = vec![
                ("LEVELUP_SHOPIFY_SHOP", "my-store.myshopify.com"),
                ("LEVELUP_SHOPIFY_ACCESS_TOKEN", "shpat_0123456789"),
            ];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            assert_eq!(config(&vars).expect_err(var).var, var);
        }
    }

    #[test]
    fn secrets_never_print() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://u:hunter2-db@h/db"),
            ("LEVELUP_ADMIN_API_KEY", "hunter2-admin-key-0123456789"),
            ("LEVELUP_TOKEN_KEYS", "k1:hunter2-token-key-0123456789abcdefghij"),
            ("LEVELUP_SHOPIFY_SHOP", "s.myshopify.com"),
            ("LEVELUP_SHOPIFY_ACCESS_TOKEN", "shpat_hunter2"),
        ])
        .unwrap();
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn admin_key_comparison() {
        let cfg = config(&[("LEVELUP_ADMIN_API_KEY", "0123456789abcdef")]).unwrap();
        assert!(cfg.admin_api_key_matches("0123456789abcdef"));
        assert!(!cfg.admin_api_key_matches("0123456789abcdeX"));
        assert!(!cfg.admin_api_key_matches(""));
        assert!(!config(&[]).unwrap().admin_api_key_matches(""));
    }
}
