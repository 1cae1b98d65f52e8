//! The subscriber's side: signed links, challenges, submissions and the level-up rule, the
//! questionnaire, level and progress, unsubscribe (JSON API and pages).

use levelup_common::tokens::Purpose;
use levelup_tests::{TestEnv, fixtures, processes::spawn_api, token_signer as signer};
use serde_json::{Value, json};
use sqlx::PgPool;

fn token(subscriber: i64, purpose: Purpose) -> String {
    signer().issue(subscriber, purpose, chrono::Utc::now().timestamp() + 3600).unwrap()
}

/// A level-1 subscriber who was sent every level-1 challenge; returns (subscriber id, challenge ids).
async fn subscriber_with_sent_challenges(pool: &PgPool) -> (i64, Vec<i64>) {
    fixtures::challenges(pool, 2, 3).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO subscribers (email, first_name, level) VALUES ('ada@example.com', 'Ada', 1) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let challenges: Vec<i64> = sqlx::query_scalar("SELECT id FROM challenges WHERE level = 1 ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap();
    for (n, challenge) in challenges.iter().enumerate() {
        let week = format!("2026-W{:02}", 40 + n);
        sqlx::query("INSERT INTO weekly_runs (week, status) VALUES ($1, 'completed')")
            .bind(&week)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO deliveries (subscriber_id, week, kind, challenge_id, state, message_id) VALUES ($1, $2, 'challenge', $3, 'sent', 'm')",
        )
        .bind(id)
        .bind(&week)
        .bind(challenge)
        .execute(pool)
        .await
        .unwrap();
    }
    (id, challenges)
}

