//! Dead letters: jobs that exhausted their attempt budget, kept with their last error until an
//! operator replays them. Replay goes through the normal idempotent path: the delivery row goes
//! back to `queued` (only if it is still `failed`), so a job that meanwhile succeeded sends
//! nothing.

use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::domain::{DeadLetterQueue, IsoWeek};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: DeadLetterQueue,
    pub job: serde_json::Value,
    pub delivery_id: Option<i64>,
    pub attempts: i32,
    pub last_error: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub replayed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Dead letters not yet replayed, newest first.
pub async fn list_open(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as("SELECT * FROM dead_letters WHERE replayed_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Replays one dead letter (`Some(id)`) or all open ones (`None`). Returns how many were replayed.
pub async fn replay(pool: &PgPool, id: Option<i64>) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let replayed: Vec<Option<i64>> = sqlx::query_scalar(
        "UPDATE dead_letters SET replayed_at = now()
         WHERE replayed_at IS NULL AND ($1::bigint IS NULL OR id = $1)
         RETURNING delivery_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let deliveries: Vec<i64> = replayed.iter().flatten().copied().collect();
    let weeks: Vec<IsoWeek> = sqlx::query_scalar(
        "UPDATE deliveries
         SET state = 'queued', attempts = 0, pushed_at = NULL, next_attempt_at = now(), claimed_by = NULL,
             reason = 'replayed from dead letters', updated_at = now()
         WHERE id = ANY($1) AND state = 'failed'
         RETURNING week",
    )
    .bind(&deliveries)
    .fetch_all(&mut *tx)
    .await?;
    // A completed run with work again is reopened, so the schedulers feed it.
    sqlx::query(
        "UPDATE weekly_runs SET status = 'sending', finished_at = NULL WHERE week = ANY($1) AND status = 'completed'",
    )
    .bind(&weeks)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(replayed.len() as u64)
}
