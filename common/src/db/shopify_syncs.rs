//! Durable full syncs of subscribed customers, one page per job.
//!
//! A sync row holds the cursor after the last committed page. A page job claims the page (so two
//! copies of a job never both fetch it), fetches it, and in one transaction applies its customers
//! and advances the cursor, checking it still holds the claim: a page is applied exactly once and
//! a crash resumes from the last committed page. The job then pushes the next page's job; if that
//! push is lost (crash), the scheduler pushes it again once no live claim holds the page.
//! The last page ends the sync: Shopify subscribers it did not see are no longer subscribed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::shopify_consent::{self as upsert, CustomerRecord, Rules, Upserted};
use crate::domain::{EmailAddress, ShopifyCustomer, SyncMode, SyncStatus};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Sync {
    pub id: i64,
    pub trigger: String,
    pub status: SyncStatus,
    pub next_page: i32,
    pub mode: Option<SyncMode>,
    pub lines_done: i64,
    pub pages: i32,
    pub customers_seen: i64,
    pub created: i64,
    pub reactivated: i64,
    pub unsubscribed: i64,
    pub skipped: i64,
    pub throttled: i64,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, trigger, status, next_page, mode, lines_done, pages, customers_seen, created, reactivated, unsubscribed,
    skipped, throttled, error, started_at, updated_at, finished_at";

#[derive(Debug, Clone)]
pub enum Start {
    Started(Sync),
    AlreadyRunning(Sync),
}

/// Starts a full sync unless one is running (then returns that one).
pub async fn start(pool: &PgPool, trigger: &str) -> sqlx::Result<Start> {
    let started: Option<Sync> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO shopify_syncs (trigger) VALUES ($1)
         ON CONFLICT ((true)) WHERE status = 'running' DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(trigger)
    .fetch_optional(pool)
    .await?;
    if let Some(sync) = started {
        return Ok(Start::Started(sync));
    }
    match running(pool).await? {
        Some(sync) => Ok(Start::AlreadyRunning(sync)),
        // It finished between the two statements: start again.
        None => Box::pin(start(pool, trigger)).await,
    }
}

/// Starts a scheduled sync if none started since `fired_at` (the schedule's latest firing).
pub async fn start_if_due(pool: &PgPool, fired_at: DateTime<Utc>) -> sqlx::Result<Option<Sync>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO shopify_syncs (trigger)
         SELECT 'schedule' WHERE NOT EXISTS (SELECT 1 FROM shopify_syncs WHERE started_at >= $1)
         ON CONFLICT ((true)) WHERE status = 'running' DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(fired_at)
    .fetch_optional(pool)
    .await
}

pub async fn running(pool: &PgPool) -> sqlx::Result<Option<Sync>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shopify_syncs WHERE status = 'running'")))
        .fetch_optional(pool)
        .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Sync>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shopify_syncs WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Sync>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shopify_syncs ORDER BY started_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Pages to push: running syncs whose next page was never pushed, or whose job was pushed long
