//! Plan regressions (issue 16): the feeder's questions stay index ranges under the generic plan
//! Postgres caches for a prepared statement after five executions, whatever the week holds.
//! A million queued rows read per call is what an `OR` over the week's rows once cost.

use std::time::Duration;

use levelup_common::db::weekly_runs::{self, PUSHED_BUT_MAYBE_LOST, Push};
use levelup_tests::{TestDb, iso_week};
use serde_json::Value;
use sqlx::AssertSqlSafe;

const WEEK: &str = "2026-W47";

/// A week mid-run, in the proportions of a large fan-out: most rows queued and not pushed yet, a
/// window of pushed ones (some old enough for the safety net), a few sending (some with an expired
/// claim), some finished.
async fn week_mid_run(db: &TestDb) {
    let pool = &db.pool;
    weekly_runs::create(pool, iso_week(WEEK), "test").await.unwrap();
    sqlx::query(
        "INSERT INTO subscribers (email, first_name) SELECT format('user%s@example.com', n), 'U' FROM generate_series(1, 20000) n",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (subscriber_id, week, kind, state, message_id, pushes, pushed_at, claimed_at)
         SELECT id, $1, 'questionnaire_invite',
                CASE WHEN n <= 1000 THEN 'sent' WHEN n <= 1100 THEN 'sending' ELSE 'queued' END,
                CASE WHEN n <= 1000 THEN 'm' || n END,
                CASE WHEN n <= 3100 THEN 1 ELSE 0 END,
                CASE WHEN n <= 1030 THEN now() - interval '10 minutes'
                     WHEN n <= 3000 THEN now() - interval '5 seconds'
                     WHEN n <= 3100 THEN now() - interval '5 minutes' END,
                CASE WHEN n <= 1030 THEN now() - interval '9 minutes' WHEN n <= 1100 THEN now() END
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM subscribers) s",
    )
    .bind(WEEK)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE deliveries").execute(pool).await.unwrap();
}

fn nodes<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(plan);
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

#[tokio::test]
async fn the_safety_net_reads_two_index_ranges_under_a_generic_plan() {
    let db = TestDb::new().await;
    week_mid_run(&db).await;
    // PREPARE and the plan cache mode belong to one session.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PREPARE maybe_lost(text, float8, float8, bigint) AS {PUSHED_BUT_MAYBE_LOST}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.unwrap();
    let explained: Value =
        sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) EXECUTE maybe_lost('{WEEK}', 60, 120, 500)")))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let plan = &explained[0]["Plan"];
    let mut all = Vec::new();
    nodes(plan, &mut all);
    let on_deliveries: Vec<&Value> = all.into_iter().filter(|n| n["Relation Name"] == "deliveries").collect();
    let described = serde_json::to_string_pretty(plan).unwrap();
    assert_eq!(on_deliveries.len(), 2, "one scan per question:\n{described}");
    for range in ["pushed_at < ", "claimed_at < "] {
        let scan = on_deliveries
            .iter()
            .find(|n| n["Index Cond"].as_str().is_some_and(|cond| cond.contains(range)))
            .unwrap_or_else(|| panic!("no index range on `{range}…`:\n{described}"));
        assert!(
            matches!(scan["Node Type"].as_str(), Some("Index Scan" | "Index Only Scan")),
            "`{range}…` read by an index scan:\n{described}"
        );
        assert!(scan["Index Cond"].as_str().unwrap().contains("(week = $1)"), "{described}");
        // At most a check of the state (the outstanding index also holds `sending` rows): rows
        // outside the cutoff are never read to be thrown away.
        let filter = scan["Filter"].as_str().unwrap_or_default();
        assert!(!filter.contains("_at"), "`{range}…`: a filter on times reads rows it throws away:\n{described}");
    }
}

#[tokio::test]
async fn the_safety_net_finds_old_queued_pushes_and_expired_claims_oldest_first() {
    let db = TestDb::new().await;
    week_mid_run(&db).await;
    let pool = &db.pool;
    let (repush_after, claim_timeout) = (Duration::from_secs(60), Duration::from_secs(120));
    let expected: Vec<Push> = sqlx::query_as(
        "SELECT id AS delivery_id, pushes AS number FROM deliveries
         WHERE week = $1 AND pushed_at IS NOT NULL
           AND ((state = 'queued' AND pushed_at < now() - interval '60 seconds')
             OR (state = 'sending' AND claimed_at < now() - interval '120 seconds'))
         ORDER BY pushed_at, id",
    )
    .bind(WEEK)
    .fetch_all(pool)
    .await
    .unwrap();
    // 30 sending rows with an expired claim (pushed 10 minutes ago), then 100 queued rows pushed 5
    // minutes ago; rows pushed 5 seconds ago, claimed just now, unpushed or sent are not candidates.
    assert_eq!(expected.len(), 130);
    let found =
        weekly_runs::pushed_but_maybe_lost(pool, iso_week(WEEK), repush_after, claim_timeout, 500).await.unwrap();
    let sorted = |mut v: Vec<Push>| {
        v.sort_by_key(|p| p.delivery_id);
        v
    };
    assert_eq!(sorted(found), sorted(expected.clone()));
    // A limit keeps the oldest pushes: the expired claims first.
    let first =
        weekly_runs::pushed_but_maybe_lost(pool, iso_week(WEEK), repush_after, claim_timeout, 40).await.unwrap();
    assert_eq!(first.len(), 40);
    let sending: Vec<i64> = expected[..30].iter().map(|p| p.delivery_id).collect();
    assert!(sending.iter().all(|id| first.iter().any(|p| p.delivery_id == *id)), "{first:?}");
}
