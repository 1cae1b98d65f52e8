//! Cross-cutting API behaviour: Idempotency-Key, problem+json errors naming the field, rate
//! limiting and load shedding.

use levelup_tests::iso_week;
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use levelup_common::db::weekly_runs;
use levelup_tests::{ADMIN_KEY, AdminClient, TestEnv, processes::spawn_api, wait_until};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

#[tokio::test]
async fn idempotency_key_replays_refuses_a_different_body_and_runs_concurrent_duplicates_once() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let post = |key: &str, week: &str| {
        admin.post("/v1/admin/runs").header("Idempotency-Key", key).json(&json!({ "week": week })).send()
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
    assert!(
        weekly_runs::get(&env.db.pool, iso_week("2026-W48")).await.unwrap().is_none(),
        "the refused request did nothing"
    );

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
    let bad = api
        .admin()
        .post("/v1/admin/runs")
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
    let admin = api.admin();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = admin.runs_raw().await;
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
    // Another client (another address) has its own budget; health checks are never limited.
    let elsewhere = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 4, 1])).build().unwrap();
    let other = elsewhere.get(api.url("/v1/admin/runs")).bearer_auth("someone-else-0123456789").send().await.unwrap();
    assert_eq!(other.status(), 401, "reached the handler: not rate limited");
    for _ in 0..10 {
        assert_eq!(client.get(api.url("/healthz")).send().await.unwrap().status(), 200);
    }
    api.stop().await.unwrap();
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_shed_with_503_and_retry_after_then_service_recovers() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_MAX_IN_FLIGHT", "2")
        .set("LEVELUP_API_RATE_PER_SECOND", "100000")
        .set("LEVELUP_API_BURST", "100000");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let admin = api.admin();
    let list_challenges = || admin.get("/v1/admin/challenges").send();
    let trigger = |week: &'static str| {
        let admin = admin.clone();
        tokio::spawn(async move { admin.trigger_run_raw(week).await.status().as_u16() })
    };

    // Two handlers stuck on the database (the table they write is locked) hold both slots.
    let mut lock = env.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE weekly_runs IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let (first, second) = (trigger("2026-W47"), trigger("2026-W48"));
    let shed = wait_until("two stuck handlers to hold every in-flight slot", Duration::from_secs(10), || async {
        let response = list_challenges().await.unwrap();
        (response.status() == 503).then_some(response)
    })
    .await;
    assert_eq!(shed.headers()["retry-after"], "1");

    // A spike beyond the limit is refused at once, each with a problem and Retry-After.
    let spike = futures::future::join_all((0..8).map(|_| list_challenges())).await;
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
    lock.rollback().await.unwrap();
    assert_eq!(first.await.unwrap(), 201);
    assert_eq!(second.await.unwrap(), 201);
    let after = list_challenges().await.unwrap();
    assert_eq!(after.status(), 200, "slots are released when a response is sent");
    api.stop().await.unwrap();
}

