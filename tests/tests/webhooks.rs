//! Shopify webhooks: HMAC verified before anything, deduplicated by webhook id, effects applied once.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use levelup_tests::{SHOPIFY_WEBHOOK_SECRET, TestEnv, deliver_shopify_webhook, processes::spawn_api};
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
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SECRET);
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

    let redact = json!({"shop_id": 1, "customer": {"id": 7001, "email": "ada@example.com"}});
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
