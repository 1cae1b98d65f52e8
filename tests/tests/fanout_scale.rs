//! Scale evidence for the queue design (run on demand: `scripts/test --test fanout_scale -- --ignored --nocapture`).
//! One million subscribers are fanned out with no worker running: the ledger takes all of them,
//! Redis holds only the window, and the scheduler's memory stays flat.

use levelup_common::domain::RunStatus;
use levelup_tests::iso_week;
use std::time::{Duration, Instant};

use levelup_common::{db::weekly_runs, domain::IsoWeek};
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
    let mut redis = levelup_common::runtime::redis_conn::connect(&config).await.unwrap();
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
            let run = weekly_runs::get(pool, iso_week("2026-W47")).await.unwrap().unwrap();
            let depth = levelup_common::jobs::queue::email_queue_depth(&config, &mut redis).await.unwrap();
            assert!(depth.waiting + depth.scheduled <= config.queue_window as u64, "window exceeded: {depth:?}");
            (run.status == RunStatus::Sending).then_some(())
        }
    })
    .await;
    let fan_out = started.elapsed();
    let depth = levelup_common::jobs::queue::email_queue_depth(&config, &mut redis).await.unwrap();
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

/// Issue 16: the fan-out's rate against a raw insert of the same rows into the same table, in the
/// same run, and what Postgres does for the scheduler once the fan-out is done (no worker runs, so
/// the window stays full and every tick only checks). Release binaries:
/// `cargo build --release --bins && LEVELUP_BIN_DIR=$CARGO_TARGET_DIR/release LEVELUP_BENCH_SUBSCRIBERS=1000000 \
///  cargo test -p levelup-tests --test fanout_scale fan_out_against_a_raw_insert -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand with release binaries (LEVELUP_BIN_DIR)"]
async fn fan_out_against_a_raw_insert() {
    let subscribers: i64 =
        std::env::var("LEVELUP_BENCH_SUBSCRIBERS").ok().map_or(100_000, |n| n.parse().expect("a number"));
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SCHEDULE_CRON", "0 0 0 1 1 * 2099").set("LEVELUP_SCHEDULER_TICK_MS", "100");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 4).await;
    fixtures::subscribers(pool, subscribers, 3).await;
    sqlx::query("VACUUM ANALYZE").execute(pool).await.unwrap();

    // Baseline: the same number of delivery rows (same table, indexes, constraints and foreign
    // keys) written by one INSERT … SELECT generate_series for another week, then removed.
    weekly_runs::create(pool, iso_week("2026-W46"), "baseline").await.unwrap();
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO deliveries (subscriber_id, week, kind, challenge_id, state)
         SELECT n, '2026-W46', 'challenge', (SELECT min(id) FROM challenges), 'queued'
         FROM generate_series((SELECT min(id) FROM subscribers), (SELECT max(id) FROM subscribers)) n",
    )
    .execute(pool)
    .await
    .unwrap();
    let raw = t.elapsed();
    sqlx::query("DELETE FROM deliveries WHERE week = '2026-W46'").execute(pool).await.unwrap();
    sqlx::query("VACUUM ANALYZE deliveries").execute(pool).await.unwrap();

    let week = iso_week("2026-W47");
    weekly_runs::create(pool, week, "bench").await.unwrap();
    let mut backends = Vec::new();
    let cpu_before = postgres_cpu_secs(pool, &mut backends).await;
    let scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let pid = scheduler.child.id();
    let mut rss_samples = Vec::new();
    wait_until("the fan-out", Duration::from_secs(3600), || {
        rss_samples.push(rss_kib(pid));
        async move {
            let run = weekly_runs::get(pool, week).await.unwrap().unwrap();
            (run.status == RunStatus::Sending).then_some(())
        }
    })
    .await;
    // The fan-out as Postgres saw it: from the first page's transaction to the last.
    let fan_out: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM r.fanout_finished_at - (SELECT min(created_at) FROM deliveries WHERE week = r.week))::float8
         FROM weekly_runs r WHERE week = $1",
    )
    .bind(week)
    .fetch_one(pool)
    .await
    .unwrap();
    let fan_out_cpu = postgres_cpu_secs(pool, &mut backends).await - cpu_before;

    // After the fan-out, nothing to do but check each tick: Postgres should be (nearly) idle.
    const IDLE_SECS: u64 = 10;
    let before = postgres_cpu_secs(pool, &mut backends).await;
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    let idle_cpu = postgres_cpu_secs(pool, &mut backends).await - before;
    rss_samples.push(rss_kib(pid));
    drop(scheduler);

    let rss: Vec<u64> = rss_samples.iter().copied().filter(|r| *r > 1024).collect();
    let (fan_out_rate, raw_rate) = (subscribers as f64 / fan_out, subscribers as f64 / raw.as_secs_f64());
    eprintln!(
        "N={subscribers}: fan-out {fan_out:.1} s ({fan_out_rate:.0} rows/s, Postgres CPU {fan_out_cpu:.1} s); \
         raw insert {:.1} s ({raw_rate:.0} rows/s); ratio {:.2}; after the fan-out Postgres used {:.1}% of a core \
         ({IDLE_SECS} s, tick 100 ms); scheduler RSS min {} KiB max {} KiB",
        raw.as_secs_f64(),
        fan_out_rate / raw_rate,
        idle_cpu * 100.0 / IDLE_SECS as f64,
        rss.iter().min().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
    );
    let total: i64 =
        sqlx::query_scalar("SELECT total FROM weekly_runs WHERE week = $1").bind(week).fetch_one(pool).await.unwrap();
    assert_eq!(total, subscribers);
}

/// CPU seconds (user + system) of the Postgres backends serving this database (the scheduler's
/// sessions, and the test's own, which only poll); `seen` keeps every backend met so far.
/// Postgres runs on this machine.
async fn postgres_cpu_secs(pool: &sqlx::PgPool, seen: &mut Vec<u32>) -> f64 {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database()",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for pid in pids {
        if !seen.contains(&(pid as u32)) {
            seen.push(pid as u32);
        }
    }
    let ticks: u64 = seen
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        })
        .sum();
    ticks as f64 / 100.0
}
