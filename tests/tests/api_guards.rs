//! Cross-cutting API behaviour: Idempotency-Key, problem+json errors naming the field.

use levelup_common::weekly_runs;
use levelup_tests::{ADMIN_KEY, TestEnv, processes::spawn_api};
use serde_json::{Value, json};

#[tokio::test]
async fn idempotency_key_replays_refuses_a_different_body_and_runs_concurrent_duplicates_once() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let post = |key: &str, week: &str| {
        client
            .post(api.url("/v1/admin/runs"))
            .bearer_auth(ADMIN_KEY)
            .header("Idempotency-Key", key)
            .json(&json!({ "week": week }))
            .send()
    };
    let first = post("k-1", "2026-W47").await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body: Value = first.json().await.unwrap();
    let repeat = post("k-1", "2026-W47").await.unwrap();
    assert_eq!(repeat.status(), 201, "the first response, not a fresh 200");
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    assert_eq!(repeat.json::<Value>().await.unwrap(), first_body);
    let different = post("k-1", "2026-W48").await.unwrap();
    assert_eq!(different.status(), 422);
    assert_eq!(different.json::<Value>().await.unwrap()["type"], "https://levelup.dev/problems/idempotency-key-reused");
    assert!(weekly_runs::get(&env.db.pool, "2026-W48").await.unwrap().is_none(), "the refused request did nothing");

    // Ten concurrent duplicates: one executes, the rest replay it or are told to retry.
    let responses = futures::future::join_all((0..10).map(|_| post("k-2", "2026-W49"))).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.as_ref().unwrap().status().as_u16()).collect();
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    let triggered: Vec<String> = sqlx::query_scalar("SELECT triggered_by FROM weekly_runs WHERE week = '2026-W49'")
        .fetch_all(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(triggered.len(), 1);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_bodies_and_missing_credentials_answer_problem_json() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let bad = client
        .post(api.url("/v1/admin/runs"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(r#"{"week": 47}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: Value = bad.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("week"), "names the field: {problem}");

    let anonymous = client.get(api.url("/v1/admin/runs")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    let missing = client.get(api.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["type"], "https://levelup.dev/problems/not-found");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn each_client_is_rate_limited_with_retry_after_and_others_are_not_affected() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "1").set("LEVELUP_API_BURST", "3");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = client.get(api.url("/v1/admin/runs")).bearer_auth(ADMIN_KEY).send().await.unwrap();
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
            assert_eq!(
                response.json::<Value>().await.unwrap()["type"],
                "https://levelup.dev/problems/too-many-requests"
            );
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429], "burst of 3, then limited");
    // Another client (another credential) has its own budget; health checks are never limited.
    let other = client.get(api.url("/v1/admin/runs")).bearer_auth("someone-else-0123456789").send().await.unwrap();
    assert_eq!(other.status(), 401, "reached the handler: not rate limited");
    for _ in 0..10 {
        assert_eq!(client.get(api.url("/healthz")).send().await.unwrap().status(), 200);
    }
    api.stop().await.unwrap();
}
