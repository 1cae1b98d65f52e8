//! The subscriber's JSON API (`/v1`), authenticated by the signed link token (`?token=`, the
//! [`AccessToken`] security scheme), never by a bare user id.

use levelup_common::{
    domain::{LevelChangeReason, placement::QUESTIONS, tokens::Purpose},
    flows::{FlowError, subscriber},
};
use poem_openapi::{Object, OpenApi, Tags, param::Path, payload::Json};

use crate::{
    AppState,
    http::{auth::AccessToken, error::ApiError, problem::Problem, reply::Created},
};

#[derive(Tags)]
enum SubscriberTags {
    /// What a subscriber does from the links in their email.
    Subscriber,
}

pub(crate) struct SubscriberApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Challenge {
    id: i64,
    level: i16,
    title: String,
    body: String,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct NewSubmission {
    /// The subscriber's answer (code, link or text).
    #[oai(validator(max_length = 20000))]
    answer: crate::http::json_string::JsonString,
    /// Whether the subscriber passed the challenge's checks.
    passed: bool,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct SubmissionResult {
    submission_id: i64,
    passed: bool,
    level: i16,
    promoted: bool,
    passed_at_level: i64,
    passes_to_next_level: i64,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Questionnaire {
    /// Yes/no answers, in the order of `GET /v1/questionnaire`'s questions.
    #[oai(validator(min_items = 6, max_items = 6))]
    answers: Vec<bool>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Question {
    text: String,
    level: i16,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct LevelChangeView {
    from_level: Option<i16>,
    to_level: i16,
    reason: LevelChangeReason,
    at: chrono::DateTime<chrono::Utc>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct LevelView {
    /// `null` until the placement questionnaire is taken.
    level: Option<i16>,
    passed_at_level: i64,
    passes_to_next_level: i64,
    history: Vec<LevelChangeView>,
}

crate::http::error::status!(
    /// The challenge was not sent to this subscriber.
    ChallengeNotSent = 404,
    "No challenge with this id was sent to this subscriber."
);

impl SubscriberApi {
    /// The subscriber of a verified token who still exists: every operation answers a deleted
    /// (redacted) subscriber the same way, 401.
    async fn subscriber<S>(&self, token: &AccessToken) -> Result<i64, ApiError<S>> {
        let claims = self
            .state
            .verify(&token.0.key, Purpose::Access)
            .map_err(|err| ApiError::new(Problem::new("invalid-token", "Invalid link token", 401, err.to_string())))?;
        subscriber::ensure_exists(&self.state.db, claims.subscriber_id).await?;
        Ok(claims.subscriber_id)
    }

    async fn level_view(&self, subscriber_id: i64) -> Result<LevelView, FlowError> {
        let summary =
            subscriber::level_summary(&self.state.db, subscriber_id, self.state.config.promotion_passes).await?;
        Ok(LevelView {
            level: summary.level,
            passed_at_level: summary.passed_at_level,
            passes_to_next_level: summary.passes_to_next_level(),
            history: summary
                .history
                .into_iter()
                .map(|h| LevelChangeView { from_level: h.from_level, to_level: h.to_level, reason: h.reason, at: h.at })
                .collect(),
        })
    }
}

#[OpenApi(prefix_path = "/v1", tag = "SubscriberTags::Subscriber")]
impl SubscriberApi {
    /// A challenge the subscriber was sent.
    #[oai(path = "/challenges/:id", method = "get")]
    async fn get_challenge(
        &self,
        id: Path<i64>,
        token: AccessToken,
    ) -> Result<Json<Challenge>, ApiError<ChallengeNotSent>> {
        let subscriber_id = self.subscriber(&token).await?;
        let c = subscriber::challenge(&self.state.db, subscriber_id, *id).await?;
        Ok(Json(Challenge { id: c.id, level: c.level, title: c.title, body: c.body }))
    }

    /// Submit a challenge; passing enough challenges at a level moves the subscriber up.
    #[oai(path = "/challenges/:id/submissions", method = "post")]
    async fn submit(
        &self,
        id: Path<i64>,
        token: AccessToken,
        body: Json<NewSubmission>,
    ) -> Result<Created<SubmissionResult>, ApiError<ChallengeNotSent>> {
        let subscriber_id = self.subscriber(&token).await?;
        let passes = self.state.config.promotion_passes;
        let submission = subscriber::Submission { answer: &body.answer, passed: body.passed };
        let o = subscriber::submit(&self.state.db, subscriber_id, *id, submission, passes).await?;
        Ok(Created::Created(Json(SubmissionResult {
            submission_id: o.submission_id,
            passed: o.passed,
            level: o.level,
            promoted: o.promoted,
            passed_at_level: o.passed_at_level,
            passes_to_next_level: (passes - o.passed_at_level).max(0),
        })))
    }

    /// The placement questionnaire's questions.
    #[oai(path = "/questionnaire", method = "get")]
    async fn questions(&self) -> Json<Vec<Question>> {
        Json(QUESTIONS.iter().map(|(text, level)| Question { text: (*text).to_owned(), level: *level }).collect())
    }

    /// Answer the placement questionnaire: sets the subscriber's level (the seed's `POST /questionaire`).
    #[oai(path = "/questionnaire", method = "post")]
    async fn answer_questionnaire(
        &self,
        token: AccessToken,
        body: Json<Questionnaire>,
    ) -> Result<Created<LevelView>, ApiError> {
        let subscriber_id = self.subscriber(&token).await?;
        subscriber::place(&self.state.db, subscriber_id, &body.answers).await?;
        Ok(Created::Created(Json(self.level_view(subscriber_id).await?)))
    }

    /// The subscriber's level, progress to the next level and level history.
    #[oai(path = "/level", method = "get")]
    async fn level(&self, token: AccessToken) -> Result<Json<LevelView>, ApiError> {
        let subscriber_id = self.subscriber(&token).await?;
        Ok(Json(self.level_view(subscriber_id).await?))
    }
}
