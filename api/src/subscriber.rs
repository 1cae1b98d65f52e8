//! The subscriber's JSON API (`/v1`), authenticated by the signed link token (`?token=`, the
//! [`AccessToken`] security scheme), never by a bare user id.

use levelup_common::{
    subscribers::{self, QUESTIONS},
    tokens::{Claims, Purpose},
};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, param::Path, payload::Json, types::ToJSON};

use crate::{
    AppState,
    auth::AccessToken,
    problem::{Problem, WithProblem, undeclared},
};

#[derive(Tags)]
enum SubscriberTags {
    /// What a subscriber does from the links in their email.
    Subscriber,
}

pub struct SubscriberApi {
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
    answer: crate::json_string::JsonString,
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
    reason: String,
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

/// Reads: 200, 401 for a bad token, 404.
#[derive(ApiResponse)]
enum Shown<T: ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    /// Missing, forged or expired token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

/// Writes: 201, 400 naming the field, 401 for a bad token, 404.
#[derive(ApiResponse)]
enum Recorded<T: ToJSON + Send + Sync> {
    #[oai(status = 201)]
    Created(Json<T>),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, forged or expired token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl<T: ToJSON + Send + Sync> WithProblem for Shown<T> {
    fn with_problem(problem: Problem) -> Self {
        match problem.status {
            401 => Self::Unauthorized(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            500 => Self::Internal(Json(problem)),
            _ => Self::Internal(Json(undeclared(&problem))),
        }
    }
}

impl<T: ToJSON + Send + Sync> WithProblem for Recorded<T> {
    fn with_problem(problem: Problem) -> Self {
        match problem.status {
            400 => Self::BadRequest(Json(problem)),
            401 => Self::Unauthorized(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            500 => Self::Internal(Json(problem)),
            _ => Self::Internal(Json(undeclared(&problem))),
        }
    }
}

impl SubscriberApi {
    /// The token's claims, if it verifies and its subscriber still exists: every operation
    /// answers a deleted (redacted) subscriber the same way, 401.
    async fn claims<R: WithProblem>(&self, token: &AccessToken) -> Result<Claims, R> {
        let claims = self.state.verify(&token.0.key, Purpose::Access).map_err(|err| {
            R::with_problem(Problem::new("invalid-token", "Invalid link token", 401, err.to_string()))
        })?;
        match subscribers::exists(&self.state.db, claims.subscriber_id).await {
            Ok(true) => Ok(claims),
            Ok(false) => Err(R::with_problem(Problem::new(
                "invalid-token",
                "Invalid link token",
                401,
                "this subscriber no longer exists",
            ))),
            Err(err) => Err(R::internal(err)),
        }
    }
}

#[OpenApi(prefix_path = "/v1", tag = "SubscriberTags::Subscriber")]
impl SubscriberApi {
    /// A challenge the subscriber was sent.
    #[oai(path = "/challenges/:id", method = "get")]
    async fn get_challenge(&self, id: Path<i64>, token: AccessToken) -> Shown<Challenge> {
        let claims = match self.claims(&token).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        match subscribers::sent_challenge(&self.state.db, claims.subscriber_id, *id).await {
            Ok(Some(c)) => Shown::Ok(Json(Challenge { id: c.id, level: c.level, title: c.title, body: c.body })),
            Ok(None) => Shown::NotFound(Json(Problem::new(
                "challenge-not-found",
                "No such challenge",
                404,
                "no challenge with this id was sent to you",
            ))),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// Submit a challenge; passing enough challenges at a level moves the subscriber up.
    #[oai(path = "/challenges/:id/submissions", method = "post")]
    async fn submit(&self, id: Path<i64>, token: AccessToken, body: Json<NewSubmission>) -> Recorded<SubmissionResult> {
        let claims = match self.claims(&token).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        if body.answer.contains('\0') {
            return Recorded::BadRequest(Json(Problem::new(
                "invalid-request",
                "Invalid request",
                400,
                "answer: must not contain NUL characters",
            )));
        }
        let pool = &self.state.db;
        let challenge = match subscribers::sent_challenge(pool, claims.subscriber_id, *id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Recorded::NotFound(Json(Problem::new(
                    "challenge-not-found",
                    "No such challenge",
                    404,
                    "no challenge with this id was sent to you",
                )));
            }
            Err(err) => return WithProblem::internal(err),
        };
        let passes = self.state.config.promotion_passes;
        match subscribers::submit(pool, claims.subscriber_id, &challenge, &body.answer, body.passed, passes).await {
            Ok(o) => Recorded::Created(Json(SubmissionResult {
                submission_id: o.submission_id,
                passed: o.passed,
                level: o.level,
                promoted: o.promoted,
                passed_at_level: o.passed_at_level,
                passes_to_next_level: (passes - o.passed_at_level).max(0),
            })),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// The placement questionnaire's questions.
    #[oai(path = "/questionnaire", method = "get")]
    async fn questions(&self) -> Json<Vec<Question>> {
        Json(QUESTIONS.iter().map(|(text, level)| Question { text: (*text).to_owned(), level: *level }).collect())
    }

    /// Answer the placement questionnaire: sets the subscriber's level (the seed's `POST /questionaire`).
    #[oai(path = "/questionnaire", method = "post")]
    async fn answer_questionnaire(&self, token: AccessToken, body: Json<Questionnaire>) -> Recorded<LevelView> {
        let claims = match self.claims(&token).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (score, level) = subscribers::placement_level(&body.answers);
        let answers = serde_json::json!(body.answers);
        if let Err(err) = subscribers::place(&self.state.db, claims.subscriber_id, &answers, score, level).await {
            return WithProblem::internal(err);
        }
        match self.level_view(claims.subscriber_id).await {
            Ok(view) => Recorded::Created(Json(view)),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// The subscriber's level, progress to the next level and level history.
    #[oai(path = "/level", method = "get")]
    async fn level(&self, token: AccessToken) -> Shown<LevelView> {
        let claims = match self.claims(&token).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        match self.level_view(claims.subscriber_id).await {
            Ok(view) => Shown::Ok(Json(view)),
            Err(sqlx::Error::RowNotFound) => Shown::Unauthorized(Json(Problem::new(
                "invalid-token",
                "Invalid link token",
                401,
                "this subscriber no longer exists",
            ))),
            Err(err) => WithProblem::internal(err),
        }
    }
}

impl SubscriberApi {
    async fn level_view(&self, id: i64) -> sqlx::Result<LevelView> {
        level_view(&self.state, id).await
    }
}

async fn level_view(state: &AppState, id: i64) -> sqlx::Result<LevelView> {
    let pool = &state.db;
    let subscriber = subscribers::get(pool, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    let passed = match subscriber.level {
        Some(level) => subscribers::passed_at_level(pool, id, level).await?,
        None => 0,
    };
    let history = subscribers::history(pool, id).await?;
    Ok(LevelView {
        level: subscriber.level,
        passed_at_level: passed,
        passes_to_next_level: (state.config.promotion_passes - passed).max(0),
        history: history
            .into_iter()
            .map(|h| LevelChangeView {
                from_level: h.from_level,
                to_level: h.to_level,
                reason: h.reason,
                at: h.created_at,
            })
            .collect(),
    })
}
