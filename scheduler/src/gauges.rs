//! The gauges an operator pages on, exported by the scheduler every [`INTERVAL`]: queue depth
//! per queue (the Redis window), the due backlog and its oldest item (Postgres), open dead
//! letters, and the unfinished runs' progress, ambiguous sends and ETA.

use std::time::Duration;

use chrono::Utc;
use levelup_common::{
    Config,
    db::{backlog, weekly_runs},
    domain::IsoWeek,
    jobs::{Queue, queue},
};
use sqlx::PgPool;

/// How often the gauges are refreshed: cheap queries, but not every tick.
pub(crate) const INTERVAL: Duration = Duration::from_secs(15);

pub(crate) async fn export(
    pool: &PgPool,
    redis: &mut apalis_redis::ConnectionManager,
    config: &Config,
    runs: &[IsoWeek],
) -> anyhow::Result<()> {
    for q in [Queue::Email, Queue::ShopifySync, Queue::TestSend] {
        let depth = queue::depth(q, config, redis).await?;
        for (state, value) in [("waiting", depth.waiting), ("scheduled", depth.scheduled), ("inflight", depth.inflight)]
        {
            metrics::gauge!("levelup_queue_depth", "queue" => q.name(), "state" => state).set(value as f64);
        }
    }
    let mut loaded = Vec::with_capacity(runs.len());
    for &week in runs {
        if let Some(run) = weekly_runs::get(pool, week).await? {
            loaded.push(run);
        }
    }
    // A paused run's waiting deliveries are not a backlog to page on (nor to scale workers for).
    let active: Vec<IsoWeek> = loaded.iter().filter(|r| r.paused_at.is_none()).map(|r| r.week).collect();
    let paused = loaded.len() - active.len();
    metrics::gauge!("levelup_runs_paused").set(paused as f64);
    let (due, oldest) = backlog::due(pool, &active).await?;
    metrics::gauge!("levelup_backlog_due", "queue" => Queue::Email.name()).set(due as f64);
    let oldest_age = oldest.map_or(0.0, |at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
    metrics::gauge!("levelup_backlog_oldest_due_seconds", "queue" => Queue::Email.name()).set(oldest_age);
    metrics::gauge!("levelup_dead_letters_open").set(backlog::open_dead_letters(pool).await? as f64);

    let (mut total, mut eta) = (weekly_runs::Progress::default(), 0.0_f64);
    for run in &loaded {
        let progress = weekly_runs::progress(pool, run.week).await?;
        let (_, run_eta) = progress.pace(Utc::now() - run.started_at);
        eta = eta.max(run_eta.unwrap_or(0.0));
        total.add(&progress);
    }
    for (state, value) in [
        ("queued", total.queued),
        ("sending", total.sending),
        ("sent", total.sent),
        ("failed", total.failed),
        ("skipped", total.skipped),
    ] {
        metrics::gauge!("levelup_run_deliveries", "state" => state).set(value as f64);
    }
    metrics::gauge!("levelup_runs_unfinished").set(runs.len() as f64);
    metrics::gauge!("levelup_run_remaining").set(total.remaining() as f64);
    metrics::gauge!("levelup_run_ambiguous").set(total.ambiguous as f64);
    metrics::gauge!("levelup_run_eta_seconds").set(eta);
    Ok(())
}