/// ago and is not held by a live claim (the job or its worker was lost). Marks them pushed.
pub async fn pages_to_push(pool: &PgPool, stale_after: Duration) -> sqlx::Result<Vec<(i64, i32)>> {
    sqlx::query_as(
        "UPDATE shopify_syncs SET pushed_page = next_page, pushed_at = now()
         WHERE status = 'running'
           AND (claimed_until IS NULL OR claimed_until < now())
           AND (pushed_page IS DISTINCT FROM next_page OR pushed_at < now() - make_interval(secs => $1))
         RETURNING id, next_page",
    )
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Fetch the page after this cursor.
    pub cursor: Option<String>,
    /// `pages`, `bulk`, or `None` before the first job chose.
    pub mode: Option<SyncMode>,
    pub bulk_operation_id: Option<String>,
    /// Bulk result lines already applied.
    pub lines_done: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageClaim {
    Claimed(Claimed),
    /// The page is committed already, or the sync is over: a duplicate job.
    Done,
    /// Another worker is fetching it.
    HeldElsewhere,
}

/// `claimant` must be unique per job execution (two copies of a job in one worker process must
/// not share a claim).
pub async fn claim_page(
    pool: &PgPool,
    sync_id: i64,
    page: i32,
    claimant: &str,
    timeout: Duration,
) -> sqlx::Result<PageClaim> {
    let claimed = sqlx::query(
        "UPDATE shopify_syncs SET claimed_by = $3, claimed_until = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1 AND next_page = $2 AND status = 'running'
           AND (claimed_until IS NULL OR claimed_until < now())
         RETURNING cursor, mode, bulk_operation_id, lines_done",
    )
    .bind(sync_id)
    .bind(page)
    .bind(claimant)
    .bind(timeout.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    if let Some(row) = claimed {
        return Ok(PageClaim::Claimed(Claimed {
            cursor: row.get("cursor"),
            mode: row.get("mode"),
            bulk_operation_id: row.get("bulk_operation_id"),
            lines_done: row.get("lines_done"),
        }));
    }
    let current: Option<(SyncStatus, i32)> =
        sqlx::query_as("SELECT status, next_page FROM shopify_syncs WHERE id = $1")
            .bind(sync_id)
            .fetch_optional(pool)
            .await?;
    Ok(match current {
        Some((SyncStatus::Running, next)) if next == page => PageClaim::HeldElsewhere,
        _ => PageClaim::Done,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageResult {
    pub created: i64,
    pub reactivated: i64,
    pub unsubscribed: i64,
    pub skipped: i64,
    /// The sync ended with this page.
    pub finished: bool,
}

/// How a batch of customers advances the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance<'a> {
    /// A page from cursor pagination: the next page starts after `next_cursor`.
    Page { next_cursor: Option<&'a str>, has_next_page: bool },
    /// Lines of a bulk operation's result; the claim is kept (renewed for `claim_timeout`)
    /// until the last batch.
    BulkLines { lines: i64, last: bool, claim_timeout: Duration },
}

/// Applies a fetched batch and advances the sync, in one transaction. `None`: this job no
/// longer held the claim (another copy committed it); nothing was applied.
pub async fn commit_page(
    pool: &PgPool,
    (sync_id, page, claimant): (i64, i32, &str),
    customers: &[ShopifyCustomer],
    advance: Advance<'_>,
    throttled: u64,
    rules: &Rules,
) -> sqlx::Result<Option<PageResult>> {
    let has_next_page = match advance {
        Advance::Page { has_next_page, .. } => has_next_page,
        Advance::BulkLines { last, .. } => !last,
    };
    let mut tx = pool.begin().await?;
    let held = sqlx::query(
        "SELECT started_at FROM shopify_syncs
         WHERE id = $1 AND next_page = $2 AND status = 'running' AND claimed_by = $3 FOR UPDATE",
    )
    .bind(sync_id)
    .bind(page)
    .bind(claimant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(held) = held else { return Ok(None) };
    let started_at: DateTime<Utc> = held.get("started_at");
    let mut result = PageResult { finished: !has_next_page, ..PageResult::default() };
    for customer in customers {
        let Some(email) = customer.email.as_deref().and_then(|e| EmailAddress::parse(e).ok()) else {
            result.skipped += 1;
            continue;
        };
        let record = CustomerRecord {
            gid: Some(customer.gid.clone()),
            email,
            first_name: customer.first_name.clone().filter(|n| !n.trim().is_empty()),
            subscribed: customer.marketing_state.as_deref() == Some("SUBSCRIBED"),
            consent_at: customer.marketing_updated_at,
        };
        match upsert::apply(&mut tx, &record, rules, Some(sync_id)).await? {
            Upserted::Created => result.created += 1,
            Upserted::Reactivated => result.reactivated += 1,
            Upserted::Unsubscribed => result.unsubscribed += 1,
            Upserted::Skipped => result.skipped += 1,
            Upserted::Unchanged => {}
        }
    }
    if result.finished {
        // Shopify subscribers this sync did not see have withdrawn consent (or left the store).
        // Subscribers who arrived or changed during the sync are left for the next one.
        let gone: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM subscribers
             WHERE shopify_customer_id IS NOT NULL AND status = 'active'
               AND shopify_seen_sync IS DISTINCT FROM $1 AND created_at < $2 AND status_changed_at < $2
             FOR UPDATE",
        )
        .bind(sync_id)
        .bind(started_at)
        .fetch_all(&mut *tx)
        .await?;
        for id in &gone {
            upsert::unsubscribe(&mut tx, *id, "shopify: no longer subscribed").await?;
        }
        result.unsubscribed += gone.len() as i64;
    }
    let (next_cursor, is_page, renew_secs, lines) = match advance {
        Advance::Page { next_cursor, .. } => (next_cursor, true, 0.0, 0),
        Advance::BulkLines { claim_timeout, lines, .. } => (None, false, claim_timeout.as_secs_f64(), lines),
    };
    // A page releases its claim and moves to the next page; bulk lines keep the claim (renewed).
    sqlx::query(
        "UPDATE shopify_syncs SET
            next_page = CASE WHEN $10 THEN next_page + 1 ELSE next_page END,
            cursor = CASE WHEN $10 THEN $2 ELSE cursor END,
            claimed_by = CASE WHEN $10 OR $9 THEN NULL ELSE claimed_by END,
            claimed_until = CASE WHEN $10 OR $9 THEN NULL ELSE now() + make_interval(secs => $11) END,
            pages = pages + CASE WHEN $10 THEN 1 ELSE 0 END,
            lines_done = lines_done + $12,
            customers_seen = customers_seen + $3, created = created + $4,
            reactivated = reactivated + $5, unsubscribed = unsubscribed + $6, skipped = skipped + $7,
            throttled = throttled + $8, attempts = 0, updated_at = now(),
            status = CASE WHEN $9 THEN 'completed' ELSE status END,
            finished_at = CASE WHEN $9 THEN now() ELSE finished_at END
         WHERE id = $1",
    )
    .bind(sync_id)
    .bind(next_cursor)
    .bind(customers.len() as i64)
    .bind(result.created)
    .bind(result.reactivated)
    .bind(result.unsubscribed)
    .bind(result.skipped)
    .bind(throttled as i64)
    .bind(result.finished)
    .bind(is_page)
    .bind(renew_secs)
    .bind(lines)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(result))
}

/// Records how this sync fetches (`pages` or `bulk`, with the bulk operation's id), while the
/// claim holds. Returns false if the claim was lost.
pub async fn set_mode(
    pool: &PgPool,
    sync_id: i64,
    claimant: &str,
    mode: SyncMode,
    bulk_operation_id: Option<&str>,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE shopify_syncs SET mode = $3, bulk_operation_id = $4, updated_at = now()
         WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
    )
    .bind(sync_id)
    .bind(claimant)
    .bind(mode)
    .bind(bulk_operation_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Renews a claim (a long bulk operation being polled). Returns false if it was lost.
pub async fn renew_claim(pool: &PgPool, sync_id: i64, claimant: &str, timeout: Duration) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE shopify_syncs SET claimed_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
    )
    .bind(sync_id)
    .bind(claimant)
    .bind(timeout.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Records that the next page's job was pushed (so the scheduler does not push it too).
pub async fn mark_pushed(pool: &PgPool, sync_id: i64, page: i32) -> sqlx::Result<()> {
    sqlx::query("UPDATE shopify_syncs SET pushed_page = $2, pushed_at = now() WHERE id = $1 AND next_page = $2")
        .bind(sync_id)
        .bind(page)
        .execute(pool)
        .await
        .map(drop)
}

/// Ends the sync as failed (the page could not be fetched); the next sync starts afresh.
pub async fn fail(
    pool: &PgPool,
    sync_id: i64,
    page: i32,
    worker: &str,
    error: &str,
    throttled: u64,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE shopify_syncs SET status = 'failed', error = $4, finished_at = now(), updated_at = now(),
            claimed_by = NULL, claimed_until = NULL, throttled = throttled + $5
         WHERE id = $1 AND next_page = $2 AND status = 'running' AND claimed_by = $3",
    )
    .bind(sync_id)
    .bind(page)
    .bind(worker)
    .bind(error)
    .bind(throttled as i64)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed == 1)
}
