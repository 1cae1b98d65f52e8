//! The Shopify sync queue's jobs: one page of a full sync, or one unsubscribe written back.
//! A separate apalis worker with its own concurrency (`LEVELUP_SYNC_CONCURRENCY`), so a slow or
//! throttled Shopify never takes email sending's slots (bulkhead).

use std::{sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data, TaskSink};
use levelup_common::{
    Config,
    jobs::ShopifyJob,
    shopify::{
        ShopifyClient, ShopifyError,
        sync::{self, PageClaim},
        upsert::Rules,
        writeback,
    },
};
use sqlx::PgPool;

/// Longest one job waits out throttling and an open breaker before giving up.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A write-back Shopify could not take (outage) is tried again this much later.
const WRITEBACK_RETRY: Duration = Duration::from_secs(300);

pub struct SyncContext {
    pub pool: PgPool,
    pub client: ShopifyClient,
    pub storage: tokio::sync::Mutex<apalis_redis::RedisStorage<ShopifyJob>>,
    pub rules: Rules,
    pub config: Arc<Config>,
    pub worker_name: String,
    pub in_flight: tokio_util::task::TaskTracker,
}

pub async fn handle(job: ShopifyJob, context: Data<Arc<SyncContext>>) -> Result<(), BoxDynError> {
    let task_context = Arc::clone(&context);
    let label = match job {
        ShopifyJob::SyncPage { .. } => "sync_page",
        ShopifyJob::WriteBack { .. } => "write_back",
    };
    let result = context
        .in_flight
        .spawn(async move {
            match job {
                ShopifyJob::SyncPage { sync_id, page } => task_context.sync_page(sync_id, page).await,
                ShopifyJob::WriteBack { writeback_id } => task_context.write_back(writeback_id).await,
            }
        })
        .await
        .map_err(|join_error| -> BoxDynError { format!("Shopify job panicked: {join_error}").into() })?;
    match result {
        Ok(outcome) => {
            metrics::counter!("levelup_shopify_jobs_total", "job" => label, "outcome" => outcome).increment(1);
            Ok(())
        }
        Err(err) => {
            tracing::warn!(?job, error = %format!("{err:#}"), "Shopify job failed; apalis will retry it");
            Err(err.into())
        }
    }
}

impl SyncContext {
    /// Fetches, applies and chains one page. Errors are only those we could not record.
    #[tracing::instrument(skip(self), fields(worker = %self.worker_name))]
    pub async fn sync_page(&self, sync_id: i64, page: i32) -> anyhow::Result<&'static str> {
        let claim_timeout = self.config.sync.claim_timeout;
        // One claim per execution: two copies of this job in this process must not share it.
        let claimant = format!("{}/{}", self.worker_name, uuid::Uuid::new_v4().simple());
        let cursor = match sync::claim_page(&self.pool, sync_id, page, &claimant, claim_timeout).await? {
            PageClaim::Claimed { cursor } => cursor,
            PageClaim::Done | PageClaim::HeldElsewhere => return Ok("nothing_to_do"),
        };
        let throttled_before = self.client.throttled_count();
        let policy = self.config.sync.retry;
        let fetched = tokio::time::timeout(
            claim_timeout,
            self.client.with_retries(&policy, MAX_WAIT.min(claim_timeout), || {
                self.client.subscribed_customers(cursor.as_deref())
            }),
        )
        .await
        .unwrap_or_else(|_| Err(ShopifyError::Transient("page fetch outlasted the claim".into())));
        // Counted per client, so concurrent pages may share the count; it is a report, not a ledger.
        let throttled = self.client.throttled_count().saturating_sub(throttled_before);
        let page_data = match fetched {
            Ok(page_data) => page_data,
            Err(err) => {
                let reason = err.to_string();
                if sync::fail(&self.pool, sync_id, page, &claimant, &reason, throttled).await? {
                    tracing::error!(sync_id, page, error = %reason, "Shopify sync failed");
                }
                return Ok("failed");
            }
        };
        let committed = sync::commit_page(
            &self.pool,
            sync_id,
            page,
            &claimant,
            &page_data.customers,
            page_data.end_cursor.as_deref(),
            page_data.has_next_page,
            throttled,
            &self.rules,
        )
        .await?;
        let Some(result) = committed else {
            tracing::warn!(sync_id, page, "page claim lost before commit; another worker applies it");
            return Ok("nothing_to_do");
        };
        if result.finished {
            tracing::info!(sync_id, pages = page, "Shopify sync completed");
            return Ok("completed");
        }
        // Chain the next page. If this push is lost, the scheduler pushes it again.
        let next = ShopifyJob::SyncPage { sync_id, page: page + 1 };
        self.storage.lock().await.push(next).await.map_err(|e| anyhow::anyhow!("pushing the next page: {e}"))?;
        sync::mark_pushed(&self.pool, sync_id, page + 1).await?;
        Ok("page")
    }

    #[tracing::instrument(skip(self), fields(worker = %self.worker_name))]
    pub async fn write_back(&self, writeback_id: i64) -> anyhow::Result<&'static str> {
        let Some(row) = writeback::get(&self.pool, writeback_id).await? else { return Ok("nothing_to_do") };
        if row.state != "pending" {
            return Ok("nothing_to_do");
        }
        let policy = self.config.sync.retry;
        let result = self
            .client
            .with_retries(&policy, MAX_WAIT, || self.client.unsubscribe(&row.customer_gid, row.consent_at))
            .await;
        match result {
            Ok(()) => {
                writeback::done(&self.pool, writeback_id).await?;
                Ok("done")
            }
            Err(ShopifyError::Permanent(reason)) => {
                tracing::error!(writeback_id, customer = %row.customer_gid, %reason, "Shopify refused the unsubscribe");
                writeback::failed(&self.pool, writeback_id, &reason).await?;
                Ok("failed")
            }
            Err(err) => {
                writeback::retry_later(&self.pool, writeback_id, WRITEBACK_RETRY, &err.to_string()).await?;
                Ok("retry_later")
            }
        }
    }
}
