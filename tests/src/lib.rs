//! The LevelUp test kit: a fresh Postgres database per test (cloned from a migrated template),
//! a fresh Redis namespace per test, helpers that start the API in-process or the binaries as OS
//! processes, the worker and scheduler in-process ([`InProcessFleet`]), typed API clients
//! ([`AdminClient`], [`SubscriberClient`]), and waiting on conditions with deadlines.
//!
//! Tests reach the servers named by `DATABASE_URL` and `REDIS_URL` (defaults: the local ones);
//! `scripts/test` makes sure they run.

pub mod clients;
pub mod db;
pub mod fake_ses;
pub mod fake_shopify;
pub mod fake_sns;
pub mod fixtures;
pub mod fleet;
pub mod haproxy;
pub mod processes;
pub mod redis_ns;
pub mod redis_server;
pub mod wait;

use std::collections::HashMap;

use levelup_common::{Config, domain::RunStatus};

pub use clients::{AdminClient, SubscriberClient};
pub use db::TestDb;
pub use fleet::InProcessFleet;
pub use redis_ns::TestRedis;
pub use wait::wait_until;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const SHOPIFY_WEBHOOK_SECRET: &str = "shopify-app-secret-for-tests";
/// The store webhooks come from in tests (`LEVELUP_SHOPIFY_SHOP_DOMAIN`).
pub const SHOPIFY_SHOP_DOMAIN: &str = "fake.myshopify.com";
pub const TOKEN_KEYS: &str = "t1:test-token-signing-key-0123456789abcdef";

/// One test's world: its own database and Redis namespace, and the environment that points the
/// LevelUp processes at them.
pub struct TestEnv {
    pub db: TestDb,
    pub redis: TestRedis,
    pub vars: HashMap<String, String>,
}

impl TestEnv {
    pub async fn new() -> Self {
        init_test_logging();
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let vars = HashMap::from(
            [
                ("DATABASE_URL", db.url.clone()),
                ("REDIS_URL", redis_ns::server_url()),
                ("LEVELUP_REDIS_NAMESPACE", redis.namespace.clone()),
                ("LEVELUP_ADMIN_API_KEY", ADMIN_KEY.to_owned()),
                ("LEVELUP_TOKEN_KEYS", TOKEN_KEYS.to_owned()),
                ("LEVELUP_API_BIND", "127.0.0.1:0".to_owned()),
                ("LEVELUP_SHUTDOWN_GRACE_SECS", "5".to_owned()),
                // Nothing balances load in front of a test's API: stop at once (the drill sets its own).
                ("LEVELUP_DRAIN_SECS", "0".to_owned()),
                ("LEVELUP_DATABASE_MAX_CONNECTIONS", "5".to_owned()),
                ("LEVELUP_LOG", "warn".to_owned()),
                // Unlimited unless a test sets a rate; fast retries.
                ("LEVELUP_SES_MAX_SEND_RATE", "0".to_owned()),
                ("LEVELUP_RETRY_BASE_MS", "50".to_owned()),
                ("LEVELUP_RETRY_MAX_MS", "1000".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        Self { db, redis, vars }
    }

    pub fn set(&mut self, var: &str, value: impl Into<String>) -> &mut Self {
        self.vars.insert(var.to_owned(), value.into());
        self
    }

    /// Points the processes at `ses`, with run-friendly settings: no cron firing (tests trigger
    /// runs), a fast scheduler tick, links under `https://levelup.example/`.
    pub async fn with_fake_ses(ses: &fake_ses::FakeSes) -> Self {
        let mut env = Self::new().await;
        for (k, v) in ses.env() {
            env.set(&k, v);
        }
        env.for_runs().set("LEVELUP_EMAIL_CONCURRENCY", "8").set("LEVELUP_PUBLIC_BASE_URL", "https://levelup.example/");
        env
    }

    /// Mail goes to a fresh outbox folder (deleted when the returned guard drops); run-friendly
    /// settings as in [`TestEnv::with_fake_ses`].
    pub async fn with_outbox() -> (Self, TempOutbox) {
        let mut env = Self::new().await;
        let outbox =
            TempOutbox { path: std::env::temp_dir().join(format!("levelup-outbox-{}", uuid::Uuid::new_v4().simple())) };
        env.for_runs().set("LEVELUP_OUTBOX_DIR", outbox.path.to_string_lossy().to_string());
        (env, outbox)
    }

    /// Points the processes at the fake store, with run-friendly settings and mail to an outbox
    /// (see [`TestEnv::with_outbox`]); no scheduled sync (tests start syncs), short page claims.
    pub async fn with_fake_shopify(shopify: &fake_shopify::FakeShopify) -> (Self, TempOutbox) {
        let (mut env, outbox) = Self::with_outbox().await;
        for (k, v) in shopify.env() {
            env.set(&k, v);
        }
        env.set("LEVELUP_SYNC_CRON", "0 0 0 1 1 * 2099")
            .set("LEVELUP_SYNC_CLAIM_TIMEOUT_SECS", "3")
            .set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SHOPIFY_WEBHOOK_SECRET)
            .set("LEVELUP_SHOPIFY_SHOP_DOMAIN", SHOPIFY_SHOP_DOMAIN);
        (env, outbox)
    }

    /// No cron firing (tests trigger runs themselves) and a fast scheduler tick.
    fn for_runs(&mut self) -> &mut Self {
        self.set("LEVELUP_SCHEDULE_CRON", "0 0 0 1 1 * 2099").set("LEVELUP_SCHEDULER_TICK_MS", "100")
    }

    /// Waits until `week`'s run is completed.
    pub async fn run_completed(
        &self,
        week: &str,
        deadline: std::time::Duration,
    ) -> levelup_common::db::weekly_runs::WeeklyRun {
        let week = levelup_common::domain::IsoWeek::parse(week).expect("an ISO week");
        wait_until(&format!("run {week} to complete"), deadline, || async {
            levelup_common::db::weekly_runs::get(&self.db.pool, week)
                .await
                .unwrap()
                .filter(|r| r.status == RunStatus::Completed)
        })
        .await
    }

    /// A worker and a scheduler in this process, on this test's configuration.
    pub fn in_process_fleet(&self) -> InProcessFleet {
        InProcessFleet::start(self.config(), 1, 1)
    }

    /// Delivers what is due for `week` without OS processes: a worker and a scheduler run in this
    /// process until `week`'s run is completed (fanned out, and no delivery `queued` or
    /// `sending`), at most a minute; then they are stopped and the run is returned. The week must
    /// have a run (or get one meanwhile).
    pub async fn run_due_deliveries(&self, week: &str) -> levelup_common::db::weekly_runs::WeeklyRun {
        let week = levelup_common::domain::IsoWeek::parse(week).expect("an ISO week");
        let fleet = self.in_process_fleet();
        let run = wait_until(&format!("run {week} to complete in-process"), std::time::Duration::from_secs(60), || {
            fleet.assert_running();
            async {
                levelup_common::db::weekly_runs::get(&self.db.pool, week)
                    .await
                    .unwrap()
                    .filter(|r| r.status == RunStatus::Completed)
            }
        })
        .await;
        fleet.stop().await;
        run
    }

    /// Adds a subscriber at `level` and returns their id with a link token valid for an hour.
    pub async fn subscriber_with_access_token(&self, email: &str, level: i16) -> (i64, String) {
        let id: i64 = sqlx::query_scalar("INSERT INTO subscribers (email, level) VALUES ($1, $2) RETURNING id")
            .bind(email)
            .bind(level)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        (id, link_token(id, levelup_common::domain::tokens::Purpose::Access))
    }

    pub fn config(&self) -> Config {
        Config::from_lookup(|k| self.vars.get(k).cloned()).expect("test configuration is valid")
    }
}

/// An outbox folder that is removed when dropped.
pub struct TempOutbox {
    pub path: std::path::PathBuf,
}

/// A message of the outbox, read back with a MIME parser (parts decoded, line breaks as `\n`).
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Every header, name and value as written (values without the space after the colon).
    pub headers: Vec<(String, String)>,
}

impl OutboxMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl TempOutbox {
    /// The names of the messages written so far (`delivery-<id>.eml`, `test-send-<id>.eml`).
    pub fn file_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".eml"))
            .collect();
        names.sort();
        names
    }

    /// The message in `file_name`, if it has been written.
    pub fn read(&self, file_name: &str) -> Option<OutboxMessage> {
        let raw = std::fs::read(self.path.join(file_name)).ok()?;
        let message = mail_parser::MessageParser::default().parse(&raw).expect("the outbox writes MIME messages");
        let lf = |text: &str| text.replace("\r\n", "\n");
        let headers =
            message.headers_raw().map(|(name, value)| (name.to_owned(), value.trim().replace("\r\n", ""))).collect();
        Some(OutboxMessage {
            to: message.to().and_then(|to| to.first()).and_then(|a| a.address()).unwrap_or_default().to_owned(),
            subject: message.subject().unwrap_or_default().to_owned(),
            text: lf(&message.body_text(0).expect("a text part")),
            html: lf(&message.body_html(0).expect("an HTML part")),
            headers,
        })
    }
}

