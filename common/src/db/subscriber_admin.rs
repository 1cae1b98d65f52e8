//! Operator views of subscribers and the delivery ledger.

use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::domain::{DeliveryKind, DeliveryState, EmailAddress, IsoWeek, SubscriberStatus};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct SubscriberRow {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub status: SubscriberStatus,
    pub level: Option<i16>,
    pub shopify_customer_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Keyset page of subscribers, optionally filtered by a search on email/name and by status.
pub async fn list(
    pool: &PgPool,
    search: Option<&str>,
    status: Option<SubscriberStatus>,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<SubscriberRow>> {
    let pattern = search.map(|s| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    sqlx::query_as(
        "SELECT id, email, first_name, status, level, shopify_customer_id, created_at FROM subscribers
         WHERE id > $1 AND ($2::text IS NULL OR email ILIKE $2 OR first_name ILIKE $2) AND ($3::text IS NULL OR status = $3)
         ORDER BY id LIMIT $4",
    )
    .bind(after_id)
    .bind(pattern)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

const SUBSCRIBER_COLUMNS: &str = "id, email, first_name, status, level, shopify_customer_id, created_at";

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<SubscriberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The subscriber with this address (case-insensitively, as addresses are unique).
pub async fn by_email(pool: &PgPool, email: &EmailAddress) -> sqlx::Result<Option<SubscriberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE lower(email) = $1")))
        .bind(email.lowercase())
        .fetch_optional(pool)
        .await
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub subscriber_id: i64,
    pub week: IsoWeek,
    pub kind: DeliveryKind,
    pub challenge_id: Option<i64>,
    pub state: DeliveryState,
    pub attempts: i32,
    pub ambiguous: bool,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const LEDGER_COLUMNS: &str =
    "id, subscriber_id, week, kind, challenge_id, state, attempts, ambiguous, message_id, reason, sent_at, updated_at";

pub async fn delivery(pool: &PgPool, id: i64) -> sqlx::Result<Option<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LEDGER_COLUMNS} FROM deliveries WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn ledger_for_subscriber(pool: &PgPool, subscriber_id: i64) -> sqlx::Result<Vec<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LEDGER_COLUMNS} FROM deliveries WHERE subscriber_id = $1 ORDER BY week DESC LIMIT 520"
    )))
    .bind(subscriber_id)
    .fetch_all(pool)
    .await
}

pub async fn ledger_for_week(
    pool: &PgPool,
    week: IsoWeek,
    state: Option<DeliveryState>,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LEDGER_COLUMNS} FROM deliveries WHERE week = $1 AND ($2::text IS NULL OR state = $2) AND id > $3
         ORDER BY id LIMIT $4"
    )))
    .bind(week)
    .bind(state)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The most recent failed deliveries: id, week, reason, when.
pub async fn recent_failures(
    pool: &PgPool,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String, Option<String>, chrono::DateTime<chrono::Utc>)>> {
    sqlx::query_as(
        "SELECT id, week, reason, updated_at FROM deliveries WHERE state = $1 ORDER BY updated_at DESC LIMIT $2",
    )
    .bind(DeliveryState::Failed)
    .bind(limit)
    .fetch_all(pool)
    .await
}
