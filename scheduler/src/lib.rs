//! The scheduler: fires the weekly run.

use levelup_common::{Config, db, redis_conn, shutdown::CancellationToken};

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _pool = db::connect(&config).await?;
    let _redis = redis_conn::connect(&config).await?;
    tracing::info!("scheduler started");
    shutdown.cancelled().await;
    Ok(())
}