impl Drop for TempOutbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `raw` as an ISO week (tests name weeks as text, e.g. `"2026-W48"`).
pub fn iso_week(raw: &str) -> levelup_common::domain::IsoWeek {
    levelup_common::domain::IsoWeek::parse(raw).expect("an ISO week")
}

/// A signer with the test token keys, to mint or check subscriber link tokens.
pub fn token_signer() -> levelup_common::domain::tokens::TokenSigner {
    let (kid, key) = TOKEN_KEYS.split_once(':').expect("kid:key");
    levelup_common::domain::tokens::TokenSigner::new(vec![(
        kid.to_owned(),
        secrecy::SecretString::from(key.to_owned()),
    )])
}

/// A link token of `subscriber_id` for `purpose`, valid for an hour.
pub fn link_token(subscriber_id: i64, purpose: levelup_common::domain::tokens::Purpose) -> String {
    token_signer().issue(subscriber_id, purpose, chrono::Utc::now().timestamp() + 3600).expect("a token is issued")
}

/// Delivers a Shopify webhook as Shopify does: raw JSON body, `X-Shopify-Hmac-SHA256` over it with
/// the app secret (or the `signature` given), webhook id, topic, shop domain
/// ([`SHOPIFY_SHOP_DOMAIN`]) and triggered-at (now) headers.
pub async fn deliver_shopify_webhook(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    topic: &str,
    body: &serde_json::Value,
    signature: Option<String>,
) -> reqwest::Response {
    use base64::Engine;
    use hmac::Mac;
    let raw = body.to_string();
    let signature = signature.unwrap_or_else(|| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SHOPIFY_WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(raw.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    });
    client
        .post(url)
        .header("content-type", "application/json")
        .header("X-Shopify-Hmac-SHA256", signature)
        .header("X-Shopify-Webhook-Id", id)
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", SHOPIFY_SHOP_DOMAIN)
        .header("X-Shopify-Triggered-At", chrono::Utc::now().to_rfc3339())
        .body(raw)
        .send()
        .await
        .unwrap()
}

fn init_test_logging() {
    let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    levelup_common::runtime::telemetry::init(levelup_common::config::LogFormat::Human, &filter);
}
