//! Operator endpoints for challenges, subscribers (search, CSV import) and the delivery ledger.

use levelup_tests::{ADMIN_KEY, TestEnv, processes::spawn_api};
use serde_json::{Value, json};

#[tokio::test]
async fn challenges_can_be_authored_listed_edited_and_archived() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let url = api.url("/v1/admin/challenges");
    let create = |body: Value| client.post(&url).bearer_auth(ADMIN_KEY).json(&body).send();

    let first: Value =
        create(json!({"level": 1, "title": "Loops", "body": "Print 1..100"})).await.unwrap().json().await.unwrap();
    assert_eq!(first["position"], 0);
    let second = create(json!({"level": 1, "title": "Maps", "body": "Count words"})).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.json::<Value>().await.unwrap()["position"], 1, "appended after the last");
    let taken = create(json!({"level": 1, "position": 0, "title": "Dup", "body": "x"})).await.unwrap();
    assert_eq!(taken.status(), 409);
    let invalid = create(json!({"level": 1, "title": "", "body": "x"})).await.unwrap();
    assert_eq!(invalid.status(), 400);
    let problem: Value = invalid.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("title"), "names the field: {problem}");
    let unauthorized = client.post(&url).json(&json!({"level": 1, "title": "t", "body": "b"})).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    let id = first["id"].as_i64().unwrap();
    let edited = client
        .put(api.url(&format!("/v1/admin/challenges/{id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"title": "Loops!", "body": "Print 1..100", "archived": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    let listed: Value =
        client.get(&url).query(&[("level", "1")]).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "archived ones are hidden by default");
    let all: Value = client
        .get(&url)
        .query(&[("include_archived", "true")])
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let missing = client.get(api.url("/v1/admin/challenges/999999")).bearer_auth(ADMIN_KEY).send().await.unwrap();
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
    let client = reqwest::Client::new();
    let csv = "email,first_name,level\n\
               ada@example.com,Ada,2\n\
               not-an-email,Bob,1\n\
               cy@example.com,,\n\
               dee@example.com,Dee,999\n\
               GONE@example.com,Gone,1\n";
    let import = || {
        client
            .post(api.url("/v1/admin/subscribers/import"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "text/plain")
            .body(csv)
            .send()
    };
    let report: Value = import().await.unwrap().json().await.unwrap();
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["existing"], 1, "{report}");
    let lines: Vec<i64> = report["errors"].as_array().unwrap().iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![3, 5], "{report}");
    assert!(report["errors"][1]["message"].as_str().unwrap().starts_with("level"));
    let again: Value = import().await.unwrap().json().await.unwrap();
    assert_eq!((again["imported"].as_i64(), again["existing"].as_i64()), (Some(0), Some(3)), "idempotent");
    let gone: String = sqlx::query_scalar("SELECT status FROM subscribers WHERE email = 'gone@example.com'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(gone, "unsubscribed", "an import never re-subscribes anyone");

    let found: Value = client
        .get(api.url("/v1/admin/subscribers"))
        .query(&[("q", "ada")])
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["level"], 2);
    let bad_status = client
        .get(api.url("/v1/admin/subscribers"))
        .query(&[("status", "zombie")])
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);
    let no_header = client
        .post(api.url("/v1/admin/subscribers/import"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/plain")
        .body("mail\nx@y.com\n")
        .send()
        .await
        .unwrap();
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
    let client = reqwest::Client::new();
    let by_subscriber: Value = client
        .get(api.url(&format!("/v1/admin/subscribers/{id}/deliveries")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_subscriber[0]["reason"], "unsubscribed");
    let by_week: Value = client
        .get(api.url("/v1/admin/runs/2026-W47/deliveries"))
        .query(&[("state", "skipped")])
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_week.as_array().unwrap().len(), 1);
    api.stop().await.unwrap();
}
