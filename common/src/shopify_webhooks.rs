//! Effects of Shopify webhooks on subscribers, applied in the same transaction that records the
//! webhook id, so a redelivered webhook (Shopify retries on timeouts) has its effect once.
//!
//! Topics: `customers/create` and `customers/update` add a consenting customer as an active
//! subscriber without a level (existing subscribers keep their status: an unsubscribed person is
//! never re-subscribed by a webhook); `customers/email_marketing_consent_update` with a withdrawn
//! consent unsubscribes and suppresses; `customers/redact` erases the subscriber and everything
//! tied to them. Other topics are recorded and ignored.

use serde_json::Value;
use sqlx::PgPool;

use crate::domain::EmailAddress;

#[derive(Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Duplicate,
    Applied(&'static str),
    Ignored,
}

fn customer_gid(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(format!("gid://shopify/Customer/{n}")),
        Value::String(s) if s.starts_with("gid://") => Some(s.clone()),
        Value::String(s) if !s.is_empty() => Some(format!("gid://shopify/Customer/{s}")),
        _ => None,
    }
}

fn consent_state(value: &Value) -> Option<String> {
    value.pointer("/email_marketing_consent/state").and_then(Value::as_str).map(str::to_lowercase)
}

pub async fn apply(pool: &PgPool, webhook_id: &str, topic: &str, payload: &Value) -> sqlx::Result<WebhookOutcome> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO received_webhooks (source, webhook_id, topic) VALUES ('shopify', $1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(webhook_id)
    .bind(topic)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        return Ok(WebhookOutcome::Duplicate);
    }
    let outcome = match topic {
        "customers/create" | "customers/update" => {
            let email = payload.get("email").and_then(Value::as_str).and_then(|e| EmailAddress::parse(e).ok());
            let gid = payload.get("id").and_then(customer_gid);
            match (email, consent_state(payload).as_deref()) {
                (Some(email), Some("subscribed")) => {
                    sqlx::query(
                        "INSERT INTO subscribers (email, first_name, shopify_customer_id) VALUES ($1, $2, $3)
                         ON CONFLICT ((lower(email))) DO UPDATE
                         SET first_name = COALESCE(EXCLUDED.first_name, subscribers.first_name),
                             shopify_customer_id = COALESCE(subscribers.shopify_customer_id, EXCLUDED.shopify_customer_id),
                             updated_at = now()",
                    )
                    .bind(email.as_str())
                    .bind(payload.get("first_name").and_then(Value::as_str))
                    .bind(gid)
                    .execute(&mut *tx)
                    .await?;
                    WebhookOutcome::Applied("upserted")
                }
                (Some(email), Some(_)) => {
                    unsubscribe(&mut tx, &email.lowercase()).await?;
                    WebhookOutcome::Applied("unsubscribed")
                }
                _ => WebhookOutcome::Ignored,
            }
        }
        "customers/email_marketing_consent_update" => {
            let email = payload.get("email_address").and_then(Value::as_str).and_then(|e| EmailAddress::parse(e).ok());
            match (email, consent_state(payload).as_deref()) {
                (Some(_), Some("subscribed")) => WebhookOutcome::Ignored,
                (Some(email), Some(_)) => {
                    unsubscribe(&mut tx, &email.lowercase()).await?;
                    WebhookOutcome::Applied("unsubscribed")
                }
                _ => WebhookOutcome::Ignored,
            }
        }
        "customers/redact" => {
            let email = payload.pointer("/customer/email").and_then(Value::as_str).map(str::to_lowercase);
            let gid = payload.pointer("/customer/id").and_then(customer_gid);
            // Deleting the subscriber cascades to its ledger, submissions, questionnaire and history.
            sqlx::query("DELETE FROM subscribers WHERE lower(email) = $1 OR shopify_customer_id = $2")
                .bind(&email)
                .bind(&gid)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM suppressions WHERE email_lower = $1").bind(&email).execute(&mut *tx).await?;
            WebhookOutcome::Applied("redacted")
        }
        _ => WebhookOutcome::Ignored,
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn unsubscribe(tx: &mut sqlx::PgConnection, email_lower: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE subscribers SET status = 'unsubscribed', status_changed_at = now(), updated_at = now()
         WHERE lower(email) = $1 AND status = 'active'",
    )
    .bind(email_lower)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO suppressions (email_lower, reason, detail) VALUES ($1, 'unsubscribe', 'shopify consent withdrawn')
         ON CONFLICT (email_lower) DO NOTHING",
    )
    .bind(email_lower)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
