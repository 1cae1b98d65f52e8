//! Postgres access: pool construction, migrations and database creation.
//!
//! Queries live next to the aggregate they serve (`subscribers`, `deliveries`, `weekly_runs`, …)
//! as small functions, one statement each, always with bound parameters.

pub mod backlog;
pub mod challenges;
pub mod dead_letters;
pub mod deliveries;
pub mod demo;
pub mod idempotency_keys;
pub mod received_webhooks;
pub mod ses_events;
pub mod shopify_consent;
pub mod shopify_syncs;
pub mod shopify_webhooks;
pub mod shopify_writebacks;
pub mod subscriber_admin;
pub mod subscribers;
pub mod test_sends;
pub mod weekly_runs;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::Config;

/// The schema, embedded in every binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub fn connect_options(config: &Config) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions =
        config.database_url.expose_secret().parse().context("DATABASE_URL is not a valid Postgres URL")?;
    Ok(options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

fn pool_options(config: &Config) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(config.database_max_connections).acquire_timeout(Duration::from_secs(5))
}

/// A pool that connects on first use: a process starts even while Postgres is down, and
/// `/readyz` reports it.
pub fn connect_lazy(config: &Config) -> anyhow::Result<PgPool> {
    Ok(pool_options(config).connect_lazy_with(connect_options(config)?))
}

/// A pool that has proven it can reach the database.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    pool_options(config).connect_with(connect_options(config)?).await.context("connecting to Postgres (DATABASE_URL)")
}

/// Creates the database named in the URL when it does not exist yet (connecting to `postgres`).
pub async fn create_database_if_missing(config: &Config) -> anyhow::Result<()> {
    let options = connect_options(config)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to Postgres (DATABASE_URL) to create the database")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        // Identifiers cannot be bound; quote it.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process won the race.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    admin.close().await.ok();
    Ok(())
}

/// Applies pending migrations; safe to run concurrently from several processes (sqlx takes an
/// advisory lock) and repeatedly (applied ones are skipped).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}

/// `SELECT 1` within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool))
        .await
        .context("Postgres did not answer in time")?
        .context("Postgres query failed")?;
    Ok(())
}
