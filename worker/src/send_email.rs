//! `SendChallengeEmail`: claim the delivery row, check the subscriber may be mailed, pass the
//! circuit breaker and the fleet-wide rate limit, send, record. Idempotent against the ledger.
//!
//! Retries are scheduled in the ledger (`next_attempt_at`), not by apalis-redis (whose backend
//! retries are fixed at now + attempt seconds, 25 times): a handler that finished its decision
//! returns `Ok`, and the scheduler pushes the job again when it is due. Only an error we could
//! not record (Postgres unreachable) is returned to apalis, which retries it.

use std::{sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data};
use levelup_common::{
    Config,
    deliveries::{self, Claim, ClaimedDelivery},
    jobs::SendChallengeEmail,
    mail::{
        MailTransport, OutgoingEmail, SendError,
        render::{self, EmailBody, Links},
    },
    resilience::{
        breaker::{CircuitBreaker, Permit},
        rate_limit::{FleetRateLimiter, Reservation},
    },
    tokens::{Purpose, TokenSigner},
};
use sqlx::PgPool;

/// Longest a job waits in-process for its rate-limit slot before giving its place back.
const MAX_RATE_WAIT: Duration = Duration::from_secs(5);

pub struct EmailContext {
    pub pool: PgPool,
    pub transport: Arc<dyn MailTransport>,
    pub signer: TokenSigner,
    pub breaker: CircuitBreaker,
    pub rate_limiter: FleetRateLimiter,
    pub worker_name: String,
    pub config: Arc<Config>,
    /// Every job runs as a tracked task, so that a job whose apalis future is dropped (the
    /// queue backend failed, shutdown) still records what it sent before the process exits.
    pub in_flight: tokio_util::task::TaskTracker,
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        message_id: String,
    },
    Skipped {
        reason: String,
    },
    Failed {
        reason: String,
    },
    /// Given back for a later attempt (transient error, breaker open, throttled).
    RetryLater {
        reason: String,
    },
    DeadLettered {
        reason: String,
    },
    /// Already finished, or held by another worker: nothing done.
    NothingToDo,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub async fn handle(job: SendChallengeEmail, context: Data<Arc<EmailContext>>) -> Result<(), BoxDynError> {
    let task_context = Arc::clone(&context);
    let result = context
        .in_flight
        .spawn(async move { task_context.process(job.delivery_id).await })
        .await
        .map_err(|join_error| -> BoxDynError { format!("email job panicked: {join_error}").into() })?;
    match result {
        Ok(outcome) => {
            metrics::counter!("levelup_email_jobs_total", "outcome" => outcome.label()).increment(1);
            tracing::debug!(delivery_id = job.delivery_id, ?outcome, "email job done");
            Ok(())
        }
        Err(err) => {
            tracing::warn!(delivery_id = job.delivery_id, error = %err, "email job failed; apalis will retry it");
            Err(err.into())
        }
    }
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { .. } => "failed",
            Outcome::RetryLater { .. } => "retry_later",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::NothingToDo => "nothing_to_do",
        }
    }
}

