use std::sync::Arc;

use levelup_common::{Config, db, runtime::redis_conn, runtime::shutdown::CancellationToken};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// Shared by every request handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub signer: levelup_common::domain::tokens::TokenSigner,
    pub sns: levelup_common::mail::sns::SnsVerifier,
    pub db: PgPool,
    pub redis: RedisHandle,
    /// Cancelled when the API starts draining (SIGTERM): `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
}

/// Redis is connected lazily so the API starts (and `/readyz` reports) while Redis is down.
#[derive(Clone)]
pub struct RedisHandle {
    config: Arc<Config>,
    connection: Arc<tokio::sync::OnceCell<ConnectionManager>>,
}

impl RedisHandle {
    pub async fn get(&self) -> anyhow::Result<ConnectionManager> {
        self.connection.get_or_try_init(|| redis_conn::connect(&self.config)).await.cloned()
    }
}

impl AppState {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        Ok(Self {
            signer: levelup_common::domain::tokens::TokenSigner::new(config.token_keys.clone()),
            sns: levelup_common::mail::sns::SnsVerifier::new(config.sns_trusted_prefixes.clone()),
            db: db::connect_lazy(&config)?,
            redis: RedisHandle { config: config.clone(), connection: Arc::default() },
            draining: CancellationToken::new(),
            config,
        })
    }
}

impl AppState {
    /// Verifies a subscriber link token for `purpose`.
    pub fn verify(
        &self,
        token: &str,
        purpose: levelup_common::domain::tokens::Purpose,
    ) -> Result<levelup_common::domain::tokens::Claims, levelup_common::domain::tokens::TokenError> {
        self.signer.verify(token, purpose, chrono::Utc::now().timestamp())
    }
}

impl AppState {
    /// Which Shopify customers are subscribers (the configured product's buyers, or all consenting).
    pub fn shopify_rules(&self) -> levelup_common::db::shopify_consent::Rules {
        levelup_common::db::shopify_consent::Rules::from_config(&self.config)
    }
}
