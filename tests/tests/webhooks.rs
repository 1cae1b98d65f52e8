//! Shopify webhooks: HMAC verified before anything, deduplicated by webhook id, effects applied once.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use levelup_common::domain::tokens::Purpose;
use levelup_tests::{
    SHOPIFY_SHOP_DOMAIN, SHOPIFY_WEBHOOK_SECRET, TestEnv, deliver_shopify_webhook, link_token, processes::spawn_api,
};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = SHOPIFY_WEBHOOK_SECRET;

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn shopify_webhooks_are_verified_deduplicated_and_applied_once() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SECRET).set("LEVELUP_SHOPIFY_SHOP_DOMAIN", SHOPIFY_SHOP_DOMAIN);
    let pool = &env.db.pool;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let url = api.url("/v1/webhooks/shopify");
    let status = |email: &'static str| async move {
        sqlx::query_scalar::<_, String>("SELECT status FROM subscribers WHERE email = $1")
            .bind(email)
            .fetch_optional(pool)
            .await
            .unwrap()
    };

    let created = json!({"id": 7001, "email": "ada@example.com", "first_name": "Ada", "email_marketing_consent": {"state": "subscribed"}});
    // A bad signature changes nothing.
    let forged =
        deliver_shopify_webhook(&client, &url, "w-0", "customers/create", &created, Some(sign("something else"))).await;
    assert_eq!(forged.status(), 401);
    assert_eq!(status("ada@example.com").await, None);
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM received_webhooks").fetch_one(pool).await.unwrap();
    assert_eq!(received, 0, "an unverified webhook is not even recorded");

    let ok = deliver_shopify_webhook(&client, &url, "w-1", "customers/create", &created, None).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["outcome"], "upserted");
    assert_eq!(status("ada@example.com").await.as_deref(), Some("active"));
    let level: Option<i16> = sqlx::query_scalar("SELECT level FROM subscribers WHERE email = 'ada@example.com'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(level, None, "new subscribers start without a level (questionnaire first)");

    let withdrawn = json!({"customer_id": 7001, "email_address": "ada@example.com", "email_marketing_consent": {"state": "unsubscribed"}});
    let first =
        deliver_shopify_webhook(&client, &url, "w-2", "customers/email_marketing_consent_update", &withdrawn, None)
            .await;
    assert_eq!(first.json::<Value>().await.unwrap()["outcome"], "unsubscribed");
    assert_eq!(status("ada@example.com").await.as_deref(), Some("unsubscribed"));
    // Re-subscribing in a replayed create does not override the withdrawal, and a redelivery is a no-op.
    let again =
        deliver_shopify_webhook(&client, &url, "w-2", "customers/email_marketing_consent_update", &withdrawn, None)
            .await;
    assert_eq!(again.json::<Value>().await.unwrap()["outcome"], "duplicate");
    let replayed_create = deliver_shopify_webhook(&client, &url, "w-1", "customers/create", &created, None).await;
    assert_eq!(replayed_create.json::<Value>().await.unwrap()["outcome"], "duplicate");
    assert_eq!(status("ada@example.com").await.as_deref(), Some("unsubscribed"));

    let redact = json!({"shop_id": 1, "shop_domain": SHOPIFY_SHOP_DOMAIN, "customer": {"id": 7001, "email": "ada@example.com"}, "orders_to_redact": []});
    let erased = deliver_shopify_webhook(&client, &url, "w-3", "customers/redact", &redact, None).await;
    assert_eq!(erased.json::<Value>().await.unwrap()["outcome"], "redacted");
    assert_eq!(status("ada@example.com").await, None, "personal data erased");
    let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions WHERE email_lower = 'ada@example.com'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(suppressed, 0);

    // Uninstalled store: everything from it is erased, subscribers imported otherwise stay.
    let bob = json!({"id": 7002, "email": "bob@example.com", "email_marketing_consent": {"state": "subscribed"}});
    deliver_shopify_webhook(&client, &url, "w-4", "customers/create", &bob, None).await;
    sqlx::query("INSERT INTO subscribers (email) VALUES ('csv@example.com')").execute(pool).await.unwrap();
    assert_eq!(status("bob@example.com").await.as_deref(), Some("active"));
    let shop = json!({"shop_id": 1, "shop_domain": "fake.myshopify.com"});
    let erased = deliver_shopify_webhook(&client, &url, "w-5", "shop/redact", &shop, None).await;
    assert_eq!(erased.json::<Value>().await.unwrap()["outcome"], "shop redacted");
    assert_eq!(status("bob@example.com").await, None);
    assert_eq!(status("csv@example.com").await.as_deref(), Some("active"));

    let missing_id = client.post(&url).header("X-Shopify-Hmac-SHA256", sign("{}")).body("{}").send().await.unwrap();
    assert_eq!(missing_id.status(), 400);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_secret_the_shopify_webhook_asks_to_be_redelivered_later() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let body = json!({"id": 1, "email": "ada@example.com", "email_marketing_consent": {"state": "subscribed"}});
    let response =
        deliver_shopify_webhook(&client, &api.url("/v1/webhooks/shopify"), "w-1", "customers/create", &body, None)
            .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let received: i64 =
        sqlx::query_scalar("SELECT count(*) FROM received_webhooks").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(received, 0, "nothing recorded: Shopify redelivers it");
    api.stop().await.unwrap();
}

