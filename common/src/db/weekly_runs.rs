//! The weekly run: one row per ISO week, held by one scheduler at a time through a lease.
//!
//! Phase 1, fan-out: walk all subscribers in keyset pages and write their delivery rows
//! (`queued`, or `skipped` with a reason), saving the cursor in the same transaction.
//! Phase 2, feed: push `SendChallengeEmail` jobs for queued rows, keeping at most
//! `queue_window` of them outstanding in Redis (see README, "the queue holds a window").
//! Every write checks the lease (fencing), and delivery rows are unique per subscriber and week,
//! so two schedulers can never enqueue a subscriber twice.

use std::time::Duration;

use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::domain::{DeliveryState, IsoWeek, RunAction, RunStatus};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct WeeklyRun {
    pub week: IsoWeek,
    pub status: RunStatus,
    pub total: i64,
    pub enqueued: i64,
    pub pushes: i64,
    pub resume_after_id: i64,
    pub lease_owner: Option<String>,
    pub triggered_by: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub fanout_finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the run's emails are due: the schedule's firing, or the trigger.
    pub due_at: chrono::DateTime<chrono::Utc>,
    /// Set while the run is paused (see [`pause`]).
    pub paused_at: Option<chrono::DateTime<chrono::Utc>>,
    pub paused_by: Option<String>,
    pub pause_reason: Option<String>,
    /// Permanent bounces and complaints SES reported for the run's messages.
    pub bounces: i64,
    pub complaints: i64,
    /// The counts at the last resume: the reputation guard judges what came after it.
    pub guard_sent: i64,
    pub guard_bounces: i64,
    pub guard_complaints: i64,
}

/// Creates the week's run, due now, unless it exists. Returns whether this call created it.
pub async fn create(pool: &PgPool, week: IsoWeek, triggered_by: &str) -> sqlx::Result<bool> {
    create_due(pool, week, triggered_by, chrono::Utc::now()).await
}

