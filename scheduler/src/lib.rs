//! The scheduler: fires the weekly run on its cron schedule and drives runs to completion.
//!
//! Any number of replicas may run. Each tick, every replica:
//! 1. creates the current ISO week's run if its latest scheduled firing is in this week and no
//!    run exists (a firing missed while no scheduler ran is caught up; `weekly_runs` has one
//!    row per week, so replicas and repeated firings create it once);
//! 2. for each unfinished run, takes the run's lease if free and advances it: fan-out pages,
//!    then feeding the queue window, then completion.
//!
//! 3. pushes operators' test sends (rows the API inserted), and fails those whose worker died
//!    during the send;
//! 4. when a Shopify store is configured: starts the daily full sync when its cron fires (once,
//!    whichever replica sees it first), pushes sync pages nobody pushed yet (syncs started by the
//!    API) or whose job was lost, and pushes pending unsubscribe write-backs.
//!
//! The scheduler only writes the ledger and enqueues; it never sends mail or calls Shopify.

mod gauges;
mod reputation;

use std::str::FromStr;

use anyhow::Context;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use chrono::{DateTime, Utc};
use levelup_common::{
    Config, db,
    db::weekly_runs::{self, FanOutPage, Push},
    domain::{IsoWeek, RunStatus},
    jobs::queue,
    jobs::{SendChallengeEmail, SendTestEmail, ShopifyJob},
    runtime::redis_conn,
    runtime::shutdown::CancellationToken,
};
use sqlx::PgPool;

type EmailStorage = apalis_redis::RedisStorage<SendChallengeEmail>;

