//! Shopify subscriber sync end to end: the worker and the scheduler (in-process, or as processes
//! where one is killed or measured), the real Shopify client against the fake store (pagination,
//! cost-based throttling, 5xx), webhooks through the API.

use levelup_common::domain::{SyncMode, SyncStatus, WritebackState};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use levelup_common::db::shopify_syncs as sync;
use levelup_tests::{
    AdminClient, InProcessFleet, TestEnv,
    clients::{Job, ShopifySync, expect_json},
    deliver_shopify_webhook,
    fake_shopify::{CostModel, FakeCustomer, FakeShopify, ShopifyFaults, mixed_customers},
    fixtures, link_token,
    processes::{ChildProcess, spawn_api},
    wait::wait_until_explained,
    wait_until,
};
use serde_json::json;
use sqlx::PgPool;

/// Active subscribers that came from Shopify: customer id → email.
async fn active_from_shopify(pool: &PgPool) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT shopify_customer_id, email FROM subscribers WHERE status = 'active' AND shopify_customer_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// A worker and a scheduler process (for the tests that kill or measure one).
fn fleet_processes(env: &TestEnv) -> [ChildProcess; 2] {
    [ChildProcess::spawn("levelup-worker", &[], &env.vars), ChildProcess::spawn("levelup-scheduler", &[], &env.vars)]
}

/// What a sync must produce: the store's subscribed customers with an address.
fn expected(customers: &[FakeCustomer]) -> BTreeMap<String, String> {
    customers
        .iter()
        .filter(|c| c.marketing_state == "SUBSCRIBED")
        .filter_map(|c| c.email.clone().map(|email| (c.gid(), email)))
        .collect()
}

/// The operator starts a sync: 202, and its id.
async fn start_sync(admin: &AdminClient) -> i64 {
    let response = admin.start_shopify_sync_raw().await;
    assert_eq!(response.status(), 202, "sync started");
    expect_json::<ShopifySync>(response).await.id
}

/// Waits for the sync to finish while `fleet` (if in-process) keeps running.
async fn sync_finished(pool: &PgPool, fleet: Option<&InProcessFleet>, id: i64, deadline: Duration) -> sync::Sync {
    let check = || async {
        if let Some(fleet) = fleet {
            fleet.assert_running();
        }
        sync::get(pool, id).await.unwrap().filter(|s| s.status != SyncStatus::Running)
    };
    wait_until_explained(&format!("sync {id} to finish"), deadline, check, || explain(pool, fleet)).await
}

/// The syncs, the write-backs and the sync queue, for a wait that timed out.
async fn explain(pool: &PgPool, fleet: Option<&InProcessFleet>) -> String {
    let syncs: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s next %s pushed %s at %s claimed until %s', id, status, next_page, pushed_page, pushed_at,
                       claimed_until)
         FROM shopify_syncs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let writebacks = levelup_common::db::shopify_writebacks::list(pool, 10).await.unwrap_or_default();
    let queue = match fleet {
        Some(fleet) => fleet.describe_queue(levelup_common::jobs::Queue::ShopifySync).await,
        None => String::from("(worker processes)"),
    };
    format!(
        "syncs (id, status, next page, pushed page, pushed at, claimed until): {syncs:?}\nwrite-backs: {writebacks:?}\n{queue}"
    )
}

