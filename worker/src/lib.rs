//! The worker: consumes the email queue and, when a Shopify store is configured, the Shopify sync
//! queue, with apalis; each queue has its own concurrency (bulkhead).
//!
//! Each process has a unique worker name; several run side by side sharing one Redis and one
//! Postgres. A job is safe to run twice: the delivery ledger decides whether to send.

pub mod send_email;
pub mod shopify_sync;

use std::sync::Arc;

use anyhow::Context;
use apalis::prelude::*;
use levelup_common::{
    Config, db, mail, queue, redis_conn,
    resilience::{breaker::CircuitBreaker, rate_limit::FleetRateLimiter},
    shopify::{ShopifyClient, upsert::Rules},
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
        pool: pool.clone(),
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
    // Either worker ending (shutdown, or its queue backend failing) stops the other.
    let stop_all = shutdown.child_token();
    let grace = config.shutdown_grace;
    let stopper = |token: CancellationToken| async move {
        token.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    let email_worker = WorkerBuilder::new(format!("{}-email", config.worker_name))
        .backend(queue::email_storage(&config, redis.clone()))
        .concurrency(config.email_concurrency)
        .data(context)
        .build(send_email::handle);
    let email = {
        let stop_all = stop_all.clone();
        let stop = stopper(stop_all.clone());
        async move {
            let result = email_worker.run_until(stop).await.context("email worker failed");
            stop_all.cancel();
            result
        }
    };
    let mut trackers = vec![in_flight];
    let sync = match config.shopify.clone() {
        None => futures::future::Either::Left(async { Ok(()) }),
        Some(shopify) => {
            let sync_context = Arc::new(shopify_sync::SyncContext {
                pool: pool.clone(),
                client: ShopifyClient::new(&config, shopify, redis.clone())?,
                storage: tokio::sync::Mutex::new(queue::sync_storage(&config, redis.clone())),
                rules: Rules::from_config(&config),
                config: Arc::new(config.clone()),
                worker_name: config.worker_name.clone(),
                in_flight: tokio_util::task::TaskTracker::new(),
            });
            trackers.push(sync_context.in_flight.clone());
            let sync_worker = WorkerBuilder::new(format!("{}-shopify-sync", config.worker_name))
                .backend(queue::sync_storage(&config, redis.clone()))
                .concurrency(config.sync_concurrency)
                .data(sync_context)
                .build(shopify_sync::handle);
            let stop_all = stop_all.clone();
            let stop = stopper(stop_all.clone());
            futures::future::Either::Right(async move {
                let result = sync_worker.run_until(stop).await.context("Shopify sync worker failed");
                stop_all.cancel();
                result
            })
        }
    };
    let (email_result, sync_result) = tokio::join!(email, sync);
    if shutdown.is_cancelled() {
        tracing::info!(?grace, "draining in-flight jobs");
    }
    // Whatever ended the workers, let the jobs already running finish and record their outcome.
    for tracker in &trackers {
        tracker.close();
    }
    let drained = tokio::time::timeout(grace, async {
        for tracker in &trackers {
            tracker.wait().await;
        }
    })
    .await;
    if drained.is_err() {
        let still_running: usize = trackers.iter().map(|t| t.len()).sum();
        tracing::warn!(still_running, "grace period over with jobs still running");
    }
    email_result?;
    sync_result?;
    // apalis ends a worker whose backend failed (e.g. Redis gone) as if it had finished: never
    // linger as a process that consumes nothing. Exit non-zero so the supervisor restarts us.
    anyhow::ensure!(
        shutdown.is_cancelled(),
        "worker stopped unexpectedly (queue backend failed); exiting to be restarted"
    );
    tracing::info!("worker stopped");
    Ok(())
}
