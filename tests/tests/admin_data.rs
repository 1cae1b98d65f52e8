//! Operator endpoints for challenges, subscribers (search, CSV import) and the delivery ledger.

use levelup_tests::{
    TestEnv,
    clients::{Challenge, ImportReport, expect_json},
    processes::spawn_api,
};
use serde_json::{Value, json};

#[tokio::test]
async fn challenges_can_be_authored_listed_edited_and_archived() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let admin = api.admin();

    let first = admin.create_challenge(1, "Loops", "Print 1..100").await;
    assert_eq!(first.position, 0);
    let second = admin.create_challenge_raw(&json!({"level": 1, "title": "Maps", "body": "Count words"})).await;
    assert_eq!(second.status(), 201);
    assert_eq!(expect_json::<Challenge>(second).await.position, 1, "appended after the last");
    let taken = admin.create_challenge_raw(&json!({"level": 1, "position": 0, "title": "Dup", "body": "x"})).await;
    assert_eq!(taken.status(), 409);
    let invalid = admin.create_challenge_raw(&json!({"level": 1, "title": "", "body": "x"})).await;
    assert_eq!(invalid.status(), 400);
    let problem: Value = invalid.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("title"), "names the field: {problem}");
    let unauthorized = reqwest::Client::new()
        .post(api.url("/v1/admin/challenges"))
        .json(&json!({"level": 1, "title": "t", "body": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let edited = admin
        .update_challenge_raw(first.id, &json!({"title": "Loops!", "body": "Print 1..100", "archived": true}))
        .await;
    assert_eq!(edited.status(), 200);
    let listed = admin.challenges(&[("level", "1")]).await;
    assert_eq!(listed.len(), 1, "archived ones are hidden by default");
    let all = admin.challenges(&[("include_archived", "true")]).await;
    assert_eq!(all.len(), 2);
    let missing = admin.challenge_raw(999999).await;
    assert_eq!(missing.status(), 404);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn csv_import_keeps_good_rows_and_reports_bad_ones_by_line() {
    let env = TestEnv::new().await;
    sqlx::query("INSERT INTO subscribers (email, status) VALUES ('gone@example.com', 'unsubscribed')")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let csv = "email,first_name,level\n\
               ada@example.com,Ada,2\n\
               not-an-email,Bob,1\n\
               cy@example.com,,\n\
               dee@example.com,Dee,999\n\
               GONE@example.com,Gone,1\n";
    let report: ImportReport = admin.import_csv(csv).await;
    assert_eq!(report.imported, 2, "{report:?}");
    assert_eq!(report.existing, 1, "{report:?}");
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 5], "{report:?}");
    assert!(report.errors[1].message.starts_with("level"));
    let again = admin.import_csv(csv).await;
    assert_eq!((again.imported, again.existing), (0, 3), "idempotent");
    let gone: String = sqlx::query_scalar("SELECT status FROM subscribers WHERE email = 'gone@example.com'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(gone, "unsubscribed", "an import never re-subscribes anyone");

    let found = admin.subscribers(&[("q", "ada")]).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].level, Some(2));
    let bad_status = admin.subscribers_raw(&[("status", "zombie")]).await;
    assert_eq!(bad_status.status(), 400);
    let no_header = admin.import_csv_raw("mail\nx@y.com\n").await;
    assert_eq!(no_header.status(), 400);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn the_ledger_can_be_read_by_subscriber_and_by_week() {
    let env = TestEnv::new().await;
    let pool = &env.db.pool;
    let id: i64 = sqlx::query_scalar("INSERT INTO subscribers (email) VALUES ('ada@example.com') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO weekly_runs (week) VALUES ('2026-W47')").execute(pool).await.unwrap();
    sqlx::query("INSERT INTO deliveries (subscriber_id, week, kind, state, reason) VALUES ($1, '2026-W47', 'questionnaire_invite', 'skipped', 'unsubscribed')")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let by_subscriber = admin.subscriber_deliveries(id).await;
    assert_eq!(by_subscriber[0].reason.as_deref(), Some("unsubscribed"));
    let by_week = admin.run_deliveries("2026-W47", Some("skipped")).await;
    assert_eq!(by_week.len(), 1);
    api.stop().await.unwrap();
}
