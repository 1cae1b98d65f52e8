//! The subscriber's side: signed links, challenges, submissions and the level-up rule, the
//! questionnaire, level and progress, unsubscribe (JSON API and pages).

use levelup_common::domain::tokens::Purpose;
use levelup_tests::{
    SubscriberClient, TestEnv, clients::expect_json, fixtures, link_token as token, processes::spawn_api,
    token_signer as signer,
};
use serde_json::Value;
use sqlx::PgPool;

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
    let expired = signer().issue(id, Purpose::Access, chrono::Utc::now().timestamp() - 1).unwrap();
    // Change the first character of the signature (always a data-carrying character).
    let valid = token(id, Purpose::Access);
    let signature_start = valid.rfind('.').unwrap() + 1;
    let replacement = if valid.as_bytes()[signature_start] == b'A' { "B" } else { "A" };
    let mut forged = valid.clone();
    forged.replace_range(signature_start..signature_start + 1, replacement);
    assert_ne!(forged, valid);
    let unsub = token(id, Purpose::Unsubscribe);
    for (token, why) in
        [(None, "missing"), (Some(expired), "expired"), (Some(forged), "forged"), (Some(unsub), "wrong purpose")]
    {
        let subscriber = match &token {
            Some(token) => api.subscriber(token),
            None => SubscriberClient::anonymous(&api.base_url),
        };
        let response = subscriber.submit_raw(challenges[0], "x", true).await;
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
    let bare = reqwest::get(api.url(&format!("/v1/level?user_id={id}"))).await.unwrap();
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
    let ada = api.subscriber_with_access(id);
    let answer = "fn main() {}";
    let got = ada.challenge(challenges[0]).await;
    assert_eq!(got.title, "L1-C0");
    let not_sent: i64 =
        sqlx::query_scalar("SELECT id FROM challenges WHERE level = 2 LIMIT 1").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(ada.submit_raw(not_sent, answer, true).await.status(), 404, "only challenges sent to you");

    let failed = ada.submit(challenges[0], answer, false).await;
    assert_eq!((failed.level, failed.passed_at_level), (1, 0));
    let first = ada.submit(challenges[0], answer, true).await;
    assert_eq!((first.level, first.promoted, first.passes_to_next_level), (1, false, 1));
    let again = ada.submit(challenges[0], answer, true).await;
    assert_eq!(again.passed_at_level, 1, "the same challenge counts once");
    // Two concurrent passes across the boundary promote exactly once.
    let (a, b) = tokio::join!(ada.submit(challenges[1], answer, true), ada.submit(challenges[2], answer, true));
    assert_eq!([a.promoted, b.promoted].iter().filter(|promoted| **promoted).count(), 1);

    let level = ada.level().await;
    assert_eq!(level.level, Some(2));
    let history = &level.history;
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].from_level, history[0].to_level, history[0].reason.as_str()), (Some(1), 2, "promotion"));
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
    let newcomer = api.subscriber_with_access(id);
    let questions = SubscriberClient::anonymous(&api.base_url).questions().await;
    assert_eq!(questions.len(), 6);
    let bad = newcomer.answer_questionnaire_raw(&[true]).await;
    assert_eq!(bad.status(), 400, "six answers required");
    let placed = newcomer.answer_questionnaire_raw(&[true, true, true, false, false, false]).await;
    assert_eq!(placed.status(), 201);
    let placed: levelup_tests::clients::Level = expect_json(placed).await;
    assert_eq!(placed.level, Some(2));
    assert_eq!(placed.history[0].reason, "placement");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn pages_show_the_challenge_take_a_submission_and_show_progress() {
    let env = TestEnv::new().await;
    let (id, challenges) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let ada = api.subscriber_with_access(id);
    let page = ada.challenge_page(challenges[0]).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("L1-C0") && html.contains("<form method=\"post\""), "{html}");
    let submitted = ada.submit_challenge_page(challenges[0], "my answer", true).await;
    assert_eq!(submitted.status(), 303);
    let location = submitted.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/level?token="));
    let level = ada.follow(&location).await.text().await.unwrap();
    assert!(level.contains("level 1") && level.contains("<strong>1</strong> of 3"), "{level}");
    let no_token = SubscriberClient::anonymous(&api.base_url).level_page().await;
    assert_eq!(no_token.status(), 401);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_get_confirms_and_one_click_post_unsubscribes() {
    let env = TestEnv::new().await;
    let (id, _) = subscriber_with_sent_challenges(&env.db.pool).await;
    let api = spawn_api(env.config());
    let unsub = api.subscriber(token(id, Purpose::Unsubscribe));
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM subscribers WHERE id = $1")
            .bind(id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
    };
    let confirm = unsub.unsubscribe_page().await;
    assert_eq!(confirm.status(), 200);
    assert!(confirm.text().await.unwrap().contains("Unsubscribe"));
    assert_eq!(status().await, "active", "GET changes nothing (mail scanners fetch links)");
    // An access token does not unsubscribe.
    let wrong = api.subscriber_with_access(id).unsubscribe_raw().await;
    assert_eq!(wrong.status(), 401);
    let one_click = unsub.one_click_unsubscribe().await;
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
