//! What an operator pages on exists: each process's `/metrics` carries the series the alert
//! rules and the dashboard use, during a real run; the rules themselves pass `promtool`'s checks
//! and unit tests (`scripts/check-alerts`).

use std::{collections::BTreeSet, process::Command, time::Duration};

use levelup_common::{db::weekly_runs, domain::IsoWeek};
use levelup_tests::{TestEnv, fixtures, processes::ChildProcess, wait_until};

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn scrape(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// The metric names in a scrape (histograms by their base name).
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name).to_owned()
        })
        .collect()
}

/// Metric names (`levelup_…` identifiers, histograms by their base name) used by a file of
/// `deploy/`: the alert rules or the dashboard.
fn metrics_used_by(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("levelup_") && word.len() > "levelup_".len())
        .map(|word| word.strip_suffix("_bucket").unwrap_or(word).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_exports_what_the_alerts_and_the_dashboard_use_during_a_run() {
    let (mut env, _outbox) = TestEnv::with_outbox().await;
    env.set("LEVELUP_SCHEDULE_CRON", "0 0 0 1 1 * 2099").set("LEVELUP_SCHEDULER_TICK_MS", "100");
    let pool = env.db.pool.clone();
    fixtures::challenges(&pool, 2, 2).await;
    fixtures::subscribers(&pool, 40, 2).await;
    let week = IsoWeek::parse("2026-W48").unwrap();
    weekly_runs::create(&pool, week, "test").await.unwrap();

    let (worker_port, scheduler_port) = (free_port(), free_port());
    let mut worker_vars = env.vars.clone();
    worker_vars.insert("LEVELUP_METRICS_BIND".into(), format!("127.0.0.1:{worker_port}"));
    let mut scheduler_vars = env.vars.clone();
    scheduler_vars.insert("LEVELUP_METRICS_BIND".into(), format!("127.0.0.1:{scheduler_port}"));
    // The scheduler alone first: its gauges (refreshed every 15 s) show the fanned-out run, all due.
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &scheduler_vars);
    let scheduler_first =
        wait_until("the scheduler's gauges to show the fanned-out run", Duration::from_secs(60), || async {
            scrape(scheduler_port).await.filter(|text| text.contains(r#"levelup_run_deliveries{state="queued"} 40"#))
        })
        .await;
    let _worker = ChildProcess::spawn("levelup-worker", &[], &worker_vars);
    env.run_completed("2026-W48", Duration::from_secs(60)).await;
    let worker = wait_until("the worker's metrics", Duration::from_secs(10), || scrape(worker_port)).await;

    let scheduler = names(&scheduler_first);
    for name in [
        "levelup_queue_depth",
        "levelup_backlog_due",
        "levelup_backlog_oldest_due_seconds",
        "levelup_dead_letters_open",
        "levelup_run_deliveries",
        "levelup_runs_unfinished",
        "levelup_run_remaining",
        "levelup_run_ambiguous",
        "levelup_run_eta_seconds",
    ] {
        assert!(scheduler.contains(name), "scheduler lacks {name}:\n{scheduler_first}");
    }
    assert!(scheduler_first.contains(r#"levelup_queue_depth{queue="email",state="waiting"}"#), "{scheduler_first}");
    assert!(scheduler_first.contains("levelup_run_remaining 40"), "{scheduler_first}");

    let worker_names = names(&worker);
    for name in [
        "levelup_email_jobs_total",
        "levelup_job_duration_seconds",
        "levelup_jobs_in_flight",
        "levelup_email_pickup_latency_seconds",
        "levelup_rate_limit_wait_seconds",
        "levelup_breaker_state",
    ] {
        assert!(worker_names.contains(name), "worker lacks {name}:\n{worker}");
    }
    assert!(worker.contains(r#"levelup_email_jobs_total{outcome="sent"} 40"#), "{worker}");

    // Every series an alert or a dashboard panel uses is exported by the worker or the scheduler
    // in this run; the ones that exist only once their event happened (or on the API, or with a
    // Shopify store) are named here, with the file that counts them.
    let event_only = [
        ("levelup_ses_events_total", "api/src/routes/webhooks.rs"),
        ("levelup_http_requests_total", "api/src/http/metrics.rs"),
        ("levelup_email_send_errors_total", "worker/src/send_email.rs"),
        ("levelup_rate_limit_deferred_total", "worker/src/send_email.rs"),
        ("levelup_shopify_bucket_available", "common/src/shopify/client.rs"),
        ("levelup_shopify_throttled_total", "common/src/shopify/client.rs"),
    ];
    let exported: BTreeSet<String> = scheduler.union(&worker_names).cloned().collect();
    let used: BTreeSet<String> =
        metrics_used_by("prometheus/alerts.yml").union(&metrics_used_by("grafana/levelup.json")).cloned().collect();
    for metric in used {
        let counted_in = event_only.iter().find(|(name, _)| *name == metric).map(|(_, file)| *file);
        match counted_in {
            Some(file) => {
                let source = std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
                assert!(source.contains(&format!("\"{metric}\"")), "{metric} is not counted in {file}");
            }
            None => assert!(exported.contains(&metric), "deploy/ uses {metric}, which no process exports"),
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_checks_and_their_unit_tests() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check-alerts");
    let output = Command::new(script).output().expect("scripts/check-alerts runs");
    assert!(
        output.status.success(),
        "scripts/check-alerts failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
