//! Issue 13, part 5: an operator previews a challenge's email and test-sends it before a run.
//!
//! - The preview is the email a run delivers: same subject, text, HTML and one-click headers as
//!   the message the outbox receives for that subscriber (only the tokens differ, being signed at
//!   another second), and its tokens are the subscriber's own.
//! - A test send arrives through the worker's transport marked as a test (`[TEST]` subject,
//!   `X-LevelUp-Test: 1`), with inert links, and leaves no trace in the deliveries ledger.
//! - Refusals: a bad address 400, unknown challenge or subscriber 404, past the per-operator
//!   limit 429 with `Retry-After` (concurrent requests included).

use std::time::Duration;

use levelup_common::{
    db::weekly_runs,
    domain::{IsoWeek, tokens::Purpose},
    mail::render::INERT_TOKEN,
};
use levelup_tests::{
    AdminClient, TestEnv,
    clients::{EmailPreview, TestSend, expect_json},
    fixtures,
    processes::spawn_api,
    token_signer, wait_until,
};
use serde_json::{Value, json};

/// `token=…` values replaced by `token=TOKEN`: tokens carry the second they were signed at.
fn without_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("token=") {
        out.push_str(&rest[..at + "token=".len()]);
        out.push_str("TOKEN");
        rest = &rest[at + "token=".len()..];
        let end =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every distinct `token=…` value in `text`.
fn tokens(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split("token=")
        .skip(1)
        .map(|rest| {
            let end =
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))).unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

async fn subscriber(env: &TestEnv, email: &str, first_name: &str, level: i16) -> i64 {
    sqlx::query_scalar("INSERT INTO subscribers (email, first_name, level) VALUES ($1, $2, $3) RETURNING id")
        .bind(email)
        .bind(first_name)
        .bind(level)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

async fn first_challenge_of(admin: &AdminClient, level: i16) -> i64 {
    admin.challenges(&[("level", &level.to_string())]).await[0].id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_is_the_email_a_run_delivers_to_that_subscriber() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 2, 2).await;
    // A name the HTML part must escape, to compare escaping too.
    let ada = subscriber(&env, "ada@example.com", "Ada <Lovelace> & co", 2).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    // The challenge the run will pick for her: her level's first.
    let challenge = first_challenge_of(&admin, 2).await;
    let preview = admin.preview(challenge, Some(ada)).await;

    weekly_runs::create(pool, IsoWeek::parse("2026-W48").unwrap(), "test").await.unwrap();
    env.run_due_deliveries("2026-W48").await;
    let delivery = &admin.subscriber_deliveries(ada).await[0];
    assert_eq!((delivery.state.as_str(), delivery.challenge_id), ("sent", Some(challenge)));
    let delivered = outbox.read(&format!("delivery-{}.eml", delivery.id)).expect("the run's message");

    assert_eq!(preview.subject, delivered.subject);
    assert_eq!(preview.subject, "Your weekly challenge: L2-C0");
    assert_eq!(preview.to, "ada@example.com");
    assert_eq!(preview.to, delivered.to);
    assert_eq!(without_tokens(&preview.text), without_tokens(&delivered.text));
    assert_eq!(without_tokens(&preview.html), without_tokens(&delivered.html));
    assert!(preview.html.contains("Hi Ada &#60;Lovelace&#62; &#38; co,"), "{}", preview.html);
    for header in ["List-Unsubscribe", "List-Unsubscribe-Post"] {
        let previewed = preview.header(header).unwrap_or_else(|| panic!("{header} in {:?}", preview.headers));
        let sent = delivered.header(header).unwrap_or_else(|| panic!("{header} in {:?}", delivered.headers));
        assert_eq!(without_tokens(previewed), without_tokens(sent), "{header}");
    }
    assert_eq!(preview.header("X-LevelUp-Test"), None, "a preview is not a test send");

    // The preview's links are hers, as a run signs them: access links and an unsubscribe link.
    let signer = token_signer();
    let now = chrono::Utc::now().timestamp();
    let previewed_tokens = tokens(&preview.text);
    assert_eq!(previewed_tokens.len(), 2, "{previewed_tokens:?}");
    let purposes: Vec<Purpose> = previewed_tokens
        .iter()
        .map(|token| {
            let claims = signer
                .verify(token, Purpose::Access, now)
                .or_else(|_| signer.verify(token, Purpose::Unsubscribe, now))
                .expect("a valid token");
            assert_eq!(claims.subscriber_id, ada);
            claims.purpose
        })
        .collect();
    assert!(purposes.contains(&Purpose::Access) && purposes.contains(&Purpose::Unsubscribe), "{purposes:?}");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_subscriber_the_preview_shows_a_sample_one_with_inert_links() {
    let env = TestEnv::new().await;
    fixtures::challenges(&env.db.pool, 1, 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let challenge = first_challenge_of(&admin, 1).await;
    let no_body: EmailPreview = expect_json(admin.preview_raw(challenge, None).await).await;
    let empty_object: EmailPreview = expect_json(admin.preview_raw(challenge, Some(&json!({}))).await).await;
    for preview in [&no_body, &empty_object] {
        assert_eq!(preview.subscriber_id, None);
        assert_eq!(preview.subject, "Your weekly challenge: L1-C0");
        assert_eq!(preview.to, "subscriber@example.com");
        assert!(preview.text.starts_with("Hi Ada,\n"), "{}", preview.text);
        assert_eq!(tokens(&preview.text), [INERT_TOKEN]);
    }
    // An inert link opens nothing.
    let level = reqwest::get(api.url(&format!("/v1/level?token={INERT_TOKEN}"))).await.unwrap();
    assert_eq!(level.status(), 401);
    // By address, as by id.
    let bo = subscriber(&env, "Bo@Example.com", "Bo", 1).await;
    let by_email: EmailPreview =
        expect_json(admin.preview_raw(challenge, Some(&json!({"email": "bo@example.com"}))).await).await;
    assert_eq!((by_email.subscriber_id, by_email.to.as_str()), (Some(bo), "Bo@Example.com"));
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_arrives_through_the_transport_marked_and_outside_the_ledger() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 1, 1).await;
    let ada = subscriber(&env, "ada@example.com", "Ada", 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let challenge = first_challenge_of(&admin, 1).await;
    let fleet = env.in_process_fleet();

    let accepted = admin.test_send_raw(challenge, &json!({"to": "ops@example.com", "subscriber_id": ada})).await;
    assert_eq!(accepted.status(), 202);
    let queued: TestSend = accepted.json().await.unwrap();
    assert_eq!((queued.state.as_str(), queued.to.as_str()), ("queued", "ops@example.com"));
    assert_eq!(queued.status_url, format!("/v1/admin/test-sends/{}", queued.id));
    let sent =
        wait_until("the test send to be sent", Duration::from_secs(30), || {
            fleet.assert_running();
            let admin = admin.clone();
            let status_url = queued.status_url.clone();
            async move {
                Some(admin.test_send_at(&status_url).await).filter(|t| t.state != "queued" && t.state != "sending")
            }
        })
        .await;
    assert_eq!(sent.state, "sent", "{sent:?}");
    assert!(sent.message_id.as_deref().is_some_and(|id| id.ends_with("@outbox.levelup")), "{sent:?}");

    let message = outbox.read(&format!("test-send-{}.eml", sent.id)).expect("the test send in the outbox");
    let preview = admin.preview(challenge, Some(ada)).await;
    assert_eq!(message.to, "ops@example.com");
    assert_eq!(message.subject, format!("[TEST] {}", preview.subject));
    assert_eq!(message.header("X-LevelUp-Test"), Some("1"), "{:?}", message.headers);
    // Her email, with links that cannot act as her (the test recipient must not unsubscribe her).
    assert!(message.text.starts_with("Hi Ada,\n"), "{}", message.text);
    assert_eq!(without_tokens(&message.text), without_tokens(&preview.text));
    assert_eq!(tokens(&message.text), [INERT_TOKEN]);
    assert_eq!(tokens(message.header("List-Unsubscribe").unwrap()), [INERT_TOKEN]);

    // Nothing of a run: no delivery, no run, and the outbox holds only the test send.
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(pool).await.unwrap();
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM weekly_runs").fetch_one(pool).await.unwrap();
    assert_eq!((deliveries, runs), (0, 0));
    assert!(admin.subscriber_deliveries(ada).await.is_empty());
    assert_eq!(outbox.file_names(), [format!("test-send-{}.eml", sent.id)]);
    fleet.stop().await;
    api.stop().await.unwrap();
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sends_refuse_bad_addresses_unknown_ids_and_more_than_the_limit() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_TEST_SENDS_PER_MINUTE", "2");
    fixtures::challenges(&env.db.pool, 1, 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let challenge = first_challenge_of(&admin, 1).await;
    let to = json!({"to": "ops@example.com"});

    let bad = problem(admin.test_send_raw(challenge, &json!({"to": "not an address"})).await, 400).await;
    assert!(bad["detail"].as_str().unwrap().starts_with("to:"), "{bad}");
    problem(admin.test_send_raw(challenge, &json!({"to": "ops@example.com", "subscriber_id": 999_999})).await, 404)
        .await;
    problem(admin.test_send_raw(999_999, &to).await, 404).await;
    problem(admin.preview_raw(999_999, None).await, 404).await;
    problem(admin.preview_raw(challenge, Some(&json!({"subscriber_id": 999_999}))).await, 404).await;
    problem(admin.preview_raw(challenge, Some(&json!({"email": "nobody@example.com"}))).await, 404).await;
    problem(admin.preview_raw(challenge, Some(&json!({"email": "not an address"}))).await, 400).await;
    problem(admin.get("/v1/admin/test-sends/999999").send().await.unwrap(), 404).await;

    // Refused requests do not count; five at once against a limit of two: two pass.
    let answers = futures::future::join_all((0..5).map(|_| admin.test_send_raw(challenge, &to))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 202, 429, 429, 429]);
    let limited = answers.into_iter().find(|r| r.status() == 429).unwrap();
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let limited = problem(limited, 429).await;
    assert_eq!(limited["type"], "https://levelup.dev/problems/test-send-limit");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM test_sends").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(rows, 2);
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_is_tried_once_a_second_job_does_nothing_and_an_abandoned_one_fails() {
    let (mut env, _outbox) = TestEnv::with_outbox().await;
    env.set("LEVELUP_CLAIM_TIMEOUT_SECS", "11");
    let pool = &env.db.pool;
    fixtures::challenges(pool, 1, 1).await;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let challenge = first_challenge_of(&admin, 1).await;
    let queued: TestSend = expect_json(admin.test_send_raw(challenge, &json!({"to": "ops@example.com"})).await).await;
    // A worker that took it and died mid-send, long ago.
    let claimed = levelup_common::db::test_sends::claim(pool, queued.id, "dead-worker").await.unwrap();
    assert!(claimed.is_some_and(|c| c.to_address == "ops@example.com" && c.subscriber_id.is_none()));
    assert!(
        levelup_common::db::test_sends::claim(pool, queued.id, "another-worker").await.unwrap().is_none(),
        "a second job for it does nothing"
    );
    sqlx::query("UPDATE test_sends SET claimed_at = now() - interval '1 hour' WHERE id = $1")
        .bind(queued.id)
        .execute(pool)
        .await
        .unwrap();
    let fleet = env.in_process_fleet();
    let failed = wait_until("the abandoned test send to fail", Duration::from_secs(30), || {
        fleet.assert_running();
        let admin = admin.clone();
        let status_url = queued.status_url.clone();
        async move { Some(admin.test_send_at(&status_url).await).filter(|t| t.state == "failed") }
    })
    .await;
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("may or may not have gone out")), "{failed:?}");
    assert_eq!(failed.message_id, None);
    fleet.stop().await;
    api.stop().await.unwrap();
}
