//! Cross-cutting API behaviour: Idempotency-Key, problem+json errors naming the field, rate
//! limiting and load shedding.

use std::{net::SocketAddr, time::Duration};

use levelup_common::weekly_runs;
use levelup_tests::{ADMIN_KEY, TestEnv, processes::spawn_api, wait_until};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

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

/// A client uploading its request body slowly: the request line, headers and the first half of
/// the body are sent; the server holds the request (and its in-flight slot) until the rest comes.
struct SlowUpload {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowUpload {
    async fn start(address: SocketAddr, path: &str, body: &str) -> Self {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (first, rest) = body.as_bytes().split_at(body.len() / 2);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();
        Self { stream, rest: rest.to_vec() }
    }

    /// Sends the rest of the body and returns the response's status code.
    async fn finish(mut self) -> u16 {
        self.stream.write_all(&self.rest).await.unwrap();
        let mut response = Vec::new();
        self.stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        let status = response.split_whitespace().nth(1).unwrap_or_default();
        status.parse().unwrap_or_else(|_| panic!("no status line in {response:?}"))
    }
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_shed_with_503_and_retry_after_then_service_recovers() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_MAX_IN_FLIGHT", "2")
        .set("LEVELUP_API_RATE_PER_SECOND", "100000")
        .set("LEVELUP_API_BURST", "100000");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let list_runs = || client.get(api.url("/v1/admin/runs")).bearer_auth(ADMIN_KEY).send();

    // Two slow uploads take both in-flight slots.
    let first = SlowUpload::start(api.address, "/v1/admin/runs", r#"{"week": "2026-W47"}"#).await;
    let second = SlowUpload::start(api.address, "/v1/admin/runs", r#"{"week": "2026-W48"}"#).await;
    let shed = wait_until("the slow uploads to hold every in-flight slot", Duration::from_secs(10), || async {
        let response = list_runs().await.unwrap();
        (response.status() == 503).then_some(response)
    })
    .await;
    assert_eq!(shed.headers()["retry-after"], "1");

    // A spike beyond the limit is refused at once, each with a problem and Retry-After.
    let spike = futures::future::join_all((0..8).map(|_| list_runs())).await;
    for response in spike {
        let response = response.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.json::<Value>().await.unwrap()["type"], "https://levelup.dev/problems/unavailable");
    }
    // Probes are never shed: an orchestrator must not restart a busy replica.
    assert_eq!(client.get(api.url("/healthz")).send().await.unwrap().status(), 200);

    // The requests that held the slots complete normally, and then the service is back.
    assert_eq!(first.finish().await, 201);
    assert_eq!(second.finish().await, 201);
    assert!(weekly_runs::get(&env.db.pool, "2026-W48").await.unwrap().is_some(), "the held request took effect");
    let after = list_runs().await.unwrap();
    assert_eq!(after.status(), 200, "slots are released when a response is sent");
    assert_eq!(after.json::<Vec<Value>>().await.unwrap().len(), 2);
    api.stop().await.unwrap();
}