/// Creates the week's run, due at `due_at` (the schedule's firing), unless it exists.
pub async fn create_due(
    pool: &PgPool,
    week: IsoWeek,
    triggered_by: &str,
    due_at: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<bool> {
    let inserted =
        sqlx::query("INSERT INTO weekly_runs (week, triggered_by, due_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(week)
            .bind(triggered_by)
            .bind(due_at)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(inserted == 1)
}

/// One line of a run's audit trail.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RunEvent {
    pub action: RunAction,
    /// The operator's name, or `reputation-guard` for an automatic pause.
    pub actor: String,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The actor of automatic pauses.
pub const REPUTATION_GUARD: &str = "reputation-guard";

/// Pauses an unfinished run: it is no longer fed, and workers give back what they pick up of it.
/// Returns whether this call paused it (`false`: no such unfinished run, or already paused).
pub async fn pause(pool: &PgPool, week: IsoWeek, actor: &str, reason: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let paused = sqlx::query(
        "UPDATE weekly_runs SET paused_at = now(), paused_by = $2, pause_reason = $3
         WHERE week = $1 AND status <> 'completed' AND paused_at IS NULL",
    )
    .bind(week)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if paused {
        record_event(&mut tx, week, RunAction::Paused, actor, reason).await?;
    }
    tx.commit().await?;
    Ok(paused)
}

/// Resumes a paused run; the reputation guard then judges only what is sent from now on.
/// Returns whether this call resumed it (`false`: not paused).
pub async fn resume(pool: &PgPool, week: IsoWeek, actor: &str, reason: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let resumed = sqlx::query(
        "UPDATE weekly_runs SET paused_at = NULL, paused_by = NULL, pause_reason = NULL,
                guard_bounces = bounces, guard_complaints = complaints,
                guard_sent = (SELECT count(*) FROM deliveries WHERE week = $1 AND state = 'sent')
         WHERE week = $1 AND paused_at IS NOT NULL",
    )
    .bind(week)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if resumed {
        record_event(&mut tx, week, RunAction::Resumed, actor, reason).await?;
    }
    tx.commit().await?;
    Ok(resumed)
}

async fn record_event(
    tx: &mut sqlx::PgConnection,
    week: IsoWeek,
    action: RunAction,
    actor: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO run_events (week, action, actor, reason) VALUES ($1, $2, $3, $4)")
        .bind(week)
        .bind(action)
        .bind(actor)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The run's audit trail, oldest first.
pub async fn events(pool: &PgPool, week: IsoWeek) -> sqlx::Result<Vec<RunEvent>> {
    sqlx::query_as("SELECT action, actor, reason, at FROM run_events WHERE week = $1 ORDER BY id")
        .bind(week)
        .fetch_all(pool)
        .await
}

/// The run's skipped deliveries counted by reason.
pub async fn skip_reasons(pool: &PgPool, week: IsoWeek) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT coalesce(reason, 'unknown'), count(*) FROM deliveries WHERE week = $1 AND state = 'skipped'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(week)
    .fetch_all(pool)
    .await
}

/// Deliveries of the run sent so far (an index-only count; the reputation guard asks it only when
/// a bounce or complaint has arrived).
pub async fn sent_count(pool: &PgPool, week: IsoWeek) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE week = $1 AND state = 'sent'")
        .bind(week)
        .fetch_one(pool)
        .await
}

/// Skips, as `expired`, up to `limit` of the run's deliveries waiting for a push whose due time is
/// more than `deadline` ago (a run resumed, restored or caught up after an outage must not send
/// stale mail). Pushed ones are judged by the worker that claims them. Returns how many.
pub async fn expire_overdue(pool: &PgPool, week: IsoWeek, deadline: Duration, limit: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE deliveries SET state = 'skipped', reason = 'expired', updated_at = now()
         WHERE id = ANY(ARRAY(SELECT id FROM deliveries
                              WHERE week = $1 AND state = 'queued' AND pushed_at IS NULL
                                AND deliver_after < now() - make_interval(secs => $2)
                              LIMIT $3 FOR UPDATE SKIP LOCKED))",
    )
    .bind(week)
    .bind(deadline.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}

pub async fn get(pool: &PgPool, week: IsoWeek) -> sqlx::Result<Option<WeeklyRun>> {
    sqlx::query_as("SELECT * FROM weekly_runs WHERE week = $1").bind(week).fetch_optional(pool).await
}

pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<WeeklyRun>> {
    sqlx::query_as("SELECT * FROM weekly_runs ORDER BY week DESC LIMIT $1").bind(limit).fetch_all(pool).await
}

/// Weeks whose run has not completed, oldest first.
pub async fn unfinished(pool: &PgPool) -> sqlx::Result<Vec<IsoWeek>> {
    sqlx::query_scalar("SELECT week FROM weekly_runs WHERE status <> 'completed' ORDER BY week").fetch_all(pool).await
}

/// Takes or renews the lease on an unfinished run. `None`: another holder has a live lease, or
/// the run is completed.
pub async fn acquire_lease(
    pool: &PgPool,
    week: IsoWeek,
    owner: &str,
    ttl: Duration,
) -> sqlx::Result<Option<WeeklyRun>> {
    sqlx::query_as(
        "UPDATE weekly_runs SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3)
         WHERE week = $1 AND status <> 'completed'
           AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now())
         RETURNING *",
    )
    .bind(week)
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await
}

pub async fn release_lease(pool: &PgPool, week: IsoWeek, owner: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE weekly_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE week = $1 AND lease_owner = $2",
    )
    .bind(week)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub enum FanOutPage {
    /// Wrote delivery rows for this many subscribers (some may have existed already).
    Written { subscribers: usize, inserted: u64 },
    /// No subscribers after the cursor: the fan-out is complete.
    Done,
    /// The lease was lost to another scheduler; stop.
    LeaseLost,
}

/// Writes the delivery rows for the next page of subscribers and advances the cursor, atomically.
///
/// A page commits without waiting for its WAL to reach disk (`synchronous_commit = off`: a
/// flush per page was about a tenth of the fan-out's time). A Postgres crash can lose only the
/// last pages, rows and cursor together, and the fan-out writes them again. Nothing else depends
/// on a page being durable before the next push: recording a push (`reserve_due`) commits
/// synchronously, and its flush covers every earlier commit, so a row whose job is in the queue
/// is on disk.
pub async fn fan_out_page(pool: &PgPool, week: IsoWeek, owner: &str, page_size: i64) -> sqlx::Result<FanOutPage> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    // Fencing: only the lease holder advances the run; the row lock serialises it.
    let run: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT resume_after_id, due_at FROM weekly_runs
         WHERE week = $1 AND lease_owner = $2 AND status = 'fanning_out' FOR UPDATE",
    )
    .bind(week)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((cursor, due_at)) = run else { return Ok(FanOutPage::LeaseLost) };
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(cursor)
        .bind(page_size)
        .fetch_all(&mut *tx)
        .await?;
    let Some(&last) = ids.last() else {
        sqlx::query("UPDATE weekly_runs SET status = 'sending', fanout_finished_at = now() WHERE week = $1")
            .bind(week)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(FanOutPage::Done);
    };
    let inserted = insert_deliveries(&mut tx, week, &ids, Some(due_at)).await?;
    sqlx::query("UPDATE weekly_runs SET resume_after_id = $2, total = total + $3 WHERE week = $1")
        .bind(week)
        .bind(last)
        .bind(inserted as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(FanOutPage::Written { subscribers: ids.len(), inserted })
}

