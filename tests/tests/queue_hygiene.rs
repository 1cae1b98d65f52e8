//! What the weekly run leaves in the queue: every pushed job is recorded before it is visible to a
//! worker, a job lost from Redis is pushed again (and one still waiting is not), and finished jobs
//! leave nothing behind in Redis, run after run. Real Redis and Postgres, worker OS processes,
//! the scheduler in-process where a test must control its ticks.

use levelup_common::domain::RunStatus;
use levelup_tests::iso_week;
use std::time::{Duration, Instant};

use levelup_common::{
    db::weekly_runs, domain::IsoWeek, jobs::queue, runtime::redis_conn, runtime::shutdown::CancellationToken,
};
use levelup_scheduler::Scheduler;
use levelup_tests::{
    TestEnv,
    fake_ses::{FakeSes, Faults},
    fixtures,
    processes::ChildProcess,
    wait_until,
};

const WEEK: &str = "2026-W47";

async fn queue_depth(env: &TestEnv) -> u64 {
    let config = env.config();
    let mut conn = redis_conn::connect(&config).await.unwrap();
    let depth = queue::email_queue_depth(&config, &mut conn).await.unwrap();
    depth.waiting + depth.scheduled + depth.inflight
}

/// Ticks the in-process scheduler until the run completes, failing after `deadline`.
async fn tick_until_completed(scheduler: &mut Scheduler, env: &TestEnv, deadline: Duration) {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    loop {
        scheduler.tick(&shutdown).await.unwrap();
        if weekly_runs::get(&env.db.pool, iso_week(WEEK)).await.unwrap().unwrap().status == RunStatus::Completed {
            return;
        }
        assert!(started.elapsed() < deadline, "run not completed after {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 10, defect 1: the feeder recorded a push after making it, so a worker could take the job
/// and give it back (clearing `pushed_at`) before the record landed, which then marked the row as
/// pushed with no job behind it, stalling it until the 15-minute safety net. The test forces that
/// interleaving: it holds a lock that only recording a push waits for, while a tick feeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_given_back_while_its_push_is_being_recorded_is_not_left_stranded() {
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { unavailable_until: Some(Instant::now() + Duration::from_secs(3600)), ..Faults::default() });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    // The safety net must not be what rescues the row.
    env.set("LEVELUP_REPUSH_AFTER_SECS", "900").set("LEVELUP_BREAKER_THRESHOLD", "1000");
    // Served under a path (issue 10: the path used to vanish from every link).
    env.set("LEVELUP_PUBLIC_BASE_URL", "https://levelup.example/levelup");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 2).await;
    fixtures::subscribers(pool, 1, 3).await;
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();
    let mut scheduler = Scheduler::connect(env.config()).await.unwrap();
    let shutdown = CancellationToken::new();
    scheduler.tick(&shutdown).await.unwrap(); // fan-out and the first push
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let given_back = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM deliveries WHERE state = 'queued' AND pushed_at IS NULL AND reason IS NOT NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    wait_until("the worker to give the delivery back (SES down)", Duration::from_secs(30), || async {
        (given_back().await == 1 && queue_depth(&env).await == 0).then_some(())
    })
    .await;

    // Hold a share lock on the run row while the next tick feeds the given-back row again. It lets
    // the tick renew its lease (an UPDATE of non-key columns) but stops it where it records a
    // push, which fences on the lease with `FOR UPDATE`.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT week FROM weekly_runs WHERE week = $1 FOR KEY SHARE")
        .bind(WEEK)
        .execute(&mut *lock)
        .await
        .unwrap();
    let observe = async {
        wait_until("the tick to wait for the run row", Duration::from_secs(30), || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        })
        .await;
        // No job may be visible to a worker before its push is recorded. (Had it been pushed, the
        // worker would take it now and give it back while the record waits.)
        wait_until("the worker to be done with anything pushed", Duration::from_secs(30), || async {
            let state: String = sqlx::query_scalar("SELECT state FROM deliveries").fetch_one(pool).await.unwrap();
            (state == "queued" && queue_depth(&env).await == 0).then_some(())
        })
        .await;
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM deliveries").fetch_one(pool).await.unwrap();
        lock.commit().await.unwrap();
        attempts
    };
    // The tick and the observer run concurrently in this task.
    let (fed, attempts) = tokio::join!(scheduler.tick(&shutdown), observe);
    fed.unwrap();
    assert_eq!(attempts, 1, "no job was visible while its push was not yet recorded");

    let stranded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE state = 'queued' AND pushed_at IS NOT NULL AND pushed_at < updated_at",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stranded, 0, "no row marked pushed after it was given back");

    // SES recovers: the run completes at once, not after the 15-minute safety net.
    ses.set_faults(Faults::default());
    tick_until_completed(&mut scheduler, &env, Duration::from_secs(60)).await;
    let email = &ses.accepted()[0];
    assert!(email.text.contains("https://levelup.example/levelup/challenge/"), "{}", email.text);
    assert!(email.header("List-Unsubscribe").unwrap().contains("https://levelup.example/levelup/unsubscribe?token="));
    assert_eq!(ses.accepted().len(), 1);
    let run = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
    assert_eq!(run.enqueued, 1, "enqueued counts distinct deliveries, not pushes");
    assert!(run.pushes >= 2, "every push is counted apart (first, after the give-back): {}", run.pushes);
}

