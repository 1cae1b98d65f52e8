//! Operator endpoints for weekly runs, and the local outbox transport end to end.

use levelup_tests::iso_week;
use std::time::Duration;

use levelup_common::db::weekly_runs;
use levelup_tests::{
    AdminClient, TestEnv,
    clients::{Job, Run, expect_json},
    fixtures,
    processes::spawn_api,
    wait_until,
};
use serde_json::{Value, json};

#[tokio::test]
async fn triggering_a_run_needs_the_admin_key_and_is_idempotent() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let admin = api.admin();

    let anonymous = reqwest::Client::new().post(api.url("/v1/admin/runs")).json(&json!({"week": "2026-W47"})).send();
    assert_eq!(anonymous.await.unwrap().status(), 401);
    let wrong = AdminClient::with_key(&api.base_url, "not-the-key-0123456789").trigger_run_raw("2026-W47").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        weekly_runs::get(&env.db.pool, iso_week("2026-W47")).await.unwrap().is_none(),
        "nothing created without the key"
    );

    let bad = admin.trigger_run_raw("2026-47").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: Value = bad.json().await.unwrap();
    // Refused by the pattern the document declares for `week`, naming the field.
    assert_eq!(problem["type"], "https://levelup.dev/problems/invalid-request");
    assert!(problem["detail"].as_str().unwrap().contains("week"), "{problem}");
    // A week that matches the pattern but does not exist is refused by the handler.
    let no_such_week: Value = admin.trigger_run_raw("2021-W53").await.json().await.unwrap();
    assert_eq!(no_such_week["type"], "https://levelup.dev/problems/invalid-week", "{no_such_week}");
    assert!(no_such_week["detail"].as_str().unwrap().starts_with("week:"), "{no_such_week}");

    let too_large = admin.trigger_run_with_raw(&json!({"week": "x".repeat(100 * 1024)})).await;
    assert_eq!(too_large.status(), 413, "request size limit");

    let created = admin.trigger_run_raw("2026-W47").await;
    assert_eq!(created.status(), 201);
    let again = admin.trigger_run_raw("2026-W47").await;
    assert_eq!(again.status(), 200, "one run per ISO week");
    let run: Run = expect_json(again).await;
    assert_eq!(run.week, "2026-W47");
    assert_eq!(run.status, "fanning_out");

    let fetched = admin.run_raw("2026-W47").await;
    assert_eq!(fetched.status(), 200);
    let fetched: Run = expect_json(fetched).await;
    assert_eq!(fetched.triggered_by, "admin");
    let missing = admin.run_raw("2026-W01").await;
    assert_eq!(missing.status(), 404);
    let listed = admin.runs_raw().await;
    assert_eq!(listed.status(), 200);
    let listed: Vec<Run> = expect_json(listed).await;
    assert_eq!(listed.len(), 1);
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ses_a_triggered_run_leaves_readable_eml_files_in_the_outbox() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 2, 1).await;
    fixtures::subscribers(pool, 5, 2).await;
    sqlx::query("INSERT INTO subscribers (email) VALUES ('newbie@example.com')").execute(pool).await.unwrap();
    let api = spawn_api(env.config());
    let response = api.admin().trigger_run_raw("2026-W48").await;
    assert_eq!(response.status(), 201);
    env.run_due_deliveries("2026-W48").await;
    let mut files: Vec<_> = std::fs::read_dir(&outbox.path).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 6, "one .eml per subscriber: {files:?}");
    let all: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(files.iter().all(|f| f.extension().is_some_and(|e| e == "eml")));
    let challenge = all.iter().find(|m| m.contains("To: <user1@example.com>")).expect("user1's message");
    assert!(challenge.contains("Subject: Your weekly challenge: L2-C0"), "{challenge}");
    assert!(challenge.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(challenge.contains("text/plain") && challenge.contains("text/html"));
    let invite = all.iter().find(|m| m.contains("newbie@example.com")).expect("newbie's message");
    assert!(invite.contains("questionnaire"), "no level yet: questionnaire invitation");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_page_needs_the_key_and_shows_runs_and_the_queue() {
    let env = TestEnv::new().await;
    levelup_common::db::weekly_runs::create(
        &env.db.pool,
        levelup_common::domain::IsoWeek::parse("2026-W47").unwrap(),
        "test",
    )
    .await
    .unwrap();
    let api = spawn_api(env.config());
    let anonymous = reqwest::Client::new().get(api.url("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let wrong = AdminClient::with_key(&api.base_url, "wrong").admin_page_raw().await;
    assert_eq!(wrong.status(), 401);
    let page = api.admin().admin_page_raw().await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("2026-W47") && html.contains("Email queue") && html.contains("Dead letters"), "{html}");
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_send_one_subscribers_email_for_a_week_and_follow_the_job() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 1, 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let late: i64 =
        sqlx::query_scalar("INSERT INTO subscribers (email, level) VALUES ('late@example.com', 1) RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    let no_run = admin.send_email_job_raw(late, "2026-W47").await;
    assert_eq!(no_run.status(), 409, "the week must have a run");
    let bad_kind = admin.create_job_raw(&json!({"kind": "dance"})).await;
    assert_eq!(bad_kind.status(), 400);

    // The week's run already completed (nobody was subscribed then); the late subscriber is added.
    sqlx::query("INSERT INTO weekly_runs (week, status, finished_at) VALUES ('2026-W47', 'completed', now())")
        .execute(pool)
        .await
        .unwrap();
    let fleet = env.in_process_fleet();
    let created = admin.send_email_job_raw(late, "2026-W47").await;
    assert_eq!(created.status(), 201);
    let job: Job = expect_json(created).await;
    let again = admin.send_email_job_raw(late, "2026-W47").await;
    assert_eq!(again.status(), 200, "one delivery per subscriber and week");
    let done = wait_until("the job to be sent", Duration::from_secs(60), || async {
        fleet.assert_running();
        Some(admin.job(job.id).await).filter(|job| job.state == "sent")
    })
    .await;
    assert!(done.message_id.unwrap().ends_with("@outbox.levelup"));
    assert_eq!(std::fs::read_dir(&outbox.path).unwrap().count(), 1);
    fleet.stop().await;
    api.stop().await.unwrap();
}