/// How often departed workers' metadata is looked for (a SCAN of the keyspace).
const WORKER_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Scheduler {
    pool: PgPool,
    storage: EmailStorage,
    sync_storage: apalis_redis::RedisStorage<ShopifyJob>,
    test_send_storage: apalis_redis::RedisStorage<SendTestEmail>,
    redis: apalis_redis::ConnectionManager,
    last_worker_sweep: Option<std::time::Instant>,
    last_gauges: Option<std::time::Instant>,
    /// Per run: the bounce and complaint counts last judged by the reputation guard.
    judged: std::collections::HashMap<IsoWeek, (i64, i64)>,
    /// Per run: when overdue deliveries were last expired.
    last_expiry: std::collections::HashMap<IsoWeek, std::time::Instant>,
    config: Config,
    schedule: cron::Schedule,
    sync_schedule: cron::Schedule,
    /// Lease owner name: unique per process.
    owner: String,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut scheduler = Scheduler::connect(config).await?;
    tracing::info!(owner = %scheduler.owner, cron = %scheduler.config.schedule_cron, "scheduler started");
    loop {
        if let Err(err) = scheduler.tick(&shutdown).await {
            // Postgres or Redis hiccup: log and try again next tick; the run resumes from its cursor.
            tracing::error!(error = %format!("{err:#}"), "scheduler tick failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(scheduler.config.scheduler_tick) => {}
        }
    }
    scheduler.release_leases().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// The latest firing of `schedule` at or before `now`, looking back at most eight days.
pub fn latest_firing(
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<chrono_tz::Tz>> {
    let start = (now - chrono::Duration::days(8)).with_timezone(&tz);
    schedule.after(&start).take_while(|t| t.with_timezone(&Utc) <= now).last()
}

impl Scheduler {
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config).await?;
        let redis = redis_conn::connect(&config).await?;
        let schedule = cron::Schedule::from_str(&config.schedule_cron).context("LEVELUP_SCHEDULE_CRON")?;
        let sync_schedule = cron::Schedule::from_str(&config.sync.cron).context("LEVELUP_SYNC_CRON")?;
        Ok(Self {
            pool,
            storage: queue::email_storage(&config, redis.clone()),
            sync_storage: queue::sync_storage(&config, redis.clone()),
            test_send_storage: queue::test_send_storage(&config, redis.clone()),
            redis,
            last_worker_sweep: None,
            last_gauges: None,
            judged: std::collections::HashMap::new(),
            last_expiry: std::collections::HashMap::new(),
            sync_schedule,
            owner: format!("scheduler-{}", config.worker_name),
            schedule,
            config,
        })
    }

    pub async fn tick(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        self.create_due_run().await?;
        if self.last_gauges.is_none_or(|at| at.elapsed() >= gauges::INTERVAL) {
            self.last_gauges = Some(std::time::Instant::now());
            let runs = weekly_runs::unfinished(&self.pool).await?;
            if let Err(err) = gauges::export(&self.pool, &mut self.redis, &self.config, &runs).await {
                tracing::warn!(error = %format!("{err:#}"), "gauges not refreshed");
            }
        }
        levelup_common::db::idempotency_keys::delete_expired(&self.pool).await?;
        if let Err(err) = self.sweep_queues().await {
            tracing::warn!(error = %format!("{err:#}"), "queue sweep failed");
        }
        if let Err(err) = self.test_send_tick().await {
            tracing::error!(error = %format!("{err:#}"), "test send tick failed");
        }
        if self.config.shopify.is_some()
            && let Err(err) = self.shopify_tick().await
        {
            // Never let the sync hold up the weekly runs.
            tracing::error!(error = %format!("{err:#}"), "Shopify sync tick failed");
        }
        for week in weekly_runs::unfinished(&self.pool).await? {
            if shutdown.is_cancelled() {
                break;
            }
            self.advance(week, shutdown).await.with_context(|| format!("advancing run {week}"))?;
        }
        Ok(())
    }

    async fn create_due_run(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let tz = self.config.schedule_timezone;
        let Some(fired) = latest_firing(&self.schedule, tz, now) else { return Ok(()) };
        let week = IsoWeek::containing(fired.date_naive());
        if week != IsoWeek::containing(now.with_timezone(&tz).date_naive()) {
            return Ok(());
        }
        if weekly_runs::create_due(&self.pool, week, "schedule", fired.with_timezone(&Utc)).await? {
            tracing::info!(%week, fired_at = %fired, "weekly run created");
        }
        Ok(())
    }

    /// Moves one run forward as far as it can in this tick.
    async fn advance(&mut self, week: IsoWeek, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let lease_ttl = self.config.scheduler_tick * 10 + std::time::Duration::from_secs(5);
        let Some(run) = weekly_runs::acquire_lease(&self.pool, week, &self.owner, lease_ttl).await? else {
            return Ok(()); // another replica holds it, or it just completed
        };
        self.expire_overdue(&run).await?;
        if run.paused_at.is_some() {
            // Neither fanned out further nor fed until resumed; what is overdue meanwhile expires.
            self.complete(week).await?;
            return Ok(());
        }
        if run.status == RunStatus::FanningOut {
            // Between pages, once per tick (not after every page: a page takes milliseconds, and
            // feeding asks Postgres and Redis what the queue holds): renew the lease, and feed,
            // so workers start at once while the fan-out goes on. Every page is fenced by the
            // lease anyway.
            let mut last_fed: Option<std::time::Instant> = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                match weekly_runs::fan_out_page(&self.pool, week, &self.owner, self.config.fanout_page_size).await? {
                    FanOutPage::Written { .. } => {
                        if last_fed.is_some_and(|at| at.elapsed() < self.config.scheduler_tick) {
                            continue;
                        }
                        if weekly_runs::acquire_lease(&self.pool, week, &self.owner, lease_ttl).await?.is_none() {
                            return Ok(());
                        }
                        if !self.feed(week).await? {
                            return Ok(()); // paused
                        }
                        last_fed = Some(std::time::Instant::now());
                    }
                    FanOutPage::Done => {
                        tracing::info!(%week, "fan-out complete");
                        break;
                    }
                    FanOutPage::LeaseLost => return Ok(()),
                }
            }
        }
        if self.feed(week).await? {
            self.complete(week).await?;
        }
        Ok(())
    }

    async fn complete(&self, week: IsoWeek) -> anyhow::Result<()> {
        if weekly_runs::complete_if_done(&self.pool, week).await? {
            let progress = weekly_runs::progress(&self.pool, week).await?;
            tracing::info!(%week, ?progress, "weekly run completed");
        }
        Ok(())
    }

    /// Skips, as `expired`, deliveries still waiting for a push past `LEVELUP_SEND_DEADLINE_HOURS`
    /// after their due time, at most once a minute per run and only once the run itself is that
    /// old (a fresh run has nothing overdue, and the query reads the run's waiting rows).
    async fn expire_overdue(&mut self, run: &weekly_runs::WeeklyRun) -> anyhow::Result<()> {
        let deadline = self.config.send_deadline;
        let overdue_possible =
            run.due_at + chrono::Duration::from_std(deadline).unwrap_or(chrono::TimeDelta::MAX) < Utc::now();
        if !overdue_possible || self.last_expiry.get(&run.week).is_some_and(|at| at.elapsed().as_secs() < 60) {
            return Ok(());
        }
        loop {
            let expired = weekly_runs::expire_overdue(&self.pool, run.week, deadline, 10_000).await?;
            if expired > 0 {
                metrics::counter!("levelup_email_expired_total").increment(expired);
                tracing::warn!(week = %run.week, expired, ?deadline, "deliveries past their send deadline skipped as expired");
            }
            if expired < 10_000 {
                break;
            }
        }
        self.last_expiry.insert(run.week, std::time::Instant::now());
        Ok(())
    }

    /// The reputation guard (see [`reputation`]): pauses the run if its bounce or complaint rate
    /// crossed the limit. Returns whether the run is paused (by this call or before it).
    async fn guard(&mut self, week: IsoWeek) -> anyhow::Result<bool> {
        let Some(run) = weekly_runs::get(&self.pool, week).await? else { return Ok(true) };
        if run.paused_at.is_some() {
            return Ok(true);
        }
        if !reputation::has_events(&run) || self.judged.get(&week) == Some(&(run.bounces, run.complaints)) {
            return Ok(false);
        }
        let sent = weekly_runs::sent_count(&self.pool, week).await?;
        let Some(reason) = reputation::verdict(&run, sent, &self.config.reputation) else {
            // Judged with these counts: ask again when another event arrives (or more is sent).
            if sent - run.guard_sent >= self.config.reputation.pause_min_sends {
                self.judged.insert(week, (run.bounces, run.complaints));
            }
            return Ok(false);
        };
        if weekly_runs::pause(&self.pool, week, weekly_runs::REPUTATION_GUARD, &reason).await? {
            metrics::counter!("levelup_run_pauses_total", "by" => weekly_runs::REPUTATION_GUARD).increment(1);
            tracing::warn!(target: "audit", %week, actor = weekly_runs::REPUTATION_GUARD, %reason, "run paused");
        }
        Ok(true)
    }

    /// Tops the queue up to the window: rows due for an attempt first, then pushed rows whose job
    /// is gone from the queue. Each push is recorded (fenced by the lease) before it is made.
    /// Returns `false`, feeding nothing, when the run is paused (see [`Self::guard`]).
    async fn feed(&mut self, week: IsoWeek) -> anyhow::Result<bool> {
        if self.guard(week).await? {
            return Ok(false);
        }
        let outstanding = weekly_runs::outstanding(&self.pool, week).await?;
        let free = self.config.queue_window - outstanding;
        let mut pushes = Vec::new();
        if free > 0 {
            let Some(due) = weekly_runs::reserve_due(&self.pool, week, &self.owner, free).await? else {
                anyhow::bail!("lease on {week} lost while feeding");
            };
            pushes = due;
        }
        let room = (self.config.queue_window - pushes.len() as i64).clamp(0, 500);
        if room > 0 {
            let lost = self.lost_pushes(week, room).await?;
            if !lost.is_empty() {
                let Some(again) = weekly_runs::reserve_repush(&self.pool, week, &self.owner, &lost).await? else {
                    anyhow::bail!("lease on {week} lost while feeding");
                };
                tracing::info!(%week, repushed = again.len(), "pushing again jobs missing from the queue");
                pushes.extend(again);
            }
        }
        if pushes.is_empty() {
            return Ok(true);
        }
        for chunk in pushes.chunks(500) {
            let tasks = chunk.iter().map(|push| {
                TaskBuilder::new(SendChallengeEmail { delivery_id: push.delivery_id })
                    .task_id(TaskId::from_string(push.task_id()))
                    .build()
            });
            // A failed push leaves its rows recorded as pushed with no job: the safety net
            // (`lost_pushes`) pushes them again after `LEVELUP_REPUSH_AFTER_SECS`.
            self.storage
                .push_all(futures::stream::iter(tasks))
                .await
                .map_err(|e| anyhow::anyhow!("pushing email jobs: {e}"))?;
        }
        tracing::debug!(%week, pushed = pushes.len(), outstanding, "fed the email queue");
        Ok(true)
    }

    /// Pushed rows, unfinished for a while, whose job no longer exists in the queue.
    async fn lost_pushes(&mut self, week: IsoWeek, limit: i64) -> anyhow::Result<Vec<Push>> {
        let (repush_after, claim_timeout) = (self.config.repush_after, self.config.claim_timeout);
        let candidates =
            weekly_runs::pushed_but_maybe_lost(&self.pool, week, repush_after, claim_timeout, limit).await?;
        let task_ids: Vec<String> = candidates.iter().map(Push::task_id).collect();
        let exist = queue::jobs_exist(&queue::email_queue_config(&self.config), &mut self.redis, &task_ids)
            .await
            .context("checking pushed jobs in the queue")?;
        Ok(candidates.into_iter().zip(exist).filter(|(_, exists)| !exists).map(|(push, _)| push).collect())
    }

    /// Removes what finished jobs leave in Redis (see `queue::sweep_finished`), every tick, and
    /// the metadata of departed worker processes, once a minute.
    async fn sweep_queues(&mut self) -> anyhow::Result<()> {
        let queues = [
            queue::email_queue_config(&self.config),
            queue::sync_queue_config(&self.config),
            queue::test_send_queue_config(&self.config),
        ];
        for config in &queues {
            let swept = queue::sweep_finished(config, &mut self.redis).await.context("sweeping finished jobs")?;
            if swept > 0 {
                tracing::debug!(queue = config.queue.as_ref(), swept, "removed finished jobs from Redis");
            }
        }
        if self.last_worker_sweep.is_none_or(|at| at.elapsed() >= WORKER_SWEEP_INTERVAL) {
            self.last_worker_sweep = Some(std::time::Instant::now());
            for config in &queues {
                queue::sweep_departed_workers(config, &mut self.redis).await.context("sweeping departed workers")?;
            }
        }
        Ok(())
    }

    async fn shopify_tick(&mut self) -> anyhow::Result<()> {
        let tz = self.config.schedule_timezone;
        if let Some(fired) = latest_firing(&self.sync_schedule, tz, Utc::now())
            && let Some(started) = db::shopify_syncs::start_if_due(&self.pool, fired.with_timezone(&Utc)).await?
        {
            tracing::info!(sync_id = started.id, fired_at = %fired, "scheduled Shopify sync started");
        }
        let stale_after = self.config.sync.claim_timeout;
        let pages = db::shopify_syncs::pages_to_push(&self.pool, stale_after).await?;
        let writebacks = db::shopify_writebacks::to_push(&self.pool, stale_after, 500).await?;
        let jobs: Vec<ShopifyJob> = pages
            .iter()
            .map(|&(sync_id, page)| ShopifyJob::SyncPage { sync_id, page })
            .chain(writebacks.iter().map(|&writeback_id| ShopifyJob::WriteBack { writeback_id }))
            .collect();
        if !jobs.is_empty() {
            tracing::debug!(pages = pages.len(), writebacks = writebacks.len(), "fed the Shopify sync queue");
            self.sync_storage.push_bulk(jobs).await.map_err(|e| anyhow::anyhow!("pushing Shopify jobs: {e}"))?;
        }
        Ok(())
    }

    /// Pushes the test sends operators queued (and those whose job was lost), and fails the ones
    /// whose worker died during the send (they may have gone out: never sent twice).
    async fn test_send_tick(&mut self) -> anyhow::Result<()> {
        let abandoned = db::test_sends::fail_abandoned(&self.pool, self.config.claim_timeout).await?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "test sends failed: their worker stopped during the send");
        }
        let due = db::test_sends::to_push(&self.pool, self.config.repush_after, 100).await?;
        if !due.is_empty() {
            let jobs: Vec<SendTestEmail> = due.iter().map(|&test_send_id| SendTestEmail { test_send_id }).collect();
            self.test_send_storage.push_bulk(jobs).await.map_err(|e| anyhow::anyhow!("pushing test sends: {e}"))?;
            tracing::debug!(pushed = due.len(), "fed the test send queue");
        }
        Ok(())
    }

    async fn release_leases(&self) {
        if let Ok(weeks) = weekly_runs::unfinished(&self.pool).await {
            for week in weeks {
                let _ = weekly_runs::release_lease(&self.pool, week, &self.owner).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_firing_finds_this_weeks_monday() {
        let schedule = cron::Schedule::from_str("0 0 9 * * Mon").unwrap();
        let now = "2026-11-25T12:00:00Z".parse::<DateTime<Utc>>().unwrap(); // a Wednesday
        let fired = latest_firing(&schedule, chrono_tz::UTC, now).unwrap();
        assert_eq!(fired.to_rfc3339(), "2026-11-23T09:00:00+00:00");
        // Monday 08:00 in New York is before that week's firing: the latest is the previous Monday.
        let ny = chrono_tz::America::New_York;
        let early = "2026-11-23T13:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(latest_firing(&schedule, ny, early).unwrap().date_naive().to_string(), "2026-11-16");
        let never = cron::Schedule::from_str("0 0 0 1 1 * 2099").unwrap();
        assert!(latest_firing(&never, chrono_tz::UTC, now).is_none());
    }
}
