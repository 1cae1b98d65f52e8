//! The effect of SES bounce and complaint notifications: suppress the addresses and mark their
//! subscribers, once per SNS message; count them against the run that sent the message.

use sqlx::PgPool;

use super::received_webhooks;
use crate::domain::{SesEvent, SubscriberStatus, WebhookSource};

#[derive(Debug, PartialEq, Eq)]
pub enum SesEventOutcome {
    Duplicate,
    Suppressed(usize),
    Ignored,
}

/// Applies an SES notification once per SNS `MessageId`.
pub async fn apply(pool: &PgPool, sns_message_id: &str, event: &SesEvent) -> sqlx::Result<SesEventOutcome> {
    let mut tx = pool.begin().await?;
    if !received_webhooks::first_delivery(&mut tx, WebhookSource::Ses, sns_message_id, &event.kind).await? {
        return Ok(SesEventOutcome::Duplicate);
    }
    let Some((reason, status)) = event.effect.filter(|_| !event.recipients.is_empty()) else {
        tx.commit().await?;
        return Ok(SesEventOutcome::Ignored);
    };
    let detail = event.ses_message_id.as_ref().map(|id| format!("ses message {id}"));
    for email in &event.recipients {
        sqlx::query(
            "INSERT INTO suppressions (email_lower, reason, detail) VALUES ($1, $2, $3)
             ON CONFLICT (email_lower) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail",
        )
        .bind(email)
        .bind(reason)
        .bind(&detail)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscribers SET status = $2, status_changed_at = now(), updated_at = now()
             WHERE lower(email) = $1 AND status = $3",
        )
        .bind(email)
        .bind(status)
        .bind(SubscriberStatus::Active)
        .execute(&mut *tx)
        .await?;
    }
    // The run the message belongs to counts it: its bounce and complaint rates may pause it.
    if let Some(message_id) = &event.ses_message_id {
        sqlx::query(
            "UPDATE weekly_runs
             SET bounces = bounces + ($2 = 'bounce')::int, complaints = complaints + ($2 = 'complaint')::int
             WHERE week = (SELECT week FROM deliveries WHERE message_id = $1 AND message_id IS NOT NULL LIMIT 1)",
        )
        .bind(message_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(SesEventOutcome::Suppressed(event.recipients.len()))
}
