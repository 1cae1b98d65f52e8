//! `SendTestEmail`: an operator's test send. Claim the `test_sends` row, render the challenge's
//! email with the same code as a run (marked as a test, its links inert), pass the fleet's circuit
//! breaker and rate limit, send once through the configured transport, record the outcome in the
//! row. Never touches the deliveries ledger.
//!
//! A test send is tried once: whatever stops it (breaker open, no rate slot soon, a send error) is
//! recorded as its failure for the operator to read, and they send another. It still counts
//! towards the fleet's health like any send: a transient error opens the breaker as surely, and a
//! throttling answer slows the fleet down.

use std::sync::Arc;

use levelup_common::{
    Config,
    db::test_sends::{self, ClaimedTestSend, Finished},
    jobs::{self, Job, JobError, SendTestEmail},
    mail::{
        MailRef, MailTransport, OutgoingEmail, SendError,
        render::{self, EmailBody, LinkTokens, Recipient},
    },
    resilience::{
        breaker::{CircuitBreaker, Permit},
        rate_limit::{FleetRateLimiter, Reservation},
    },
};
use sqlx::PgPool;

use crate::SendEmail;

/// A test send waits for its rate-limit slot as long as a weekly email would.
use crate::send_email::MAX_RATE_WAIT;

/// The job and its context. Shares the transport, breaker and rate limiter of [`SendEmail`]: one
/// fleet, one SES quota.
pub struct TestSend {
    pool: PgPool,
    transport: Arc<dyn MailTransport>,
    breaker: CircuitBreaker,
    rate_limiter: FleetRateLimiter,
    worker_name: String,
    config: Arc<Config>,
}

/// What happened to one test send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestSendOutcome {
    Sent {
        message_id: String,
    },
    Failed {
        reason: String,
    },
    /// Not queued any more (a duplicate job): nothing done.
    NothingToDo,
}

impl jobs::Outcome for TestSendOutcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::NothingToDo => "nothing_to_do",
        }
    }
}

impl Job for TestSend {
    type Payload = SendTestEmail;
    type Outcome = TestSendOutcome;

    async fn run(&self, job: SendTestEmail) -> Result<TestSendOutcome, JobError> {
        let Some(claimed) = test_sends::claim(&self.pool, job.test_send_id, &self.worker_name).await? else {
            return Ok(TestSendOutcome::NothingToDo);
        };
        let outcome = match self.send(&claimed).await {
            Ok(message_id) => {
                test_sends::finish(
                    &self.pool,
                    claimed.id,
                    &self.worker_name,
                    Finished::Sent { message_id: &message_id },
                )
                .await?;
                TestSendOutcome::Sent { message_id }
            }
            Err(reason) => {
                test_sends::finish(&self.pool, claimed.id, &self.worker_name, Finished::Failed { reason: &reason })
                    .await?;
                TestSendOutcome::Failed { reason }
            }
        };
        tracing::info!(test_send_id = claimed.id, challenge_id = claimed.challenge_id, ?outcome, "test send done");
        Ok(outcome)
    }
}

impl TestSend {
    pub fn new(send_email: &SendEmail) -> Self {
        Self {
            pool: send_email.pool.clone(),
            transport: Arc::clone(&send_email.transport),
            breaker: send_email.breaker.clone(),
            rate_limiter: send_email.rate_limiter.clone(),
            worker_name: send_email.worker_name.clone(),
            config: Arc::clone(&send_email.config),
        }
    }

    /// The test send's email: the challenge's, as `render::weekly_email` renders it for the chosen
    /// subscriber (or the sample one), to the operator's address, with inert links — the test
    /// recipient must not act as the subscriber, e.g. unsubscribe them — and marked as a test.
    fn render(&self, claimed: &ClaimedTestSend) -> OutgoingEmail {
        let body = EmailBody::challenge(
            claimed.challenge_id,
            claimed.challenge_level,
            claimed.level,
            &claimed.challenge_title,
            &claimed.challenge_body,
        );
        let first_name = match claimed.subscriber_id {
            Some(_) => claimed.first_name.as_deref(),
            None => Some(render::SAMPLE_FIRST_NAME),
        };
        let recipient = Recipient { to: &claimed.to_address, first_name };
        render::mark_as_test(render::weekly_email(
            &self.config,
            &recipient,
            &body,
            &LinkTokens::Inert,
            MailRef::TestSend(claimed.id),
        ))
    }

    /// Sends once through the breaker and the rate limit: the provider's message id, or why not.
    async fn send(&self, claimed: &ClaimedTestSend) -> Result<String, String> {
        let email = self.render(claimed);
        match self.breaker.permit().await {
            Ok(Permit::Allowed | Permit::Probe) => {}
            Ok(Permit::Denied { retry_after }) => {
                return Err(format!(
                    "circuit breaker open (the mail provider is failing); try again in {retry_after:?}"
                ));
            }
            Err(err) => return Err(format!("breaker unreadable (Redis): {err}")),
        }
        match self.rate_limiter.acquire(MAX_RATE_WAIT).await {
            Ok(Reservation::Granted) => {}
            Ok(Reservation::TooFar { retry_after }) => {
                return Err(format!("the fleet's send rate is taken (weekly run?); try again in {retry_after:?}"));
            }
            Err(err) => return Err(format!("rate limit unreadable (Redis): {err}")),
        }
        let result = self.transport.send(&email).await;
        // Recorded by the caller first; the fleet's bookkeeping is best effort, as for a delivery.
        let bookkeeping = match &result {
            Ok(_) | Err(SendError::Permanent { .. }) => self.breaker.record_success().await,
            Err(SendError::Transient { throttled: true, .. }) => self.rate_limiter.throttled().await,
            Err(SendError::Transient { .. }) => self.breaker.record_failure().await,
        };
        if let Err(err) = bookkeeping {
            tracing::warn!(error = %err, "fleet resilience state not updated (Redis)");
        }
        let class = match &result {
            Ok(_) => None,
            Err(SendError::Permanent { .. }) => Some("permanent"),
            Err(SendError::Transient { throttled: true, .. }) => Some("throttled"),
            Err(SendError::Transient { .. }) => Some("transient"),
        };
        if let Some(class) = class {
            metrics::counter!("levelup_email_send_errors_total", "class" => class).increment(1);
        }
        result.map_err(|err| err.to_string())
    }
}