/// A raw connection from `from` (any 127.x.y.z address: each is another client).
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (or `deadline`); returns what it sent, or None
/// if it was still open at the deadline.
async fn read_until_closed(mut stream: TcpStream, deadline: Duration) -> Option<String> {
    let mut received = Vec::new();
    match tokio::time::timeout(deadline, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

/// 256 clients that send headers announcing a 5,000-byte body and then stall (a slowloris on
/// the body) hold connections, not handler slots: with default settings an ordinary request is
/// still answered at once. The server closes each stalled connection within its documented
/// timeouts (10 s for the body, 10 s for headers), answering 408 to the uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_hold_no_handler_slot_and_are_closed_within_the_timeouts() {
    const BODY_TIMEOUT: Duration = Duration::from_secs(10);
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    let env = TestEnv::new().await;
    let (_, token) = env.subscriber_with_access_token("ada@example.com", 1).await;
    let api = spawn_api(env.config());
    let ada = api.subscriber(&token);
    assert_eq!(ada.level_raw().await.status(), 200);

    // 256 stalled uploads from 8 addresses (32 each: under the per-client connection bound and the
    // per-address rate limit burst, so every one of them reaches the body read).
    let mut stalled = Vec::new();
    for n in 0..256u32 {
        let from = IpAddr::from([127, 0, 1, 1 + (n % 8) as u8]);
        let mut stream = connect_from(from, api.address).await;
        let head = format!(
            "POST /v1/admin/runs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 5000\r\n\r\n{{\"wee",
            api.address
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // One connection with half a request line, one that never sends a byte.
    let mut half_headers = connect_from(IpAddr::from([127, 0, 2, 1]), api.address).await;
    half_headers.write_all(b"GET /v1/level HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let silent = connect_from(IpAddr::from([127, 0, 2, 2]), api.address).await;
    let started = Instant::now();

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let asked = Instant::now();
        let response = ada.level_raw().await;
        let took = asked.elapsed();
        assert_eq!(response.status(), 200, "an ordinary request is served while 256 uploads stall");
        assert!(took < Duration::from_secs(1), "answered in {took:?}");
        slowest = slowest.max(took);
    }

    let slack = Duration::from_secs(15);
    let uploads =
        futures::future::join_all(stalled.into_iter().map(|s| read_until_closed(s, BODY_TIMEOUT + slack))).await;
    for answer in &uploads {
        let answer = answer.as_deref().expect("the server closed the stalled upload");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let closed_after = started.elapsed();
    println!(
        "GET /v1/level while 256 uploads stalled: slowest of 5 took {slowest:?}; all 256 closed with 408 after {closed_after:?}"
    );
    assert!(closed_after >= BODY_TIMEOUT - Duration::from_secs(1), "not before the timeout: {closed_after:?}");
    assert!(read_until_closed(half_headers, HEADER_TIMEOUT + slack).await.is_some(), "incomplete headers time out");
    assert!(read_until_closed(silent, HEADER_TIMEOUT + slack).await.is_some(), "a silent connection times out");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn connections_per_client_address_are_bounded() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_MAX_CONNECTIONS_PER_CLIENT", "4");
    let api = spawn_api(env.config());
    let greedy = IpAddr::from([127, 0, 3, 1]);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(greedy, api.address).await;
        // A complete request on a kept-alive connection: the server answers and keeps it open.
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let extra = connect_from(greedy, api.address).await;
    let refused = read_until_closed(extra, Duration::from_secs(5)).await;
    assert_eq!(refused.as_deref(), Some(""), "the fifth connection is closed without an answer");
    // Another client is served; and once the greedy one lets go of a connection, so is it again.
    let other = reqwest::Client::new().get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(other.status(), 200);
    drop(held.pop());
    wait_until("a connection slot to be given back", Duration::from_secs(10), || async {
        let mut stream = connect_from(greedy, api.address).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let answer = read_until_closed(stream, Duration::from_secs(5)).await?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    api.stop().await.unwrap();
}

/// The rate limit is keyed by the verified credential: a fresh junk token per request is the same
/// client (its address), and does not eat into a verified client's budget.
#[tokio::test]
async fn junk_credentials_do_not_buy_fresh_rate_limit_budgets() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "1").set("LEVELUP_API_BURST", "3");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for n in 0..4 {
        let bearer = client.get(api.url("/v1/admin/runs")).bearer_auth(format!("junk-key-{n}-0123456789")).send();
        statuses.push(bearer.await.unwrap().status().as_u16());
        let token = client.get(api.url("/v1/level")).query(&[("token", format!("v1.t1.junk{n}.sig"))]).send();
        statuses.push(token.await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429, 429, 429, 429, 429], "one budget for the address");
    // The admin key, verified, is its own client.
    assert_eq!(api.admin().runs_raw().await.status(), 200);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn webhooks_are_rate_limited_by_address() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_WEBHOOK_RATE_PER_SECOND", "1").set("LEVELUP_WEBHOOK_BURST", "2");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client.post(api.url("/v1/webhooks/shopify")).body("{}").send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![503, 503, 429], "unconfigured (503) twice, then limited");
    api.stop().await.unwrap();
}

/// Authentication comes before the Idempotency-Key: anonymous or forged requests get their 401
/// and write nothing, even with a key a verified client has used.
#[tokio::test]
async fn idempotency_keys_are_only_stored_for_verified_clients() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "100000").set("LEVELUP_API_BURST", "100000");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    for n in 0..50 {
        let forged = client
            .post(api.url("/v1/questionnaire"))
            .query(&[("token", format!("v1.t1.junk{n}.sig"))])
            .header("Idempotency-Key", format!("junk-{n}"))
            .json(&json!({"answers": [true, true, true, true, true, true]}))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401);
    }
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency_keys").fetch_one(&env.db.pool).await.unwrap()
    };
    assert_eq!(stored().await, 0, "no row for an unverified request");

    let trigger = |auth: Option<&str>| {
        let request = match auth {
            Some(key) => AdminClient::with_key(&api.base_url, key).post("/v1/admin/runs"),
            None => client.post(api.url("/v1/admin/runs")),
        };
        request.header("Idempotency-Key", "k-1").json(&json!({"week": "2026-W47"})).send()
    };
    assert_eq!(trigger(Some(ADMIN_KEY)).await.unwrap().status(), 201);
    assert_eq!(stored().await, 1);
    let anonymous = trigger(None).await.unwrap();
    assert_eq!(anonymous.status(), 401, "not 422 or a replay: the key is not even looked at");
    assert!(anonymous.headers().get("idempotent-replayed").is_none());
    assert_eq!(trigger(Some("wrong-key-0123456789")).await.unwrap().status(), 401);
    assert_eq!(trigger(Some(ADMIN_KEY)).await.unwrap().headers()["idempotent-replayed"], "true");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_like_an_overlong_one() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let post = |key: reqwest::header::HeaderValue| {
        admin.post("/v1/admin/runs").header("Idempotency-Key", key).json(&json!({"week": "2026-W47"})).send()
    };
    for key in [
        reqwest::header::HeaderValue::from_bytes("clé-ключ".as_bytes()).unwrap(),
        reqwest::header::HeaderValue::from_str(&"k".repeat(256)).unwrap(),
    ] {
        let response = post(key).await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.json::<Value>().await.unwrap()["type"],
            "https://levelup.dev/problems/invalid-idempotency-key"
        );
    }
    assert!(weekly_runs::get(&env.db.pool, iso_week("2026-W47")).await.unwrap().is_none(), "refused before running");
    api.stop().await.unwrap();
}

