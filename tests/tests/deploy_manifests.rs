//! The Kubernetes manifests (deploy/k8s): `scripts/check-k8s` validates them against the
//! Kubernetes and KEDA schemas, and the query KEDA scales the workers on is run against the
//! migrated schema, so a migration that breaks it fails here rather than leaving production with
//! zero workers.

use std::path::PathBuf;
use std::process::Command;

use levelup_tests::TestDb;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_and_keda_schemas() {
    let output =
        Command::new(root().join("scripts/check-k8s")).current_dir(root()).output().expect("scripts/check-k8s runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/check-k8s failed:\n{stdout}{stderr}");
    for kustomization in ["deploy/k8s/base", "deploy/k8s/overlays/example"] {
        assert!(stdout.contains(&format!("{kustomization}: ")), "{kustomization} was not validated:\n{stdout}");
    }
}

/// The `query: |-` block of the worker's ScaledObject, as KEDA sends it.
fn keda_query() -> String {
    let path = root().join("deploy/k8s/base/worker-autoscaling.yaml");
    let text = std::fs::read_to_string(&path).expect("worker-autoscaling.yaml");
    let mut lines = text.lines().skip_while(|line| line.trim() != "query: |-");
    let key = lines.next().expect("the ScaledObject has a `query: |-` block");
    let key_indent = key.len() - key.trim_start().len();
    let block: Vec<&str> = lines.take_while(|line| line.len() - line.trim_start().len() > key_indent).collect();
    let indent = block.iter().map(|line| line.len() - line.trim_start().len()).min().expect("a non-empty query");
    block.iter().map(|line| &line[indent..]).collect::<Vec<_>>().join("\n")
}

fn explain(rows: &[(String,)]) -> String {
    rows.iter().map(|(line,)| line.as_str()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_keda_query_counts_the_work_waiting_for_workers() {
    let db = TestDb::new().await;
    let query = keda_query();
    let count = |db: &TestDb| {
        let query = query.clone();
        let pool = db.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query)).fetch_one(&pool).await }
    };
    assert_eq!(count(&db).await.expect("the KEDA query runs on the migrated schema"), 0, "an empty database");

    sqlx::raw_sql(
        "INSERT INTO subscribers (email) SELECT 'k' || g || '@example.com' FROM generate_series(1, 10) g;
         INSERT INTO weekly_runs (week, status) VALUES ('2026-W01', 'completed'), ('2026-W02', 'sending');
         -- Last week's history: never counted.
         INSERT INTO deliveries (subscriber_id, week, kind, state, message_id)
              SELECT id, '2026-W01', 'questionnaire_invite', 'sent', 'm-' || id FROM subscribers;
         -- This week's run.
         INSERT INTO deliveries (subscriber_id, week, kind, state, pushed_at, next_attempt_at, message_id, claimed_at)
         VALUES
           (1, '2026-W02', 'questionnaire_invite', 'queued',  NULL,  now() - interval '1 s', NULL, NULL),   -- due, to push: counted
           (2, '2026-W02', 'questionnaire_invite', 'queued',  NULL,  now() + interval '5 min', NULL, NULL), -- retry not due yet
           (3, '2026-W02', 'questionnaire_invite', 'queued',  now(), now() - interval '1 s', NULL, NULL),   -- in Redis: counted
           (4, '2026-W02', 'questionnaire_invite', 'queued',  now(), now() + interval '5 min', NULL, NULL), -- in Redis: counted
           (5, '2026-W02', 'questionnaire_invite', 'sending', now(), now(), NULL, now()),                   -- a worker's: counted
           (6, '2026-W02', 'questionnaire_invite', 'sent',    now(), now(), 'm-6', NULL),
           (7, '2026-W02', 'questionnaire_invite', 'failed',  now(), now(), NULL, NULL),
           (8, '2026-W02', 'questionnaire_invite', 'skipped', NULL,  now(), NULL, NULL);
         INSERT INTO shopify_syncs (trigger, status) VALUES ('test', 'completed'), ('test', 'running'); -- 1 counted
         INSERT INTO shopify_writebacks (customer_gid, marketing_state, state, next_attempt_at) VALUES
           ('gid://shopify/Customer/1', 'UNSUBSCRIBED', 'pending', now() - interval '1 s'),  -- counted
           ('gid://shopify/Customer/2', 'UNSUBSCRIBED', 'pending', now() + interval '5 min'),
           ('gid://shopify/Customer/3', 'UNSUBSCRIBED', 'done', now());",
    )
    .execute(&db.pool)
    .await
    .expect("fixture rows");
    assert_eq!(count(&db).await.unwrap(), 4 + 1 + 1, "due/pushed/sending deliveries + running sync + due write-back");

    // It reads the partial index of unfinished deliveries, never the finished history (weeks of
    // `sent` rows). Forbid sequential scans so the tiny table does not hide the plan.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.unwrap();
    let plan: Vec<(String,)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {query}"))).fetch_all(&mut *conn).await.unwrap();
    let plan = explain(&plan);
    assert!(
        plan.contains("deliveries_outstanding_idx"),
        "the KEDA query does not use deliveries_outstanding_idx:\n{plan}"
    );
}
