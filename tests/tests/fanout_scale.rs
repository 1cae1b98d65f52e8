//! Scale evidence for the queue design (run on demand: `scripts/test --test fanout_scale -- --ignored --nocapture`).
//! One million subscribers are fanned out with no worker running: the ledger takes all of them,
//! Redis holds only the window, and the scheduler's memory stays flat.

use std::time::{Duration, Instant};

use levelup_common::{domain::IsoWeek, weekly_runs};
use levelup_tests::{TestEnv, fixtures, processes::ChildProcess, wait_until};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale benchmark: takes minutes; run on demand"]
async fn fan_out_of_one_million_subscribers_keeps_redis_bounded_and_memory_flat() {
    const SUBSCRIBERS: i64 = 1_000_000;
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SCHEDULE_CRON", "0 0 0 1 1 * 2099").set("LEVELUP_SCHEDULER_TICK_MS", "100");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 4).await;
    let t = Instant::now();
    fixtures::subscribers(pool, SUBSCRIBERS, 3).await;
    eprintln!("inserted {SUBSCRIBERS} subscribers in {:?}", t.elapsed());
    let config = env.config();
    let mut redis = levelup_common::redis_conn::connect(&config).await.unwrap();
    let used_before: u64 = redis_memory(&mut redis).await;

    weekly_runs::create(pool, IsoWeek::parse("2026-W47").unwrap(), "bench").await.unwrap();
    let scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let pid = scheduler.child.id();
    let started = Instant::now();
    let mut rss_samples = Vec::new();
    wait_until("the fan-out of one million", Duration::from_secs(3600), || {
        let mut redis = redis.clone();
        let config = config.clone();
        rss_samples.push(rss_kib(pid));
        async move {
            let run = weekly_runs::get(pool, "2026-W47").await.unwrap().unwrap();
            let depth = levelup_common::queue::email_queue_depth(&config, &mut redis).await.unwrap();
            assert!(depth.waiting + depth.scheduled <= config.queue_window as u64, "window exceeded: {depth:?}");
            (run.status == "sending").then_some(())
        }
    })
    .await;
    let fan_out = started.elapsed();
    let depth = levelup_common::queue::email_queue_depth(&config, &mut redis).await.unwrap();
    let max_window = depth.waiting + depth.scheduled;
    let used_after = redis_memory(&mut redis).await;
    // Skip samples taken before the process had mapped its runtime.
    let rss: Vec<u64> = rss_samples.iter().copied().filter(|r| *r > 1024).collect();
    eprintln!(
        "fan-out of {SUBSCRIBERS}: {fan_out:?} ({:.0} subscribers/s); Redis jobs {max_window} (window {}), Redis memory +{} KiB; scheduler RSS min {} KiB max {} KiB",
        SUBSCRIBERS as f64 / fan_out.as_secs_f64(),
        config.queue_window,
        (used_after.saturating_sub(used_before)) / 1024,
        rss.iter().min().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
    );
    assert!(max_window <= config.queue_window as u64);
    let total: i64 = sqlx::query_scalar("SELECT total FROM weekly_runs").fetch_one(pool).await.unwrap();
    assert_eq!(total, SUBSCRIBERS);
}

async fn redis_memory(redis: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}
