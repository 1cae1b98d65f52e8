//! Operator endpoints for challenges: authored per level, edited, archived (never deleted: the
//! ledger refers to them). Behind the admin API key.

use levelup_common::{
    db::challenges::{self, Challenge},
    domain::Level,
};
use poem_openapi::{
    Object, OpenApi, Tags,
    param::{Path, Query},
    payload::Json,
};

use crate::{
    AppState,
    http::{
        auth::AdminKey,
        error::{ApiError, NotFound},
        json_string::JsonString,
        problem::Problem,
        reply::Created,
    },
};

#[derive(Tags)]
enum ChallengeTags {
    /// Challenges per level.
    AdminChallenges,
}

pub(crate) struct AdminChallengesApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct ChallengeView {
    id: i64,
    level: i16,
    position: i32,
    title: String,
    body: String,
    archived: bool,
}

impl From<Challenge> for ChallengeView {
    fn from(c: Challenge) -> Self {
        Self { id: c.id, level: c.level, position: c.position, title: c.title, body: c.body, archived: c.archived }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct NewChallenge {
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    level: i16,
    /// Order within the level; defaults to after the last one.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    position: Option<i32>,
    /// One line: it becomes the email's subject.
    #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    title: JsonString,
    #[oai(validator(min_length = 1, max_length = 20000))]
    body: JsonString,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct ChallengeUpdate {
    /// One line: it becomes the email's subject.
    #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    title: JsonString,
    #[oai(validator(min_length = 1, max_length = 20000))]
    body: JsonString,
    /// Archived challenges are no longer sent.
    archived: bool,
}

crate::http::error::status!(
    /// Position taken, or none left after the last one.
    PositionTaken = 409,
    "Another challenge of this level has this position (or no position is left after the last one)."
);

/// Title and body of a challenge: no NUL (Postgres text cannot store it); the title becomes the
/// email's subject, so one line.
fn check_challenge_text<S>(title: &str, body: &str) -> Result<(), ApiError<S>> {
    if let Some(field) = crate::http::problem::first_with_nul(&[("title", title), ("body", body)]) {
        return Err(ApiError::bad_request(field, "must not contain NUL characters"));
    }
    if levelup_common::domain::has_control_characters(title) {
        return Err(ApiError::bad_request("title", "must be one line, without control characters"));
    }
    Ok(())
}

#[OpenApi(prefix_path = "/v1/admin", tag = "ChallengeTags::AdminChallenges")]
impl AdminChallengesApi {
    /// List challenges, optionally of one level.
    #[oai(path = "/challenges", method = "get")]
    async fn list_challenges(
        &self,
        _auth: AdminKey,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] level: Query<Option<i16>>,
        include_archived: Query<Option<bool>>,
    ) -> Result<Json<Vec<ChallengeView>>, ApiError> {
        let list = challenges::list(&self.state.db, *level, include_archived.unwrap_or(false)).await?;
        Ok(Json(list.into_iter().map(Into::into).collect()))
    }

    /// Author a challenge.
    #[oai(path = "/challenges", method = "post")]
    async fn create_challenge(
        &self,
        _auth: AdminKey,
        body: Json<NewChallenge>,
    ) -> Result<Created<ChallengeView>, ApiError<PositionTaken>> {
        Level::new(body.level).map_err(|err| ApiError::bad_request("level", err))?;
        check_challenge_text(&body.title, &body.body)?;
        match challenges::create(&self.state.db, body.level, body.position, &body.title, &body.body).await {
            Ok(c) => Ok(Created::Created(Json(c.into()))),
            Err(err) => Err(match ApiError::from(err) {
                conflict if conflict.problem().status == 409 => ApiError::new(Problem::new(
                    "position-taken",
                    "Position taken",
                    409,
                    "position: another challenge of this level has this position",
                )),
                // The level's last position is the largest integer: nothing fits after it.
                out_of_range if out_of_range.problem().status == 400 => ApiError::new(Problem::new(
                    "position-taken",
                    "No position left",
                    409,
                    "position: give one explicitly",
                )),
                other => other,
            }),
        }
    }

    #[oai(path = "/challenges/:id", method = "get")]
    async fn get_challenge(&self, _auth: AdminKey, id: Path<i64>) -> Result<Json<ChallengeView>, ApiError<NotFound>> {
        let challenge = challenges::get(&self.state.db, *id).await?.ok_or_else(|| ApiError::not_found("challenge"))?;
        Ok(Json(challenge.into()))
    }

    /// Edit or archive a challenge (challenges are archived, never deleted: the ledger refers to them).
    #[oai(path = "/challenges/:id", method = "put")]
    async fn update_challenge(
        &self,
        _auth: AdminKey,
        id: Path<i64>,
        body: Json<ChallengeUpdate>,
    ) -> Result<Json<ChallengeView>, ApiError<NotFound>> {
        check_challenge_text(&body.title, &body.body)?;
        let updated = challenges::update(&self.state.db, *id, &body.title, &body.body, body.archived).await?;
        Ok(Json(updated.ok_or_else(|| ApiError::not_found("challenge"))?.into()))
    }
}
