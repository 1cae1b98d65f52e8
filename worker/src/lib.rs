//! The worker: consumes the email queue, the operators' test-send queue and, when a Shopify store
//! is configured, the Shopify sync queue, with apalis; each queue has its own concurrency
//! (bulkhead). The plumbing every job shares (tracked task, span, metric, graceful shutdown) is
//! `levelup_common::jobs::runner`.
//!
//! Each process has a unique worker name; several run side by side sharing one Redis and one
//! Postgres. A job is safe to run twice: the delivery ledger decides whether to send.

pub mod send_email;
pub mod shopify_sync;
pub mod test_send;

use levelup_common::{
    Config, db, jobs::runner::Workers, mail, runtime::redis_conn, runtime::shutdown::CancellationToken,
};

pub use send_email::{Outcome, SendEmail};
pub use shopify_sync::{ShopifySync, SyncOutcome};
pub use test_send::{TestSend, TestSendOutcome};

/// Runs until `shutdown` is cancelled (then finishes in-flight jobs) or the queue backend fails
/// (then returns the error, so the process exits non-zero and its supervisor restarts it).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::connect(&config).await?;
    let redis = redis_conn::connect(&config).await?;
    let transport = mail::transport_from_config(&config).await?;
    tracing::info!(worker = %config.worker_name, transport = transport.name(), "worker started");
    let mut workers = Workers::new(&config, redis.clone(), shutdown);
    let send_email = SendEmail::new(&config, pool.clone(), redis.clone(), transport);
    workers.add(TestSend::new(&send_email));
    workers.add(send_email);
    if let Some(shopify) = config.shopify.clone() {
        workers.add(ShopifySync::new(&config, shopify, pool, redis)?);
    }
    workers.run().await?;
    tracing::info!("worker stopped");
    Ok(())
}
