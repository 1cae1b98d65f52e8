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
        in_flight: tokio_util::task::TaskTracker::new(),
    });
    let in_flight = context.in_flight.clone();
    tracing::info!(worker = %config.worker_name, transport = context.transport.name(), "worker started");
    let worker = WorkerBuilder::new(format!("{}-email", config.worker_name))
        .backend(queue::email_storage(&config, redis))
        .concurrency(config.email_concurrency)
        .data(context)
        .build(send_email::handle);
    let grace = config.shutdown_grace;
    let requested = shutdown.clone();
    let stop = async move {
        requested.cancelled().await;
        tracing::info!(?grace, "draining in-flight jobs");
        Ok::<(), std::io::Error>(())
    };
    let result = worker.run_until(stop).await.context("email worker failed");
    // Whatever ended the worker, let the jobs already running finish and record their outcome.
    in_flight.close();
    if tokio::time::timeout(grace, in_flight.wait()).await.is_err() {
        tracing::warn!(still_running = in_flight.len(), "grace period over with jobs still running");
    }
    result?;
    // apalis ends a worker whose backend failed (e.g. Redis gone) as if it had finished: never
    // linger as a process that consumes nothing. Exit non-zero so the supervisor restarts us.
    anyhow::ensure!(
        shutdown.is_cancelled(),
        "email worker stopped unexpectedly (queue backend failed); exiting to be restarted"
    );
    tracing::info!("worker stopped");
    Ok(())
}
