//! Operator endpoints for subscribers (list, search, CSV import), their delivery ledger, and the
//! jobs an operator enqueues by hand. Behind the admin API key.

use levelup_common::{
    db::subscriber_admin::{self, LedgerRow, SubscriberRow},
    domain::{DeliveryKind, DeliveryState, IsoWeek, SubscriberStatus},
    flows::import,
};
use poem_openapi::{
    Object, OpenApi, Tags,
    param::{Path, Query},
    payload::{Json, PlainText},
};

use crate::{
    AppState,
    http::{
        auth::AdminKey,
        error::{ApiError, NotFound},
        json_string::JsonString,
        problem::Problem,
        reply::CreatedOrExisting,
    },
};

#[derive(Tags)]
enum SubscriberTags {
    /// Subscribers and the delivery ledger.
    AdminSubscribers,
}

pub(crate) struct AdminSubscribersApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct SubscriberView {
    id: i64,
    email: String,
    first_name: Option<String>,
    status: SubscriberStatus,
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
    kind: DeliveryKind,
    challenge_id: Option<i64>,
    state: DeliveryState,
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
            week: d.week.to_string(),
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

impl From<levelup_common::db::shopify_syncs::Sync> for JobView {
    fn from(s: levelup_common::db::shopify_syncs::Sync) -> Self {
        Self {
            id: s.id,
            kind: "sync_subscribers".into(),
            status_url: format!("/v1/admin/jobs/{}?kind=sync_subscribers", s.id),
            subscriber_id: None,
            week: None,
            state: s.status.to_string(),
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
            week: Some(d.week.to_string()),
            state: d.state.to_string(),
            attempts: d.attempts,
            reason: d.reason,
            message_id: d.message_id,
        }
    }
}

crate::http::error::status!(
    /// `send_email` for a week without a run, or `sync_subscribers` without a store.
    JobConflict = 409,
    "The week has no run (trigger it first), or no Shopify store is configured."
);

#[OpenApi(prefix_path = "/v1/admin", tag = "SubscriberTags::AdminSubscribers")]
impl AdminSubscribersApi {
    /// Enqueue a job. `send_email` adds the subscriber to the week's run (idempotent: an
    /// existing delivery is returned with 200); the week must have a run. `sync_subscribers`
    /// starts a full Shopify sync (201), or returns the running one (200); 409 without a store.
    #[oai(path = "/jobs", method = "post")]
    async fn create_job(
        &self,
        _auth: AdminKey,
        body: Json<NewJob>,
    ) -> Result<CreatedOrExisting<JobView>, ApiError<(NotFound, JobConflict)>> {
        if body.kind == JobKind::SyncSubscribers {
            let (started, sync) = crate::routes::admin::shopify::start_sync(&self.state, "job").await?;
            return Ok(CreatedOrExisting::new(started, sync.into()));
        }
        let subscriber_id = body.subscriber_id.ok_or_else(|| ApiError::bad_request("subscriber_id", "required"))?;
        let week = match body.week.as_deref().map(IsoWeek::parse) {
            Some(Ok(week)) => week,
            Some(Err(err)) => return Err(ApiError::bad_request("week", err)),
            None => return Err(ApiError::bad_request("week", "required")),
        };
        let pool = &self.state.db;
        if levelup_common::db::subscribers::get(pool, subscriber_id).await?.is_none() {
            return Err(ApiError::not_found("subscriber"));
        }
        let Some((delivery_id, created)) =
            levelup_common::db::weekly_runs::add_subscriber(pool, week, subscriber_id).await?
        else {
            return Err(ApiError::new(Problem::new(
                "no-run-for-week",
                "No run for this week",
                409,
                format!("week: {week} has no run; trigger it with POST /v1/admin/runs"),
            )));
        };
        let job = self.job(delivery_id).await?.ok_or_else(|| ApiError::not_found("job"))?;
        Ok(CreatedOrExisting::new(created, job))
    }

    /// A job's status: its delivery row (`kind=send_email`, the default) or its sync
    /// (`kind=sync_subscribers`).
    #[oai(path = "/jobs/:id", method = "get")]
    async fn get_job(
        &self,
        _auth: AdminKey,
        id: Path<i64>,
        kind: Query<Option<JobKind>>,
    ) -> Result<Json<JobView>, ApiError<NotFound>> {
        let job = if kind.0 == Some(JobKind::SyncSubscribers) {
            levelup_common::db::shopify_syncs::get(&self.state.db, *id).await?.map(Into::into)
        } else {
            self.job(*id).await?
        };
        Ok(Json(job.ok_or_else(|| ApiError::not_found("job"))?))
    }

    /// List and search subscribers (keyset pages: pass the last id as `after_id`).
    #[oai(path = "/subscribers", method = "get")]
    async fn list_subscribers(
        &self,
        _auth: AdminKey,
        /// Substring of the email or first name.
        q: Query<Option<String>>,
        status: Query<Option<SubscriberStatus>>,
        after_id: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<i64>>,
    ) -> Result<Json<Vec<SubscriberView>>, ApiError> {
        if q.as_deref().is_some_and(|q| q.contains('\0')) {
            return Err(ApiError::bad_request("q", "must not contain NUL characters"));
        }
        let rows =
            subscriber_admin::list(&self.state.db, q.as_deref(), *status, after_id.unwrap_or(0), limit.unwrap_or(100))
                .await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Import subscribers from CSV (`email,first_name,level`; header required; send as
    /// `text/plain`). Good rows are kept; bad rows are reported by line; existing addresses are
    /// left as they are.
    #[oai(path = "/subscribers/import", method = "post")]
    async fn import_subscribers(&self, _auth: AdminKey, body: PlainText<String>) -> Result<Json<ImportView>, ApiError> {
        let report = import::import_csv(&self.state.db, &body.0).await?;
        Ok(Json(ImportView {
            imported: report.imported,
            existing: report.existing,
            errors: report.errors.into_iter().map(|e| ImportErrorView { line: e.line, message: e.message }).collect(),
        }))
    }

    /// One subscriber's delivery ledger, newest week first.
    #[oai(path = "/subscribers/:id/deliveries", method = "get")]
    async fn subscriber_deliveries(&self, _auth: AdminKey, id: Path<i64>) -> Result<Json<Vec<DeliveryView>>, ApiError> {
        let rows = subscriber_admin::ledger_for_subscriber(&self.state.db, *id).await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// A week's delivery ledger, optionally of one state (keyset pages by `after_id`).
    #[oai(path = "/runs/:week/deliveries", method = "get")]
    async fn week_deliveries(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
        state: Query<Option<DeliveryState>>,
        after_id: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<i64>>,
    ) -> Result<Json<Vec<DeliveryView>>, ApiError> {
        let week = IsoWeek::parse(&week).map_err(|err| ApiError::bad_request("week", err))?;
        let rows = subscriber_admin::ledger_for_week(
            &self.state.db,
            week,
            *state,
            after_id.unwrap_or(0),
            limit.unwrap_or(100),
        )
        .await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }
}

impl AdminSubscribersApi {
    async fn job(&self, id: i64) -> sqlx::Result<Option<JobView>> {
        Ok(subscriber_admin::delivery(&self.state.db, id).await?.map(Into::into))
    }
}
