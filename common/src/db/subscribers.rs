//! Subscriber-side operations: level and progress, the placement questionnaire, submissions and
//! the level-up rule, unsubscribe.
//!
//! Level-up rule: a subscriber moves up one level once they have passed
//! `promotion_passes` distinct challenges at their current level (configurable,
//! `LEVELUP_PROMOTION_PASSES`, default 3), up to the highest level that has challenges. Every
//! change is kept in `level_history`.

use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::domain::{DeliveryState, EmailAddress, Level, LevelChangeReason, SubscriberStatus, SuppressionReason};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct SubscriberView {
    pub id: i64,
    pub first_name: Option<String>,
    pub status: SubscriberStatus,
    pub level: Option<i16>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LevelChange {
    pub from_level: Option<i16>,
    pub to_level: i16,
    pub reason: LevelChangeReason,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ChallengeRow {
    pub id: i64,
    pub level: i16,
    pub title: String,
    pub body: String,
}

/// Whether the subscriber still exists (a Shopify redaction deletes them while their links live on).
pub async fn exists(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM subscribers WHERE id = $1)").bind(id).fetch_one(pool).await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<SubscriberView>> {
    sqlx::query_as("SELECT id, first_name, status, level FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn history(pool: &PgPool, id: i64) -> sqlx::Result<Vec<LevelChange>> {
    sqlx::query_as(
        "SELECT from_level, to_level, reason, created_at FROM level_history WHERE subscriber_id = $1 ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Distinct challenges passed at `level`.
pub async fn passed_at_level(pool: &PgPool, id: i64, level: i16) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT s.challenge_id) FROM submissions s JOIN challenges c ON c.id = s.challenge_id
         WHERE s.subscriber_id = $1 AND s.passed AND c.level = $2",
    )
    .bind(id)
    .bind(level)
    .fetch_one(pool)
    .await
}

/// A challenge the subscriber was sent (subscribers only see their own challenges).
pub async fn sent_challenge(
    pool: &PgPool,
    subscriber_id: i64,
    challenge_id: i64,
) -> sqlx::Result<Option<ChallengeRow>> {
    sqlx::query_as(
        "SELECT c.id, c.level, c.title, c.body FROM challenges c
         WHERE c.id = $2 AND EXISTS (
             SELECT 1 FROM deliveries d WHERE d.subscriber_id = $1 AND d.challenge_id = c.id AND d.state = $3)",
    )
    .bind(subscriber_id)
    .bind(challenge_id)
    .bind(DeliveryState::Sent)
    .fetch_optional(pool)
    .await
}

/// Placement: the answers' score sets the level (and history), once per questionnaire taken.
pub async fn place(pool: &PgPool, id: i64, answers: &serde_json::Value, score: i32, level: i16) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let previous: Option<Option<i16>> = sqlx::query_scalar("SELECT level FROM subscribers WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(previous) = previous else { return Err(sqlx::Error::RowNotFound) };
    sqlx::query(
        "INSERT INTO questionnaire_results (subscriber_id, answers, score, assigned_level) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(answers)
    .bind(score)
    .bind(level)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE subscribers SET level = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(level)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO level_history (subscriber_id, from_level, to_level, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(previous)
        .bind(level)
        .bind(LevelChangeReason::Placement)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubmissionOutcome {
    pub submission_id: i64,
    pub passed: bool,
    /// The level after this submission.
    pub level: i16,
    pub promoted: bool,
    /// Distinct challenges passed at the (new) current level.
    pub passed_at_level: i64,
}

/// Records a submission and applies the level-up rule, atomically (the subscriber row is locked,
/// so concurrent submissions cannot promote twice).
pub async fn submit(
    pool: &PgPool,
    subscriber_id: i64,
    challenge: &ChallengeRow,
    answer: &str,
    passed: bool,
    promotion_passes: i64,
) -> sqlx::Result<SubmissionOutcome> {
    let mut tx = pool.begin().await?;
    let level: Option<i16> = sqlx::query_scalar("SELECT level FROM subscribers WHERE id = $1 FOR UPDATE")
        .bind(subscriber_id)
        .fetch_one(&mut *tx)
        .await?;
    let submission_id: i64 = sqlx::query_scalar(
        "INSERT INTO submissions (subscriber_id, challenge_id, answer, passed) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(subscriber_id)
    .bind(challenge.id)
    .bind(answer)
    .bind(passed)
    .fetch_one(&mut *tx)
    .await?;
    let mut current = level.unwrap_or(challenge.level);
    let count_at = |level: i16| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT s.challenge_id) FROM submissions s JOIN challenges c ON c.id = s.challenge_id
             WHERE s.subscriber_id = $1 AND s.passed AND c.level = $2",
        )
        .bind(subscriber_id)
        .bind(level)
    };
    let passed_here = count_at(current).fetch_one(&mut *tx).await?;
    let highest: Option<i16> =
        sqlx::query_scalar("SELECT max(level) FROM challenges WHERE NOT archived").fetch_one(&mut *tx).await?;
    let mut promoted = false;
    if passed && passed_here >= promotion_passes && highest.is_some_and(|h| current < h) {
        sqlx::query("UPDATE subscribers SET level = $2, updated_at = now() WHERE id = $1")
            .bind(subscriber_id)
            .bind(current + 1)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO level_history (subscriber_id, from_level, to_level, reason) VALUES ($1, $2, $3, $4)")
            .bind(subscriber_id)
            .bind(current)
            .bind(current + 1)
            .bind(LevelChangeReason::Promotion)
            .execute(&mut *tx)
            .await?;
        current += 1;
        promoted = true;
    }
    let passed_at_level = if promoted { count_at(current).fetch_one(&mut *tx).await? } else { passed_here };
    tx.commit().await?;
    Ok(SubmissionOutcome { submission_id, passed, level: current, promoted, passed_at_level })
}

/// Unsubscribes and suppresses the address, so no later import re-activates it (a Shopify sync
/// does only if the customer subscribes again in the store afterwards), and records the write-back
/// to Shopify.
/// Returns whether the subscriber was active.
pub async fn unsubscribe(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let changed = unsubscribe_in(&mut tx, id, "subscriber link").await?;
    if changed {
        // The store must agree: written back to Shopify by a job.
        crate::db::shopify_writebacks::record(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Inside the caller's transaction: an active subscriber becomes unsubscribed and their address
/// is suppressed (`detail` says where the unsubscribe came from). Whether they were active.
pub async fn unsubscribe_in(tx: &mut PgConnection, id: i64, detail: &str) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE subscribers SET status = $2, status_changed_at = now(), updated_at = now()
         WHERE id = $1 AND status = $3",
    )
    .bind(id)
    .bind(SubscriberStatus::Unsubscribed)
    .bind(SubscriberStatus::Active)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO suppressions (email_lower, reason, detail)
         SELECT lower(email), $2, $3 FROM subscribers WHERE id = $1
         ON CONFLICT (email_lower) DO NOTHING",
    )
    .bind(id)
    .bind(SuppressionReason::Unsubscribe)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(changed == 1)
}

/// Adds a subscriber unless the address is already one (any status: an import never
/// re-subscribes anyone). Whether it was added.
pub async fn insert_if_new(
    pool: &PgPool,
    email: &EmailAddress,
    first_name: Option<&str>,
    level: Option<Level>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO subscribers (email, first_name, level) VALUES ($1, $2, $3) ON CONFLICT ((lower(email))) DO NOTHING",
    )
    .bind(email.as_str())
    .bind(first_name)
    .bind(level.map(Level::get))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
