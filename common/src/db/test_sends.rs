//! Test sends: one challenge email, rendered as a run would render it, sent to an address the
//! operator gives. Outside every run and never in the deliveries ledger.
//!
//! The API inserts the row ([`create`], which also applies the per-operator limit), the scheduler
//! pushes a job for each queued row ([`to_push`]), and the worker claims it ([`claim`]), sends
//! once and records the outcome. A test send is tried once: a failure is final (the operator sends
//! another), and a row whose worker died during the send is failed by the scheduler
//! ([`fail_abandoned`]) rather than sent again, since the first attempt may have gone out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::domain::{EmailAddress, TestSendState};

/// The window of the per-operator limit.
pub const LIMIT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct TestSend {
    pub id: i64,
    pub operator: String,
    pub challenge_id: i64,
    pub subscriber_id: Option<i64>,
    pub to_address: String,
    pub state: TestSendState,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, operator, challenge_id, subscriber_id, to_address, state, message_id, error, created_at, finished_at";

/// What was asked for.
pub struct NewTestSend<'a> {
    pub operator: &'a str,
    pub challenge_id: i64,
    pub subscriber_id: Option<i64>,
    pub to: &'a EmailAddress,
}

#[derive(Debug)]
pub enum Created {
    Queued(TestSend),
    /// The operator sent `per_window` test sends within [`LIMIT_WINDOW`]: the oldest of them
    /// leaves the window after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

/// Queues a test send unless the operator already sent `per_window` within [`LIMIT_WINDOW`].
/// Count and insert run under a transaction-scoped advisory lock per operator, so concurrent
/// requests cannot both take the last place.
pub async fn create(pool: &PgPool, new: NewTestSend<'_>, per_window: i64) -> sqlx::Result<Created> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('levelup:test_sends:' || $1, 0))")
        .bind(new.operator)
        .execute(&mut *tx)
        .await?;
    // `clock_timestamp()`, not `now()`: the transaction may have waited for the lock.
    let (count, oldest_leaves_in): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                EXTRACT(EPOCH FROM min(created_at) + make_interval(secs => $2) - clock_timestamp())::float8
         FROM test_sends
         WHERE operator = $1 AND created_at > clock_timestamp() - make_interval(secs => $2)",
    )
    .bind(new.operator)
    .bind(LIMIT_WINDOW.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    if count >= per_window {
        let retry_after =
            Duration::from_secs_f64(oldest_leaves_in.unwrap_or(0.0).clamp(0.0, LIMIT_WINDOW.as_secs_f64()));
        return Ok(Created::Limited { retry_after });
    }
    let created: TestSend = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO test_sends (operator, challenge_id, subscriber_id, to_address, created_at)
         VALUES ($1, $2, $3, $4, clock_timestamp())
         RETURNING {COLUMNS}"
    )))
    .bind(new.operator)
    .bind(new.challenge_id)
    .bind(new.subscriber_id)
    .bind(new.to.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Created::Queued(created))
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<TestSend>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM test_sends WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Queued test sends whose job was never pushed, or pushed `stale_after` ago (lost); marks them
/// pushed.
pub async fn to_push(pool: &PgPool, stale_after: Duration, limit: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE test_sends SET pushed_at = now()
         WHERE id IN (
            SELECT id FROM test_sends
            WHERE state = 'queued' AND (pushed_at IS NULL OR pushed_at < now() - make_interval(secs => $1))
            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(stale_after.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Fails test sends claimed more than `claim_timeout` ago (their worker died during the send):
/// the send may have gone out, so it is not tried again. Returns how many.
pub async fn fail_abandoned(pool: &PgPool, claim_timeout: Duration) -> sqlx::Result<u64> {
    sqlx::query(
        "UPDATE test_sends
         SET state = 'failed', finished_at = now(),
             error = 'the worker stopped during the send: it may or may not have gone out'
         WHERE state = 'sending' AND claimed_at < now() - make_interval(secs => $1)",
    )
    .bind(claim_timeout.as_secs_f64())
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}

/// A claimed test send with what rendering it needs.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedTestSend {
    pub id: i64,
    pub to_address: String,
    pub challenge_id: i64,
    pub challenge_level: i16,
    pub challenge_title: String,
    pub challenge_body: String,
    pub subscriber_id: Option<i64>,
    pub first_name: Option<String>,
    pub level: Option<i16>,
}

/// Takes a queued test send for `worker` (`queued → sending`); `None` if it is not queued (sent,
/// failed, held by another worker, or gone): a second job for it does nothing.
pub async fn claim(pool: &PgPool, id: i64, worker: &str) -> sqlx::Result<Option<ClaimedTestSend>> {
    sqlx::query_as(
        "WITH claimed AS (
             UPDATE test_sends SET state = 'sending', claimed_by = $2, claimed_at = now()
             WHERE id = $1 AND state = 'queued'
             RETURNING id, to_address, challenge_id, subscriber_id
         )
         SELECT t.id, t.to_address, t.challenge_id, c.level AS challenge_level, c.title AS challenge_title,
                c.body AS challenge_body, t.subscriber_id, s.first_name, s.level
         FROM claimed t
         JOIN challenges c ON c.id = t.challenge_id
         LEFT JOIN subscribers s ON s.id = t.subscriber_id",
    )
    .bind(id)
    .bind(worker)
    .fetch_optional(pool)
    .await
}

/// How a claimed test send ended.
#[derive(Debug, Clone, Copy)]
pub enum Finished<'a> {
    Sent { message_id: &'a str },
    Failed { reason: &'a str },
}

/// Records the outcome of `worker`'s claim.
pub async fn finish(pool: &PgPool, id: i64, worker: &str, finished: Finished<'_>) -> sqlx::Result<()> {
    let (state, message_id, error) = match finished {
        Finished::Sent { message_id } => (TestSendState::Sent, Some(message_id), None),
        Finished::Failed { reason } => (TestSendState::Failed, None, Some(reason)),
    };
    sqlx::query(
        "UPDATE test_sends SET state = $3, message_id = $4, error = $5, finished_at = now()
         WHERE id = $1 AND claimed_by = $2 AND state = 'sending'",
    )
    .bind(id)
    .bind(worker)
    .bind(state)
    .bind(message_id)
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}