/// The HMAC covers the body only: a captured genuine delivery resent under another topic, from
/// another shop's name, or long after the event, changes nothing.
#[tokio::test]
async fn captured_deliveries_cannot_be_relabelled_or_replayed() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SECRET).set("LEVELUP_SHOPIFY_SHOP_DOMAIN", SHOPIFY_SHOP_DOMAIN);
    let pool = &env.db.pool;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let url = api.url("/v1/webhooks/shopify");
    let count =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM subscribers").fetch_one(pool).await.unwrap() };
    for (id, email) in [(7001, "ada@example.com"), (7002, "bob@example.com")] {
        let customer = json!({"id": id, "email": email, "email_marketing_consent": {"state": "subscribed"}});
        let created =
            deliver_shopify_webhook(&client, &url, &format!("c-{id}"), "customers/create", &customer, None).await;
        assert_eq!(created.status(), 200);
    }
    assert_eq!(count().await, 2);

    let customer_update =
        json!({"id": 7001, "email": "ada@example.com", "email_marketing_consent": {"state": "subscribed"}});
    let order = json!({"id": 9001, "email": "bob@example.com", "line_items": [{"product_id": 1}],
        "customer": {"id": 7002, "email": "bob@example.com"}});
    // Replayed with its genuine signature: only the headers change.
    let replay = |body: &Value, id: &str, topic: &str, shop: &str, triggered_at: String| {
        let raw = body.to_string();
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("X-Shopify-Hmac-SHA256", sign(&raw))
            .header("X-Shopify-Webhook-Id", id)
            .header("X-Shopify-Topic", topic)
            .header("X-Shopify-Shop-Domain", shop)
            .header("X-Shopify-Triggered-At", triggered_at)
            .body(raw)
            .send()
    };
    let now = || chrono::Utc::now().to_rfc3339();
    let refused = [
        (
            replay(&customer_update, "r-1", "shop/redact", SHOPIFY_SHOP_DOMAIN, now()).await.unwrap(),
            400,
            "topic-mismatch",
        ),
        (replay(&order, "r-2", "customers/redact", SHOPIFY_SHOP_DOMAIN, now()).await.unwrap(), 400, "topic-mismatch"),
        (replay(&order, "r-3", "customers/update", SHOPIFY_SHOP_DOMAIN, now()).await.unwrap(), 400, "topic-mismatch"),
        (
            replay(&customer_update, "r-4", "customers/update", "evil.myshopify.com", now()).await.unwrap(),
            401,
            "wrong-shop",
        ),
        (
            replay(
                &customer_update,
                "r-5",
                "customers/update",
                SHOPIFY_SHOP_DOMAIN,
                (chrono::Utc::now() - chrono::TimeDelta::hours(5)).to_rfc3339(),
            )
            .await
            .unwrap(),
            400,
            "stale-webhook",
        ),
    ];
    for (response, status, kind) in refused {
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], format!("https://levelup.dev/problems/{kind}"), "{problem}");
    }
    assert_eq!(count().await, 2, "nobody was erased");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM received_webhooks WHERE webhook_id LIKE 'r-%'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "refused deliveries are not recorded: a genuine one with that id still applies");

    // A genuine shop/redact names our shop in its (signed) body.
    let other_shop = json!({"shop_id": 2, "shop_domain": "evil.myshopify.com"});
    let refused = replay(&other_shop, "r-6", "shop/redact", SHOPIFY_SHOP_DOMAIN, now()).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(count().await, 2);
    api.stop().await.unwrap();
}

/// After `customers/redact`, the subscriber's links (which live on in old emails) get the same
/// answer from every operation: 401, never a 500.
#[tokio::test]
async fn a_redacted_subscribers_links_answer_401_everywhere() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SECRET).set("LEVELUP_SHOPIFY_SHOP_DOMAIN", SHOPIFY_SHOP_DOMAIN);
    let pool = &env.db.pool;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let url = api.url("/v1/webhooks/shopify");
    let customer = json!({"id": 7001, "email": "ada@example.com", "email_marketing_consent": {"state": "subscribed"}});
    deliver_shopify_webhook(&client, &url, "w-1", "customers/create", &customer, None).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers").fetch_one(pool).await.unwrap();
    let access = link_token(id, Purpose::Access);
    let unsubscribe = link_token(id, Purpose::Unsubscribe);
    let redact = json!({"shop_id": 1, "shop_domain": SHOPIFY_SHOP_DOMAIN,
        "customer": {"id": 7001, "email": "ada@example.com"}, "orders_to_redact": []});
    let erased = deliver_shopify_webhook(&client, &url, "w-2", "customers/redact", &redact, None).await;
    assert_eq!(erased.status(), 200);

    let (erased, erased_unsubscribe) = (api.subscriber(&access), api.subscriber(&unsubscribe));
    let answers = [true, false, false, false, false, false];
    let responses = [
        ("GET /v1/level", erased.level_raw().await),
        ("POST /v1/questionnaire", erased.answer_questionnaire_raw(&answers).await),
        ("GET /v1/challenges/1", erased.challenge_raw(1).await),
        ("POST /v1/challenges/1/submissions", erased.submit_raw(1, "x", true).await),
        ("GET /level", erased.level_page().await),
        ("GET /questionnaire", erased.questionnaire_page().await),
        ("POST /questionnaire", erased.submit_questionnaire_page(&answers).await),
        ("GET /challenge/1", erased.challenge_page(1).await),
        ("POST /challenge/1", erased.submit_challenge_page(1, "x", false).await),
        ("GET /unsubscribe", erased_unsubscribe.unsubscribe_page().await),
        ("POST /unsubscribe", erased_unsubscribe.one_click_unsubscribe().await),
    ];
    for (what, response) in responses {
        assert_eq!(response.status(), 401, "{what}");
    }
    api.stop().await.unwrap();
}
