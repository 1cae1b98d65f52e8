//! CR/LF never reaches a mail header or adds lines to the greeting: refused at the boundaries
//! (admin API, CSV import), made one line where it cannot be refused (Shopify data), and the
//! message builders cannot emit it whatever the database holds.

use levelup_tests::{
    SHOPIFY_SHOP_DOMAIN, SHOPIFY_WEBHOOK_SECRET, TestEnv, clients::ImportReport, deliver_shopify_webhook,
    processes::spawn_api,
};
use serde_json::{Value, json};

const EVIL_TITLE: &str = "X\r\nBcc: t@evil.example";

#[tokio::test]
async fn line_breaks_are_refused_or_flattened_at_every_boundary() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", SHOPIFY_WEBHOOK_SECRET)
        .set("LEVELUP_SHOPIFY_SHOP_DOMAIN", SHOPIFY_SHOP_DOMAIN);
    let pool = &env.db.pool;
    let api = spawn_api(env.config());
    let admin = api.admin();
    let client = reqwest::Client::new();

    let challenge = json!({"level": 1, "title": EVIL_TITLE, "body": "Line one\nline two is fine in a body"});
    let refused = admin.create_challenge_raw(&challenge).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert!(refused.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("title"));
    let updated = admin.update_challenge_raw(1, &json!({"title": EVIL_TITLE, "body": "b", "archived": false})).await;
    assert_eq!(updated.status(), 400, "refused before looking the challenge up");

    let csv = "email,first_name,level\nada@example.com,\"Ada\r\nBcc: t@evil.example\",1\nbo@example.com,Bo,1\n";
    let report: ImportReport = admin.import_csv(csv).await;
    assert_eq!(report.imported, 1, "{report:?}");
    assert!(report.errors[0].message.starts_with("first_name"), "{report:?}");

    let customer = json!({"id": 7001, "email": "eve@example.com", "first_name": "Eve\r\nBcc: t@evil.example",
        "email_marketing_consent": {"state": "subscribed"}});
    let url = api.url("/v1/webhooks/shopify");
    assert_eq!(deliver_shopify_webhook(&client, &url, "w-1", "customers/create", &customer, None).await.status(), 200);
    let name: String = sqlx::query_scalar("SELECT first_name FROM subscribers WHERE email = 'eve@example.com'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(name, "Eve  Bcc: t@evil.example", "kept, on one line");
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_built_from_hostile_data_have_no_injected_header_or_line() {
    let (env, outbox) = TestEnv::with_outbox().await;
    let pool = &env.db.pool;
    // As if written before the boundaries checked, or by hand.
    sqlx::query("INSERT INTO challenges (level, position, title, body) VALUES (1, 0, $1, 'Body')")
        .bind(EVIL_TITLE)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO subscribers (email, first_name, level) VALUES ('ada@example.com', $1, 1)")
        .bind("Ada\r\nBcc: t@evil.example\r\n\r\nP.S. fake paragraph")
        .execute(pool)
        .await
        .unwrap();
    levelup_common::db::weekly_runs::create(pool, levelup_common::domain::IsoWeek::parse("2026-W48").unwrap(), "test")
        .await
        .unwrap();
    env.run_due_deliveries("2026-W48").await;
    let files: Vec<_> = std::fs::read_dir(&outbox.path).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    for line in eml.lines() {
        let lower = line.to_ascii_lowercase();
        assert!(!lower.starts_with("bcc:"), "an injected header:\n{eml}");
        assert!(!lower.starts_with("p.s. fake"), "an injected line:\n{eml}");
    }
    assert!(eml.contains("Subject: Your weekly challenge: X  Bcc: t@evil.example"), "{eml}");
}
