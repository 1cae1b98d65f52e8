//! Property-based run of the API from its own OpenAPI document (schemathesis, installed by
//! `scripts/test`): no 5xx, and every response's status code, schema and content type is one
//! the document declares for that operation. `LEVELUP_FUZZ_SEED` replaces the fixed seed.
//!
//! Schemathesis gets the admin key and, through its configuration file, valid link tokens of a
//! demo subscriber, so the subscriber's operations are exercised past the 401.

use levelup_common::tokens::Purpose;
use levelup_tests::{ADMIN_KEY, TestEnv, processes::spawn_api, token_signer};

/// Schemathesis configuration: every `token` is a valid access token, except on the unsubscribe
/// operations, which get an unsubscribe token.
fn schemathesis_config(subscriber_id: i64) -> String {
    let expires = chrono::Utc::now().timestamp() + 3600;
    let access = token_signer().issue(subscriber_id, Purpose::Access, expires).unwrap();
    let unsubscribe = token_signer().issue(subscriber_id, Purpose::Unsubscribe, expires).unwrap();
    format!(
        "[parameters]\n\"query.token\" = \"{access}\"\n\n\
         [[operations]]\ninclude-path = \"/unsubscribe\"\nparameters = {{ \"query.token\" = \"{unsubscribe}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "100000").set("LEVELUP_API_BURST", "100000");
    // Configured as in production: without a secret the Shopify webhook answers 503 by design.
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", "fuzz-webhook-secret-0123456789");
    levelup_common::demo::seed(&env.db.pool).await.unwrap();
    let subscriber_id: i64 =
        sqlx::query_scalar("SELECT min(id) FROM subscribers").fetch_one(&env.db.pool).await.unwrap();
    let config = std::env::temp_dir().join(format!("levelup-schemathesis-{}.toml", env.redis.namespace));
    std::fs::write(&config, schemathesis_config(subscriber_id)).unwrap();
    let api = spawn_api(env.config());
    let schema = api.url("/openapi.json");
    let auth = format!("Authorization: Bearer {ADMIN_KEY}");
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let seed = std::env::var("LEVELUP_FUZZ_SEED").unwrap_or_else(|_| "20261122".to_owned());
    let checks = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance";
    let output = tokio::process::Command::new(program)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &schema, "--checks", checks])
        .args(["-H", &auth, "--max-examples", "20", "--seed", &seed, "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Schemathesis keeps caches (`.schemathesis/`) in its working directory: not in the repository.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("schemathesis is installed (scripts/test installs it: python3 -m pip install schemathesis)");
    let _ = std::fs::remove_file(&config);
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("Tested:"), "{report}");
    api.stop().await.unwrap();
}