async fn status_of(pool: &PgPool, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM subscribers WHERE lower(email) = lower($1)")
        .bind(email)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sync_of_10k_customers_activates_exactly_the_subscribed_ones_within_the_throttle() {
    let customers = mixed_customers(1, 10_000);
    // A bucket that holds four pages and refills two a second: the sync must pace itself.
    let shopify =
        FakeShopify::start(customers.clone(), CostModel { maximum: 1000.0, restore_rate: 500.0, node_cost: 1.0 }).await;
    let (env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    let pool = &env.db.pool;
    // Before the sync: a Shopify subscriber the store no longer has as subscribed, and a
    // subscriber imported from CSV (no Shopify id) who must be left alone.
    let gone = customers.iter().find(|c| c.marketing_state == "UNSUBSCRIBED").unwrap();
    sqlx::query("INSERT INTO subscribers (email, shopify_customer_id) VALUES ('gone@example.com', $1), ('csv@example.com', NULL)")
        .bind(gone.gid())
        .execute(pool)
        .await
        .unwrap();

    let fleet = env.in_process_fleet();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let started = Instant::now();
    let id = start_sync(&admin).await;
    // A second trigger while it runs returns the running sync.
    let again = admin.start_shopify_sync_raw().await;
    assert_eq!(again.status(), 200);
    assert_eq!(expect_json::<ShopifySync>(again).await.id, id);
    let done = sync_finished(pool, Some(&fleet), id, Duration::from_secs(180)).await;
    let elapsed = started.elapsed();
    assert_eq!(done.status, SyncStatus::Completed, "{done:?}");

    let want = expected(&customers);
    let got = active_from_shopify(pool).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "active Shopify subscribers are exactly the subscribed customers, with their emails");
    assert_eq!(status_of(pool, "gone@example.com").await.as_deref(), Some("unsubscribed"));
    assert_eq!(status_of(pool, "csv@example.com").await.as_deref(), Some("active"));
    let levels: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscribers WHERE level IS NOT NULL").fetch_one(pool).await.unwrap();
    assert_eq!(levels, 0, "new subscribers have no level until the questionnaire");

    // Every page served once: none lost (all customers arrived), none repeated.
    let subscribed = customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED").count();
    let pages = subscribed.div_ceil(250);
    let stats = shopify.stats();
    assert_eq!(stats.pages_served.len(), pages);
    assert!(stats.pages_served.values().all(|&n| n == 1), "a page was fetched twice: {:?}", stats.pages_served);
    assert_eq!(done.pages as usize, pages);
    assert_eq!(done.customers_seen as usize, subscribed);
    assert!(stats.throttled <= 3, "THROTTLED answers: {}", stats.throttled);
    assert_eq!(done.throttled as u64, stats.throttled);
    // The operator's view of it.
    let view = admin.shopify_sync(id).await;
    assert_eq!((view.status.as_str(), view.mode.as_deref(), view.pages as usize), ("completed", Some("pages"), pages));
    assert_eq!(view.created as usize, want.len());
    let unknown = admin.shopify_sync_raw(999999).await;
    assert_eq!(unknown.status(), 404);
    let anonymous = reqwest::Client::new().post(api.url("/v1/admin/shopify/syncs")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(sync::list(pool, 10).await.unwrap().len(), 1, "no sync started without the admin key");
    println!(
        "10,000 customers ({subscribed} subscribed): {pages} pages in {:.1} s, {} requests, THROTTLED {} times, bucket 1000 pts @ 500 pts/s",
        elapsed.as_secs_f64(),
        stats.requests,
        stats.throttled
    );
    fleet.stop().await;
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_sync_is_resumed_and_the_sync_ends_with_the_same_result() {
    let customers = mixed_customers(1, 6_000);
    let shopify = FakeShopify::start(customers.clone(), CostModel::roomy()).await;
    shopify.set_faults(ShopifyFaults { latency: Duration::from_millis(150), ..ShopifyFaults::default() });
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    env.set("LEVELUP_SHOPIFY_PAGE_SIZE", "100");
    let pool = &env.db.pool;
    let mut first = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);
    let sync::Start::Started(started) = sync::start(pool, "test").await.unwrap() else { panic!("no sync was running") };
    wait_until("a few pages committed", Duration::from_secs(60), || async {
        sync::get(pool, started.id).await.unwrap().filter(|s| s.pages >= 5)
    })
    .await;
    first.kill_hard();
    let at_kill = sync::get(pool, started.id).await.unwrap().unwrap();
    assert_eq!(at_kill.status, SyncStatus::Running);
    let _second = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    let done = sync_finished(pool, None, started.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, SyncStatus::Completed, "{done:?}");
    assert!(done.pages > at_kill.pages);

    assert!(active_from_shopify(pool).await == expected(&customers), "same result as an uninterrupted sync");
    let subscribed = customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED").count();
    assert_eq!(done.pages as usize, subscribed.div_ceil(100), "every page committed once");
    assert_eq!(done.customers_seen as usize, subscribed);
    let stats = shopify.stats();
    let refetched: u32 = stats.pages_served.values().map(|n| n - 1).sum();
    assert!(refetched <= 1, "only the page in flight when the worker died may be fetched again: {refetched}");
    println!("killed after {} pages; resumed; {} pages, {refetched} page(s) fetched again", at_kill.pages, done.pages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_withdrawn_with_its_webhook_unsubscribes_and_the_next_run_skips_them() {
    let customers = mixed_customers(500, 40);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    let (env, outbox) = TestEnv::with_fake_shopify(&shopify).await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 2).await;
    let fleet = env.in_process_fleet();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let client = reqwest::Client::new();
    let first = start_sync(&admin).await;
    assert_eq!(sync_finished(pool, Some(&fleet), first, Duration::from_secs(60)).await.status, SyncStatus::Completed);
    let subscribed: Vec<&FakeCustomer> =
        customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED" && c.email.is_some()).collect();
    let (leaver, erased, kept) = (subscribed[0], subscribed[1], subscribed[2]);
    let leaver_email = leaver.email.clone().unwrap();
    assert_eq!(status_of(pool, &leaver_email).await.as_deref(), Some("active"));

    // The customer withdraws consent in the store; Shopify sends the consent webhook.
    shopify.set_marketing_state(leaver.id, "UNSUBSCRIBED");
    let url = api.url("/v1/webhooks/shopify");
    let consent = json!({
        "customer_id": leaver.id, "email_address": leaver_email,
        "email_marketing_consent": { "state": "unsubscribed", "opt_in_level": "single_opt_in", "consent_updated_at": chrono::Utc::now().to_rfc3339() }
    });
    // A bad HMAC: 401 and nothing changed.
    let forged = deliver_shopify_webhook(
        &client,
        &url,
        "wh-1",
        "customers/email_marketing_consent_update",
        &consent,
        Some("AAAA".into()),
    )
    .await;
    assert_eq!(forged.status(), 401);
    assert_eq!(status_of(pool, &leaver_email).await.as_deref(), Some("active"));
    let accepted =
        deliver_shopify_webhook(&client, &url, "wh-1", "customers/email_marketing_consent_update", &consent, None)
            .await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(status_of(pool, &leaver_email).await.as_deref(), Some("unsubscribed"));

    // Redaction erases the subscriber; the same webhook id twice is processed once.
    let erased_email = erased.email.clone().unwrap();
    let redact = json!({ "shop_id": 1, "shop_domain": "fake.myshopify.com", "customer": { "id": erased.id, "email": erased_email }, "orders_to_redact": [] });
    for _ in 0..2 {
        let response = deliver_shopify_webhook(&client, &url, "wh-2", "customers/redact", &redact, None).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(status_of(pool, &erased_email).await, None, "personal data erased");
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM received_webhooks WHERE webhook_id IN ('wh-1', 'wh-2')")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(processed, 2);
    // Shopify will redact the customer in the store too; until then a sync would bring them
    // back, so the fake forgets them as Shopify does.
    shopify.set_marketing_state(erased.id, "REDACTED");

    // The next sync agrees with the store and re-activates nobody.
    let second = start_sync(&admin).await;
    let second = sync_finished(pool, Some(&fleet), second, Duration::from_secs(60)).await;
    assert_eq!((second.status.as_str(), second.created, second.reactivated), ("completed", 0, 0));
    assert_eq!(status_of(pool, &leaver_email).await.as_deref(), Some("unsubscribed"));

    // The next weekly run mails the others and not the leaver.
    let week = "2026-W48";
    let trigger = ChildProcess::run_to_end("levelup-scheduler", &["trigger", week], &env.vars);
    assert!(trigger.status.success());
    fleet.assert_running();
    env.run_completed(week, Duration::from_secs(60)).await;
    let active = active_from_shopify(pool).await.len() as i64;
    let progress = levelup_common::db::weekly_runs::progress(pool, levelup_tests::iso_week(week)).await.unwrap();
    assert_eq!(progress.sent, active);
    let leaver_delivery: (String, Option<String>) = sqlx::query_as(
        "SELECT d.state, d.reason FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE lower(s.email) = lower($1)",
    )
    .bind(&leaver_email)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(leaver_delivery, ("skipped".to_owned(), Some("unsubscribed".to_owned())));
    let mailed: BTreeSet<String> = std::fs::read_dir(&outbox.path)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .filter_map(|eml| eml.lines().find_map(|l| l.strip_prefix("To: ").map(str::to_owned)))
        .collect();
    assert_eq!(mailed.len() as i64, active);
    assert!(!mailed.iter().any(|to| to.contains(&leaver_email)), "no email to the leaver");
    assert!(mailed.iter().any(|to| to.contains(kept.email.as_deref().unwrap())));
    fleet.stop().await;
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsubscribe_in_levelup_is_written_back_and_a_later_opt_in_in_the_store_reactivates() {
    let customers = mixed_customers(900, 10);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    let (env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    let pool = &env.db.pool;
    let fleet = env.in_process_fleet();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let first = start_sync(&admin).await;
    assert_eq!(sync_finished(pool, Some(&fleet), first, Duration::from_secs(60)).await.status, SyncStatus::Completed);
    let customer = customers.iter().find(|c| c.marketing_state == "SUBSCRIBED" && c.email.is_some()).unwrap();
    let email = customer.email.clone().unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE shopify_customer_id = $1")
        .bind(customer.gid())
        .fetch_one(pool)
        .await
        .unwrap();

    // One-click unsubscribe from the email.
    let token = link_token(id, levelup_common::domain::tokens::Purpose::Unsubscribe);
    let response = api.subscriber(token).one_click_unsubscribe().await;
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(pool, &email).await.as_deref(), Some("unsubscribed"));
    // The store hears of it through a write-back job.
    let written_back = || async {
        fleet.assert_running();
        shopify
            .customers()
            .iter()
            .find(|c| c.id == customer.id)
            .filter(|c| c.marketing_state == "UNSUBSCRIBED")
            .cloned()
    };
    let what = "the unsubscribe written back to Shopify";
    wait_until_explained(what, Duration::from_secs(30), written_back, || explain(pool, Some(&fleet))).await;
    assert_eq!(shopify.stats().consent_updates, vec![(customer.gid(), "UNSUBSCRIBED".to_owned())]);
    let writebacks = admin.shopify_writebacks().await;
    wait_until("the write-back recorded as done", Duration::from_secs(10), || async {
        levelup_common::db::shopify_writebacks::list(pool, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.state == WritebackState::Done)
    })
    .await;
    assert_eq!(writebacks[0].customer_id, customer.gid());

    // A sync agrees: still unsubscribed.
    let second = start_sync(&admin).await;
    assert_eq!(sync_finished(pool, Some(&fleet), second, Duration::from_secs(60)).await.reactivated, 0);
    assert_eq!(status_of(pool, &email).await.as_deref(), Some("unsubscribed"));
    // Later the customer subscribes again at checkout: the newer consent re-activates them.
    // (Consent timestamps have one-second precision: this opt-in is a few seconds later.)
    shopify.set_marketing_state_at(customer.id, "SUBSCRIBED", chrono::Utc::now() + chrono::Duration::seconds(2));
    let third = start_sync(&admin).await;
    assert_eq!(sync_finished(pool, Some(&fleet), third, Duration::from_secs(60)).await.reactivated, 1);
    assert_eq!(status_of(pool, &email).await.as_deref(), Some("active"));
    fleet.stop().await;
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shopify_errors_are_retried_and_an_outage_fails_the_sync_without_partial_damage() {
    let customers = mixed_customers(2000, 600);
    let shopify = FakeShopify::start(customers.clone(), CostModel::roomy()).await;
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    env.set("LEVELUP_SHOPIFY_PAGE_SIZE", "50")
        .set("LEVELUP_SYNC_MAX_ATTEMPTS", "3")
        .set("LEVELUP_BREAKER_THRESHOLD", "100");
    let pool = &env.db.pool;
    let fleet = env.in_process_fleet();

    // Two 503s in a row: retried with backoff, the sync completes with every customer.
    shopify.set_faults(ShopifyFaults { fail_next: 2, ..ShopifyFaults::default() });
    let sync::Start::Started(first) = sync::start(pool, "test").await.unwrap() else { panic!("no sync was running") };
    let first = sync_finished(pool, Some(&fleet), first.id, Duration::from_secs(60)).await;
    assert_eq!(first.status, SyncStatus::Completed, "{first:?}");
    assert_eq!(shopify.stats().server_errors, 2);
    assert!(active_from_shopify(pool).await == expected(&customers));

    // Down for good: the page's attempts run out, the sync fails with the reason, and the
    // subscribers are as the last completed sync left them (nobody unsubscribed by a partial sync).
    shopify.set_faults(ShopifyFaults {
        unavailable_until: Some(Instant::now() + Duration::from_secs(3600)),
        ..ShopifyFaults::default()
    });
    let sync::Start::Started(second) = sync::start(pool, "test").await.unwrap() else { panic!("no sync was running") };
    let second = sync_finished(pool, Some(&fleet), second.id, Duration::from_secs(60)).await;
    assert_eq!(second.status, SyncStatus::Failed);
    assert!(second.error.as_deref().unwrap_or_default().contains("503"), "{second:?}");
    assert!(active_from_shopify(pool).await == expected(&customers));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_product_configured_only_its_buyers_are_subscribers() {
    let customers = mixed_customers(3000, 20);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    env.set("LEVELUP_SHOPIFY_PRODUCT_ID", "777");
    let pool = &env.db.pool;
    let fleet = env.in_process_fleet();
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let subscribed: Vec<&FakeCustomer> =
        customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED" && c.email.is_some()).collect();
    let (buyer, other_product) = (subscribed[0], subscribed[1]);
    let order = |order_id: u64, customer: &FakeCustomer, product: u64| {
        json!({
            "id": order_id, "email": customer.email, "financial_status": "paid",
            "customer": { "id": customer.id, "email": customer.email, "first_name": customer.first_name,
                          "email_marketing_consent": { "state": "subscribed", "consent_updated_at": "2026-01-01T00:00:00Z" } },
            "line_items": [ { "id": 1, "product_id": product, "quantity": 1 } ]
        })
    };
    let url = api.url("/v1/webhooks/shopify");
    assert_eq!(
        deliver_shopify_webhook(&client, &url, "o-1", "orders/paid", &order(1, buyer, 777), None).await.status(),
        200
    );
    assert_eq!(
        deliver_shopify_webhook(&client, &url, "o-2", "orders/paid", &order(2, other_product, 555), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        status_of(pool, buyer.email.as_deref().unwrap()).await.as_deref(),
        Some("active"),
        "a paid order subscribes a consenting buyer at once"
    );
    assert_eq!(status_of(pool, other_product.email.as_deref().unwrap()).await, None);
    let id = start_sync(&api.admin()).await;
    let done = sync_finished(pool, Some(&fleet), id, Duration::from_secs(60)).await;
    assert_eq!(done.status, SyncStatus::Completed);
    let active = active_from_shopify(pool).await;
    assert_eq!(active.keys().cloned().collect::<Vec<_>>(), vec![buyer.gid()], "only the product's buyer");
    let consenting = customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED").count();
    assert_eq!(
        done.skipped as usize,
        consenting - 1,
        "every other consenting customer skipped (not a buyer, or no address)"
    );
    fleet.stop().await;
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_above_the_bulk_threshold_is_exported_in_bulk_and_a_broken_download_resumes() {
    let customers = mixed_customers(1, 5_000);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    shopify.set_bulk_duration(Duration::from_millis(500));
    // The first download breaks off after 1,500 lines: one batch of 1,000 is committed by then.
    shopify.set_faults(ShopifyFaults { break_download_after_lines: Some(1500), ..ShopifyFaults::default() });
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    env.set("LEVELUP_SHOPIFY_BULK_THRESHOLD", "1000").set("LEVELUP_SHOPIFY_BULK_POLL_MS", "100");
    let pool = &env.db.pool;
    let fleet = env.in_process_fleet();
    let sync::Start::Started(started) = sync::start(pool, "test").await.unwrap() else { panic!("no sync was running") };
    let done = sync_finished(pool, Some(&fleet), started.id, Duration::from_secs(60)).await;
    fleet.stop().await;
    assert_eq!(done.status, SyncStatus::Completed, "{done:?}");
    assert_eq!(done.mode, Some(SyncMode::Bulk));

    assert!(active_from_shopify(pool).await == expected(&customers));
    let subscribed = customers.iter().filter(|c| c.marketing_state == "SUBSCRIBED").count();
    assert_eq!(done.lines_done as usize, subscribed, "every line applied once");
    assert_eq!(done.customers_seen as usize, subscribed);
    let stats = shopify.stats();
    assert_eq!(stats.bulk_operations, 1);
    assert_eq!(stats.bulk_downloads, 2, "the broken download was resumed once");
    assert!(stats.pages_served.is_empty(), "no cursor pages in bulk mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_starts_one_sync_per_firing_of_the_sync_schedule() {
    let customers = mixed_customers(7000, 30);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    // Fires at the start of every minute; its latest firing is always less than a minute ago.
    env.set("LEVELUP_SYNC_CRON", "0 * * * * *");
    let pool = &env.db.pool;
    // Two replicas race for each firing.
    let fleet = InProcessFleet::start(env.config(), 1, 2);
    let first = wait_until("a scheduled sync to complete", Duration::from_secs(60), || async {
        fleet.assert_running();
        sync::list(pool, 10).await.unwrap().into_iter().find(|s| s.status == SyncStatus::Completed)
    })
    .await;
    assert_eq!(first.trigger, "schedule");
    assert!(active_from_shopify(pool).await == expected(&customers));
    // Several more ticks of both schedulers: no second sync for the same firing.
    let ticks_later = Instant::now() + Duration::from_secs(1);
    wait_until("a few scheduler ticks", Duration::from_secs(5), || async {
        (Instant::now() >= ticks_later).then_some(())
    })
    .await;
    fleet.assert_running();
    let syncs = sync::list(pool, 10).await.unwrap();
    fleet.stop().await;
    let minute = |t: chrono::DateTime<chrono::Utc>| t.timestamp() / 60;
    let per_minute: BTreeSet<i64> = syncs.iter().map(|s| minute(s.started_at)).collect();
    assert_eq!(per_minute.len(), syncs.len(), "one sync per firing: {syncs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_starts_a_sync_as_a_job_and_follows_it() {
    // Without a store: a clear 409, nothing started.
    let bare = TestEnv::new().await;
    let api = spawn_api(bare.config());
    let refused = api.admin().sync_subscribers_job_raw().await;
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert!(refused.text().await.unwrap().contains("LEVELUP_SHOPIFY_SHOP"));
    assert!(sync::list(&bare.db.pool, 10).await.unwrap().is_empty());
    api.stop().await.unwrap();

    let customers = mixed_customers(8000, 50);
    let shopify = FakeShopify::start(customers.clone(), CostModel::default()).await;
    let (env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    let fleet = env.in_process_fleet();
    let api = spawn_api(env.config());
    let admin = api.admin();
    let created = admin.sync_subscribers_job_raw().await;
    assert_eq!(created.status(), 201);
    let job: Job = expect_json(created).await;
    assert_eq!(job.kind, "sync_subscribers");
    let finished = wait_until("the sync job to complete", Duration::from_secs(60), || async {
        fleet.assert_running();
        Some(admin.job_at(&job.status_url).await).filter(|view| view.state == "completed")
    })
    .await;
    assert_eq!(finished.id, job.id);
    assert!(active_from_shopify(&env.db.pool).await == expected(&customers));
    let queue = admin.shopify_sync_queue_raw().await;
    assert_eq!(queue.status(), 200);
    let depth: serde_json::Value = queue.json().await.unwrap();
    assert!(depth["waiting"].is_u64() && depth["inflight"].is_u64(), "{depth}");
    let page = admin.admin_page().await;
    assert!(page.contains("Shopify syncs") && page.contains("completed"), "{page}");
    fleet.stop().await;
    api.stop().await.unwrap();
}

/// Benchmark (ignored by default): the same worker runs a bulk export of 20,000 customers, then
/// of 200,000. Reports lines applied per second, and the worker's peak RSS during the large
/// export as a ratio to its peak during the small one: a streamed result keeps it near 1.
/// `scripts/test -p levelup-tests --test shopify_sync bulk_export -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run explicitly"]
async fn bulk_export_memory_does_not_grow_with_the_result() {
    let small = mixed_customers(1, 20_000);
    let shopify = FakeShopify::start(small.clone(), CostModel::default()).await;
    shopify.set_bulk_duration(Duration::from_millis(200));
    let (mut env, _outbox) = TestEnv::with_fake_shopify(&shopify).await;
    env.set("LEVELUP_SHOPIFY_BULK_THRESHOLD", "1000")
        .set("LEVELUP_SHOPIFY_BULK_POLL_MS", "100")
        .set("LEVELUP_SYNC_CLAIM_TIMEOUT_SECS", "60");
    let pool = &env.db.pool;
    let [worker, _scheduler] = fleet_processes(&env);
    let pid = worker.pid().as_raw();
    let rss_kib = move || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().to_owned()))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let measure = |label: &'static str| async move {
        let started = Instant::now();
        let sync::Start::Started(sync) = sync::start(pool, "bench").await.unwrap() else {
            panic!("no sync was running")
        };
        let mut peak = 0;
        let done = loop {
            peak = peak.max(rss_kib());
            if let Some(done) = sync::get(pool, sync.id).await.unwrap().filter(|s| s.status != SyncStatus::Running) {
                break done;
            }
            assert!(started.elapsed() < Duration::from_secs(900), "bulk sync took too long");
            tokio::time::sleep(Duration::from_millis(50)).await; // the RSS probe's sampling interval
        };
        assert_eq!((done.status, done.mode), (SyncStatus::Completed, Some(SyncMode::Bulk)), "{done:?}");
        let rate = done.lines_done as f64 / started.elapsed().as_secs_f64();
        println!("{label}: {} lines, {rate:.0} lines/s, worker peak RSS {peak} KiB", done.lines_done);
        peak
    };
    let small_peak = measure("20,000 customers").await;
    assert!(active_from_shopify(pool).await == expected(&small));
    shopify.add_customers(mixed_customers(20_001, 180_000));
    let large_peak = measure("200,000 customers").await;
    assert!(active_from_shopify(pool).await == expected(&shopify.customers()));
    let ratio = large_peak as f64 / small_peak as f64;
    println!("peak RSS, 10x larger result: x{ratio:.2}");
    assert!(ratio < 2.0, "worker memory grew with the result: x{ratio:.2}");
}
