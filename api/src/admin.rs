//! Operator endpoints, behind the admin API key (`Authorization: Bearer <LEVELUP_ADMIN_API_KEY>`).

use levelup_common::{
    dead_letters::{self, DeadLetter},
    domain::IsoWeek,
    queue::{self, QueueDepth},
    weekly_runs::{self, Progress, WeeklyRun},
};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, param::Path, payload::Json};

use crate::{AppState, auth::AdminKey, problem::Problem};

#[derive(Tags)]
enum AdminTags {
    /// Weekly runs: trigger and inspect.
    AdminRuns,
    /// Jobs that exhausted their retries: list and replay.
    AdminDeadLetters,
}

pub struct AdminApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct TriggerRun {
    /// ISO week, e.g. `2026-W47`; defaults to the current week in the schedule's time zone.
    #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))]
    week: Option<crate::json_string::JsonString>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct RunView {
    week: String,
    /// `fanning_out`, `sending` or `completed`.
    status: String,
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
}

impl RunView {
    fn new(run: WeeklyRun, progress: Progress) -> Self {
        let end = run.finished_at.unwrap_or_else(chrono::Utc::now);
        let seconds = (end - run.started_at).num_milliseconds().max(1) as f64 / 1000.0;
        let done = progress.sent + progress.failed;
        let rate = done as f64 / seconds;
        let remaining = progress.queued + progress.sending;
        Self {
            week: run.week,
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
            eta_seconds: (remaining > 0 && rate > 0.0).then(|| remaining as f64 / rate),
            started_at: run.started_at,
            finished_at: run.finished_at,
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

#[derive(ApiResponse)]
enum TriggerResponse {
    /// The run was created; the schedulers carry it out.
    #[oai(status = 201)]
    Created(Json<RunView>),
    /// The week already has a run (one run per ISO week): here it is.
    #[oai(status = 200)]
    Existing(Json<RunView>),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum RunResponse {
    #[oai(status = 200)]
    Ok(Json<RunView>),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum RunsResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<RunView>>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct DeadLetterView {
    id: i64,
    queue: String,
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

#[derive(ApiResponse)]
enum DeadLettersResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<DeadLetterView>>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum ReplayResponse {
    #[oai(status = 200)]
    Ok(Json<Replayed>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum QueueResponse {
    #[oai(status = 200)]
    Ok(Json<QueueView>),
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

fn internal(err: impl std::fmt::Display) -> Json<Problem> {
    tracing::error!(error = %err, "admin request failed");
    Json(Problem::internal())
}

fn invalid_week(err: impl std::fmt::Display) -> Json<Problem> {
    Json(Problem::new("invalid-week", "Invalid ISO week", 400, format!("week: {err}")))
}

#[OpenApi(prefix_path = "/v1/admin", tag = "AdminTags::AdminRuns")]
impl AdminApi {
    /// Trigger the weekly run for a week (idempotent: one run per ISO week).
    #[oai(path = "/runs", method = "post")]
    async fn trigger_run(&self, _auth: AdminKey, body: Json<TriggerRun>) -> TriggerResponse {
        let week = match &body.week {
            Some(raw) => match IsoWeek::parse(raw) {
                Ok(week) => week,
                Err(err) => return TriggerResponse::BadRequest(invalid_week(err)),
            },
            None => {
                let now = chrono::Utc::now().with_timezone(&self.state.config.schedule_timezone);
                IsoWeek::containing(now.date_naive())
            }
        };
        let pool = &self.state.db;
        let created = match weekly_runs::create(pool, week, "admin").await {
            Ok(created) => created,
            Err(err) => return TriggerResponse::Internal(internal(err)),
        };
        match self.view(&week.to_string()).await {
            Ok(Some(view)) if created => TriggerResponse::Created(Json(view)),
            Ok(Some(view)) => TriggerResponse::Existing(Json(view)),
            Ok(None) => TriggerResponse::Internal(internal("run vanished")),
            Err(err) => TriggerResponse::Internal(internal(err)),
        }
    }

    /// Recent weekly runs, newest first, with progress.
    #[oai(path = "/runs", method = "get")]
    async fn list_runs(&self, _auth: AdminKey) -> RunsResponse {
        let result: sqlx::Result<Vec<RunView>> = async {
            let mut views = Vec::new();
            for run in weekly_runs::list(&self.state.db, 52).await? {
                let progress = weekly_runs::progress(&self.state.db, &run.week).await?;
                views.push(RunView::new(run, progress));
            }
            Ok(views)
        }
        .await;
        match result {
            Ok(views) => RunsResponse::Ok(Json(views)),
            Err(err) => RunsResponse::Internal(internal(err)),
        }
    }

    /// One run's progress: total, enqueued, sent, failed, skipped, rate and ETA.
    #[oai(path = "/runs/:week", method = "get")]
    async fn get_run(
        &self,
        _auth: AdminKey,
        #[oai(validator(pattern = "^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"))] week: Path<String>,
    ) -> RunResponse {
        let week = match IsoWeek::parse(&week) {
            Ok(week) => week,
            Err(err) => return RunResponse::BadRequest(invalid_week(err)),
        };
        match self.view(&week.to_string()).await {
            Ok(Some(view)) => RunResponse::Ok(Json(view)),
            Ok(None) => RunResponse::NotFound(Json(Problem::new(
                "run-not-found",
                "No such run",
                404,
                format!("no run for {week}"),
            ))),
            Err(err) => RunResponse::Internal(internal(err)),
        }
    }

    /// Dead letters not yet replayed, newest first.
    #[oai(path = "/dead-letters", method = "get", tag = "AdminTags::AdminDeadLetters")]
    async fn list_dead_letters(&self, _auth: AdminKey) -> DeadLettersResponse {
        match dead_letters::list_open(&self.state.db, 500).await {
            Ok(list) => DeadLettersResponse::Ok(Json(list.into_iter().map(Into::into).collect())),
            Err(err) => DeadLettersResponse::Internal(internal(err)),
        }
    }

    /// Replay one dead letter through the normal, idempotent path.
    #[oai(path = "/dead-letters/:id/replay", method = "post", tag = "AdminTags::AdminDeadLetters")]
    async fn replay_dead_letter(&self, _auth: AdminKey, id: Path<i64>) -> ReplayResponse {
        match dead_letters::replay(&self.state.db, Some(*id)).await {
            Ok(0) => ReplayResponse::NotFound(Json(Problem::new(
                "dead-letter-not-found",
                "No such dead letter",
                404,
                format!("no open dead letter {}", *id),
            ))),
            Ok(replayed) => ReplayResponse::Ok(Json(Replayed { replayed })),
            Err(err) => ReplayResponse::Internal(internal(err)),
        }
    }

    /// Replay every open dead letter.
    #[oai(path = "/dead-letters/replay", method = "post", tag = "AdminTags::AdminDeadLetters")]
    async fn replay_all_dead_letters(&self, _auth: AdminKey) -> ReplayResponse {
        match dead_letters::replay(&self.state.db, None).await {
            Ok(replayed) => ReplayResponse::Ok(Json(Replayed { replayed })),
            Err(err) => ReplayResponse::Internal(internal(err)),
        }
    }

    /// Depth of the email queue in Redis.
    #[oai(path = "/queues/email", method = "get")]
    async fn email_queue(&self, _auth: AdminKey) -> QueueResponse {
        self.queue_depth(queue::email_queue_depth).await
    }

    /// Depth of the Shopify sync queue in Redis (sync pages and unsubscribe write-backs).
    #[oai(path = "/queues/shopify-sync", method = "get")]
    async fn sync_queue(&self, _auth: AdminKey) -> QueueResponse {
        self.queue_depth(queue::sync_queue_depth).await
    }
}

impl AdminApi {
    async fn queue_depth<F>(&self, depth: F) -> QueueResponse
    where
        F: AsyncFnOnce(&levelup_common::Config, &mut redis::aio::ConnectionManager) -> redis::RedisResult<QueueDepth>,
    {
        let result = async {
            let mut conn = self.state.redis.get().await?;
            Ok::<_, anyhow::Error>(depth(&self.state.config, &mut conn).await?)
        }
        .await;
        match result {
            Ok(depth) => QueueResponse::Ok(Json(depth.into())),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "queue depth unavailable");
                QueueResponse::Unavailable(Json(Problem::new(
                    "queue-unavailable",
                    "Queue unavailable",
                    503,
                    "Redis did not answer",
                )))
            }
        }
    }
    async fn view(&self, week: &str) -> sqlx::Result<Option<RunView>> {
        let Some(run) = weekly_runs::get(&self.state.db, week).await? else { return Ok(None) };
        let progress = weekly_runs::progress(&self.state.db, week).await?;
        Ok(Some(RunView::new(run, progress)))
    }
}