/// `{"title": 12345, "body": true}` is not a challenge: fields declared as strings take strings.
#[tokio::test]
async fn json_fields_declared_as_strings_accept_only_strings() {
    let env = TestEnv::new().await;
    let (id, token) = env.subscriber_with_access_token("ada@example.com", 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let cases = [
        (admin.create_challenge_raw(&json!({"level": 1, "title": 12345, "body": "b"})).await, "title"),
        (admin.create_challenge_raw(&json!({"level": 1, "title": "t", "body": true})).await, "body"),
        (admin.update_challenge_raw(1, &json!({"title": 1.5, "body": "b", "archived": false})).await, "title"),
        (admin.trigger_run_with_raw(&json!({"week": 202647})).await, "week"),
        (admin.create_job_raw(&json!({"kind": "send_email", "subscriber_id": id, "week": false})).await, "week"),
        (
            api.subscriber(&token)
                .request(reqwest::Method::POST, "/v1/challenges/1/submissions")
                .json(&json!({"answer": 42, "passed": true}))
                .send()
                .await
                .unwrap(),
            "answer",
        ),
    ];
    for (response, field) in cases {
        let url = response.url().path().to_owned();
        assert_eq!(response.status(), 400, "{url}: {field}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["detail"], format!("{field}: must be a JSON string"), "{problem}");
    }
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(challenges, 0);
    api.stop().await.unwrap();
}
