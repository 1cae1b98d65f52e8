//! Sending like a professional sender (issue 13), end to end with worker and scheduler processes,
//! the real aws-sdk-sesv2 client against the fake SES, and SES notifications signed like SNS's:
//! a run whose bounces cross the limit pauses itself and resumes by an operator's call with
//! nothing sent twice; mail past its send deadline is skipped as `expired`, never sent late.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use levelup_common::{db::weekly_runs, domain::IsoWeek};
use levelup_tests::{
    TestEnv,
    fake_ses::FakeSes,
    fake_sns::{OUR_TOPIC, fake_sns, permanent_bounce},
    fixtures,
    processes::{ChildProcess, spawn_api},
    wait_until,
};
use sqlx::PgPool;

const WEEK: &str = "2026-W47";

async fn sent(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE week = $1 AND state = 'sent'")
        .bind(WEEK)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn per_recipient(ses: &FakeSes) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in ses.accepted() {
        *counts.entry(request.to[0].clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_bounces_cross_the_limit_pauses_itself_and_resumes_with_nothing_sent_twice() {
    const SUBSCRIBERS: i64 = 900;
    const WORKERS: i64 = 2;
    const CONCURRENCY: i64 = 4;
    let ses = FakeSes::start().await;
    let (sns, _) = fake_sns();
    let mut env = TestEnv::with_fake_ses(&ses).await;
    // Slow enough that the run is still sending when the bounces arrive, after 500 sends.
    env.set("LEVELUP_SES_MAX_SEND_RATE", "30")
        .set("LEVELUP_EMAIL_CONCURRENCY", CONCURRENCY.to_string())
        .set("LEVELUP_SNS_TRUSTED_CERT_PREFIXES", sns.clone())
        .set("LEVELUP_SNS_TOPIC_ARNS", OUR_TOPIC);
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 3).await;
    fixtures::subscribers(pool, SUBSCRIBERS, 3).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let _workers: Vec<_> = (0..WORKERS).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect();
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    admin.trigger_run(WEEK).await;

    // SES reports permanent bounces for 25 of the first 500 messages: 5% of what was sent then,
    // and still above 2% of the whole run (900).
    wait_until("500 sends", Duration::from_secs(120), || async { (sent(pool).await >= 500).then_some(()) }).await;
    let bounced: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.message_id, s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE d.week = $1 AND d.state = 'sent' ORDER BY d.sent_at LIMIT 25",
    )
    .bind(WEEK)
    .fetch_all(pool)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    for (n, (message_id, email)) in bounced.iter().enumerate() {
        let notification = permanent_bounce(&sns, &format!("sns-{n}"), message_id, email);
        let response = client
            .post(api.url("/v1/webhooks/ses"))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(notification.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // The guard pauses the run, saying why, and the run stops sending: at most the sends already
    // in flight when it paused finish after it.
    let run = wait_until("the run paused by the reputation guard", Duration::from_secs(30), || async {
        Some(admin.run(WEEK).await).filter(|run| run.paused.is_some())
    })
    .await;
    let pause = run.paused.clone().unwrap();
    assert_eq!(pause.by, "reputation-guard");
    assert!(
        pause.reason.contains("permanent bounces") && pause.reason.contains("LEVELUP_PAUSE_BOUNCE_RATE"),
        "{pause:?}"
    );
    assert_eq!(run.bounces, 25);
    assert_ne!(run.status, "completed", "paused before the run could finish");
    // Workers give back what they pick up of a paused run: the window drains without sending.
    wait_until("the paused run's queue window drained", Duration::from_secs(60), || async {
        (weekly_runs::outstanding(pool, IsoWeek::parse(WEEK).unwrap()).await.unwrap() == 0).then_some(())
    })
    .await;
    let after_pause: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE week = $1 AND state = 'sent' AND sent_at > $2")
            .bind(WEEK)
            .bind(pause.at)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(after_pause <= WORKERS * CONCURRENCY, "{after_pause} sends after the pause: more than were in flight");
    let sent_while_paused = sent(pool).await;
    assert!(sent_while_paused < SUBSCRIBERS);
    let paused_run = admin.run(WEEK).await;
    assert_eq!(paused_run.queued + paused_run.sent + paused_run.skipped, SUBSCRIBERS, "nothing lost: {paused_run:?}");
    assert_eq!(ses.accepted().len() as i64, sent_while_paused, "nothing sent since the window drained");

    // The operator resumes it: the rest goes out, each subscriber mailed exactly once.
    let resumed = admin.resume_run(WEEK, "alice", "bounces were an old import; list cleaned").await;
    assert!(resumed.paused.is_none());
    let run = env.run_completed(WEEK, Duration::from_secs(120)).await;
    assert_eq!(run.total, SUBSCRIBERS);
    let mailed = per_recipient(&ses);
    assert_eq!(mailed.len() as i64, SUBSCRIBERS, "every subscriber mailed");
    assert!(mailed.values().all(|&n| n == 1), "nobody mailed twice");
    let view = admin.run(WEEK).await;
    let trail: Vec<(&str, &str)> = view.events.iter().map(|e| (e.action.as_str(), e.by.as_str())).collect();
    assert_eq!(trail, vec![("paused", "reputation-guard"), ("resumed", "alice")]);
    assert_eq!(view.events[1].reason, "bounces were an old import; list cleaned");

    // Actions that do not apply say so.
    assert_eq!(admin.run_action_raw(WEEK, "pause", "bob", "too late").await.status(), 409, "completed");
    assert_eq!(admin.run_action_raw(WEEK, "resume", "bob", "again").await.status(), 409, "not paused");
    assert_eq!(admin.run_action_raw("2026-W01", "pause", "bob", "which?").await.status(), 404);
    assert_eq!(admin.run_action_raw(WEEK, "pause", "", "nobody").await.status(), 400, "an operator is named");
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_pause_holds_the_run_and_its_resume_sends_the_rest_once() {
    const SUBSCRIBERS: i64 = 300;
    let ses = FakeSes::start().await;
    let mut env = TestEnv::with_fake_ses(&ses).await;
    env.set("LEVELUP_SES_MAX_SEND_RATE", "40");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 2, 2).await;
    fixtures::subscribers(pool, SUBSCRIBERS, 2).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    admin.trigger_run(WEEK).await;
    // Paused before anything is sent: the workers start with nothing to send.
    let paused = admin.pause_run(WEEK, "carol", "checking the template").await;
    assert_eq!(paused.paused.as_ref().map(|p| p.by.as_str()), Some("carol"));
    let again = admin.pause_run(WEEK, "dave", "me too").await;
    assert_eq!(again.paused.unwrap().by, "carol", "pausing a paused run changes nothing");
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    // The scheduler takes the run (its lease) and leaves it alone.
    wait_until("the scheduler to hold the paused run", Duration::from_secs(30), || async {
        weekly_runs::get(pool, IsoWeek::parse(WEEK).unwrap()).await.unwrap().and_then(|r| r.lease_owner)
    })
    .await;
    let run = admin.run(WEEK).await;
    assert_eq!((run.sent, run.enqueued, ses.accepted().len()), (0, 0, 0), "nothing fed or sent while paused");

    admin.resume_run(WEEK, "carol", "template fixed").await;
    env.run_completed(WEEK, Duration::from_secs(120)).await;
    let mailed = per_recipient(&ses);
    assert_eq!(mailed.len() as i64, SUBSCRIBERS);
    assert!(mailed.values().all(|&n| n == 1));
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_past_its_send_deadline_is_skipped_as_expired_and_never_sent_late() {
    const SUBSCRIBERS: i64 = 60;
    let ses = FakeSes::start().await;
    let env = TestEnv::with_fake_ses(&ses).await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 2, 2).await;
    fixtures::subscribers(pool, SUBSCRIBERS, 2).await;
    // The schedule fired 25 hours ago and no scheduler ran since (an outage, a restore): with the
    // default 24-hour deadline, this week's email is stale.
    let week = IsoWeek::parse(WEEK).unwrap();
    weekly_runs::create_due(pool, week, "schedule", Utc::now() - chrono::Duration::hours(25)).await.unwrap();
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let run = env.run_completed(WEEK, Duration::from_secs(120)).await;
    assert_eq!(run.total, SUBSCRIBERS);
    assert!(ses.requests().is_empty(), "nothing sent late");
    let api = spawn_api(env.config());
    let admin = api.admin();
    let view = admin.run(WEEK).await;
    assert_eq!(view.skip_reasons, [("expired".to_owned(), SUBSCRIBERS)].into_iter().collect());
    assert_eq!((view.sent, view.skipped), (0, SUBSCRIBERS));

    // Someone who subscribes now and is added to the week is due now: they get it.
    let id: i64 =
        sqlx::query_scalar("INSERT INTO subscribers (email, level) VALUES ('late@example.com', 1) RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    weekly_runs::add_subscriber(pool, week, id).await.unwrap();
    env.run_completed(WEEK, Duration::from_secs(120)).await;
    let mailed: Vec<String> = ses.accepted().iter().map(|r| r.to[0].clone()).collect();
    assert_eq!(mailed, vec!["late@example.com".to_owned()]);
    api.stop().await.unwrap();
}
