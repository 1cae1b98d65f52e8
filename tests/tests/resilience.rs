//! Resilience around SES: throttling, an outage behind the circuit breaker, the fleet-wide rate
//! limit, a worker killed mid-run, permanent errors, dead letters and their replay. Worker OS
//! processes, real Redis and Postgres, the real aws-sdk-sesv2 client against the fake SES.

use levelup_common::domain::RunStatus;
use levelup_tests::iso_week;
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use levelup_common::{db::weekly_runs, domain::IsoWeek, resilience::rate_limit::FleetRateLimiter, runtime::redis_conn};
use levelup_tests::{
    TestEnv,
    fake_ses::{FakeSes, Faults, SesRequest},
    fixtures,
    processes::{ChildProcess, spawn_api},
    wait_until,
};

const WEEK: &str = "2026-W47";

async fn start_run(env: &TestEnv, subscribers: i64) {
    fixtures::challenges(&env.db.pool, 3, 2).await;
    fixtures::subscribers(&env.db.pool, subscribers, 3).await;
    weekly_runs::create(&env.db.pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();
}

fn workers(env: &TestEnv, n: usize) -> Vec<ChildProcess> {
    (0..n).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect()
}

/// Every subscriber got exactly one accepted send.
fn assert_one_accepted_each(accepted: &[SesRequest], subscribers: usize) {
    let mut per: HashMap<&str, usize> = HashMap::new();
    for r in accepted {
        *per.entry(r.to[0].as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(per.len(), subscribers, "every subscriber got one");
}

async fn dead_letter_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&env.db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_percent_throttling_delivers_everyone_once_and_dead_letters_nothing() {
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { throttle_probability: 0.3, ..Faults::default() });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_THROTTLE_PENALTY_SECS", "1");
    start_run(&env, 2000).await;
    let _workers = workers(&env, 2);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    env.run_completed(WEEK, Duration::from_secs(240)).await;

    let requests = ses.requests();
    let throttled = requests.iter().filter(|r| r.status == 429).count();
    assert!(throttled > 300, "the fake throttled about 30%: {throttled} of {}", requests.len());
    assert_one_accepted_each(&ses.accepted(), 2000);
    assert_eq!(ses.accepted().len(), 2000);
    assert_eq!(dead_letter_count(&env).await, 0);
    let progress = weekly_runs::progress(&env.db.pool, iso_week(WEEK)).await.unwrap();
    assert_eq!((progress.sent, progress.failed), (2000, 0));
    eprintln!("throttled answers: {throttled}; total requests {}", requests.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_opens_the_breaker_probes_stay_bounded_and_everyone_is_delivered_after_recovery() {
    const OUTAGE: Duration = Duration::from_secs(20);
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { latency: Duration::from_millis(5), ..Faults::default() });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_BREAKER_THRESHOLD", "5")
        .set("LEVELUP_BREAKER_COOLDOWN_MS", "1000")
        .set("LEVELUP_BREAKER_PROBES", "1")
        .set("LEVELUP_SES_MAX_SEND_RATE", "100");
    start_run(&env, 3000).await;
    // Each worker serves its metrics, to check that breaker transitions are exported.
    let metrics_ports: Vec<u16> =
        (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let _workers: Vec<ChildProcess> = metrics_ports
        .iter()
        .map(|port| {
            let mut vars = env.vars.clone();
            vars.insert("LEVELUP_METRICS_BIND".into(), format!("127.0.0.1:{port}"));
            ChildProcess::spawn("levelup-worker", &[], &vars)
        })
        .collect();
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    wait_until("the run to be under way", Duration::from_secs(60), || async {
        (ses.accepted().len() >= 300).then_some(())
    })
    .await;
    let outage_start = Instant::now();
    let outage_end = outage_start + OUTAGE;
    ses.set_faults(Faults { unavailable_until: Some(outage_end), ..Faults::default() });
    env.run_completed(WEEK, Duration::from_secs(240)).await;

    let requests = ses.requests();
    let during: Vec<&SesRequest> = requests.iter().filter(|r| r.at >= outage_start && r.at < outage_end).collect();
    // Requests already in flight and the failures that open the breaker come first; after three
    // seconds only probes may pass: at most `probes` (1) per cool-down interval (1 s). Counted over
    // the whole rest of the outage rather than per second, so that a probe delayed by a busy
    // machine into the next second cannot fail the test; the slack covers the two window edges.
    let settled = outage_start + Duration::from_secs(3);
    let probes: Vec<f64> = during.iter().filter(|r| r.at >= settled).map(|r| (r.at - settled).as_secs_f64()).collect();
    let window = (outage_end - settled).as_secs_f64();
    eprintln!(
        "requests during the 20 s outage: {} (in the last {window:.0} s: {} at {probes:.1?})",
        during.len(),
        probes.len()
    );
    assert!(
        probes.len() as f64 <= window + 3.0,
        "the open breaker let through at most one probe per second: {} in {window} s",
        probes.len()
    );
    assert!(during.len() < 60, "the fleet stopped hammering SES: {} requests in 20 s", during.len());
    assert_eq!(dead_letter_count(&env).await, 0, "deferred, not failed");
    assert_one_accepted_each(&ses.accepted(), 3000);

    let mut exported = String::new();
    for port in metrics_ports {
        exported += &reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    }
    assert!(exported.contains(r#"levelup_breaker_transitions_total{dependency="ses",to="open"}"#), "{exported}");
    assert!(exported.contains(r#"levelup_breaker_transitions_total{dependency="ses",to="closed"}"#), "{exported}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_share_a_fleet_wide_rate_of_fifty_per_second() {
    let ses = FakeSes::start().await;
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_SES_MAX_SEND_RATE", "50");
    start_run(&env, 1000).await;
    let _workers = workers(&env, 4);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    env.run_completed(WEEK, Duration::from_secs(120)).await;

    assert_one_accepted_each(&ses.accepted(), 1000);

    // The strict bound, on what the limiter controls: the slots it granted, on Redis's clock.
    // GCRA spaces them at least 1/rate apart, so no one-second window holds more than 50.
    let config = env.config();
    let limiter = FleetRateLimiter::new(
        &config.redis_namespace,
        "ses",
        50.0,
        config.throttle_penalty,
        redis_conn::connect(&config).await.unwrap(),
    );
    let slots_ms = limiter.recent_grants().await.unwrap();
    assert_eq!(slots_ms.len(), 1000, "one granted slot per send");
    let slots: Vec<f64> = slots_ms.iter().map(|ms| ms / 1000.0).collect();
    let min_gap = slots.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
    assert!(min_gap >= 0.02 - 1e-6, "slots at least 1/50 s apart: smallest gap {min_gap} s");
    // Slots are kept to the microsecond: allow that much rounding per gap.
    let busiest_granted = busiest_window(&slots, 1.0 - 1e-4);
    assert!(busiest_granted <= 50, "no one-second window of granted slots above 50: {busiest_granted}");

    // What SES saw: each send leaves at its slot plus a delay (the worker waking, the HTTP call)
    // that varies with the machine's load. Matching the i-th arrival with the i-th slot, the
    // spread of those delays bounds how much a one-second window of arrivals can be compressed:
    // at most 50 × (1 s + spread) + 1 arrivals (see README, "rate limit").
    let mut arrivals: Vec<f64> = ses.requests().iter().map(|r| (r.at - first_request(&ses)).as_secs_f64()).collect();
    arrivals.sort_by(f64::total_cmp);
    let delays: Vec<f64> = arrivals.iter().zip(&slots).map(|(a, s)| a - (s - slots[0])).collect();
    let spread =
        delays.iter().copied().fold(f64::NEG_INFINITY, f64::max) - delays.iter().copied().fold(f64::INFINITY, f64::min);
    let busiest_received = busiest_window(&arrivals, 1.0);
    let bound = (50.0 * (1.0 + spread)).floor() as usize + 1;
    let span = arrivals[arrivals.len() - 1] - arrivals[0];
    eprintln!(
        "1000 sends at 50/s across 4 workers: busiest granted second {busiest_granted}, busiest received second \
         {busiest_received} (bound {bound} for a delay spread of {:.0} ms), span {span:.1} s (ideal 20 s)",
        spread * 1000.0
    );
    assert!(busiest_received <= bound, "SES saw {busiest_received} in one second; bound {bound}");
}

/// The most points of `sorted` (seconds) within any half-open window of `width` seconds.
fn busiest_window(sorted: &[f64], width: f64) -> usize {
    let mut worst = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= width {
            start += 1;
        }
        worst = worst.max(end - start + 1);
    }
    worst
}

fn first_request(ses: &FakeSes) -> Instant {
    ses.requests().iter().map(|r| r.at).min().expect("at least one request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_run_loses_nothing() {
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { latency: Duration::from_millis(10), ..Faults::default() });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_CLAIM_TIMEOUT_SECS", "3").set("LEVELUP_SES_TIMEOUT_MS", "2000");
    start_run(&env, 5000).await;
    let mut workers = workers(&env, 3);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    wait_until("half the run", Duration::from_secs(120), || async { (ses.accepted().len() >= 2500).then_some(()) })
        .await;
    workers[0].kill_hard();
    env.run_completed(WEEK, Duration::from_secs(240)).await;

    let accepted = ses.accepted();
    let distinct: HashSet<&str> = accepted.iter().map(|r| r.to[0].as_str()).collect();
    let progress = weekly_runs::progress(&env.db.pool, iso_week(WEEK)).await.unwrap();
    eprintln!(
        "after SIGKILL of 1 of 3 workers: accepted sends {}, distinct recipients {}, ledger ambiguous {}",
        accepted.len(),
        distinct.len(),
        progress.ambiguous
    );
    assert_eq!(progress.sent, 5000);
    assert_eq!(distinct.len(), 5000, "everyone delivered");
    // A duplicate is possible only for a send accepted just before the kill, and the ledger
    // flags every such delivery.
    assert!(accepted.len() - 5000 <= progress.ambiguous as usize, "every duplicate is counted as ambiguous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_errors_fail_at_once_and_exhausted_jobs_are_dead_lettered_then_replayed() {
    let ses = FakeSes::start().await;
    ses.set_faults(Faults {
        reject_recipients: vec!["user1@example.com".into()],
        fail_recipients: vec!["user2@example.com".into()],
        ..Faults::default()
    });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_EMAIL_MAX_ATTEMPTS", "3");
    start_run(&env, 20).await;
    let _workers = workers(&env, 1);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    env.run_completed(WEEK, Duration::from_secs(60)).await;
    let pool = &env.db.pool;

    let to = |who: &str| ses.requests().into_iter().filter(|r| r.to[0] == who).count();
    assert_eq!(to("user1@example.com"), 1, "MessageRejected is not retried");
    assert_eq!(to("user2@example.com"), 3, "a transient error is retried up to the budget");
    let rejected: (String, String) = sqlx::query_as(
        "SELECT d.state, d.reason FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = 'user1@example.com'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(rejected.0, "failed");
    assert!(rejected.1.contains("MessageRejected"), "{}", rejected.1);

    let api = spawn_api(env.config());
    let admin = api.admin();
    let dead = admin.dead_letters().await;
    assert_eq!(dead.len(), 1, "only the exhausted job: {dead:?}");
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].last_error.contains("ServiceUnavailable"));

    // SES recovers; the operator replays.
    ses.set_faults(Faults::default());
    let replay = admin.replay_dead_letter_raw(dead[0].id).await;
    assert_eq!(replay.status(), 200);
    env.run_completed(WEEK, Duration::from_secs(60)).await;
    wait_until("the replayed email", Duration::from_secs(30), || async {
        ses.accepted().iter().any(|r| r.to[0] == "user2@example.com").then_some(())
    })
    .await;
    assert_eq!(ses.accepted().iter().filter(|r| r.to[0] == "user2@example.com").count(), 1);
    // Replaying again finds nothing open, and a sent delivery is never re-sent.
    let again = admin.replay_all_dead_letters().await;
    assert_eq!(again.replayed, 0);
    assert_eq!(ses.accepted().len(), 19, "everyone but the rejected address, once");
    api.stop().await.unwrap();
}

/// Restarts any process that exited, as compose's `restart: unless-stopped` or systemd would.
/// Returns the exit statuses seen.
fn supervise(processes: &mut [ChildProcess], env: &TestEnv, binary: &str) -> Vec<std::process::ExitStatus> {
    let mut exits = Vec::new();
    for process in processes.iter_mut() {
        if let Ok(Some(status)) = process.child.try_wait() {
            exits.push(status);
            *process = ChildProcess::spawn(binary, &[], &env.vars);
        }
    }
    exits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_with_aof_mid_run_loses_nothing() {
    let mut redis = levelup_tests::redis_server::PrivateRedis::start_with_aof().await;
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { latency: Duration::from_millis(5), ..Faults::default() });
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("REDIS_URL", redis.url());
    start_run(&env, 3000).await;
    let mut worker_processes = workers(&env, 2);
    let mut scheduler = vec![ChildProcess::spawn("levelup-scheduler", &[], &env.vars)];
    wait_until("a third of the run", Duration::from_secs(120), || async {
        (ses.accepted().len() >= 1000).then_some(())
    })
    .await;
    redis.restart().await;
    let mut exits = Vec::new();
    wait_until("the run to complete after the Redis restart", Duration::from_secs(240), || {
        exits.extend(supervise(&mut worker_processes, &env, "levelup-worker"));
        exits.extend(supervise(&mut scheduler, &env, "levelup-scheduler"));
        async {
            weekly_runs::get(&env.db.pool, iso_week(WEEK))
                .await
                .unwrap()
                .filter(|r| r.status == RunStatus::Completed)
                .map(|_| ())
        }
    })
    .await;
    eprintln!("process exits during the Redis restart (restarted by the test's supervisor): {exits:?}");
    assert!(exits.iter().all(|s| !s.success()), "a process that gives up exits non-zero: {exits:?}");
    assert_one_accepted_each(&ses.accepted(), 3000);
    assert_eq!(ses.accepted().len(), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_sends_before_the_worker_exits() {
    let ses = FakeSes::start().await;
    ses.set_faults(Faults { latency: Duration::from_millis(1500), ..Faults::default() });
    let env = TestEnv::with_fake_ses(&ses).await;
    start_run(&env, 40).await;
    let mut worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let pool = &env.db.pool;
    let in_flight = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE state = 'sending'")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    wait_until("sends in flight", Duration::from_secs(30), || async { (in_flight().await > 0).then_some(()) }).await;
    let status = worker.terminate();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    assert_eq!(in_flight().await, 0, "every send in flight was finished and recorded before exit");
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'sent'").fetch_one(pool).await.unwrap();
    assert!(sent > 0);
    assert_eq!(ses.accepted().len() as i64, sent, "every accepted send is in the ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_worker_keeps_dying_ends_in_the_dead_letters() {
    let ses = FakeSes::start().await;
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_EMAIL_MAX_ATTEMPTS", "3")
        .set("LEVELUP_CLAIM_TIMEOUT_SECS", "1")
        .set("LEVELUP_SES_TIMEOUT_MS", "500");
    start_run(&env, 3).await;
    let pool = &env.db.pool;
    // Fan out with no worker running, then make delivery 1 look like it was claimed three times
    // by workers that died mid-attempt (state `sending`, claim long expired).
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    wait_until("the fan-out", Duration::from_secs(30), || async {
        weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().filter(|r| r.status == RunStatus::Sending).map(|_| ())
    })
    .await;
    sqlx::query(
        "UPDATE deliveries SET state = 'sending', attempts = 3, claimed_by = 'dead-worker',
                claimed_at = now() - interval '1 minute', pushed_at = now() - interval '1 minute'
         WHERE subscriber_id = 1",
    )
    .execute(pool)
    .await
    .unwrap();
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    env.run_completed(WEEK, Duration::from_secs(60)).await;
    let (state, ambiguous): (String, bool) =
        sqlx::query_as("SELECT state, ambiguous FROM deliveries WHERE subscriber_id = 1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert!(ambiguous, "its earlier attempts may have reached SES");
    assert_eq!(dead_letter_count(&env).await, 1);
    assert!(ses.requests().iter().all(|r| r.to[0] != "user1@example.com"), "not attempted a fourth time");
    assert_eq!(ses.accepted().len(), 2, "the others are delivered");
}
