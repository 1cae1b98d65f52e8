//! What operators page on, read from the ledger: the due backlog (Postgres holds it; Redis holds
//! only the window) and the dead letters waiting for an operator.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{DeliveryState, IsoWeek};

/// Deliveries of `weeks` due now and not yet pushed, and when the oldest of them became due.
/// One range of `deliveries_due_idx` per week.
pub async fn due(pool: &PgPool, weeks: &[IsoWeek]) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT count(*), min(next_attempt_at) FROM deliveries
         WHERE week = ANY($1) AND state = $2 AND pushed_at IS NULL AND next_attempt_at <= now()",
    )
    .bind(weeks)
    .bind(DeliveryState::Queued)
    .fetch_one(pool)
    .await
}

/// Dead letters not replayed yet.
pub async fn open_dead_letters(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL").fetch_one(pool).await
}