impl EmailContext {
    #[tracing::instrument(skip(self), fields(worker = %self.worker_name))]
    pub async fn process(&self, delivery_id: i64) -> Result<Outcome, JobError> {
        let claimed =
            match deliveries::claim(&self.pool, delivery_id, &self.worker_name, self.config.claim_timeout).await? {
                Claim::Claimed(claimed) => claimed,
                // A duplicate job, or one whose worker still holds it: the ledger (and the
                // scheduler's re-push of timed-out claims) takes care of it.
                Claim::Finished(_) | Claim::Missing | Claim::HeldElsewhere => return Ok(Outcome::NothingToDo),
            };
        if claimed.ambiguous {
            metrics::counter!("levelup_email_ambiguous_resends_total").increment(1);
            tracing::warn!(
                delivery_id,
                subscriber_id = claimed.subscriber_id,
                "re-sending a delivery whose earlier attempt may have reached the mail provider"
            );
        }
        let policy = self.config.email_retry;
        if claimed.attempts as u32 > policy.max_attempts {
            // Earlier attempts died with their worker (or kept failing): stop here.
            let last = claimed.reason.clone().unwrap_or_else(|| "worker died during the attempt".into());
            deliveries::dead_letter(&self.pool, delivery_id, &self.worker_name, claimed.attempts - 1, &last).await?;
            return Ok(Outcome::DeadLettered { reason: last });
        }
        if let Some(reason) = skip_reason(&claimed) {
            deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, "skipped", &reason).await?;
            return Ok(Outcome::Skipped { reason });
        }
        let email = match self.render(&claimed) {
            Ok(email) => email,
            Err(reason) => return self.fail(delivery_id, reason).await,
        };
        // Before the send, a Redis failure (breaker or limiter unreadable) gives the claim back
        // at once instead of leaving the row held until the claim times out.
        let fleet_unavailable = Duration::from_secs(1);
        match self.breaker.permit().await {
            Ok(Permit::Denied { retry_after }) => {
                return self.give_back(delivery_id, retry_after, "circuit breaker open", false, false).await;
            }
            Ok(Permit::Allowed | Permit::Probe) => {}
            Err(err) => {
                return self.give_back(delivery_id, fleet_unavailable, &format!("breaker: {err}"), false, false).await;
            }
        }
        match self.rate_limiter.acquire(MAX_RATE_WAIT).await {
            Ok(Reservation::Granted) => {}
            Ok(Reservation::TooFar { retry_after }) => {
                return self.give_back(delivery_id, retry_after, "rate limit", false, false).await;
            }
            Err(err) => {
                return self
                    .give_back(delivery_id, fleet_unavailable, &format!("rate limit: {err}"), false, false)
                    .await;
            }
        }
        // After the send, the ledger comes first: nothing may stand between an accepted send and
        // its record. Breaker bookkeeping is best effort.
        match self.transport.send(&email).await {
            Ok(message_id) => {
                if !deliveries::mark_sent(&self.pool, delivery_id, &self.worker_name, &message_id).await? {
                    metrics::counter!("levelup_email_possible_duplicates_total").increment(1);
                    tracing::error!(delivery_id, "send recorded after our claim was taken over: possible duplicate");
                }
                self.note(self.breaker.record_success().await);
                Ok(Outcome::Sent { message_id })
            }
            Err(SendError::Permanent { reason }) => {
                let outcome = self.fail(delivery_id, reason).await;
                // The provider answered: it is up.
                self.note(self.breaker.record_success().await);
                outcome
            }
            Err(SendError::Transient { reason, throttled: true, maybe_delivered }) => {
                // Too fast for the provider: slow the whole fleet down, and do not count it
                // against this job.
                let delay = policy.delay(1).max(Duration::from_millis(100));
                let outcome = self.give_back(delivery_id, delay, &reason, false, maybe_delivered).await;
                self.note(self.rate_limiter.throttled().await);
                outcome
            }
            Err(SendError::Transient { reason, maybe_delivered, .. }) => {
                self.note(self.breaker.record_failure().await);
                let attempts = claimed.attempts as u32;
                if policy.exhausted(attempts) {
                    deliveries::dead_letter(&self.pool, delivery_id, &self.worker_name, claimed.attempts, &reason)
                        .await?;
                    tracing::warn!(delivery_id, attempts, "email dead-lettered");
                    return Ok(Outcome::DeadLettered { reason });
                }
                self.give_back(delivery_id, policy.delay(attempts), &reason, true, maybe_delivered).await
            }
        }
    }

    fn note(&self, bookkeeping: redis::RedisResult<()>) {
        if let Err(err) = bookkeeping {
            tracing::warn!(error = %err, "fleet resilience state not updated (Redis)");
        }
    }

    async fn fail(&self, delivery_id: i64, reason: String) -> Result<Outcome, JobError> {
        deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, "failed", &reason).await?;
        Ok(Outcome::Failed { reason })
    }

    async fn give_back(
        &self,
        delivery_id: i64,
        delay: Duration,
        reason: &str,
        spend_attempt: bool,
        maybe_delivered: bool,
    ) -> Result<Outcome, JobError> {
        deliveries::retry_later(
            &self.pool,
            delivery_id,
            &self.worker_name,
            delay,
            reason,
            spend_attempt,
            maybe_delivered,
        )
        .await?;
        Ok(Outcome::RetryLater { reason: reason.to_owned() })
    }

    fn render(&self, claimed: &ClaimedDelivery) -> Result<OutgoingEmail, String> {
        let body =
            match (claimed.kind.as_str(), &claimed.challenge_id, &claimed.challenge_title, &claimed.challenge_body) {
                ("challenge", Some(challenge_id), Some(title), Some(body)) => {
                    EmailBody::Challenge { challenge_id: *challenge_id, level: claimed.level.unwrap_or(1), title, body }
                }
                ("questionnaire_invite", ..) => EmailBody::QuestionnaireInvite,
                _ => return Err("delivery has no challenge to send".into()),
            };
        let now = chrono::Utc::now().timestamp();
        let access = self
            .signer
            .issue(claimed.subscriber_id, Purpose::Access, now + self.config.token_ttl.as_secs() as i64)
            .map_err(|e| e.to_string())?;
        // Unsubscribe links must keep working long after the email was sent.
        let unsubscribe = self
            .signer
            .issue(claimed.subscriber_id, Purpose::Unsubscribe, now + 5 * 365 * 24 * 3600)
            .map_err(|e| e.to_string())?;
        let links = Links::new(&self.config.public_base_url, &body, &access, &unsubscribe);
        Ok(render::render(
            &self.config.mail_from,
            &claimed.email,
            claimed.first_name.as_deref(),
            &body,
            &links,
            claimed.id,
        ))
    }
}

/// Subscribers who must not be mailed, checked at send time: their state may have changed since
/// the fan-out.
fn skip_reason(claimed: &ClaimedDelivery) -> Option<String> {
    if claimed.subscriber_status != "active" {
        return Some(claimed.subscriber_status.clone());
    }
    claimed.suppression.as_ref().map(|reason| format!("suppressed:{reason}"))
}