/// Challenge selection: the subscriber's level's challenges they have not been sent yet, in
/// `position` order; when every one has been sent, the one sent longest ago (a repeat). A
/// subscriber without a level gets the questionnaire invitation. Non-active or suppressed
/// subscribers, and levels with no challenge, get a `skipped` row with the reason. The rows are
/// due at `due_at` (`None`: now).
async fn insert_deliveries(
    tx: &mut sqlx::PgConnection,
    week: IsoWeek,
    ids: &[i64],
    due_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO deliveries (subscriber_id, week, kind, challenge_id, state, reason, deliver_after)
         SELECT s.id, $1,
                CASE WHEN s.level IS NULL THEN 'questionnaire_invite' ELSE 'challenge' END,
                next.id,
                CASE WHEN s.status <> 'active' OR sup.reason IS NOT NULL
                       OR (s.level IS NOT NULL AND next.id IS NULL) THEN 'skipped' ELSE 'queued' END,
                CASE WHEN s.status <> 'active' THEN s.status
                     WHEN sup.reason IS NOT NULL THEN 'suppressed:' || sup.reason
                     WHEN s.level IS NOT NULL AND next.id IS NULL THEN 'no_challenge_at_level' END,
                coalesce($3, now())
         FROM subscribers s
         LEFT JOIN suppressions sup ON sup.email_lower = lower(s.email)
         LEFT JOIN LATERAL (
             SELECT c.id
             FROM challenges c
             LEFT JOIN LATERAL (
                 SELECT max(d.created_at) AS last_sent FROM deliveries d
                 WHERE d.subscriber_id = s.id AND d.challenge_id = c.id AND d.state = 'sent'
             ) history ON true
             WHERE c.level = s.level AND NOT c.archived
             ORDER BY history.last_sent NULLS FIRST, c.position
             LIMIT 1
         ) next ON true
         WHERE s.id = ANY($2)
         ON CONFLICT (subscriber_id, week) DO NOTHING",
    )
    .bind(week)
    .bind(ids)
    .bind(due_at)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Adds one subscriber to an existing week's run (e.g. one who subscribed after the fan-out, or
/// an operator's resend): writes their delivery row like the fan-out does and reopens a
/// completed run so the schedulers feed it. Returns the delivery id and whether it was created
/// (`false`: the subscriber already had this week's delivery, which is returned as is).
/// `None`: the week has no run (trigger the week instead).
pub async fn add_subscriber(pool: &PgPool, week: IsoWeek, subscriber_id: i64) -> sqlx::Result<Option<(i64, bool)>> {
    let mut tx = pool.begin().await?;
    let run: Option<RunStatus> = sqlx::query_scalar("SELECT status FROM weekly_runs WHERE week = $1 FOR UPDATE")
        .bind(week)
        .fetch_optional(&mut *tx)
        .await?;
    if run.is_none() {
        return Ok(None);
    }
    // Added late (or resent): due now, not when the run was.
    let inserted = insert_deliveries(&mut tx, week, &[subscriber_id], None).await?;
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM deliveries WHERE week = $1 AND subscriber_id = $2")
        .bind(week)
        .bind(subscriber_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(id) = id else { return Err(sqlx::Error::RowNotFound) };
    if inserted == 1 {
        sqlx::query(
            "UPDATE weekly_runs SET total = total + 1,
                    status = CASE WHEN status = 'completed' THEN 'sending' ELSE status END,
                    finished_at = CASE WHEN status = 'completed' THEN NULL ELSE finished_at END
             WHERE week = $1",
        )
        .bind(week)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some((id, inserted == 1)))
}

/// Jobs pushed and not finished (`queued` or `sending`): what the queue holds for this week.
pub async fn outstanding(pool: &PgPool, week: IsoWeek) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE week = $1 AND state IN ('queued', 'sending') AND pushed_at IS NOT NULL",
    )
    .bind(week)
    .fetch_one(pool)
    .await
}

