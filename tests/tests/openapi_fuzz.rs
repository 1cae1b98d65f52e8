//! Property-based run of the API from its own OpenAPI document (schemathesis, installed by
//! `scripts/test`) with every check, the negative-data ones included: no 5xx; every response's
//! status code, schema, content type and headers are what the document declares; invalid data,
//! missing required headers and unsupported methods are refused. Two fixed seeds;
//! `LEVELUP_FUZZ_SEED` replaces them with one of your choice.
//!
//! Schemathesis gets the admin key and, through its configuration file, valid link tokens of a
//! demo subscriber, so the subscriber's operations are exercised past the 401.

use levelup_common::domain::tokens::Purpose;
use levelup_tests::{ADMIN_KEY, TestEnv, processes::spawn_api, token_signer};

/// Schemathesis configuration: every `token` is a valid access token, except on the unsubscribe
/// operations, which get an unsubscribe token.
fn schemathesis_config(subscriber_id: i64) -> String {
    let expires = chrono::Utc::now().timestamp() + 3600;
    let access = token_signer().issue(subscriber_id, Purpose::Access, expires).unwrap();
    let unsubscribe = token_signer().issue(subscriber_id, Purpose::Unsubscribe, expires).unwrap();
    // negative_data_rejection: 413 (a body over 64 KiB) is a rejection too.
    // positive_data_acceptance: besides the defaults, 400 and 422 are how the API answers rules a
    // schema cannot state (a reused Idempotency-Key with another body, a CSV without its header,
    // the fields one job kind needs, an SNS body that is not JSON, a week that does not exist).
    format!(
        "[parameters]\n\"query.token\" = \"{access}\"\n\n\
         [checks.positive_data_acceptance]\n\
         expected-statuses = [\"2xx\", \"3xx\", \"400\", \"401\", \"403\", \"404\", \"409\", \"422\", \"429\"]\n\n\
         [checks.negative_data_rejection]\n\
         expected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \"413\", \"415\", \"422\", \"429\"]\n\n\
         [[operations]]\ninclude-path = \"/unsubscribe\"\nparameters = {{ \"query.token\" = \"{unsubscribe}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "100000").set("LEVELUP_API_BURST", "100000");
    env.set("LEVELUP_WEBHOOK_RATE_PER_SECOND", "100000").set("LEVELUP_WEBHOOK_BURST", "100000");
    // Configured as in production: without these the webhooks answer 503 by design.
    env.set("LEVELUP_SHOPIFY_WEBHOOK_SECRET", "fuzz-webhook-secret-0123456789")
        .set("LEVELUP_SHOPIFY_SHOP_DOMAIN", "fuzz.myshopify.com")
        .set("LEVELUP_SNS_TOPIC_ARNS", "arn:aws:sns:us-east-1:123456789012:ses-events");
    levelup_common::db::demo::seed(&env.db.pool).await.unwrap();
    let subscriber_id: i64 =
        sqlx::query_scalar("SELECT min(id) FROM subscribers").fetch_one(&env.db.pool).await.unwrap();
    let config = std::env::temp_dir().join(format!("levelup-schemathesis-{}.toml", env.redis.namespace));
    std::fs::write(&config, schemathesis_config(subscriber_id)).unwrap();
    let api = spawn_api(env.config());
    let schema = api.url("/openapi.json");
    let auth = format!("Authorization: Bearer {ADMIN_KEY}");
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let seeds = match std::env::var("LEVELUP_FUZZ_SEED") {
        Ok(seed) => vec![seed],
        Err(_) => vec!["20261122".to_owned(), "4711".to_owned()],
    };
    let mut failures = Vec::new();
    for seed in &seeds {
        let output = tokio::process::Command::new(&program)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &schema, "--checks", "all", "--mode", "all"])
            .args(["-H", &auth, "--max-examples", "20", "--seed", seed, "--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            // Schemathesis keeps caches (`.schemathesis/`) in its working directory: not in the repository.
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .expect("schemathesis is installed (scripts/test installs it: python3 -m pip install schemathesis)");
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        println!("seed {seed}:\n{report}");
        assert!(report.contains("Tested:") || !output.status.success(), "{report}");
        if !output.status.success() {
            failures.push(format!("seed {seed}:\n{report}\n{}", String::from_utf8_lossy(&output.stderr)));
        }
    }
    let _ = std::fs::remove_file(&config);
    assert!(failures.is_empty(), "schemathesis found failures:\n{}", failures.join("\n"));
    api.stop().await.unwrap();
}
