//! Jobs: what travels on the queues, and the plumbing every job shares.
//!
//! A job is two halves, because the scheduler and the API push jobs without the worker's
//! dependencies (compare crates.io's `BackgroundJob` and River's `JobArgs` + `Worker[T]`):
//!
//! - a [`Payload`], here: the data that travels (ids only: the worker reads the current state from
//!   Postgres, so a job is safe to run twice and never carries stale or personal data) and the
//!   [`Queue`] it travels on;
//! - a [`Job`], in the worker: the context a run needs (`Self`) and `run`, which reports an
//!   [`Outcome`] or a [`JobError`] that says whether to run the job again.
//!
//! Everything else is written once: the queue's Redis settings ([`queue`]), and in [`runner`] the
//! apalis worker per queue with its concurrency, the tracked task that lets a job finish recording
//! when its apalis future is dropped, the tracing span, the outcome metric and graceful shutdown.

pub mod queue;
pub mod runner;

use std::{fmt, future::Future};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Config;

/// A queue: its Redis keys, how many of its jobs one worker process runs at once, and its metric.
/// Each queue has its own concurrency (bulkhead), so a slow Shopify never takes email's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Weekly emails ([`SendChallengeEmail`]).
    Email,
    /// Shopify sync pages and write-backs ([`ShopifyJob`]).
    ShopifySync,
    /// Operators' test sends ([`SendTestEmail`]): a queue of their own, so a test send never
    /// waits behind a weekly run's window, and a run never shares its slots.
    TestSend,
}

/// Test sends one worker process runs at once: a few a minute per operator.
const TEST_SEND_CONCURRENCY: usize = 2;

impl Queue {
    /// The queue's name: the suffix of its apalis-redis namespace and of its worker's name.
    pub const fn name(self) -> &'static str {
        match self {
            Queue::Email => "email",
            Queue::ShopifySync => "shopify-sync",
            Queue::TestSend => "test-send",
        }
    }

    /// The apalis-redis namespace: `<LEVELUP_REDIS_NAMESPACE>:<name>`.
    pub fn redis_name(self, config: &Config) -> String {
        format!("{}:{}", config.redis_namespace, self.name())
    }

    /// Jobs of this queue in flight per worker process (`LEVELUP_EMAIL_CONCURRENCY`,
    /// `LEVELUP_SYNC_CONCURRENCY`; test sends: 2).
    pub fn concurrency(self, config: &Config) -> usize {
        match self {
            Queue::Email => config.email_concurrency,
            Queue::ShopifySync => config.sync_concurrency,
            Queue::TestSend => TEST_SEND_CONCURRENCY,
        }
    }

    /// The counter of finished runs, labelled `outcome` (and `job` on a queue of several kinds).
    pub const fn metric(self) -> &'static str {
        match self {
            Queue::Email => "levelup_email_jobs_total",
            Queue::ShopifySync => "levelup_shopify_jobs_total",
            Queue::TestSend => "levelup_test_send_jobs_total",
        }
    }
}

/// What travels on a queue. Implemented next to the payload, in `common`, so that whoever pushes
/// it (the scheduler, the API) and the worker that runs it agree on the queue.
pub trait Payload: Serialize + DeserializeOwned + fmt::Debug + Send + Sync + Unpin + 'static {
    const QUEUE: Queue;

    /// The `job` label of the queue's metric, for a queue that carries several kinds of job (an
    /// enum payload); `None` for a queue of one kind, whose metric has no `job` label.
    fn kind(&self) -> Option<&'static str> {
        None
    }
}

/// Runs one kind of [`Payload`]. `Self` is the job's context: what a run needs (pool, clients,
/// configuration), built once per worker process and shared by its runs.
///
/// Delivery is at least once (apalis-redis may run a job again after a crash or a lost ack), so
/// `run` must be safe to run twice: the ledgers in Postgres decide what is still to do.
pub trait Job: Send + Sync + 'static {
    type Payload: Payload;
    type Outcome: Outcome;

    /// Runs the job to an outcome it has recorded. Failures the job can record (a permanent
    /// error, a retry scheduled in a ledger) are outcomes, not errors: an error is what could not
    /// be recorded, and [`JobError`] says whether apalis should run the job again.
    fn run(&self, payload: Self::Payload) -> impl Future<Output = Result<Self::Outcome, JobError>> + Send;
}

/// What one run did: logged (at debug), and counted by [`label`](Outcome::label) in the queue's
/// metric. Labels are a fixed set per job, so the metric's series stay bounded.
pub trait Outcome: fmt::Debug + Send + 'static {
    fn label(&self) -> &'static str;
}

/// Why a run ended without an outcome, and whether running it again may help.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another run (Postgres or Redis unreachable, so nothing was recorded): apalis-redis
    /// reschedules the job (now + attempt seconds, at most 25 times).
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Another run cannot help: apalis moves the job to the queue's `dead` set at once.
    #[error("{0:#}")]
    Abort(anyhow::Error),
}

impl JobError {
    pub fn retries(&self) -> bool {
        matches!(self, JobError::Retry(_))
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        JobError::Retry(anyhow::Error::new(err).context("database"))
    }
}

impl From<redis::RedisError> for JobError {
    fn from(err: redis::RedisError) -> Self {
        JobError::Retry(anyhow::Error::new(err).context("redis"))
    }
}

impl From<anyhow::Error> for JobError {
    fn from(err: anyhow::Error) -> Self {
        JobError::Retry(err)
    }
}

/// Send one subscriber's weekly email: the delivery row says what and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendChallengeEmail {
    pub delivery_id: i64,
}

impl Payload for SendChallengeEmail {
    const QUEUE: Queue = Queue::Email;
}

/// Send an operator's test send: the `test_sends` row says what and to whom. Never a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTestEmail {
    pub test_send_id: i64,
}

impl Payload for SendTestEmail {
    const QUEUE: Queue = Queue::TestSend;
}

/// Work on the Shopify sync queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShopifyJob {
    /// Fetch and apply page `page` of sync `sync_id` (the cursor is in the sync row).
    SyncPage { sync_id: i64, page: i32 },
    /// Write an unsubscribe back to Shopify.
    WriteBack { writeback_id: i64 },
}

impl Payload for ShopifyJob {
    const QUEUE: Queue = Queue::ShopifySync;

    fn kind(&self) -> Option<&'static str> {
        Some(match self {
            ShopifyJob::SyncPage { .. } => "sync_page",
            ShopifyJob::WriteBack { .. } => "write_back",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_keep_their_names_and_metrics() {
        assert_eq!((Queue::Email.name(), Queue::Email.metric()), ("email", "levelup_email_jobs_total"));
        assert_eq!(
            (Queue::ShopifySync.name(), Queue::ShopifySync.metric()),
            ("shopify-sync", "levelup_shopify_jobs_total")
        );
        assert_eq!((Queue::TestSend.name(), Queue::TestSend.metric()), ("test-send", "levelup_test_send_jobs_total"));
        assert_eq!(SendChallengeEmail { delivery_id: 1 }.kind(), None);
        assert_eq!(ShopifyJob::WriteBack { writeback_id: 1 }.kind(), Some("write_back"));
    }
}
