//! The scheduler: fires the weekly run on its cron schedule and drives runs to completion.
//!
//! Any number of replicas may run. Each tick, every replica:
//! 1. creates the current ISO week's run if its latest scheduled firing is in this week and no
//!    run exists (a firing missed while no scheduler ran is caught up; `weekly_runs` has one
//!    row per week, so replicas and repeated firings create it once);
//! 2. for each unfinished run, takes the run's lease if free and advances it: fan-out pages,
//!    then feeding the queue window, then completion.
//!
//! 3. when a Shopify store is configured: starts the daily full sync when its cron fires (once,
//!    whichever replica sees it first), pushes sync pages nobody pushed yet (syncs started by the
//!    API) or whose job was lost, and pushes pending unsubscribe write-backs.
//!
//! The scheduler only writes the ledger and enqueues; it never sends mail or calls Shopify.

use std::str::FromStr;

use anyhow::Context;
use apalis::prelude::TaskSink;
use chrono::{DateTime, Utc};
use levelup_common::{
    Config, db,
    domain::IsoWeek,
    jobs::{SendChallengeEmail, ShopifyJob},
    queue, redis_conn, shopify,
    shutdown::CancellationToken,
    weekly_runs::{self, FanOutPage},
};
use sqlx::PgPool;

type EmailStorage = apalis_redis::RedisStorage<SendChallengeEmail>;

pub struct Scheduler {
    pool: PgPool,
    storage: EmailStorage,
    sync_storage: apalis_redis::RedisStorage<ShopifyJob>,
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
            sync_storage: queue::sync_storage(&config, redis),
            sync_schedule,
            owner: format!("scheduler-{}", config.worker_name),
            schedule,
            config,
        })
    }

    pub async fn tick(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        self.create_due_run().await?;
        levelup_common::idempotency_keys::delete_expired(&self.pool).await?;
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
            self.advance(&week, shutdown).await.with_context(|| format!("advancing run {week}"))?;
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
        if weekly_runs::create(&self.pool, week, "schedule").await? {
            tracing::info!(%week, fired_at = %fired, "weekly run created");
        }
        Ok(())
    }

    /// Moves one run forward as far as it can in this tick.
    async fn advance(&mut self, week: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let lease_ttl = self.config.scheduler_tick * 10 + std::time::Duration::from_secs(5);
        let Some(run) = weekly_runs::acquire_lease(&self.pool, week, &self.owner, lease_ttl).await? else {
            return Ok(()); // another replica holds it, or it just completed
        };
        if run.status == "fanning_out" {
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                match weekly_runs::fan_out_page(&self.pool, week, &self.owner, self.config.fanout_page_size).await? {
                    FanOutPage::Written { .. } => {
                        // Keep the lease alive through a long fan-out.
                        if weekly_runs::acquire_lease(&self.pool, week, &self.owner, lease_ttl).await?.is_none() {
                            return Ok(());
                        }
                        // Start feeding while the fan-out goes on, so workers start at once.
                        self.feed(week).await?;
                    }
                    FanOutPage::Done => {
                        tracing::info!(week, "fan-out complete");
                        break;
                    }
                    FanOutPage::LeaseLost => return Ok(()),
                }
            }
        }
        self.feed(week).await?;
        if weekly_runs::complete_if_done(&self.pool, week).await? {
            let progress = weekly_runs::progress(&self.pool, week).await?;
            tracing::info!(week, ?progress, "weekly run completed");
        }
        Ok(())
    }

    /// Tops the queue up to the window: rows due for an attempt first, then rows whose job may
    /// have been lost.
    async fn feed(&mut self, week: &str) -> anyhow::Result<()> {
        let outstanding = weekly_runs::outstanding(&self.pool, week).await?;
        let free = self.config.queue_window - outstanding;
        let mut ids = if free > 0 { weekly_runs::due(&self.pool, week, free).await? } else { Vec::new() };
        let room_for_stale = (self.config.queue_window - ids.len() as i64).clamp(0, 500);
        if room_for_stale > 0 {
            let (repush_after, claim_timeout) = (self.config.repush_after, self.config.claim_timeout);
            ids.extend(weekly_runs::stale(&self.pool, week, repush_after, claim_timeout, room_for_stale).await?);
        }
        if ids.is_empty() {
            return Ok(());
        }
        // Push first, then record: a crash in between re-pushes, and a duplicate job is a no-op.
        for chunk in ids.chunks(500) {
            let jobs = chunk.iter().map(|&delivery_id| SendChallengeEmail { delivery_id }).collect();
            self.storage.push_bulk(jobs).await.map_err(|e| anyhow::anyhow!("pushing email jobs: {e}"))?;
            if !weekly_runs::mark_pushed(&self.pool, week, &self.owner, chunk).await? {
                anyhow::bail!("lease on {week} lost while feeding");
            }
        }
        tracing::debug!(week, pushed = ids.len(), outstanding, "fed the email queue");
        Ok(())
    }

    async fn shopify_tick(&mut self) -> anyhow::Result<()> {
        let tz = self.config.schedule_timezone;
        if let Some(fired) = latest_firing(&self.sync_schedule, tz, Utc::now())
            && let Some(started) = shopify::sync::start_if_due(&self.pool, fired.with_timezone(&Utc)).await?
        {
            tracing::info!(sync_id = started.id, fired_at = %fired, "scheduled Shopify sync started");
        }
        let stale_after = self.config.sync.claim_timeout;
        let pages = shopify::sync::pages_to_push(&self.pool, stale_after).await?;
        let writebacks = shopify::writeback::to_push(&self.pool, stale_after, 500).await?;
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

    async fn release_leases(&self) {
        if let Ok(weeks) = weekly_runs::unfinished(&self.pool).await {
            for week in weeks {
                let _ = weekly_runs::release_lease(&self.pool, &week, &self.owner).await;
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
