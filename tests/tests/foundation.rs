//! The spine: schema, constraints, configuration errors, health and readiness.

use std::time::Duration;

use levelup_tests::{
    TestEnv,
    db::{admin_connection, server_options},
    processes::{ChildProcess, spawn_api},
};
use sqlx::{Connection, postgres::PgPoolOptions};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let name = format!("levelup_t_empty_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
    let pool = PgPoolOptions::new().connect_with(server_options().database(&name)).await.unwrap();

    levelup_common::db::migrate(&pool).await.expect("first run applies");
    levelup_common::db::migrate(&pool).await.expect("second run is a no-op");

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for expected in [
        "challenges",
        "deliveries",
        "idempotency_keys",
        "level_history",
        "questionnaire_results",
        "received_webhooks",
        "subscribers",
        "submissions",
        "suppressions",
        "weekly_runs",
    ] {
        assert!(tables.iter().any(|t| t == expected), "missing table {expected}: {tables:?}");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    assert_eq!(applied as usize, levelup_common::db::MIGRATOR.iter().count());
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
}

#[tokio::test]
async fn the_migrate_command_creates_the_database_and_can_run_twice() {
    let env = TestEnv::new().await;
    let name = format!("levelup_t_cmd_{}", uuid::Uuid::new_v4().simple());
    let mut vars = env.vars.clone();
    vars.insert("DATABASE_URL".into(), levelup_tests::db::database_url(&name));
    for run in 1..=2 {
        let out = ChildProcess::run_to_end("levelup-api", &["migrate"], &vars);
        assert!(out.status.success(), "run {run}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn email_is_unique_case_insensitively_under_concurrent_inserts() {
    let env = TestEnv::new().await;
    let variants = ["ada@example.com", "Ada@example.com", "ADA@EXAMPLE.COM", "ada@Example.Com"];
    let inserts = (0..32).map(|i| {
        let pool = env.db.pool.clone();
        let email = variants[i % variants.len()];
        async move { sqlx::query("INSERT INTO subscribers (email) VALUES ($1)").bind(email).execute(&pool).await }
    });
    let results = futures::future::join_all(inserts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one insert wins");
    for err in results.into_iter().filter_map(Result::err) {
        let code = err.as_database_error().and_then(sqlx::error::DatabaseError::code).map(std::borrow::Cow::into_owned);
        assert_eq!(code.as_deref(), Some("23505"), "losers hit the unique index: {err}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn one_delivery_per_subscriber_and_week_under_concurrent_inserts() {
    let env = TestEnv::new().await;
    let pool = &env.db.pool;
    let subscriber: i64 = sqlx::query_scalar("INSERT INTO subscribers (email) VALUES ('bo@example.com') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO weekly_runs (week) VALUES ('2026-W47'), ('2026-W48')").execute(pool).await.unwrap();
    let inserts = (0..32).map(|i| {
        let pool = pool.clone();
        let week = if i % 2 == 0 { "2026-W47" } else { "2026-W48" };
        async move {
            sqlx::query("INSERT INTO deliveries (subscriber_id, week, kind) VALUES ($1, $2, 'questionnaire_invite')")
                .bind(subscriber)
                .bind(week)
                .execute(&pool)
                .await
        }
    });
    let results = futures::future::join_all(inserts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2, "one per week");
    let per_week: Vec<(String, i64)> =
        sqlx::query_as("SELECT week, count(*) FROM deliveries GROUP BY week ORDER BY week")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(per_week, vec![("2026-W47".into(), 1), ("2026-W48".into(), 1)]);
}

#[tokio::test]
async fn database_constraints_reject_invalid_rows() {
    let env = TestEnv::new().await;
    let pool = &env.db.pool;
    for (sql, why) in [
        ("INSERT INTO subscribers (email) VALUES ('no-at-sign')", "email needs an @"),
        ("INSERT INTO subscribers (email, status) VALUES ('a@b.co', 'gone')", "status is an enum"),
        ("INSERT INTO subscribers (email, level) VALUES ('a@b.co', 0)", "level starts at 1"),
        ("INSERT INTO weekly_runs (week) VALUES ('2026-W54')", "ISO week format"),
        ("INSERT INTO challenges (level, position, title, body) VALUES (1, -1, 't', 'b')", "position >= 0"),
        ("INSERT INTO suppressions (email_lower, reason) VALUES ('Ada@x.co', 'bounce')", "lower-cased"),
    ] {
        assert!(sqlx::query(sql).execute(pool).await.is_err(), "{why}: {sql}");
    }
}

#[test]
fn a_binary_with_a_malformed_variable_exits_with_one_line_naming_it() {
    let vars = std::collections::HashMap::from([("LEVELUP_EMAIL_CONCURRENCY".to_owned(), "lots".to_owned())]);
    for binary in ["levelup-api", "levelup-worker", "levelup-scheduler"] {
        let out = ChildProcess::run_to_end(binary, &[], &vars);
        assert_eq!(out.status.code(), Some(2), "{binary} exits 2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{binary}: one line: {stderr}");
        assert!(stderr.contains("LEVELUP_EMAIL_CONCURRENCY"), "{binary}: {stderr}");
    }
}

#[tokio::test]
async fn healthz_and_readyz_answer_when_dependencies_are_up() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let health = client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_when_postgres_is_unreachable() {
    let mut env = TestEnv::new().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.set("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{closed}/levelup"));
    let api = spawn_api(env.config());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert_eq!(client.get(api.url("/healthz")).send().await.unwrap().status(), 200, "alive regardless");
    let ready = client.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["postgres"], "unreachable");
    assert_eq!(body["redis"], "ok");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_when_redis_is_unreachable() {
    let mut env = TestEnv::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.set("REDIS_URL", format!("redis://127.0.0.1:{closed}/0"));
    let api = spawn_api(env.config());
    let ready = reqwest::get(api.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["redis"], "unreachable");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    for _ in 0..3 {
        reqwest::get(api.url("/healthz")).await.unwrap();
    }
    let text = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("levelup_http_requests_total") && l.contains(r#"route="/healthz""#))
        .unwrap_or_else(|| panic!("healthz counted: {text}"));
    assert!(line.contains(r#"status="200""#), "{line}");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_document_is_served() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let spec: serde_json::Value = reqwest::get(api.url("/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/readyz"].is_object(), "{spec}");
    let docs = reqwest::get(api.url("/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    api.stop().await.unwrap();
}
