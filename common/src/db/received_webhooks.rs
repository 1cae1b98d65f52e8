//! Webhooks already received (`received_webhooks`), one row per source and id: a redelivered
//! webhook (SNS and Shopify both retry) is recognised in the transaction that applies it, so its
//! effect happens once.

use sqlx::PgConnection;

use crate::domain::WebhookSource;

/// Records the webhook inside the caller's transaction; `false` if it was already received.
pub async fn first_delivery(
    tx: &mut PgConnection,
    source: WebhookSource,
    webhook_id: &str,
    topic: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO received_webhooks (source, webhook_id, topic) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(source)
    .bind(webhook_id)
    .bind(topic)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
