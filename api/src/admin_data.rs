//! Operator endpoints for the data: challenges, subscribers (list, search, CSV import) and the
//! delivery ledger. Behind the admin API key.

use levelup_common::{
    challenges::{self, Challenge},
    domain::{IsoWeek, Level},
    subscriber_admin::{self, LedgerRow, SubscriberRow},
};
use poem_openapi::{
    ApiResponse, Object, OpenApi, Tags,
    param::{Path, Query},
    payload::{Json, PlainText},
    types::ToJSON,
};

use crate::{
    AppState,
    auth::AdminKey,
    json_string::JsonString,
    problem::{Problem, WithProblem, undeclared},
};

#[derive(Tags)]
enum DataTags {
    /// Challenges per level.
    AdminChallenges,
    /// Subscribers and the delivery ledger.
    AdminSubscribers,
}

pub struct AdminDataApi {
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

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct SubscriberView {
    id: i64,
    email: String,
    first_name: Option<String>,
    status: String,
    level: Option<i16>,
    shopify_customer_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<SubscriberRow> for SubscriberView {
    fn from(s: SubscriberRow) -> Self {
        Self {
            id: s.id,
            email: s.email,
            first_name: s.first_name,
            status: s.status,
            level: s.level,
            shopify_customer_id: s.shopify_customer_id,
            created_at: s.created_at,
        }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct DeliveryView {
    id: i64,
    subscriber_id: i64,
    week: String,
    kind: String,
    challenge_id: Option<i64>,
    /// `queued`, `sending`, `sent`, `failed` or `skipped`.
    state: String,
    attempts: i32,
    ambiguous: bool,
    message_id: Option<String>,
    reason: Option<String>,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<LedgerRow> for DeliveryView {
    fn from(d: LedgerRow) -> Self {
        Self {
            id: d.id,
            subscriber_id: d.subscriber_id,
            week: d.week,
            kind: d.kind,
            challenge_id: d.challenge_id,
            state: d.state,
            attempts: d.attempts,
            ambiguous: d.ambiguous,
            message_id: d.message_id,
            reason: d.reason,
            sent_at: d.sent_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct ImportErrorView {
    /// CSV line (the header is line 1).
    line: u64,
    message: String,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct ImportView {
    imported: u64,
    existing: u64,
    errors: Vec<ImportErrorView>,
}

/// Kinds of job an operator can enqueue.
#[derive(poem_openapi::Enum, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum JobKind {
    /// Send one subscriber's email for a week that has a run.
    SendEmail,
    /// A full subscriber sync from Shopify (the same as `POST /v1/admin/shopify/syncs`).
    SyncSubscribers,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct NewJob {
    /// `send_email` (needs `subscriber_id` and `week`) or `sync_subscribers`.
    kind: JobKind,
    subscriber_id: Option<i64>,
    /// ISO week, e.g. `2026-W47`.
    #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))]
    week: Option<JsonString>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct JobView {
    /// The job's id within its kind: the delivery row (`send_email`) or the sync (`sync_subscribers`).
    id: i64,
    /// `send_email` or `sync_subscribers`.
    kind: String,
    /// Where this job's status is: `/v1/admin/jobs/{id}?kind={kind}`.
    status_url: String,
    subscriber_id: Option<i64>,
    week: Option<String>,
    /// `send_email`: `queued`, `sending`, `sent`, `failed` or `skipped`;
    /// `sync_subscribers`: `running`, `completed` or `failed`.
    state: String,
    attempts: i32,
    reason: Option<String>,
    message_id: Option<String>,
}

impl From<levelup_common::shopify::sync::Sync> for JobView {
    fn from(s: levelup_common::shopify::sync::Sync) -> Self {
        Self {
            id: s.id,
            kind: "sync_subscribers".into(),
            status_url: format!("/v1/admin/jobs/{}?kind=sync_subscribers", s.id),
            subscriber_id: None,
            week: None,
            state: s.status,
            attempts: 1,
            reason: s.error,
            message_id: None,
        }
    }
}

impl From<LedgerRow> for JobView {
    fn from(d: LedgerRow) -> Self {
        Self {
            id: d.id,
            kind: "send_email".into(),
            status_url: format!("/v1/admin/jobs/{}?kind=send_email", d.id),
            subscriber_id: Some(d.subscriber_id),
            week: Some(d.week),
            state: d.state,
            attempts: d.attempts,
            reason: d.reason,
            message_id: d.message_id,
        }
    }
}

/// Reads: 200, or 400 for a bad parameter.
#[derive(ApiResponse)]
enum Listed<T: ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

/// One thing by id: 200, or 404.
#[derive(ApiResponse)]
enum Fetched<T: ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

/// Writes: 201 created (or 200 for an existing or updated one), 400, 404, 409.
#[derive(ApiResponse)]
enum Saved<T: ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    #[oai(status = 201)]
    Created(Json<T>),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl<T: ToJSON + Send + Sync> WithProblem for Listed<T> {
    fn with_problem(problem: Problem) -> Self {
        match problem.status {
            400 => Self::BadRequest(Json(problem)),
            500 => Self::Internal(Json(problem)),
            _ => Self::Internal(Json(undeclared(&problem))),
        }
    }
}

impl<T: ToJSON + Send + Sync> WithProblem for Fetched<T> {
    fn with_problem(problem: Problem) -> Self {
        match problem.status {
            404 => Self::NotFound(Json(problem)),
            500 => Self::Internal(Json(problem)),
            _ => Self::Internal(Json(undeclared(&problem))),
        }
    }
}

impl<T: ToJSON + Send + Sync> WithProblem for Saved<T> {
    fn with_problem(problem: Problem) -> Self {
        match problem.status {
            400 => Self::BadRequest(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            409 => Self::Conflict(Json(problem)),
            500 => Self::Internal(Json(problem)),
            _ => Self::Internal(Json(undeclared(&problem))),
        }
    }
}

/// A subscriber's status (the database's `CHECK`), as a filter.
#[derive(poem_openapi::Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum SubscriberStatus {
    Active,
    Unsubscribed,
    Bounced,
    Complained,
}

impl SubscriberStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Unsubscribed => "unsubscribed",
            Self::Bounced => "bounced",
            Self::Complained => "complained",
        }
    }
}

/// A delivery's state (the database's `CHECK`), as a filter.
#[derive(poem_openapi::Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum DeliveryState {
    Queued,
    Sending,
    Sent,
    Failed,
    Skipped,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

#[OpenApi(prefix_path = "/v1/admin")]
impl AdminDataApi {
    /// List challenges, optionally of one level.
    #[oai(path = "/challenges", method = "get", tag = "DataTags::AdminChallenges")]
    async fn list_challenges(
        &self,
        _auth: AdminKey,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] level: Query<Option<i16>>,
        include_archived: Query<Option<bool>>,
    ) -> Listed<Vec<ChallengeView>> {
        match challenges::list(&self.state.db, *level, include_archived.unwrap_or(false)).await {
            Ok(list) => Listed::Ok(Json(list.into_iter().map(Into::into).collect())),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// Author a challenge.
    #[oai(path = "/challenges", method = "post", tag = "DataTags::AdminChallenges")]
    async fn create_challenge(&self, _auth: AdminKey, body: Json<NewChallenge>) -> Saved<ChallengeView> {
        if let Err(err) = Level::new(body.level) {
            return WithProblem::bad_request("level", err);
        }
        if let Some(field) = crate::problem::first_with_nul(&[("title", &body.title), ("body", &body.body)]) {
            return WithProblem::bad_request(field, "must not contain NUL characters");
        }
        // The title becomes the email's subject: one line.
        if levelup_common::domain::has_control_characters(&body.title) {
            return WithProblem::bad_request("title", "must be one line, without control characters");
        }
        match challenges::create(&self.state.db, body.level, body.position, &body.title, &body.body).await {
            Ok(c) => Saved::Created(Json(c.into())),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                Saved::Conflict(Json(Problem::new(
                    "position-taken",
                    "Position taken",
                    409,
                    "position: another challenge of this level has this position",
                )))
            }
            // The level's last position is the largest integer: nothing fits after it.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22003") => Saved::Conflict(Json(
                Problem::new("position-taken", "No position left", 409, "position: give one explicitly"),
            )),
            Err(err) => WithProblem::internal(err),
        }
    }

    #[oai(path = "/challenges/:id", method = "get", tag = "DataTags::AdminChallenges")]
    async fn get_challenge(&self, _auth: AdminKey, id: Path<i64>) -> Fetched<ChallengeView> {
        match challenges::get(&self.state.db, *id).await {
            Ok(Some(c)) => Fetched::Ok(Json(c.into())),
            Ok(None) => WithProblem::not_found("challenge"),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// Edit or archive a challenge (challenges are archived, never deleted: the ledger refers to them).
    #[oai(path = "/challenges/:id", method = "put", tag = "DataTags::AdminChallenges")]
    async fn update_challenge(
        &self,
        _auth: AdminKey,
        id: Path<i64>,
        body: Json<ChallengeUpdate>,
    ) -> Saved<ChallengeView> {
        if let Some(field) = crate::problem::first_with_nul(&[("title", &body.title), ("body", &body.body)]) {
            return WithProblem::bad_request(field, "must not contain NUL characters");
        }
        // The title becomes the email's subject: one line.
        if levelup_common::domain::has_control_characters(&body.title) {
            return WithProblem::bad_request("title", "must be one line, without control characters");
        }
        match challenges::update(&self.state.db, *id, &body.title, &body.body, body.archived).await {
            Ok(Some(c)) => Saved::Ok(Json(c.into())),
            Ok(None) => WithProblem::not_found("challenge"),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// Enqueue a job. `send_email` adds the subscriber to the week's run (idempotent: an
    /// existing delivery is returned with 200); the week must have a run. `sync_subscribers`
    /// starts a full Shopify sync (201), or returns the running one (200); 409 without a store.
    #[oai(path = "/jobs", method = "post", tag = "DataTags::AdminSubscribers")]
    async fn create_job(&self, _auth: AdminKey, body: Json<NewJob>) -> Saved<JobView> {
        if body.kind == JobKind::SyncSubscribers {
            return match crate::admin_sync::start_sync(&self.state, "job").await {
                Ok((true, sync)) => Saved::Created(Json(sync.into())),
                Ok((false, sync)) => Saved::Ok(Json(sync.into())),
                Err(problem) if problem.status == 409 => Saved::Conflict(Json(problem)),
                Err(problem) => Saved::Internal(Json(problem)),
            };
        }
        let Some(subscriber_id) = body.subscriber_id else {
            return WithProblem::bad_request("subscriber_id", "required");
        };
        let week = match body.week.as_deref().map(IsoWeek::parse) {
            Some(Ok(week)) => week.to_string(),
            Some(Err(err)) => return WithProblem::bad_request("week", err),
            None => return WithProblem::bad_request("week", "required"),
        };
        let pool = &self.state.db;
        match levelup_common::subscribers::get(pool, subscriber_id).await {
            Ok(Some(_)) => {}
            Ok(None) => return WithProblem::not_found("subscriber"),
            Err(err) => return WithProblem::internal(err),
        }
        let added = match levelup_common::weekly_runs::add_subscriber(pool, &week, subscriber_id).await {
            Ok(Some(added)) => added,
            Ok(None) => {
                return Saved::Conflict(Json(Problem::new(
                    "no-run-for-week",
                    "No run for this week",
                    409,
                    format!("week: {week} has no run; trigger it with POST /v1/admin/runs"),
                )));
            }
            Err(err) => return WithProblem::internal(err),
        };
        match self.job(added.0).await {
            Ok(Some(job)) if added.1 => Saved::Created(Json(job)),
            Ok(Some(job)) => Saved::Ok(Json(job)),
            Ok(None) => WithProblem::not_found("job"),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// A job's status: its delivery row (`kind=send_email`, the default) or its sync
    /// (`kind=sync_subscribers`).
    #[oai(path = "/jobs/:id", method = "get", tag = "DataTags::AdminSubscribers")]
    async fn get_job(&self, _auth: AdminKey, id: Path<i64>, kind: Query<Option<JobKind>>) -> Fetched<JobView> {
        if kind.0 == Some(JobKind::SyncSubscribers) {
            return match levelup_common::shopify::sync::get(&self.state.db, *id).await {
                Ok(Some(sync)) => Fetched::Ok(Json(sync.into())),
                Ok(None) => WithProblem::not_found("job"),
                Err(err) => WithProblem::internal(err),
            };
        }
        match self.job(*id).await {
            Ok(Some(job)) => Fetched::Ok(Json(job)),
            Ok(None) => WithProblem::not_found("job"),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// List and search subscribers (keyset pages: pass the last id as `after_id`).
    #[oai(path = "/subscribers", method = "get", tag = "DataTags::AdminSubscribers")]
    async fn list_subscribers(
        &self,
        _auth: AdminKey,
        /// Substring of the email or first name.
        q: Query<Option<String>>,
        status: Query<Option<SubscriberStatus>>,
        after_id: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<i64>>,
    ) -> Listed<Vec<SubscriberView>> {
        if q.as_deref().is_some_and(|q| q.contains('\0')) {
            return WithProblem::bad_request("q", "must not contain NUL characters");
        }
        let result = subscriber_admin::list(
            &self.state.db,
            q.as_deref(),
            status.map(SubscriberStatus::as_str),
            after_id.unwrap_or(0),
            limit.unwrap_or(100),
        )
        .await;
        match result {
            Ok(rows) => Listed::Ok(Json(rows.into_iter().map(Into::into).collect())),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// Import subscribers from CSV (`email,first_name,level`; header required; send as
    /// `text/plain`). Good rows are kept; bad rows are reported by line; existing addresses are
    /// left as they are.
    #[oai(path = "/subscribers/import", method = "post", tag = "DataTags::AdminSubscribers")]
    async fn import_subscribers(&self, _auth: AdminKey, body: PlainText<String>) -> Listed<ImportView> {
        if body.0.contains('\0') {
            return WithProblem::bad_request("body", "must not contain NUL characters");
        }
        match subscriber_admin::import_csv(&self.state.db, &body.0).await {
            Ok(report) => Listed::Ok(Json(ImportView {
                imported: report.imported,
                existing: report.existing,
                errors: report
                    .errors
                    .into_iter()
                    .map(|e| ImportErrorView { line: e.line, message: e.message })
                    .collect(),
            })),
            Err(err) if err.downcast_ref::<sqlx::Error>().is_some() => WithProblem::internal(err),
            Err(err) => WithProblem::bad_request("body", err),
        }
    }

    /// One subscriber's delivery ledger, newest week first.
    #[oai(path = "/subscribers/:id/deliveries", method = "get", tag = "DataTags::AdminSubscribers")]
    async fn subscriber_deliveries(&self, _auth: AdminKey, id: Path<i64>) -> Listed<Vec<DeliveryView>> {
        match subscriber_admin::ledger_for_subscriber(&self.state.db, *id).await {
            Ok(rows) => Listed::Ok(Json(rows.into_iter().map(Into::into).collect())),
            Err(err) => WithProblem::internal(err),
        }
    }

    /// A week's delivery ledger, optionally of one state (keyset pages by `after_id`).
    #[oai(path = "/runs/:week/deliveries", method = "get", tag = "DataTags::AdminSubscribers")]
    async fn week_deliveries(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
        state: Query<Option<DeliveryState>>,
        after_id: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<i64>>,
    ) -> Listed<Vec<DeliveryView>> {
        let week = match IsoWeek::parse(&week) {
            Ok(w) => w,
            Err(err) => return WithProblem::bad_request("week", err),
        };
        let result = subscriber_admin::ledger_for_week(
            &self.state.db,
            &week.to_string(),
            state.map(DeliveryState::as_str),
            after_id.unwrap_or(0),
            limit.unwrap_or(100),
        )
        .await;
        match result {
            Ok(rows) => Listed::Ok(Json(rows.into_iter().map(Into::into).collect())),
            Err(err) => WithProblem::internal(err),
        }
    }
}

impl AdminDataApi {
    async fn job(&self, id: i64) -> sqlx::Result<Option<JobView>> {
        Ok(subscriber_admin::delivery(&self.state.db, id).await?.map(Into::into))
    }
}
