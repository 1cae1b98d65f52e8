//! `SendChallengeEmail`: claim the delivery row, check the subscriber may be mailed, pass the
//! circuit breaker and the fleet-wide rate limit, send, record. Idempotent against the ledger.
//!
//! Retries are scheduled in the ledger (`next_attempt_at`), not by apalis-redis (whose backend
//! retries are fixed at now + attempt seconds, 25 times): a handler that finished its decision
//! returns `Ok`, and the scheduler pushes the job again when it is due. Only an error we could
//! not record (Postgres unreachable) is returned to apalis, which retries it.

use std::{sync::Arc, time::Duration};

use levelup_common::{
    Config,
    db::deliveries::{self, Attempt, Claim, ClaimedDelivery, Retry, SendOutcome, Unsent},
    domain::tokens::TokenSigner,
    domain::{DeliveryKind, SubscriberStatus},
    jobs::{self, Job, JobError, SendChallengeEmail},
    mail::{
        MailRef, MailTransport, OutgoingEmail, SendError,
        render::{self, EmailBody, LinkTokens, Recipient},
    },
    resilience::{
        breaker::{CircuitBreaker, Permit},
        rate_limit::{FleetRateLimiter, Reservation},
    },
};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// Longest a job waits in-process for its rate-limit slot before giving its place back.
pub(crate) const MAX_RATE_WAIT: Duration = Duration::from_secs(5);

/// The job and its context: what sending needs, shared by every run in the process.
pub struct SendEmail {
    pub pool: PgPool,
    pub transport: Arc<dyn MailTransport>,
    pub signer: TokenSigner,
    pub breaker: CircuitBreaker,
    pub rate_limiter: FleetRateLimiter,
    pub worker_name: String,
    pub config: Arc<Config>,
}

impl Job for SendEmail {
    type Payload = SendChallengeEmail;
    type Outcome = Outcome;

    async fn run(&self, job: SendChallengeEmail) -> Result<Outcome, JobError> {
        self.process(job.delivery_id).await
    }
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

impl jobs::Outcome for Outcome {
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

impl SendEmail {
    pub fn new(config: &Config, pool: PgPool, redis: ConnectionManager, transport: Arc<dyn MailTransport>) -> Self {
        let namespace = &config.redis_namespace;
        Self {
            pool,
            transport,
            signer: TokenSigner::new(config.token_keys.clone()),
            breaker: CircuitBreaker::new(namespace, "ses", config.breaker.clone(), redis.clone()),
            rate_limiter: FleetRateLimiter::new(
                namespace,
                "ses",
                config.ses_max_send_rate.unwrap_or(0.0),
                config.throttle_penalty,
                redis,
            ),
            worker_name: config.worker_name.clone(),
            config: Arc::new(config.clone()),
        }
    }

