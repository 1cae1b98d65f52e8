//! Operator endpoints for weekly runs, and the local outbox transport end to end.

use std::time::Duration;

use levelup_common::weekly_runs;
use levelup_tests::{
    ADMIN_KEY, TestEnv, fixtures,
    processes::{ChildProcess, spawn_api},
    wait_until,
};
use serde_json::{Value, json};

#[tokio::test]
async fn triggering_a_run_needs_the_admin_key_and_is_idempotent() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let url = api.url("/v1/admin/runs");

    let anonymous = client.post(&url).json(&json!({"week": "2026-W47"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = client
        .post(&url)
        .bearer_auth("not-the-key-0123456789")
        .json(&json!({"week": "2026-W47"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(weekly_runs::get(&env.db.pool, "2026-W47").await.unwrap().is_none(), "nothing created without the key");

    let bad = client.post(&url).bearer_auth(ADMIN_KEY).json(&json!({"week": "2026-47"})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: Value = bad.json().await.unwrap();
    // Refused by the pattern the document declares for `week`, naming the field.
    assert_eq!(problem["type"], "https://levelup.dev/problems/invalid-request");
    assert!(problem["detail"].as_str().unwrap().contains("week"), "{problem}");
    // A week that matches the pattern but does not exist is refused by the handler.
    let no_such_week: Value = client
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"week": "2021-W53"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(no_such_week["type"], "https://levelup.dev/problems/invalid-week", "{no_such_week}");
    assert!(no_such_week["detail"].as_str().unwrap().starts_with("week:"), "{no_such_week}");

    let huge = json!({"week": "x".repeat(100 * 1024)});
    let too_large = client.post(&url).bearer_auth(ADMIN_KEY).json(&huge).send().await.unwrap();
    assert_eq!(too_large.status(), 413, "request size limit");

    let created = client.post(&url).bearer_auth(ADMIN_KEY).json(&json!({"week": "2026-W47"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let again = client.post(&url).bearer_auth(ADMIN_KEY).json(&json!({"week": "2026-W47"})).send().await.unwrap();
    assert_eq!(again.status(), 200, "one run per ISO week");
    let run: Value = again.json().await.unwrap();
    assert_eq!(run["week"], "2026-W47");
    assert_eq!(run["status"], "fanning_out");

    let fetched = client.get(api.url("/v1/admin/runs/2026-W47")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    let fetched: Value = serde_json::from_str(&fetched.text().await.unwrap()).unwrap();
    assert_eq!(fetched["triggered_by"], "admin");
    let missing = client.get(api.url("/v1/admin/runs/2026-W01")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let listed = client.get(&url).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = serde_json::from_str(&listed.text().await.unwrap()).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ses_a_triggered_run_leaves_readable_eml_files_in_the_outbox() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 2, 1).await;
    fixtures::subscribers(pool, 5, 2).await;
    sqlx::query("INSERT INTO subscribers (email) VALUES ('newbie@example.com')").execute(pool).await.unwrap();
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let api = spawn_api(env.config());
    let response = reqwest::Client::new()
        .post(api.url("/v1/admin/runs"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"week": "2026-W48"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    wait_until("the run to complete", Duration::from_secs(60), || async {
        weekly_runs::get(pool, "2026-W48").await.unwrap().filter(|r| r.status == "completed")
    })
    .await;
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
    levelup_common::weekly_runs::create(
        &env.db.pool,
        levelup_common::domain::IsoWeek::parse("2026-W47").unwrap(),
        "test",
    )
    .await
    .unwrap();
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let anonymous = client.get(api.url("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let wrong = client.get(api.url("/admin")).basic_auth("ops", Some("wrong")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let page = client.get(api.url("/admin")).basic_auth("ops", Some(ADMIN_KEY)).send().await.unwrap();
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
    let client = reqwest::Client::new();
    let jobs = api.url("/v1/admin/jobs");
    let late: i64 =
        sqlx::query_scalar("INSERT INTO subscribers (email, level) VALUES ('late@example.com', 1) RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    let body = json!({"kind": "send_email", "subscriber_id": late, "week": "2026-W47"});
    let no_run = client.post(&jobs).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(no_run.status(), 409, "the week must have a run");
    let bad_kind = client.post(&jobs).bearer_auth(ADMIN_KEY).json(&json!({"kind": "dance"})).send().await.unwrap();
    assert_eq!(bad_kind.status(), 400);

    // The week's run already completed (nobody was subscribed then); the late subscriber is added.
    sqlx::query("INSERT INTO weekly_runs (week, status, finished_at) VALUES ('2026-W47', 'completed', now())")
        .execute(pool)
        .await
        .unwrap();
    let _worker = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let created = client.post(&jobs).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let job: Value = created.json().await.unwrap();
    let again = client.post(&jobs).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(again.status(), 200, "one delivery per subscriber and week");
    let job_url = api.url(&format!("/v1/admin/jobs/{}", job["id"]));
    let done: Value = wait_until("the job to be sent", Duration::from_secs(60), || async {
        let job: Value = client.get(&job_url).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
        (job["state"] == "sent").then_some(job)
    })
    .await;
    assert!(done["message_id"].as_str().unwrap().ends_with("@outbox.levelup"));
    assert_eq!(std::fs::read_dir(&outbox.path).unwrap().count(), 1);
    api.stop().await.unwrap();
}