#[tokio::test]
async fn missing_forged_expired_or_wrong_purpose_tokens_are_refused() {
    let env = TestEnv::new().await;
    let (id, challenges) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let expired = signer().issue(id, Purpose::Access, chrono::Utc::now().timestamp() - 1).unwrap();
    // Change the first character of the signature (always a data-carrying character).
    let valid = token(id, Purpose::Access);
    let signature_start = valid.rfind('.').unwrap() + 1;
    let replacement = if valid.as_bytes()[signature_start] == b'A' { "B" } else { "A" };
    let mut forged = valid.clone();
    forged.replace_range(signature_start..signature_start + 1, replacement);
    assert_ne!(forged, valid);
    let unsub = token(id, Purpose::Unsubscribe);
    let url = api.url(&format!("/v1/challenges/{}/submissions", challenges[0]));
    for (token, why) in
        [(None, "missing"), (Some(expired), "expired"), (Some(forged), "forged"), (Some(unsub), "wrong purpose")]
    {
        let mut request = client.post(&url).json(&json!({"answer": "x", "passed": true}));
        if let Some(token) = &token {
            request = request.query(&[("token", token)]);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{why}");
        if token.is_some() {
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "https://levelup.dev/problems/invalid-token", "{why}");
        }
    }
    let submissions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM submissions").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(submissions, 0, "nothing recorded");
    // A bare user id is not a credential: without a token the request is unauthenticated.
    let bare = client.get(api.url(&format!("/v1/level?user_id={id}"))).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["content-type"], "application/problem+json");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn passing_enough_challenges_moves_a_subscriber_up_once() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_PROMOTION_PASSES", "2");
    let (id, challenges) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let access = token(id, Purpose::Access);
    let submit = |challenge: i64, passed: bool| {
        client
            .post(api.url(&format!("/v1/challenges/{challenge}/submissions")))
            .query(&[("token", &access)])
            .json(&json!({"answer": "fn main() {}", "passed": passed}))
            .send()
    };
    let got: Value = client
        .get(api.url(&format!("/v1/challenges/{}", challenges[0])))
        .query(&[("token", &access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["title"], "L1-C0");
    let not_sent: i64 =
        sqlx::query_scalar("SELECT id FROM challenges WHERE level = 2 LIMIT 1").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(submit(not_sent, true).await.unwrap().status(), 404, "only challenges sent to you");

    let failed: Value = submit(challenges[0], false).await.unwrap().json().await.unwrap();
    assert_eq!((failed["level"].as_i64(), failed["passed_at_level"].as_i64()), (Some(1), Some(0)));
    let first: Value = submit(challenges[0], true).await.unwrap().json().await.unwrap();
    assert_eq!(
        (first["level"].as_i64(), first["promoted"].as_bool(), first["passes_to_next_level"].as_i64()),
        (Some(1), Some(false), Some(1))
    );
    let again: Value = submit(challenges[0], true).await.unwrap().json().await.unwrap();
    assert_eq!(again["passed_at_level"], 1, "the same challenge counts once");
    // Two concurrent passes across the boundary promote exactly once.
    let (a, b) = tokio::join!(submit(challenges[1], true), submit(challenges[2], true));
    let (a, b): (Value, Value) = (a.unwrap().json().await.unwrap(), b.unwrap().json().await.unwrap());
    assert_eq!([a["promoted"].as_bool(), b["promoted"].as_bool()].iter().filter(|p| **p == Some(true)).count(), 1);

    let level: Value =
        client.get(api.url("/v1/level")).query(&[("token", &access)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(level["level"], 2);
    let history = level["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0]["from_level"].as_i64(), history[0]["to_level"].as_i64(), history[0]["reason"].as_str()),
        (Some(1), Some(2), Some("promotion"))
    );
    api.stop().await.unwrap();
}

#[tokio::test]
async fn the_questionnaire_sets_the_level() {
    let env = TestEnv::new().await;
    fixtures::challenges(&env.db.pool, 3, 1).await;
    let id: i64 = sqlx::query_scalar("INSERT INTO subscribers (email) VALUES ('new@example.com') RETURNING id")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let access = token(id, Purpose::Access);
    let questions: Value = client.get(api.url("/v1/questionnaire")).send().await.unwrap().json().await.unwrap();
    assert_eq!(questions.as_array().unwrap().len(), 6);
    let bad = client
        .post(api.url("/v1/questionnaire"))
        .query(&[("token", &access)])
        .json(&json!({"answers": [true]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "six answers required");
    let placed = client
        .post(api.url("/v1/questionnaire"))
        .query(&[("token", &access)])
        .json(&json!({"answers": [true, true, true, false, false, false]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["level"], 2);
    assert_eq!(placed["history"][0]["reason"], "placement");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn pages_show_the_challenge_take_a_submission_and_show_progress() {
    let env = TestEnv::new().await;
    let (id, challenges) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let access = token(id, Purpose::Access);
    let page = client
        .get(api.url(&format!("/challenge/{}", challenges[0])))
        .query(&[("token", &access)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("L1-C0") && html.contains("<form method=\"post\""), "{html}");
    let submitted = client
        .post(api.url(&format!("/challenge/{}", challenges[0])))
        .form(&[("token", access.as_str()), ("answer", "my answer"), ("passed", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 303);
    let location = submitted.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/level?token="));
    let level = client.get(api.url(&location)).send().await.unwrap().text().await.unwrap();
    assert!(level.contains("level 1") && level.contains("<strong>1</strong> of 3"), "{level}");
    let no_token = client.get(api.url("/level")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_get_confirms_and_one_click_post_unsubscribes() {
    let env = TestEnv::new().await;
    let (id, _) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let unsub = token(id, Purpose::Unsubscribe);
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM subscribers WHERE id = $1")
            .bind(id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
    };
    let confirm = client.get(api.url("/unsubscribe")).query(&[("token", &unsub)]).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    assert!(confirm.text().await.unwrap().contains("Unsubscribe"));
    assert_eq!(status().await, "active", "GET changes nothing (mail scanners fetch links)");
    // An access token does not unsubscribe.
    let wrong =
        client.post(api.url("/unsubscribe")).query(&[("token", token(id, Purpose::Access))]).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let one_click = levelup_tests::one_click_unsubscribe(&client, &api.url("/unsubscribe"), &unsub).await;
    assert_eq!(one_click.status(), 200);
    assert_eq!(status().await, "unsubscribed");
    let suppressed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM suppressions WHERE email_lower = 'ada@example.com' AND reason = 'unsubscribe'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(suppressed, 1);
    api.stop().await.unwrap();
}