    pub async fn process(&self, delivery_id: i64) -> Result<Outcome, JobError> {
        let claimed = match deliveries::claim(
            &self.pool,
            delivery_id,
            &self.worker_name,
            self.config.claim_timeout,
            self.config.send_deadline,
        )
        .await?
        {
            Claim::Claimed(claimed) => claimed,
            // A duplicate job, or one whose worker still holds it: the ledger (and the
            // scheduler's re-push of timed-out claims) takes care of it.
            Claim::Finished(_) | Claim::Missing | Claim::HeldElsewhere => return Ok(Outcome::NothingToDo),
        };
        if claimed.expired {
            // Stale mail is worse than none: last week's challenge days late after an outage.
            let reason = "expired".to_owned();
            deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, Unsent::Skipped, &reason).await?;
            metrics::counter!("levelup_email_expired_total").increment(1);
            return Ok(Outcome::Skipped { reason });
        }
        if claimed.run_paused {
            // Back to `queued`, unpushed and with its attempt returned: fed again on resume.
            return self.give_back(delivery_id, Retry::before_sending(Duration::ZERO, "run paused")).await;
        }
        let waited = (chrono::Utc::now() - claimed.due_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("levelup_email_pickup_latency_seconds").record(waited);
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
            deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, Unsent::Skipped, &reason).await?;
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
                return self.give_back(delivery_id, Retry::before_sending(retry_after, "circuit breaker open")).await;
            }
            Ok(Permit::Allowed | Permit::Probe) => {}
            Err(err) => {
                return self
                    .give_back(delivery_id, Retry::before_sending(fleet_unavailable, &format!("breaker: {err}")))
                    .await;
            }
        }
        let waiting = std::time::Instant::now();
        let reservation = self.rate_limiter.acquire(MAX_RATE_WAIT).await;
        metrics::histogram!("levelup_rate_limit_wait_seconds").record(waiting.elapsed().as_secs_f64());
        match reservation {
            Ok(Reservation::Granted) => {}
            Ok(Reservation::TooFar { retry_after }) => {
                metrics::counter!("levelup_rate_limit_deferred_total").increment(1);
                return self.give_back(delivery_id, Retry::before_sending(retry_after, "rate limit")).await;
            }
            Err(err) => {
                let reason = format!("rate limit: {err}");
                return self.give_back(delivery_id, Retry::before_sending(fleet_unavailable, &reason)).await;
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
                metrics::counter!("levelup_email_send_errors_total", "class" => "permanent").increment(1);
                let outcome = self.fail(delivery_id, reason).await;
                // The provider answered: it is up.
                self.note(self.breaker.record_success().await);
                outcome
            }
            Err(SendError::Transient { reason, throttled: true, maybe_delivered }) => {
                metrics::counter!("levelup_email_send_errors_total", "class" => "throttled").increment(1);
                // Too fast for the provider: slow the whole fleet down, and do not count it
                // against this job.
                let delay = policy.delay(1).max(Duration::from_millis(100));
                let retry = Retry {
                    delay,
                    reason: &reason,
                    attempt: Attempt::Returned,
                    outcome: send_outcome(maybe_delivered),
                };
                let outcome = self.give_back(delivery_id, retry).await;
                self.note(self.rate_limiter.throttled().await);
                outcome
            }
            Err(SendError::Transient { reason, maybe_delivered, .. }) => {
                metrics::counter!("levelup_email_send_errors_total", "class" => "transient").increment(1);
                self.note(self.breaker.record_failure().await);
                let attempts = claimed.attempts as u32;
                if policy.exhausted(attempts) {
                    deliveries::dead_letter(&self.pool, delivery_id, &self.worker_name, claimed.attempts, &reason)
                        .await?;
                    tracing::warn!(delivery_id, attempts, "email dead-lettered");
                    return Ok(Outcome::DeadLettered { reason });
                }
                let delay = policy.delay(attempts);
                let retry =
                    Retry { delay, reason: &reason, attempt: Attempt::Spent, outcome: send_outcome(maybe_delivered) };
                self.give_back(delivery_id, retry).await
            }
        }
    }

    fn note(&self, bookkeeping: redis::RedisResult<()>) {
        if let Err(err) = bookkeeping {
            tracing::warn!(error = %err, "fleet resilience state not updated (Redis)");
        }
    }

    async fn fail(&self, delivery_id: i64, reason: String) -> Result<Outcome, JobError> {
        deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, Unsent::Failed, &reason).await?;
        Ok(Outcome::Failed { reason })
    }

    async fn give_back(&self, delivery_id: i64, retry: Retry<'_>) -> Result<Outcome, JobError> {
        deliveries::retry_later(&self.pool, delivery_id, &self.worker_name, retry).await?;
        Ok(Outcome::RetryLater { reason: retry.reason.to_owned() })
    }

    fn render(&self, claimed: &ClaimedDelivery) -> Result<OutgoingEmail, String> {
        let body = match (claimed.kind, &claimed.challenge_id, &claimed.challenge_title, &claimed.challenge_body) {
            (DeliveryKind::Challenge, Some(challenge_id), Some(title), Some(body)) => {
                EmailBody::Challenge { challenge_id: *challenge_id, level: claimed.level.unwrap_or(1), title, body }
            }
            (DeliveryKind::QuestionnaireInvite, ..) => EmailBody::QuestionnaireInvite,
            (DeliveryKind::Challenge, ..) => return Err("delivery has no challenge to send".into()),
        };
        let now = chrono::Utc::now().timestamp();
        let tokens =
            LinkTokens::signed(&self.config, &self.signer, claimed.subscriber_id, now).map_err(|e| e.to_string())?;
        let recipient = Recipient { to: &claimed.email, first_name: claimed.first_name.as_deref() };
        Ok(render::weekly_email(&self.config, &recipient, &body, &tokens, MailRef::Delivery(claimed.id)))
    }
}

/// Subscribers who must not be mailed, checked at send time: their state may have changed since
/// the fan-out.
fn skip_reason(claimed: &ClaimedDelivery) -> Option<String> {
    if claimed.subscriber_status != SubscriberStatus::Active {
        return Some(claimed.subscriber_status.to_string());
    }
    claimed.suppression.as_ref().map(|reason| format!("suppressed:{reason}"))
}

/// What a transient send error says the provider may have done with the message.
fn send_outcome(maybe_delivered: bool) -> SendOutcome {
    if maybe_delivered { SendOutcome::Unknown } else { SendOutcome::NotSent }
}
