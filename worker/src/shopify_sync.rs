//! The Shopify sync queue's jobs: one page of a full sync, or one unsubscribe written back.
//! A separate apalis worker with its own concurrency (`LEVELUP_SYNC_CONCURRENCY`), so a slow or
//! throttled Shopify never takes email sending's slots (bulkhead).

use std::{sync::Arc, time::Duration};

use apalis::prelude::TaskSink;
use levelup_common::{
    Config,
    db::{
        shopify_consent::Rules,
        shopify_syncs::{self as sync, Advance, Claimed, PageClaim},
        shopify_writebacks as writeback,
    },
    domain::{SyncMode, WritebackState},
    jobs::{self, Job, JobError, ShopifyJob, queue},
    shopify::{
        ShopifyClient, ShopifyError,
        client::{JsonlLines, parse_customer},
    },
};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// Longest one job waits out throttling and an open breaker before giving up.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A write-back Shopify could not take (outage) is tried again this much later.
const WRITEBACK_RETRY: Duration = Duration::from_secs(300);

/// Bulk result lines applied per transaction.
const BULK_BATCH: usize = 1000;

/// The job and its context: what syncing needs, shared by every run in the process.
pub struct ShopifySync {
    pub pool: PgPool,
    pub client: ShopifyClient,
    /// Where a page pushes the next one.
    pub storage: tokio::sync::Mutex<apalis_redis::RedisStorage<ShopifyJob>>,
    pub rules: Rules,
    pub config: Arc<Config>,
    pub worker_name: String,
}

impl Job for ShopifySync {
    type Payload = ShopifyJob;
    type Outcome = SyncOutcome;

    async fn run(&self, job: ShopifyJob) -> Result<SyncOutcome, JobError> {
        match job {
            ShopifyJob::SyncPage { sync_id, page } => self.sync_page(sync_id, page).await,
            ShopifyJob::WriteBack { writeback_id } => self.write_back(writeback_id).await,
        }
    }
}

/// What happened to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A page committed and the next one pushed.
    Page,
    /// The sync completed.
    Completed,
    /// The sync (or the write-back) failed for good; the reason is recorded.
    Failed,
    /// The write-back was taken by Shopify.
    Done,
    /// The write-back is rescheduled (Shopify unavailable).
    RetryLater,
    /// Already done, or held by another execution.
    NothingToDo,
}

impl jobs::Outcome for SyncOutcome {
    fn label(&self) -> &'static str {
        match self {
            SyncOutcome::Page => "page",
            SyncOutcome::Completed => "completed",
            SyncOutcome::Failed => "failed",
            SyncOutcome::Done => "done",
            SyncOutcome::RetryLater => "retry_later",
            SyncOutcome::NothingToDo => "nothing_to_do",
        }
    }
}

/// One execution of a sync page.
struct Execution<'a> {
    sync_id: i64,
    page: i32,
    claimant: &'a str,
    throttled_before: u64,
}

enum Step {
    /// Page committed; push the next one.
    Chain,
    /// The sync completed.
    Finished,
    /// Another execution holds (or committed) this page.
    Lost,
}

enum BulkProgress {
    Finished,
    Lost,
}

enum Failure {
    Shopify(ShopifyError),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Failure::Database(err)
    }
}

