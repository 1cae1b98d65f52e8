//! What a subscriber does from the links in their email: see a challenge, submit an answer (and
//! move up a level), take the placement questionnaire, see their level, unsubscribe.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::FlowError;
use crate::{
    db::subscribers::{self, ChallengeRow, LevelChange, SubmissionOutcome},
    domain::{LevelChangeReason, placement},
};

/// The longest answer kept (the column's `CHECK`).
pub const MAX_ANSWER_CHARS: usize = 20_000;

/// Fails with [`FlowError::SubscriberGone`] unless the subscriber exists.
pub async fn ensure_exists(pool: &PgPool, subscriber_id: i64) -> Result<(), FlowError> {
    if subscribers::exists(pool, subscriber_id).await? { Ok(()) } else { Err(FlowError::SubscriberGone) }
}

/// A challenge the subscriber was sent.
pub async fn challenge(pool: &PgPool, subscriber_id: i64, challenge_id: i64) -> Result<ChallengeRow, FlowError> {
    subscribers::sent_challenge(pool, subscriber_id, challenge_id).await?.ok_or(FlowError::ChallengeNotSent)
}

/// A submission, as the subscriber made it.
pub struct Submission<'a> {
    pub answer: &'a str,
    /// The subscriber says their solution passes the challenge's checks.
    pub passed: bool,
}

/// Records a submission of a challenge the subscriber was sent, applying the level-up rule.
pub async fn submit(
    pool: &PgPool,
    subscriber_id: i64,
    challenge_id: i64,
    submission: Submission<'_>,
    promotion_passes: i64,
) -> Result<SubmissionOutcome, FlowError> {
    let answer = submission.answer;
    if answer.contains('\0') {
        return Err(FlowError::Invalid { field: "answer", message: "must not contain NUL characters".to_owned() });
    }
    if answer.chars().count() > MAX_ANSWER_CHARS {
        return Err(FlowError::Invalid { field: "answer", message: "at most 20,000 characters".to_owned() });
    }
    let challenge = challenge(pool, subscriber_id, challenge_id).await?;
    Ok(subscribers::submit(pool, subscriber_id, &challenge, answer, submission.passed, promotion_passes).await?)
}

/// Where the questionnaire placed the subscriber.
pub struct Placement {
    pub score: i32,
    pub level: i16,
}

/// Places the subscriber from their yes/no answers (in the order of [`placement::QUESTIONS`]).
pub async fn place(pool: &PgPool, subscriber_id: i64, answers: &[bool]) -> Result<Placement, FlowError> {
    if answers.len() != placement::QUESTIONS.len() {
        return Err(FlowError::Invalid {
            field: "answers",
            message: format!("expected {} answers", placement::QUESTIONS.len()),
        });
    }
    let (score, level) = placement::placement_level(answers);
    match subscribers::place(pool, subscriber_id, &serde_json::json!(answers), score, level).await {
        Err(sqlx::Error::RowNotFound) => Err(FlowError::SubscriberGone),
        other => other.map(|()| Placement { score, level }).map_err(Into::into),
    }
}

/// A subscriber's level, their progress towards the next one, and how they got there.
pub struct LevelSummary {
    /// `None` until the placement questionnaire is taken.
    pub level: Option<i16>,
    /// Distinct challenges passed at the current level.
    pub passed_at_level: i64,
    /// The passes that move a subscriber up (`LEVELUP_PROMOTION_PASSES`).
    pub passes_needed: i64,
    pub history: Vec<LevelChangeEntry>,
}

impl LevelSummary {
    pub fn passes_to_next_level(&self) -> i64 {
        (self.passes_needed - self.passed_at_level).max(0)
    }
}

pub struct LevelChangeEntry {
    pub from_level: Option<i16>,
    pub to_level: i16,
    pub reason: LevelChangeReason,
    pub at: DateTime<Utc>,
}

impl From<LevelChange> for LevelChangeEntry {
    fn from(change: LevelChange) -> Self {
        Self { from_level: change.from_level, to_level: change.to_level, reason: change.reason, at: change.created_at }
    }
}

pub async fn level_summary(
    pool: &PgPool,
    subscriber_id: i64,
    promotion_passes: i64,
) -> Result<LevelSummary, FlowError> {
    let subscriber = subscribers::get(pool, subscriber_id).await?.ok_or(FlowError::SubscriberGone)?;
    let (passed_at_level, history) = tokio::try_join!(
        async {
            match subscriber.level {
                Some(level) => subscribers::passed_at_level(pool, subscriber_id, level).await,
                None => Ok(0),
            }
        },
        subscribers::history(pool, subscriber_id)
    )?;
    Ok(LevelSummary {
        level: subscriber.level,
        passed_at_level,
        passes_needed: promotion_passes,
        history: history.into_iter().map(Into::into).collect(),
    })
}

/// Unsubscribes and suppresses the address, and writes the unsubscribe back to Shopify.
/// Whether the subscriber was active (a repeat is harmless).
pub async fn unsubscribe(pool: &PgPool, subscriber_id: i64) -> Result<bool, FlowError> {
    let changed = subscribers::unsubscribe(pool, subscriber_id).await?;
    if changed {
        tracing::info!(subscriber_id, "unsubscribed");
    }
    Ok(changed)
}
