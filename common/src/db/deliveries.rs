//! The delivery ledger, worker side: claim a row, send, record the outcome.
//!
//! A row moves `queued → sending → sent | failed | skipped`; a transient failure puts it back to
//! `queued`. Only a claim (`queued`, or `sending` whose claim is older than the claim timeout)
//! lets a worker send, so a job that runs twice sends once. The one window left: a worker that
//! dies after SES accepted the message and before `mark_sent` commits. The row stays `sending`;
//! when its claim times out it is claimed again and flagged `ambiguous` (it may be a duplicate).

use std::time::Duration;

use sqlx::{FromRow, PgPool};

use crate::domain::{DeliveryKind, DeliveryState, IsoWeek, SubscriberStatus, SuppressionReason};

/// What a worker needs to send one delivery.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    /// When the delivery became due (its `next_attempt_at`): the pickup latency starts here.
    pub due_at: chrono::DateTime<chrono::Utc>,
    pub week: IsoWeek,
    pub kind: DeliveryKind,
    pub attempts: i32,
    pub ambiguous: bool,
    /// The last recorded error (from an earlier attempt), if any.
    pub reason: Option<String>,
    pub subscriber_id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub subscriber_status: SubscriberStatus,
    pub level: Option<i16>,
    /// Why the address must never be mailed, if it is suppressed.
    pub suppression: Option<SuppressionReason>,
    pub challenge_id: Option<i64>,
    pub challenge_title: Option<String>,
    pub challenge_body: Option<String>,
    /// Not sent within the deadline of its due time (`deliver_after`): to be skipped as `expired`.
    pub expired: bool,
    /// The run is paused: to be given back untouched.
    pub run_paused: bool,
}

#[derive(Debug)]
pub enum Claim {
    Claimed(Box<ClaimedDelivery>),
    /// Already `sent`, `failed` or `skipped` (see [`DeliveryState::is_final`]): nothing to do.
    Finished(DeliveryState),
    /// Another worker holds a fresh claim: try again later.
    HeldElsewhere,
    /// No such delivery (deleted with its subscriber).
    Missing,
}

/// Claims delivery `id` for `worker`; `deadline`: how long after its due time it may still be sent.
pub async fn claim(
    pool: &PgPool,
    id: i64,
    worker: &str,
    claim_timeout: Duration,
    deadline: Duration,
) -> sqlx::Result<Claim> {
    let claimed: Option<ClaimedDelivery> = sqlx::query_as(
        "WITH claimed AS (
             UPDATE deliveries
             SET state = 'sending', claimed_by = $2, claimed_at = now(), attempts = attempts + 1, updated_at = now(),
                 ambiguous = ambiguous OR state = 'sending'
             WHERE id = $1
               AND (state = 'queued' OR (state = 'sending' AND claimed_at < now() - make_interval(secs => $3)))
             RETURNING *
         )
         SELECT d.id, d.week, d.kind, d.attempts, d.ambiguous, d.reason, d.subscriber_id, d.next_attempt_at AS due_at,
                s.email, s.first_name, s.status AS subscriber_status, s.level,
                sup.reason AS suppression,
                d.challenge_id, c.title AS challenge_title, c.body AS challenge_body,
                d.deliver_after < now() - make_interval(secs => $4) AS expired,
                r.paused_at IS NOT NULL AS run_paused
         FROM claimed d
         JOIN weekly_runs r ON r.week = d.week
         JOIN subscribers s ON s.id = d.subscriber_id
         LEFT JOIN suppressions sup ON sup.email_lower = lower(s.email)
         LEFT JOIN challenges c ON c.id = d.challenge_id",
    )
    .bind(id)
    .bind(worker)
    .bind(claim_timeout.as_secs_f64())
    .bind(deadline.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    if let Some(claimed) = claimed {
        return Ok(Claim::Claimed(Box::new(claimed)));
    }
    let state: Option<DeliveryState> =
        sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1").bind(id).fetch_optional(pool).await?;
    Ok(match state {
        None => Claim::Missing,
        Some(DeliveryState::Sending) => Claim::HeldElsewhere,
        // `queued` here means it was released between our two statements: let the retry take it.
        Some(DeliveryState::Queued) => Claim::HeldElsewhere,
        Some(finished @ (DeliveryState::Sent | DeliveryState::Failed | DeliveryState::Skipped)) => {
            Claim::Finished(finished)
        }
    })
}

