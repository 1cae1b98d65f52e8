//! The worker: consumes the email queue (and, later, the Shopify sync queue) with apalis.
//!
//! Each process has a unique worker name; several run side by side sharing one Redis and one
//! Postgres. A job is safe to run twice: the delivery ledger decides whether to send.

pub mod send_email;

use std::sync::Arc;

use anyhow::Context;
use apalis::prelude::*;
use levelup_common::{
    Config, db, mail, queue, redis_conn,
    resilience::{breaker::CircuitBreaker, rate_limit::FleetRateLimiter},
    shutdown::CancellationToken,
    tokens::TokenSigner,
};

pub use send_email::{EmailContext, Outcome};

/// Runs until `shutdown` is cancelled (then finishes in-flight jobs) or the queue backend fails
/// (then returns the error, so the process exits non-zero and its supervisor restarts it).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::connect(&config).await?;
    let redis = redis_conn::connect(&config).await?;
    let transport = mail::transport_from_config(&config).await?;
    let namespace = &config.redis_namespace;
    let context = Arc::new(EmailContext {
        pool,
        transport,
        signer: TokenSigner::new(config.token_keys.clone()),
        breaker: CircuitBreaker::new(namespace, "ses", config.breaker.clone(), redis.clone()),
        rate_limiter: FleetRateLimiter::new(
            namespace,
            "ses",
            config.ses_max_send_rate.unwrap_or(0.0),
            config.throttle_penalty,
            redis.clone(),
        ),
        worker_name: config.worker_name.clone(),
        config: Arc::new(config.clone()),
    });
    tracing::info!(worker = %config.worker_name, transport = context.transport.name(), "worker started");
    let worker = WorkerBuilder::new(format!("{}-email", config.worker_name))
        .backend(queue::email_storage(&config, redis))
        .concurrency(config.email_concurrency)
        .data(context)
        .build(send_email::handle);
    let grace = config.shutdown_grace;
    let stop = async move {
        shutdown.cancelled().await;
        tracing::info!(?grace, "draining in-flight jobs");
        Ok::<(), std::io::Error>(())
    };
    worker.run_until(stop).await.context("email worker stopped")?;
    tracing::info!("worker stopped");
    Ok(())
}