impl ShopifySync {
    pub fn new(
        config: &Config,
        shopify: levelup_common::config::ShopifyConfig,
        pool: PgPool,
        redis: ConnectionManager,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            client: ShopifyClient::new(config, shopify, redis.clone())?,
            storage: tokio::sync::Mutex::new(queue::storage(config, redis)),
            rules: Rules::from_config(config),
            config: Arc::new(config.clone()),
            worker_name: config.worker_name.clone(),
        })
    }

    /// Fetches, applies and chains one page (or, for a store above the bulk threshold, carries
    /// the bulk export through). Errors are only those we could not record.
    async fn sync_page(&self, sync_id: i64, page: i32) -> Result<SyncOutcome, JobError> {
        let claim_timeout = self.config.sync.claim_timeout;
        // One claim per execution: two copies of this job in this process must not share it.
        let claimant = format!("{}/{}", self.worker_name, uuid::Uuid::new_v4().simple());
        let claimed = match sync::claim_page(&self.pool, sync_id, page, &claimant, claim_timeout).await? {
            PageClaim::Claimed(claimed) => claimed,
            PageClaim::Done | PageClaim::HeldElsewhere => return Ok(SyncOutcome::NothingToDo),
        };
        let job = Execution { sync_id, page, claimant: &claimant, throttled_before: self.client.throttled_count() };
        let outcome = self.advance(&job, claimed).await;
        match outcome {
            Ok(Step::Finished) => Ok(SyncOutcome::Completed),
            Ok(Step::Lost) => Ok(SyncOutcome::NothingToDo),
            Ok(Step::Chain) => {
                // Chain the next page. If this push is lost, the scheduler pushes it again.
                let next = ShopifyJob::SyncPage { sync_id, page: page + 1 };
                self.storage
                    .lock()
                    .await
                    .push(next)
                    .await
                    .map_err(|e| anyhow::anyhow!("pushing the next page: {e}"))?;
                sync::mark_pushed(&self.pool, sync_id, page + 1).await?;
                Ok(SyncOutcome::Page)
            }
            Err(Failure::Shopify(err)) => {
                let reason = err.to_string();
                if sync::fail(&self.pool, sync_id, page, &claimant, &reason, self.throttled_since(&job)).await? {
                    tracing::error!(sync_id, page, error = %reason, "Shopify sync failed");
                }
                Ok(SyncOutcome::Failed)
            }
            Err(Failure::Database(err)) => Err(err.into()),
        }
    }

    async fn advance(&self, job: &Execution<'_>, claimed: Claimed) -> Result<Step, Failure> {
        let shopify = self.config.shopify.as_ref().expect("the sync worker runs only with a store configured");
        let mode = match claimed.mode {
            Some(mode) => mode,
            None => {
                // The first job of a sync counts the subscribed customers and chooses how to fetch.
                let threshold = shopify.bulk_threshold;
                let count = self.call(|| self.client.subscribed_count(threshold)).await?;
                let (mode, operation) = match count {
                    Some(count) => {
                        tracing::info!(sync_id = job.sync_id, count, "syncing by cursor pages");
                        (SyncMode::Pages, None)
                    }
                    None => {
                        let operation = self.call(|| self.client.start_bulk_export()).await?;
                        tracing::info!(sync_id = job.sync_id, threshold, %operation, "above the threshold: bulk export started");
                        (SyncMode::Bulk, Some(operation))
                    }
                };
                if !sync::set_mode(&self.pool, job.sync_id, job.claimant, mode, operation.as_deref()).await? {
                    return Ok(Step::Lost);
                }
                if mode == SyncMode::Bulk {
                    return self.bulk(job, operation, 0).await;
                }
                mode
            }
        };
        if mode == SyncMode::Bulk {
            return self.bulk(job, claimed.bulk_operation_id, claimed.lines_done).await;
        }
        let claim_timeout = self.config.sync.claim_timeout;
        let page_data = tokio::time::timeout(
            claim_timeout,
            self.call_within(claim_timeout, || self.client.subscribed_customers(claimed.cursor.as_deref())),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::Shopify(ShopifyError::Transient("page fetch outlasted the claim".into()))))?;
        let advance =
            Advance::Page { next_cursor: page_data.end_cursor.as_deref(), has_next_page: page_data.has_next_page };
        let committed = sync::commit_page(
            &self.pool,
            (job.sync_id, job.page, job.claimant),
            &page_data.customers,
            advance,
            self.throttled_since(job),
            &self.rules,
        )
        .await?;
        Ok(match committed {
            None => Step::Lost,
            Some(result) if result.finished => Step::Finished,
            Some(_) => Step::Chain,
        })
    }

    /// Waits for the bulk operation, then streams its JSONL result into the subscriber table in
    /// batches, each committed with the count of lines applied, so a resumed job skips them.
    async fn bulk(&self, job: &Execution<'_>, operation: Option<String>, lines_done: i64) -> Result<Step, Failure> {
        let shopify = self.config.shopify.as_ref().expect("store configured");
        let claim_timeout = self.config.sync.claim_timeout;
        let operation = operation
            .ok_or_else(|| Failure::Shopify(ShopifyError::Permanent("bulk sync without an operation id".into())))?;
        let (url, expected) = loop {
            let status = self.call(|| self.client.bulk_status(&operation)).await?;
            match status.status.as_str() {
                "COMPLETED" => break (status.url, status.object_count),
                "CREATED" | "RUNNING" | "CANCELING" => {
                    if !sync::renew_claim(&self.pool, job.sync_id, job.claimant, claim_timeout).await? {
                        return Ok(Step::Lost);
                    }
                    tokio::time::sleep(shopify.bulk_poll_interval).await;
                }
                other => {
                    let code = status.error_code.unwrap_or_default();
                    return Err(Failure::Shopify(ShopifyError::Permanent(format!("bulk operation {other} {code}"))));
                }
            }
        };
        let policy = self.config.sync.retry;
        let mut done = lines_done;
        let mut attempts = 0;
        loop {
            match self.stream_bulk(job, url.as_deref(), done, expected).await {
                Ok(BulkProgress::Finished) => return Ok(Step::Finished),
                Ok(BulkProgress::Lost) => return Ok(Step::Lost),
                Err((applied, Failure::Shopify(ShopifyError::Transient(reason)))) => {
                    done = applied;
                    attempts += 1;
                    if policy.exhausted(attempts) {
                        return Err(Failure::Shopify(ShopifyError::Transient(reason)));
                    }
                    tracing::warn!(sync_id = job.sync_id, applied, %reason, "bulk result download failed; resuming");
                    tokio::time::sleep(policy.delay(attempts)).await;
                }
                Err((_, failure)) => return Err(failure),
            }
        }
    }

    /// Streams the result from the start, skipping `skip` lines already applied. A result that
    /// ends before `expected` lines was cut off: an error, like a broken connection. On error,
    /// returns the lines applied so far with it.
    async fn stream_bulk(
        &self,
        job: &Execution<'_>,
        url: Option<&str>,
        skip: i64,
        expected: Option<u64>,
    ) -> Result<BulkProgress, (i64, Failure)> {
        let claim_timeout = self.config.sync.claim_timeout;
        let mut applied = skip;
        let fail = |applied: i64| move |failure: Failure| (applied, failure);
        let mut lines = match url {
            // Nothing to export: an empty result.
            None => None,
            Some(url) => Some(JsonlLines::new(
                self.client.open_bulk_result(url).await.map_err(|e| (applied, Failure::Shopify(e)))?,
            )),
        };
        let mut skipped = 0;
        let mut next = None;
        if let Some(lines) = lines.as_mut() {
            while skipped < skip {
                if lines.next_line().await.map_err(|e| (applied, Failure::Shopify(e)))?.is_none() {
                    break;
                }
                skipped += 1;
            }
            next = lines.next_line().await.map_err(|e| (applied, Failure::Shopify(e)))?;
        }
        loop {
            let mut batch = Vec::with_capacity(BULK_BATCH);
            let mut consumed = 0i64;
            while let Some(line) = next.take() {
                consumed += 1;
                match serde_json::from_str::<serde_json::Value>(&line).ok().as_ref().and_then(parse_customer) {
                    Some(customer) => batch.push(customer),
                    None => tracing::warn!(
                        sync_id = job.sync_id,
                        line = applied + consumed,
                        "unreadable bulk result line skipped"
                    ),
                }
                if let Some(lines) = lines.as_mut() {
                    next = lines.next_line().await.map_err(|e| (applied, Failure::Shopify(e)))?;
                }
                if batch.len() >= BULK_BATCH {
                    break;
                }
            }
            let end = next.is_none();
            let truncated = end && expected.is_some_and(|e| ((applied + consumed) as u64) < e);
            let last = end && !truncated;
            let advance = Advance::BulkLines { lines: consumed, last, claim_timeout };
            let committed = sync::commit_page(
                &self.pool,
                (job.sync_id, job.page, job.claimant),
                &batch,
                advance,
                if last { self.throttled_since(job) } else { 0 },
                &self.rules,
            )
            .await
            .map_err(|e| fail(applied)(Failure::Database(e)))?;
            applied += consumed;
            match committed {
                None => return Ok(BulkProgress::Lost),
                Some(_) if last => return Ok(BulkProgress::Finished),
                Some(_) if truncated => {
                    let reason = format!("bulk result ended after {applied} of {} lines", expected.unwrap_or_default());
                    return Err((applied, Failure::Shopify(ShopifyError::Transient(reason))));
                }
                Some(_) => {}
            }
        }
    }

    /// THROTTLED answers since `job` started. Counted per client, so concurrent jobs may share
    /// the count; it is a report, not a ledger.
    fn throttled_since(&self, job: &Execution<'_>) -> u64 {
        self.client.throttled_count().saturating_sub(job.throttled_before)
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ShopifyError>>,
    {
        self.call_within(MAX_WAIT, call).await
    }

    async fn call_within<T, F, Fut>(&self, max_wait: Duration, call: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ShopifyError>>,
    {
        let policy = self.config.sync.retry;
        self.client.with_retries(&policy, MAX_WAIT.min(max_wait), call).await.map_err(Failure::Shopify)
    }

    async fn write_back(&self, writeback_id: i64) -> Result<SyncOutcome, JobError> {
        let Some(row) = writeback::get(&self.pool, writeback_id).await? else { return Ok(SyncOutcome::NothingToDo) };
        if row.state != WritebackState::Pending {
            return Ok(SyncOutcome::NothingToDo);
        }
        let policy = self.config.sync.retry;
        let result = self
            .client
            .with_retries(&policy, MAX_WAIT, || self.client.unsubscribe(&row.customer_gid, row.consent_at))
            .await;
        match result {
            Ok(()) => {
                writeback::done(&self.pool, writeback_id).await?;
                Ok(SyncOutcome::Done)
            }
            Err(ShopifyError::Permanent(reason)) => {
                tracing::error!(writeback_id, customer = %row.customer_gid, %reason, "Shopify refused the unsubscribe");
                writeback::failed(&self.pool, writeback_id, &reason).await?;
                Ok(SyncOutcome::Failed)
            }
            Err(err) => {
                writeback::retry_later(&self.pool, writeback_id, WRITEBACK_RETRY, &err.to_string()).await?;
                Ok(SyncOutcome::RetryLater)
            }
        }
    }
}