/// Records an accepted send. `false`: our claim was taken over meanwhile (the send was slower
/// than the claim timeout), which the caller reports as a possible duplicate.
pub async fn mark_sent(pool: &PgPool, id: i64, worker: &str, message_id: &str) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE deliveries SET state = 'sent', message_id = $3, sent_at = now(), reason = NULL, updated_at = now()
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(message_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// How a claimed delivery ends without being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The subscriber may no longer be mailed (status or suppression changed since the fan-out).
    Skipped,
    /// A permanent error: the provider refused the message, or there is nothing to send.
    Failed,
}

impl From<Unsent> for DeliveryState {
    fn from(end: Unsent) -> Self {
        match end {
            Unsent::Skipped => DeliveryState::Skipped,
            Unsent::Failed => DeliveryState::Failed,
        }
    }
}

/// Ends a claimed delivery without sending (`skipped`) or after a permanent error (`failed`).
pub async fn finish_unsent(pool: &PgPool, id: i64, worker: &str, end: Unsent, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET state = $3, reason = $4, updated_at = now()
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(DeliveryState::from(end))
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether an attempt given back counts against the delivery's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt failed (a transient error): it counts.
    Spent,
    /// The attempt never really happened (breaker open, rate limit, throttled): it is given back.
    Returned,
}

/// What the mail provider may have done with the message of an attempt given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Not sent: it never reached the provider, or the provider refused it.
    NotSent,
    /// Unknown (e.g. a timeout after the request went out): it may have been delivered, so the row
    /// stays flagged `ambiguous`.
    Unknown,
}

/// A claimed delivery given back for another attempt after `delay`.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    pub delay: Duration,
    pub reason: &'a str,
    pub attempt: Attempt,
    pub outcome: SendOutcome,
}

impl<'a> Retry<'a> {
    /// Given back before anything went to the provider (breaker open, rate limit): the attempt
    /// does not count.
    pub fn before_sending(delay: Duration, reason: &'a str) -> Self {
        Self { delay, reason, attempt: Attempt::Returned, outcome: SendOutcome::NotSent }
    }
}

/// Gives a claimed delivery back for another attempt (see [`Retry`]); the scheduler pushes its
/// job again when it is due.
pub async fn retry_later(pool: &PgPool, id: i64, worker: &str, retry: Retry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries
         SET state = 'queued', pushed_at = NULL, claimed_by = NULL,
             next_attempt_at = now() + make_interval(secs => $3),
             attempts = CASE WHEN $5 THEN attempts ELSE greatest(attempts - 1, 0) END,
             reason = $4, ambiguous = ambiguous OR $6, updated_at = now()
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(retry.delay.as_secs_f64())
    .bind(retry.reason)
    .bind(retry.attempt == Attempt::Spent)
    .bind(retry.outcome == SendOutcome::Unknown)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a claimed delivery that exhausted its attempts: `failed`, plus a dead letter that an
/// operator can list and replay.
pub async fn dead_letter(pool: &PgPool, id: i64, worker: &str, attempts: i32, last_error: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE deliveries SET state = 'failed', reason = $3, updated_at = now()
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(format!("exhausted after {attempts} attempts: {last_error}"))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        sqlx::query(
            "INSERT INTO dead_letters (queue, job, delivery_id, attempts, last_error)
             VALUES ('email', jsonb_build_object('SendChallengeEmail', jsonb_build_object('delivery_id', $1::bigint)), $1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(attempts)
        .bind(last_error)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
