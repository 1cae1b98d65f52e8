//! The API's `Idempotency-Key` records: claim a key for a request, complete it with the stored
//! response, release it after a 5xx, and expire old ones (the scheduler's housekeeping).

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

/// A key another request already claimed.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredKey {
    pub request_hash: String,
    /// `completed` once the response is stored; `in_progress` while the first request runs.
    pub completed: bool,
    pub response_status: Option<i16>,
    pub response_headers: Option<serde_json::Value>,
    pub response_body: Option<Vec<u8>>,
}

/// Claims `key` for `client`'s request (an expired claim counts as absent). `Ok(None)`: claimed,
/// run the request; `Ok(Some(_))`: someone claimed it first (`None` inside only if that claim
/// vanished meanwhile).
pub async fn claim(
    pool: &PgPool,
    client: &str,
    key: &str,
    request_hash: &str,
) -> sqlx::Result<Result<(), Option<StoredKey>>> {
    sqlx::query("DELETE FROM idempotency_keys WHERE client = $1 AND key = $2 AND expires_at < now()")
        .bind(client)
        .bind(key)
        .execute(pool)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (client, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(client)
    .bind(key)
    .bind(request_hash)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Ok(()));
    }
    let stored = sqlx::query_as(
        "SELECT request_hash, state = 'completed' AS completed, response_status, response_headers, response_body
         FROM idempotency_keys WHERE client = $1 AND key = $2",
    )
    .bind(client)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(Err(stored))
}

/// Stores the response of the request that claimed the key.
pub async fn complete(
    pool: &PgPool,
    client: &str,
    key: &str,
    status: i16,
    content_type: &str,
    body: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'completed', response_status = $3, response_headers = $4, response_body = $5
         WHERE client = $1 AND key = $2",
    )
    .bind(client)
    .bind(key)
    .bind(status)
    .bind(serde_json::json!({ "content-type": content_type }))
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives the key back (the request failed on our side) so the client can retry with it.
pub async fn release(pool: &PgPool, client: &str, key: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE client = $1 AND key = $2 AND state = 'in_progress'")
        .bind(client)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
