//! Operator endpoints for challenges: authored per level, edited, archived (never deleted: the
//! ledger refers to them); previewed and test-sent before a run. Behind the admin API key.
//!
//! Preview and test send render with `levelup_common::mail::render::weekly_email`, the worker's
//! own rendering, so what the operator sees is what a subscriber gets. The API never sends: a
//! test send is a `test_sends` row, which the scheduler pushes to the worker's test-send queue.

use levelup_common::{
    db::{
        challenges::{self, Challenge},
        subscriber_admin::{self, SubscriberRow},
        test_sends::{self, Created as TestSendCreated, NewTestSend, TestSend},
    },
    domain::{EmailAddress, Level, TestSendState},
    mail::{
        MailRef,
        render::{self, EmailBody, LinkTokens, Recipient},
    },
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
        optional_json::OptionalJson,
        problem::Problem,
        reply::{Accepted, Created},
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

/// Whose data a preview shows.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct PreviewRequest {
    /// Render for this subscriber: their address, name and level, and their real links (signed
    /// now, as a run would sign them). Without it or `email`: a sample subscriber, inert links.
    subscriber_id: Option<i64>,
    /// Or find the subscriber by address (case-insensitively).
    #[oai(validator(max_length = 320))]
    email: Option<JsonString>,
}

/// A header of the email beyond From, To and Subject.
#[derive(Object)]
struct HeaderView {
    name: String,
    value: String,
}

/// The email exactly as it would be sent.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct EmailPreview {
    challenge_id: i64,
    /// The subscriber it was rendered for; absent for the sample subscriber.
    subscriber_id: Option<i64>,
    from: String,
    to: String,
    subject: String,
    /// The text part.
    text: String,
    /// The HTML part.
    html: String,
    /// `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 8058 one-click).
    headers: Vec<HeaderView>,
}

/// What to test-send, and where.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct TestSendRequest {
    /// The address to send it to.
    #[oai(validator(min_length = 3, max_length = 320))]
    to: JsonString,
    /// Render with this subscriber's name and level (the links stay inert, so the test recipient
    /// cannot act as them). Without it: a sample subscriber.
    subscriber_id: Option<i64>,
}

/// A test send and how it went.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct TestSendView {
    id: i64,
    /// Where its state is: `/v1/admin/test-sends/{id}`.
    status_url: String,
    challenge_id: i64,
    subscriber_id: Option<i64>,
    to: String,
    /// `queued` → `sending` → `sent` or `failed` (tried once; send another after a failure).
    state: TestSendState,
    /// The mail provider's message id, once sent.
    message_id: Option<String>,
    /// Why it failed.
    error: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<TestSend> for TestSendView {
    fn from(t: TestSend) -> Self {
        Self {
            status_url: format!("/v1/admin/test-sends/{}", t.id),
            id: t.id,
            challenge_id: t.challenge_id,
            subscriber_id: t.subscriber_id,
            to: t.to_address,
            state: t.state,
            message_id: t.message_id,
            error: t.error,
            created_at: t.created_at,
            finished_at: t.finished_at,
        }
    }
}

