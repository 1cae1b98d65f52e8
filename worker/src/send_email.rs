//! `SendChallengeEmail`: claim the delivery row, check the subscriber may be mailed, render,
//! send, record. Idempotent against the ledger.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use levelup_common::{
    Config,
    deliveries::{self, Claim, ClaimedDelivery},
    jobs::SendChallengeEmail,
    mail::{
        MailTransport, SendError,
        render::{self, EmailBody, Links},
    },
    tokens::{Purpose, TokenSigner},
};
use sqlx::PgPool;

pub struct EmailContext {
    pub pool: PgPool,
    pub transport: Arc<dyn MailTransport>,
    pub signer: TokenSigner,
    pub worker_name: String,
    pub config: Arc<Config>,
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
    /// The delivery was already finished (a duplicate job): nothing done.
    AlreadyFinished,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retry later.
    #[error("{0}")]
    Retry(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub async fn handle(job: SendChallengeEmail, context: Data<Arc<EmailContext>>) -> Result<(), BoxDynError> {
    match context.process(job.delivery_id).await {
        Ok(outcome) => {
            tracing::debug!(delivery_id = job.delivery_id, ?outcome, "email job done");
            Ok(())
        }
        Err(err) => {
            tracing::warn!(delivery_id = job.delivery_id, error = %err, "email job will be retried");
            Err(err.into())
        }
    }
}

impl EmailContext {
    #[tracing::instrument(skip(self), fields(worker = %self.worker_name))]
    pub async fn process(&self, delivery_id: i64) -> Result<Outcome, JobError> {
        let claimed =
            match deliveries::claim(&self.pool, delivery_id, &self.worker_name, self.config.claim_timeout).await? {
                Claim::Claimed(claimed) => claimed,
                Claim::Finished(_) | Claim::Missing => return Ok(Outcome::AlreadyFinished),
                Claim::HeldElsewhere => return Err(JobError::Retry("delivery is claimed by another worker".into())),
            };
        if claimed.ambiguous {
            tracing::warn!(
                delivery_id,
                subscriber_id = claimed.subscriber_id,
                "re-sending a delivery whose earlier attempt may have reached the mail provider"
            );
        }
        if let Some(reason) = skip_reason(&claimed) {
            deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, "skipped", &reason).await?;
            return Ok(Outcome::Skipped { reason });
        }
        let email = match self.render(&claimed) {
            Ok(email) => email,
            Err(reason) => {
                deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, "failed", &reason).await?;
                return Ok(Outcome::Failed { reason });
            }
        };
        match self.transport.send(&email).await {
            Ok(message_id) => {
                if !deliveries::mark_sent(&self.pool, delivery_id, &self.worker_name, &message_id).await? {
                    tracing::error!(delivery_id, "send recorded after our claim was taken over: possible duplicate");
                }
                Ok(Outcome::Sent { message_id })
            }
            Err(SendError::Permanent { reason }) => {
                deliveries::finish_unsent(&self.pool, delivery_id, &self.worker_name, "failed", &reason).await?;
                Ok(Outcome::Failed { reason })
            }
            Err(SendError::Transient { reason, maybe_delivered, .. }) => {
                deliveries::release(&self.pool, delivery_id, &self.worker_name, &reason, maybe_delivered).await?;
                Err(JobError::Retry(reason))
            }
        }
    }

    fn render(&self, claimed: &ClaimedDelivery) -> Result<levelup_common::mail::OutgoingEmail, String> {
        let body =
            match (claimed.kind.as_str(), &claimed.challenge_id, &claimed.challenge_title, &claimed.challenge_body) {
                ("challenge", Some(challenge_id), Some(title), Some(body)) => {
                    EmailBody::Challenge { challenge_id: *challenge_id, level: claimed.level.unwrap_or(1), title, body }
                }
                ("questionnaire_invite", ..) => EmailBody::QuestionnaireInvite,
                _ => return Err("delivery has no challenge to send".into()),
            };
        let expires = chrono::Utc::now().timestamp() + self.config.token_ttl.as_secs() as i64;
        let access = self.signer.issue(claimed.subscriber_id, Purpose::Access, expires).map_err(|e| e.to_string())?;
        // Unsubscribe links must keep working long after the email was sent.
        let unsubscribe_expires = chrono::Utc::now().timestamp() + 5 * 365 * 24 * 3600;
        let unsubscribe = self
            .signer
            .issue(claimed.subscriber_id, Purpose::Unsubscribe, unsubscribe_expires)
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