/// One push of a delivery's job: the job's queue id is derived from the push number, so the
/// scheduler can ask the queue whether exactly this push is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Push {
    pub delivery_id: i64,
    /// 1 for the first push of the delivery, then 2, 3, … (retries, re-pushes of lost jobs).
    pub number: i32,
}

impl Push {
    /// The apalis task id of this push (a string id, never parsed as a number or ULID).
    pub fn task_id(&self) -> String {
        format!("delivery-{}-{}", self.delivery_id, self.number)
    }
}

/// Records the pushes of up to `limit` queued rows due for (another) attempt and not in the queue,
/// oldest due first, *before* their jobs are pushed: a worker can only see a job whose push is
/// already recorded, so a worker giving the row back (which clears `pushed_at`) can never be
/// overwritten by a late record (issue 10: rows left `queued` with no job for 15 minutes).
/// A crash between this and the push leaves rows marked pushed with no job; the safety net
/// ([`pushed_but_maybe_lost`]) finds them. `None`: the lease was lost (fencing).
pub async fn reserve_due(pool: &PgPool, week: IsoWeek, owner: &str, limit: i64) -> sqlx::Result<Option<Vec<Push>>> {
    let mut tx = pool.begin().await?;
    if !lock_if_leased(&mut tx, week, owner).await? {
        return Ok(None);
    }
    // `= ANY(ARRAY(…))`, not `IN (…)`: the planner hash-joins an `IN` subquery against a scan of
    // the whole table (170 ms per tick at 200k rows), while an array is looked up by primary key.
    let pushes: Vec<Push> = sqlx::query_as(
        "UPDATE deliveries SET pushed_at = now(), pushes = pushes + 1
         WHERE id = ANY(ARRAY(SELECT id FROM deliveries
                              WHERE week = $1 AND state = 'queued' AND pushed_at IS NULL AND next_attempt_at <= now()
                              ORDER BY next_attempt_at, id LIMIT $2
                              FOR UPDATE SKIP LOCKED))
         RETURNING id AS delivery_id, pushes AS number",
    )
    .bind(week)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    count_pushes(&mut tx, week, &pushes).await?;
    tx.commit().await?;
    Ok(Some(pushes))
}

/// The safety net's question ([`pushed_but_maybe_lost`]) as two index ranges, each cut to `$4`
/// rows, then the oldest pushes of both: `queued` rows pushed before `now() - $2` (a range of
/// `deliveries_outstanding_idx`, on `(week, pushed_at)`) and `sending` rows claimed before
/// `now() - $3` (`deliveries_sending_claimed_idx`, on `(week, claimed_at)`). One `OR` over the
/// week's rows instead is a filter: under the generic plan Postgres caches for the statement it
/// read every pushed row of the week each call, and in its earlier form every queued row, a
/// million at 1M subscribers (issue 16). `tests/tests/query_plans.rs` checks the generic plan of
/// this exact text. Parameters: week, repush after (s), claim timeout (s), limit.
pub const PUSHED_BUT_MAYBE_LOST: &str = "SELECT delivery_id, number FROM (
    (SELECT id AS delivery_id, pushes AS number, pushed_at FROM deliveries
     WHERE week = $1 AND state = 'queued' AND pushed_at IS NOT NULL
       AND pushed_at < now() - make_interval(secs => $2)
     ORDER BY pushed_at LIMIT $4)
    UNION ALL
    (SELECT id AS delivery_id, pushes AS number, pushed_at FROM deliveries
     WHERE week = $1 AND state = 'sending' AND pushed_at IS NOT NULL
       AND claimed_at < now() - make_interval(secs => $3)
     ORDER BY claimed_at LIMIT $4)
) maybe_lost
ORDER BY pushed_at LIMIT $4";

