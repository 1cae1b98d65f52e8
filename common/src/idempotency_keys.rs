//! Housekeeping of the API's `Idempotency-Key` records (the API reads and writes them).

use sqlx::PgPool;

/// Deletes up to 10,000 expired keys; called on every scheduler tick.
pub async fn delete_expired(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT 10000))",
    )
    .execute(pool)
    .await?
    .rows_affected())
}