/// The safety net re-pushes a job only when it is gone from the queue: a job still waiting is
/// left alone however old its push, and a job lost with Redis's data is pushed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_jobs_missing_from_the_queue_are_pushed_again() {
    let ses = FakeSes::start().await;
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_REPUSH_AFTER_SECS", "1").set("LEVELUP_QUEUE_WINDOW", "50");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 2).await;
    fixtures::subscribers(pool, 200, 3).await;
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();
    let mut scheduler = Scheduler::connect(env.config()).await.unwrap();
    let shutdown = CancellationToken::new();
    scheduler.tick(&shutdown).await.unwrap();
    assert_eq!(queue_depth(&env).await, 50, "the window");

    // No worker: the pushed jobs wait in Redis for longer than LEVELUP_REPUSH_AFTER_SECS.
    let old_enough = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE pushed_at < now() - interval '1.5 seconds'")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    wait_until("the pushes to be older than the re-push delay", Duration::from_secs(30), || async {
        (old_enough().await == 50).then_some(())
    })
    .await;
    scheduler.tick(&shutdown).await.unwrap();
    assert_eq!(queue_depth(&env).await, 50, "jobs still waiting are not pushed again");
    let run = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
    assert_eq!((run.enqueued, run.pushes), (50, 50));

    // Redis loses the queue (a restart without persistence).
    let mut conn = env.redis.connection().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:email:*", env.redis.namespace)).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    assert_eq!(queue_depth(&env).await, 0);
    scheduler.tick(&shutdown).await.unwrap();
    assert_eq!(queue_depth(&env).await, 50, "the lost jobs are pushed again");
    let run = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
    assert_eq!((run.enqueued, run.pushes), (50, 100));

    // Workers deliver everyone once.
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    tick_until_completed(&mut scheduler, &env, Duration::from_secs(120)).await;
    assert_eq!(ses.accepted().len(), 200);
}

/// Keys and bytes under the test's namespace.
async fn namespace_footprint(env: &TestEnv) -> (usize, u64) {
    let mut conn = env.redis.connection().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", env.redis.namespace))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut bytes = 0;
    for key in &keys {
        let usage: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(key).query_async(&mut conn).await.unwrap();
        bytes += usage.unwrap_or(0);
    }
    (keys.len(), bytes)
}

/// Issue 10, defect 2: apalis-redis keeps every finished job's data, `meta:<id>` hash and `done`
/// entry forever (~440 B per email, and more after an outage). Three runs of 20,000 with workers,
/// each with an SES outage and a worker killed with SIGKILL: after each, the namespace is back to
/// within a few keys and a few KiB of where it was before the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_jobs_leave_nothing_behind_in_redis_run_after_run() {
    const SUBSCRIBERS: i64 = 20_000;
    const KEYS_SLACK: usize = 6;
    const BYTES_SLACK: u64 = 32 * 1024;
    let ses = FakeSes::start_light().await;
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_CLAIM_TIMEOUT_SECS", "3")
        .set("LEVELUP_SES_TIMEOUT_MS", "2000")
        .set("LEVELUP_REPUSH_AFTER_SECS", "5")
        .set("LEVELUP_BREAKER_COOLDOWN_MS", "500");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 3).await;
    fixtures::subscribers(pool, SUBSCRIBERS, 3).await;
    let mut workers: Vec<ChildProcess> =
        (0..3).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect();
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let config = env.config();
    let conn = redis_conn::connect(&config).await.unwrap();
    // Each worker process registers on the email queue and on the test-send queue.
    let workers_sets =
        [queue::email_queue_config(&config).workers_set(), queue::test_send_queue_config(&config).workers_set()];
    wait_until("the workers to register", Duration::from_secs(60), || async {
        for workers_set in &workers_sets {
            let registered: u64 = redis::cmd("ZCARD").arg(workers_set).query_async(&mut conn.clone()).await.unwrap();
            if registered != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (keys_before, bytes_before) = namespace_footprint(&env).await;
    eprintln!("before the first run: {keys_before} keys, {bytes_before} B");

    for (n, week) in ["2026-W47", "2026-W48", "2026-W49"].into_iter().enumerate() {
        let sent_before = ses.accepted().len();
        weekly_runs::create(pool, IsoWeek::parse(week).unwrap(), "test").await.unwrap();
        let sent = || ses.accepted().len() - sent_before;
        wait_until("a quarter of the run", Duration::from_secs(300), || async {
            (sent() >= SUBSCRIBERS as usize / 4).then_some(())
        })
        .await;
        ses.set_faults(Faults {
            unavailable_until: Some(Instant::now() + Duration::from_secs(3)),
            ..Faults::default()
        });
        wait_until("half the run", Duration::from_secs(300), || async {
            (sent() >= SUBSCRIBERS as usize / 2).then_some(())
        })
        .await;
        workers[0].kill_hard();
        workers[0] = ChildProcess::spawn("levelup-worker", &[], &env.vars);
        let run = env.run_completed(week, Duration::from_secs(600)).await;
        let progress = weekly_runs::progress(pool, iso_week(week)).await.unwrap();
        assert_eq!(progress.sent, SUBSCRIBERS, "{week}: everyone delivered");
        let (keys, bytes) = wait_until("the namespace to be back to its size", Duration::from_secs(120), || async {
            let (keys, bytes) = namespace_footprint(&env).await;
            (keys <= keys_before + KEYS_SLACK && bytes <= bytes_before + BYTES_SLACK).then_some((keys, bytes))
        })
        .await;
        eprintln!(
            "after run {} ({week}): {keys} keys, {bytes} B; {} deliveries pushed {} times, {} ambiguous",
            n + 1,
            run.enqueued,
            run.pushes,
            progress.ambiguous
        );
    }
}
