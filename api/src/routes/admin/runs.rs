//! Operator endpoints, behind the admin API key (`Authorization: Bearer <LEVELUP_ADMIN_API_KEY>`).

use levelup_common::{
    db::dead_letters::{self, DeadLetter},
    db::weekly_runs::{self, Progress, RunEvent, WeeklyRun},
    domain::{DeadLetterQueue, IsoWeek, RunAction, RunStatus},
    jobs::queue::{self, QueueDepth},
};
use poem_openapi::{Object, OpenApi, Tags, param::Path, payload::Json};

use crate::{
    AppState,
    http::{
        auth::AdminKey,
        error::{ApiError, NotFound},
        problem::Problem,
        reply::CreatedOrExisting,
    },
};

#[derive(Tags)]
enum AdminTags {
    /// Weekly runs: trigger and inspect.
    AdminRuns,
    /// Jobs that exhausted their retries: list and replay.
    AdminDeadLetters,
}

pub(crate) struct AdminRunsApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct TriggerRun {
    /// ISO week, e.g. `2026-W47`; defaults to the current week in the schedule's time zone.
    #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))]
    week: Option<crate::http::json_string::JsonString>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct RunView {
    week: String,
    status: RunStatus,
    triggered_by: String,
    /// Ledger rows written by the fan-out (one per subscriber).
    total: i64,
    /// Distinct deliveries whose email job has been pushed to the queue at least once.
    enqueued: i64,
    /// Every push of an email job: first pushes, plus retries (transient error, open breaker,
    /// throttling) and re-pushes of jobs lost from the queue. Not a count of emails.
    pushes: i64,
    queued: i64,
    sending: i64,
    sent: i64,
    failed: i64,
    skipped: i64,
    /// Deliveries whose send may have been duplicated (see README, "duplicate window").
    ambiguous: i64,
    /// Sent per second since the run started.
    rate_per_second: f64,
    /// Estimated seconds to completion at the current rate.
    eta_seconds: Option<f64>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the run's emails are due: the schedule's firing, or the trigger. A delivery not sent
    /// within `LEVELUP_SEND_DEADLINE_HOURS` of its due time is skipped as `expired`.
    due_at: chrono::DateTime<chrono::Utc>,
    /// Set while the run is paused: nothing of it is sent until it is resumed.
    paused: Option<PauseView>,
    /// Permanent bounces SES reported for the run's messages.
    bounces: i64,
    /// Complaints SES reported for the run's messages.
    complaints: i64,
    /// Skipped deliveries by reason (`unsubscribed`, `suppressed:bounce`, `expired`, …).
    skip_reasons: std::collections::BTreeMap<String, i64>,
    /// Who paused and resumed the run, when and why (oldest first).
    events: Vec<RunEventView>,
}

#[derive(Object)]
struct PauseView {
    at: chrono::DateTime<chrono::Utc>,
    /// The operator, or `reputation-guard` for an automatic pause.
    by: String,
    reason: String,
}

#[derive(Object)]
struct RunEventView {
    action: RunAction,
    by: String,
    reason: String,
    at: chrono::DateTime<chrono::Utc>,
}

impl From<RunEvent> for RunEventView {
    fn from(e: RunEvent) -> Self {
        Self { action: e.action, by: e.actor, reason: e.reason, at: e.at }
    }
}

/// An operator's pause or resume.
#[derive(Object)]
struct RunActionRequest {
    /// Who is acting: recorded in the run's audit trail (the admin key names no one).
    #[oai(validator(min_length = 1, max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    by: crate::http::json_string::JsonString,
    /// Why: recorded with it.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    reason: crate::http::json_string::JsonString,
}

crate::http::error::status!(
    /// The run is not in a state the action applies to.
    RunConflict = 409,
    "The run cannot take this action now: it is completed (pause), or not paused (resume)."
);

impl RunView {
    fn new(
        run: WeeklyRun,
        progress: Progress,
        skip_reasons: std::collections::BTreeMap<String, i64>,
        events: Vec<RunEvent>,
    ) -> Self {
        let end = run.finished_at.unwrap_or_else(chrono::Utc::now);
        let (rate, eta) = progress.pace(end - run.started_at);
        Self {
            week: run.week.to_string(),
            status: run.status,
            triggered_by: run.triggered_by,
            total: run.total,
            enqueued: run.enqueued,
            pushes: run.pushes,
            queued: progress.queued,
            sending: progress.sending,
            sent: progress.sent,
            failed: progress.failed,
            skipped: progress.skipped,
            ambiguous: progress.ambiguous,
            rate_per_second: rate,
            eta_seconds: eta,
            started_at: run.started_at,
            finished_at: run.finished_at,
            due_at: run.due_at,
            paused: match (run.paused_at, run.paused_by, run.pause_reason) {
                (Some(at), Some(by), Some(reason)) => Some(PauseView { at, by, reason }),
                _ => None,
            },
            bounces: run.bounces,
            complaints: run.complaints,
            skip_reasons,
            events: events.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct QueueView {
    /// Jobs waiting to be fetched.
    waiting: u64,
    /// Jobs scheduled for a later retry.
    scheduled: u64,
    /// Jobs held by workers now.
    inflight: u64,
}

impl From<QueueDepth> for QueueView {
    fn from(d: QueueDepth) -> Self {
        Self { waiting: d.waiting, scheduled: d.scheduled, inflight: d.inflight }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct DeadLetterView {
    id: i64,
    queue: DeadLetterQueue,
    job: serde_json::Value,
    delivery_id: Option<i64>,
    attempts: i32,
    last_error: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            queue: d.queue,
            job: d.job,
            delivery_id: d.delivery_id,
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: d.created_at,
        }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Replayed {
    /// Dead letters put back on their queue.
    replayed: u64,
}

crate::http::error::status!(
    /// Redis did not answer.
    QueueUnavailable = 503,
    "Redis did not answer: the queue's depth is unknown."
);

fn run_not_found<S>(week: IsoWeek) -> ApiError<S> {
    ApiError::new(Problem::new("run-not-found", "No such run", 404, format!("no run for {week}")))
}

fn invalid_week<S>(err: impl std::fmt::Display) -> ApiError<S> {
    ApiError::new(Problem::new("invalid-week", "Invalid ISO week", 400, format!("week: {err}")))
}

#[OpenApi(prefix_path = "/v1/admin", tag = "AdminTags::AdminRuns")]
impl AdminRunsApi {
    /// Trigger the weekly run for a week (idempotent: one run per ISO week).
    #[oai(path = "/runs", method = "post")]
    async fn trigger_run(
        &self,
        _auth: AdminKey,
        body: Json<TriggerRun>,
    ) -> Result<CreatedOrExisting<RunView>, ApiError> {
        let week = match &body.week {
            Some(raw) => IsoWeek::parse(raw).map_err(invalid_week)?,
            None => {
                let now = chrono::Utc::now().with_timezone(&self.state.config.schedule_timezone);
                IsoWeek::containing(now.date_naive())
            }
        };
        let created = weekly_runs::create(&self.state.db, week, "admin").await?;
        // The row exists now (created or not): a missing one is a failure on our side.
        let view = self.view(week).await?.ok_or(sqlx::Error::RowNotFound).map_err(|err| ApiError::internal(&err))?;
        Ok(CreatedOrExisting::new(created, view))
    }

    /// Recent weekly runs, newest first, with progress.
    #[oai(path = "/runs", method = "get")]
    async fn list_runs(&self, _auth: AdminKey) -> Result<Json<Vec<RunView>>, ApiError> {
        let mut views = Vec::new();
        for run in weekly_runs::list(&self.state.db, 52).await? {
            if let Some(view) = self.view(run.week).await? {
                views.push(view);
            }
        }
        Ok(Json(views))
    }

    /// One run's progress: total, enqueued, sent, failed, skipped, rate and ETA.
    #[oai(path = "/runs/:week", method = "get")]
    async fn get_run(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
    ) -> Result<Json<RunView>, ApiError<NotFound>> {
        let week = IsoWeek::parse(&week).map_err(invalid_week)?;
        match self.view(week).await? {
            Some(view) => Ok(Json(view)),
            None => Err(run_not_found(week)),
        }
    }

    /// Pause an unfinished run: nothing more of it is sent (workers give back the jobs they pick
    /// up, untouched) until it is resumed; nothing is lost. Idempotent: pausing a paused run
    /// changes nothing. Recorded in the run's audit trail with who and why.
    #[oai(path = "/runs/:week/pause", method = "post")]
    async fn pause_run(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
        body: Json<RunActionRequest>,
    ) -> Result<Json<RunView>, ApiError<(NotFound, RunConflict)>> {
        self.act(&week, RunAction::Paused, &body).await
    }

    /// Resume a paused run (paused by an operator or by the reputation guard): it is fed again at
    /// once. The guard then judges only what is sent after the resume. Recorded in the run's audit
    /// trail with who and why.
    #[oai(path = "/runs/:week/resume", method = "post")]
    async fn resume_run(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
        body: Json<RunActionRequest>,
    ) -> Result<Json<RunView>, ApiError<(NotFound, RunConflict)>> {
        self.act(&week, RunAction::Resumed, &body).await
    }

    /// Dead letters not yet replayed, newest first.
    #[oai(path = "/dead-letters", method = "get", tag = "AdminTags::AdminDeadLetters")]
    async fn list_dead_letters(&self, _auth: AdminKey) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
        Ok(Json(dead_letters::list_open(&self.state.db, 500).await?.into_iter().map(Into::into).collect()))
    }

    /// Replay one dead letter through the normal, idempotent path.
    #[oai(path = "/dead-letters/:id/replay", method = "post", tag = "AdminTags::AdminDeadLetters")]
    async fn replay_dead_letter(&self, _auth: AdminKey, id: Path<i64>) -> Result<Json<Replayed>, ApiError<NotFound>> {
        match dead_letters::replay(&self.state.db, Some(*id)).await? {
            0 => Err(ApiError::new(Problem::new(
                "dead-letter-not-found",
                "No such dead letter",
                404,
                format!("no open dead letter {}", *id),
            ))),
            replayed => Ok(Json(Replayed { replayed })),
        }
    }

    /// Replay every open dead letter.
    #[oai(path = "/dead-letters/replay", method = "post", tag = "AdminTags::AdminDeadLetters")]
    async fn replay_all_dead_letters(&self, _auth: AdminKey) -> Result<Json<Replayed>, ApiError> {
        Ok(Json(Replayed { replayed: dead_letters::replay(&self.state.db, None).await? }))
    }

    /// Depth of the email queue in Redis.
    #[oai(path = "/queues/email", method = "get")]
    async fn email_queue(&self, _auth: AdminKey) -> Result<Json<QueueView>, ApiError<QueueUnavailable>> {
        self.queue_depth(queue::email_queue_depth).await
    }

    /// Depth of the Shopify sync queue in Redis (sync pages and unsubscribe write-backs).
    #[oai(path = "/queues/shopify-sync", method = "get")]
    async fn sync_queue(&self, _auth: AdminKey) -> Result<Json<QueueView>, ApiError<QueueUnavailable>> {
        self.queue_depth(queue::sync_queue_depth).await
    }
}

impl AdminRunsApi {
    async fn queue_depth<F>(&self, depth: F) -> Result<Json<QueueView>, ApiError<QueueUnavailable>>
    where
        F: AsyncFnOnce(&levelup_common::Config, &mut redis::aio::ConnectionManager) -> redis::RedisResult<QueueDepth>,
    {
        let result = async {
            let mut conn = self.state.redis.get().await?;
            Ok::<_, anyhow::Error>(depth(&self.state.config, &mut conn).await?)
        }
        .await;
        result.map(|depth| Json(depth.into())).map_err(|err| {
            tracing::warn!(error = %format!("{err:#}"), "queue depth unavailable");
            ApiError::new(Problem::new("queue-unavailable", "Queue unavailable", 503, "Redis did not answer"))
        })
    }

    async fn view(&self, week: IsoWeek) -> sqlx::Result<Option<RunView>> {
        let db = &self.state.db;
        let Some(run) = weekly_runs::get(db, week).await? else { return Ok(None) };
        let progress = weekly_runs::progress(db, week).await?;
        let skip_reasons = weekly_runs::skip_reasons(db, week).await?.into_iter().collect();
        let events = weekly_runs::events(db, week).await?;
        Ok(Some(RunView::new(run, progress, skip_reasons, events)))
    }

    /// Pause or resume, with the audit line; `applied`: whether the call changed the run.
    async fn act(
        &self,
        week: &str,
        action: RunAction,
        body: &RunActionRequest,
    ) -> Result<Json<RunView>, ApiError<(NotFound, RunConflict)>> {
        let week = IsoWeek::parse(week).map_err(invalid_week)?;
        let Some(run) = weekly_runs::get(&self.state.db, week).await? else { return Err(run_not_found(week)) };
        let (by, reason): (&str, &str) = (body.by.as_ref(), body.reason.as_ref());
        let applied = match action {
            RunAction::Paused if run.status == RunStatus::Completed => {
                return Err(ApiError::new(Problem::new(
                    "run-completed",
                    "Run completed",
                    409,
                    format!("the run for {week} is completed: there is nothing left to pause"),
                )));
            }
            RunAction::Paused => weekly_runs::pause(&self.state.db, week, by, reason).await?,
            RunAction::Resumed if run.paused_at.is_none() => {
                return Err(ApiError::new(Problem::new(
                    "run-not-paused",
                    "Run not paused",
                    409,
                    format!("the run for {week} is not paused"),
                )));
            }
            RunAction::Resumed => weekly_runs::resume(&self.state.db, week, by, reason).await?,
        };
        if applied {
            if action == RunAction::Paused {
                metrics::counter!("levelup_run_pauses_total", "by" => "operator").increment(1);
            }
            tracing::info!(target: "audit", %week, action = action.as_str(), actor = by, reason, "run {action} by an operator");
        }
        let view = self.view(week).await?.ok_or(sqlx::Error::RowNotFound).map_err(|err| ApiError::internal(&err))?;
        Ok(Json(view))
    }
}