/// Pushed rows whose job may have been lost, with the push that should hold them: `queued` rows
/// pushed longer ago than `repush_after`, and `sending` rows whose claim timed out (their worker
/// died). The caller asks the queue which of these pushes still exist and re-pushes only the
/// others ([`reserve_repush`]), so a job still waiting in the queue is never duplicated.
pub async fn pushed_but_maybe_lost(
    pool: &PgPool,
    week: IsoWeek,
    repush_after: Duration,
    claim_timeout: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Push>> {
    sqlx::query_as(PUSHED_BUT_MAYBE_LOST)
        .bind(week)
        .bind(repush_after.as_secs_f64())
        .bind(claim_timeout.as_secs_f64())
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Records a new push for each of `lost` (pushes whose job is gone from the queue), unless the row
/// moved on meanwhile (finished, given back, or pushed again). Fenced by the lease.
pub async fn reserve_repush(
    pool: &PgPool,
    week: IsoWeek,
    owner: &str,
    lost: &[Push],
) -> sqlx::Result<Option<Vec<Push>>> {
    let mut tx = pool.begin().await?;
    if !lock_if_leased(&mut tx, week, owner).await? {
        return Ok(None);
    }
    let ids: Vec<i64> = lost.iter().map(|p| p.delivery_id).collect();
    let numbers: Vec<i32> = lost.iter().map(|p| p.number).collect();
    let pushes: Vec<Push> = sqlx::query_as(
        "UPDATE deliveries d SET pushed_at = now(), pushes = d.pushes + 1
         FROM unnest($2::bigint[], $3::int[]) AS lost(id, number)
         WHERE d.id = lost.id AND d.pushes = lost.number AND d.week = $1
           AND d.state IN ('queued', 'sending') AND d.pushed_at IS NOT NULL
         RETURNING d.id AS delivery_id, d.pushes AS number",
    )
    .bind(week)
    .bind(&ids)
    .bind(&numbers)
    .fetch_all(&mut *tx)
    .await?;
    count_pushes(&mut tx, week, &pushes).await?;
    tx.commit().await?;
    Ok(Some(pushes))
}

/// Locks the run row if `owner` holds its lease.
async fn lock_if_leased(tx: &mut sqlx::PgConnection, week: IsoWeek, owner: &str) -> sqlx::Result<bool> {
    let held: Option<String> =
        sqlx::query_scalar("SELECT week FROM weekly_runs WHERE week = $1 AND lease_owner = $2 FOR UPDATE")
            .bind(week)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(held.is_some())
}

/// `enqueued` counts deliveries pushed at least once (their first push), `pushes` every push.
async fn count_pushes(tx: &mut sqlx::PgConnection, week: IsoWeek, pushes: &[Push]) -> sqlx::Result<()> {
    if pushes.is_empty() {
        return Ok(());
    }
    let first = pushes.iter().filter(|p| p.number == 1).count() as i64;
    sqlx::query("UPDATE weekly_runs SET enqueued = enqueued + $2, pushes = pushes + $3 WHERE week = $1")
        .bind(week)
        .bind(first)
        .bind(pushes.len() as i64)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Completes the run when the fan-out is done and no delivery is queued or sending.
pub async fn complete_if_done(pool: &PgPool, week: IsoWeek) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE weekly_runs SET status = 'completed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
         WHERE week = $1 AND status = 'sending'
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE week = $1 AND state IN ('queued', 'sending'))",
    )
    .bind(week)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub ambiguous: i64,
}

impl Progress {
    /// Deliveries a worker has still to finish.
    pub fn remaining(&self) -> i64 {
        self.queued + self.sending
    }

    /// Deliveries ended per second over `elapsed`, and the seconds the remaining ones take at
    /// that rate (`None` when nothing remains or nothing has ended yet).
    pub fn pace(&self, elapsed: chrono::TimeDelta) -> (f64, Option<f64>) {
        let seconds = elapsed.num_milliseconds().max(1) as f64 / 1000.0;
        let rate = (self.sent + self.failed) as f64 / seconds;
        let remaining = self.remaining();
        (rate, (remaining > 0 && rate > 0.0).then(|| remaining as f64 / rate))
    }

    /// Adds `other`'s counts (several runs' progress as one).
    pub fn add(&mut self, other: &Progress) {
        self.queued += other.queued;
        self.sending += other.sending;
        self.sent += other.sent;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.ambiguous += other.ambiguous;
    }
}

/// Delivery counts by state, derived from the ledger (no hot counter row to contend on).
pub async fn progress(pool: &PgPool, week: IsoWeek) -> sqlx::Result<Progress> {
    let rows: Vec<(DeliveryState, i64, i64)> = sqlx::query_as(
        "SELECT state, count(*), count(*) FILTER (WHERE ambiguous) FROM deliveries WHERE week = $1 GROUP BY state",
    )
    .bind(week)
    .fetch_all(pool)
    .await?;
    let mut progress = Progress::default();
    for (state, count, ambiguous) in rows {
        progress.ambiguous += ambiguous;
        match state {
            DeliveryState::Queued => progress.queued = count,
            DeliveryState::Sending => progress.sending = count,
            DeliveryState::Sent => progress.sent = count,
            DeliveryState::Failed => progress.failed = count,
            DeliveryState::Skipped => progress.skipped = count,
        }
    }
    Ok(progress)
}
