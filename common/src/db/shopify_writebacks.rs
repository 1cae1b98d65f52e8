//! Unsubscribes made in LevelUp, written back to Shopify so the store and LevelUp agree.
//!
//! The row is inserted in the unsubscribe's own transaction ([`record`]), the scheduler pushes a
//! job for each pending row ([`to_push`]), and the worker calls
//! `customerEmailMarketingConsentUpdate` and records the outcome. Nothing is lost if a push or a
//! worker is: a pending row whose job did not finish is pushed again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::domain::WritebackState;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Writeback {
    pub id: i64,
    pub customer_gid: String,
    pub marketing_state: String,
    pub consent_at: DateTime<Utc>,
    pub state: WritebackState,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

/// Records that subscriber `id` unsubscribed in LevelUp, if they came from Shopify.
pub async fn record(tx: &mut PgConnection, subscriber_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO shopify_writebacks (customer_gid, marketing_state)
         SELECT shopify_customer_id, 'UNSUBSCRIBED' FROM subscribers
         WHERE id = $1 AND shopify_customer_id IS NOT NULL",
    )
    .bind(subscriber_id)
    .execute(&mut *tx)
    .await
    .map(drop)
}

/// Pending write-backs due now whose job was never pushed or was pushed `stale_after` ago; marks
/// them pushed.
pub async fn to_push(pool: &PgPool, stale_after: Duration, limit: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE shopify_writebacks SET pushed_at = now()
         WHERE id IN (
            SELECT id FROM shopify_writebacks
            WHERE state = 'pending' AND next_attempt_at <= now()
              AND (pushed_at IS NULL OR pushed_at < now() - make_interval(secs => $1))
            ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(stale_after.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

const COLUMNS: &str = "id, customer_gid, marketing_state, consent_at, state, attempts, last_error, created_at, done_at";

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Writeback>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shopify_writebacks WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Writeback>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shopify_writebacks ORDER BY id DESC LIMIT $1")))
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn done(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE shopify_writebacks SET state = 'done', done_at = now(), attempts = attempts + 1, last_error = NULL
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn failed(pool: &PgPool, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE shopify_writebacks SET state = 'failed', done_at = now(), attempts = attempts + 1, last_error = $2
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}

/// Shopify could not be reached for long enough: try again after `delay` (the scheduler pushes it).
pub async fn retry_later(pool: &PgPool, id: i64, delay: Duration, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE shopify_writebacks SET attempts = attempts + 1, last_error = $3, pushed_at = NULL,
            next_attempt_at = now() + make_interval(secs => $2)
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}
