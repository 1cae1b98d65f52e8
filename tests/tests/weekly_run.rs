//! The weekly run end to end: scheduler processes fan out, worker processes send through the
//! real aws-sdk-sesv2 client to the fake SES, the ledger keeps it to one email per subscriber.

use levelup_common::domain::RunStatus;
use levelup_tests::iso_week;
use std::{collections::HashMap, time::Duration};

use levelup_common::{db::weekly_runs, domain::IsoWeek, domain::tokens::Purpose};
use levelup_tests::{
    TestEnv, fake_ses::FakeSes, fixtures, processes::ChildProcess, token_signer as signer, wait_until,
};

const WEEK: &str = "2026-W47";
const LEVELS: i16 = 3;

async fn env_with_fake_ses(ses: &FakeSes) -> TestEnv {
    TestEnv::with_fake_ses(ses).await
}

async fn wait_for_completion(env: &TestEnv, deadline: Duration) -> weekly_runs::WeeklyRun {
    env.run_completed(WEEK, deadline).await
}

fn token_in(url_text: &str, path: &str) -> String {
    let start = url_text.find(path).unwrap_or_else(|| panic!("{path} link in {url_text}")) + path.len();
    let rest = &url_text[start..];
    let token_start = rest.find("token=").unwrap() + "token=".len();
    rest[token_start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '>' || c == '&')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_run_sends_each_active_subscriber_exactly_one_right_email() {
    let ses = FakeSes::start().await;
    let env = env_with_fake_ses(&ses).await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, LEVELS, 3).await;
    fixtures::subscribers(pool, 1000, LEVELS).await;
    // People who must get nothing.
    sqlx::query(
        "INSERT INTO subscribers (email, level, status)
         SELECT format('gone%s@example.com', n), 1, 'unsubscribed' FROM generate_series(1, 5) n",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO subscribers (email, level) SELECT format('bounced%s@example.com', n), 2 FROM generate_series(1, 5) n")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO suppressions (email_lower, reason) SELECT format('bounced%s@example.com', n), 'bounce' FROM generate_series(1, 5) n")
        .execute(pool)
        .await
        .unwrap();

    let _workers: Vec<_> = (0..2).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect();
    // Two schedulers race for the same week.
    let _schedulers: Vec<_> = (0..2).map(|_| ChildProcess::spawn("levelup-scheduler", &[], &env.vars)).collect();
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();

    let run = wait_for_completion(&env, Duration::from_secs(120)).await;
    assert_eq!(run.total, 1010, "a ledger row per subscriber");
    assert_eq!(run.enqueued, 1000, "a job per active, unsuppressed subscriber");

    let accepted = ses.accepted();
    assert_eq!(accepted.len(), 1000, "exactly one SendEmail per active subscriber");
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    let signer = signer();
    let now = chrono::Utc::now().timestamp();
    for request in &accepted {
        assert!(request.signed, "SigV4-signed by the real SDK");
        assert_eq!(request.to.len(), 1);
        let to = &request.to[0];
        *per_recipient.entry(to.clone()).or_default() += 1;
        let level = fixtures::level_of(to, LEVELS);
        // First week: the first challenge (position 0) of the subscriber's level.
        assert_eq!(request.subject, format!("Your weekly challenge: L{level}-C0"), "{to}");
        assert!(request.text.contains(&format!("Body of level {level} challenge 0")));
        assert!(request.html.contains(&format!("L{level}-C0")) && request.html.contains("<html"));
        let unsubscribe = request.header("List-Unsubscribe").expect("List-Unsubscribe header");
        assert!(unsubscribe.starts_with("<https://levelup.example/unsubscribe?token="), "{unsubscribe}");
        assert_eq!(request.header("List-Unsubscribe-Post"), Some("List-Unsubscribe=One-Click"));
        // The links carry tokens that verify and name this subscriber.
        let subscriber_id: i64 =
            sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1").bind(to).fetch_one(pool).await.unwrap();
        let access = token_in(&request.text, "https://levelup.example/challenge/");
        assert_eq!(signer.verify(&access, Purpose::Access, now).unwrap().subscriber_id, subscriber_id);
        let unsub = token_in(unsubscribe, "https://levelup.example/unsubscribe");
        assert_eq!(signer.verify(&unsub, Purpose::Unsubscribe, now).unwrap().subscriber_id, subscriber_id);
    }
    assert_eq!(per_recipient.len(), 1000);
    assert!(per_recipient.keys().all(|to| to.starts_with("user")), "nobody unsubscribed or suppressed was mailed");

    let skipped: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM deliveries WHERE week = $1 AND state = 'skipped' GROUP BY reason ORDER BY reason",
    )
    .bind(WEEK)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(skipped, vec![("suppressed:bounce".to_owned(), 5), ("unsubscribed".to_owned(), 5)]);
    let progress = weekly_runs::progress(pool, iso_week(WEEK)).await.unwrap();
    assert_eq!((progress.sent, progress.failed, progress.queued, progress.sending), (1000, 0, 0, 0));

    // Firing the same week again changes nothing.
    assert!(!weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap());
    let out = ChildProcess::run_to_end("levelup-scheduler", &["trigger", WEEK], &env.vars);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already exists"));
    // Give the running schedulers several ticks in which they could (wrongly) act.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ses.requests().len(), accepted.len(), "no further SendEmail");
    assert_eq!(weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap().status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_killed_mid_fan_out_is_resumed_without_duplicates() {
    let ses = FakeSes::start().await;
    let mut env = env_with_fake_ses(&ses).await;
    env.set("LEVELUP_FANOUT_PAGE_SIZE", "10").set("LEVELUP_QUEUE_WINDOW", "50");
    let pool = &env.db.pool;
    fixtures::challenges(pool, LEVELS, 2).await;
    fixtures::subscribers(pool, 2000, LEVELS).await;
    let _workers: Vec<_> = (0..2).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect();
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();

    let mut first = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    wait_until("the fan-out to be under way", Duration::from_secs(60), || async {
        let run = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
        (run.resume_after_id > 200 && ses.accepted().len() > 20).then_some(())
    })
    .await;
    first.kill_hard();
    let at_kill = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
    assert_eq!(at_kill.status, RunStatus::FanningOut, "killed in the middle of the fan-out");

    let _second = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let run = wait_for_completion(&env, Duration::from_secs(180)).await;
    assert_eq!(run.total, 2000);
    let accepted = ses.accepted();
    let distinct: std::collections::HashSet<_> = accepted.iter().map(|r| r.to[0].clone()).collect();
    assert_eq!(accepted.len(), 2000, "exactly one request per subscriber");
    assert_eq!(distinct.len(), 2000);
}

/// apalis-redis 1.0.0 fails for good once more than ~8,000 jobs are due at once (its fetch
/// script `unpack`s them all). A run keeps at most the queue window in Redis, so a backlog of any
/// size waits in the Postgres ledger instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_200k_jobs_is_processed_by_a_worker_started_after_the_enqueue() {
    const SUBSCRIBERS: i64 = 200_000;
    let ses = FakeSes::start_light().await;
    let mut env = env_with_fake_ses(&ses).await;
    env.set("LEVELUP_EMAIL_CONCURRENCY", "32").set("LEVELUP_DATABASE_MAX_CONNECTIONS", "20");
    let pool = &env.db.pool;
    fixtures::challenges(pool, LEVELS, 2).await;
    fixtures::subscribers(pool, SUBSCRIBERS, LEVELS).await;
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let config = env.config();
    let mut redis = levelup_common::runtime::redis_conn::connect(&config).await.unwrap();

    // No worker yet: the whole week is enqueued in the ledger, the queue holds its window.
    wait_until("the fan-out to finish and the queue window to fill", Duration::from_secs(300), || {
        let mut redis = redis.clone();
        let config = config.clone();
        async move {
            let run = weekly_runs::get(pool, iso_week(WEEK)).await.unwrap().unwrap();
            let depth = levelup_common::jobs::queue::email_queue_depth(&config, &mut redis).await.unwrap();
            (run.status == RunStatus::Sending && depth.waiting + depth.scheduled >= config.queue_window as u64)
                .then_some(())
        }
    })
    .await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE week = $1 AND state = 'queued'")
        .bind(WEEK)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(queued, SUBSCRIBERS, "every email job is queued before any worker runs");
    let depth = levelup_common::jobs::queue::email_queue_depth(&config, &mut redis).await.unwrap();
    assert!(depth.waiting + depth.scheduled <= 7_000, "Redis holds a bounded window: {depth:?}");

    let started = std::time::Instant::now();
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let run = wait_for_completion(&env, Duration::from_secs(1500)).await;
    let elapsed = started.elapsed();
    let progress = weekly_runs::progress(pool, iso_week(WEEK)).await.unwrap();
    assert_eq!(progress.sent, SUBSCRIBERS);
    assert_eq!(run.enqueued, SUBSCRIBERS);
    assert_eq!(ses.accepted().len() as i64, SUBSCRIBERS, "one SendEmail per subscriber");
    eprintln!(
        "200k backlog drained by one worker in {elapsed:?} ({:.0} emails/s)",
        SUBSCRIBERS as f64 / elapsed.as_secs_f64()
    );
}