crate::http::error::status!(
    /// Too many test sends.
    TestSendsLimited = 429,
    "This operator sent LEVELUP_TEST_SENDS_PER_MINUTE test sends within the last minute (or this client sends too fast); retry after Retry-After.",
    retry_after = true
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

    /// Render a challenge's email without sending it: subject, text, HTML and headers, exactly as
    /// a run renders it for the subscriber given (by `subscriber_id` or `email`), or for a sample
    /// subscriber without a body. Nothing is written.
    #[oai(path = "/challenges/:id/preview", method = "post")]
    async fn preview_challenge(
        &self,
        auth: AdminKey,
        id: Path<i64>,
        body: OptionalJson<PreviewRequest>,
    ) -> Result<Json<EmailPreview>, ApiError<NotFound>> {
        let request = body.0.unwrap_or(PreviewRequest { subscriber_id: None, email: None });
        let subscriber = match (request.subscriber_id, request.email.as_deref()) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("email", "give subscriber_id or email, not both")),
            (Some(subscriber_id), None) => Some(self.subscriber(subscriber_id).await?),
            (None, Some(raw)) => {
                let email = EmailAddress::parse(raw).map_err(|err| ApiError::bad_request("email", err))?;
                let found = subscriber_admin::by_email(&self.state.db, &email).await?;
                Some(found.ok_or_else(|| ApiError::not_found("subscriber"))?)
            }
            (None, None) => None,
        };
        let challenge = self.challenge(*id).await?;
        tracing::info!(
            action = "challenge.preview",
            operator = auth.operator(),
            challenge_id = challenge.id,
            subscriber_id = subscriber.as_ref().map(|s| s.id),
            "operator action"
        );
        let body = EmailBody::challenge(
            challenge.id,
            challenge.level,
            subscriber.as_ref().and_then(|s| s.level),
            &challenge.title,
            &challenge.body,
        );
        let email = match &subscriber {
            Some(subscriber) => {
                let now = chrono::Utc::now().timestamp();
                let tokens = LinkTokens::signed(&self.state.config, &self.state.signer, subscriber.id, now)
                    .map_err(|err| ApiError::internal(&err))?;
                let recipient = Recipient { to: &subscriber.email, first_name: subscriber.first_name.as_deref() };
                render::weekly_email(&self.state.config, &recipient, &body, &tokens, MailRef::Preview)
            }
            None => {
                let recipient = Recipient { to: render::SAMPLE_ADDRESS, first_name: Some(render::SAMPLE_FIRST_NAME) };
                render::weekly_email(&self.state.config, &recipient, &body, &LinkTokens::Inert, MailRef::Preview)
            }
        };
        Ok(Json(EmailPreview {
            challenge_id: challenge.id,
            subscriber_id: subscriber.map(|s| s.id),
            headers: email.headers.iter().map(|h| HeaderView { name: h.name().to_owned(), value: h.value() }).collect(),
            from: email.from,
            to: email.to,
            subject: email.subject,
            text: email.text,
            html: email.html,
        }))
    }

    /// Send a challenge's email to an address, as a test: rendered like a run's (for the
    /// subscriber given, or a sample one), subject marked `[TEST]`, header `X-LevelUp-Test: 1`,
    /// links inert. A worker sends it once through the configured transport, the fleet's rate
    /// limit and circuit breaker, outside every run and its ledger. At most
    /// `LEVELUP_TEST_SENDS_PER_MINUTE` per operator (429 with `Retry-After` beyond).
    #[oai(path = "/challenges/:id/test-send", method = "post")]
    async fn test_send_challenge(
        &self,
        auth: AdminKey,
        id: Path<i64>,
        body: Json<TestSendRequest>,
    ) -> Result<Accepted<TestSendView>, ApiError<(NotFound, TestSendsLimited)>> {
        let to = EmailAddress::parse(&body.to).map_err(|err| ApiError::bad_request("to", err))?;
        let challenge = self.challenge(*id).await.map_err(ApiError::widen)?;
        if let Some(subscriber_id) = body.subscriber_id {
            self.subscriber(subscriber_id).await.map_err(ApiError::widen)?;
        }
        let new = NewTestSend {
            operator: auth.operator(),
            challenge_id: challenge.id,
            subscriber_id: body.subscriber_id,
            to: &to,
        };
        match test_sends::create(&self.state.db, new, self.state.config.test_sends_per_minute).await? {
            TestSendCreated::Queued(test_send) => {
                // The address is the operator's, but logs carry ids, never addresses.
                tracing::info!(
                    action = "challenge.test_send",
                    operator = auth.operator(),
                    challenge_id = challenge.id,
                    subscriber_id = body.subscriber_id,
                    test_send_id = test_send.id,
                    "operator action"
                );
                Ok(Accepted::Accepted(Json(test_send.into())))
            }
            TestSendCreated::Limited { retry_after } => {
                tracing::info!(
                    action = "challenge.test_send",
                    operator = auth.operator(),
                    challenge_id = challenge.id,
                    "operator action refused: test send limit"
                );
                let per_minute = self.state.config.test_sends_per_minute;
                Err(ApiError::new(Problem::new(
                    "test-send-limit",
                    "Too many test sends",
                    429,
                    format!("at most {per_minute} test sends per minute"),
                ))
                .retry_after((retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)))
            }
        }
    }

    /// A test send's state: `queued`, `sending`, `sent` (with the provider's message id) or
    /// `failed` (with the reason).
    #[oai(path = "/test-sends/:id", method = "get")]
    async fn get_test_send(&self, _auth: AdminKey, id: Path<i64>) -> Result<Json<TestSendView>, ApiError<NotFound>> {
        let test_send = test_sends::get(&self.state.db, *id).await?.ok_or_else(|| ApiError::not_found("test send"))?;
        Ok(Json(test_send.into()))
    }
}

impl AdminChallengesApi {
    async fn challenge(&self, id: i64) -> Result<Challenge, ApiError<NotFound>> {
        challenges::get(&self.state.db, id).await?.ok_or_else(|| ApiError::not_found("challenge"))
    }

    async fn subscriber(&self, id: i64) -> Result<SubscriberRow, ApiError<NotFound>> {
        subscriber_admin::get(&self.state.db, id).await?.ok_or_else(|| ApiError::not_found("subscriber"))
    }
}
