//! `/metrics` stays bounded whatever clients send: the route label is the matched route's
//! template (or `unmatched`) and the method label one of a fixed set (or `other`). Alone in its
//! test binary, because the metrics recorder is process-wide.

use levelup_tests::{TestEnv, processes::spawn_api};
use rand::Rng;

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW", "X-RANDOM"];
const PATHS: &[&str] = &["/junk/", "/v1/", "/v1/challenges/", "/v1/admin/runs/", "/docs/", "/"];

async fn request(client: &reqwest::Client, base: &str, method: &str, path: &str) {
    let method = if method == "X-RANDOM" {
        format!("M{}", rand::rng().random_range(0..1_000_000u32))
    } else {
        method.to_owned()
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let url = format!("{base}{path}{}", uuid::Uuid::new_v4().simple());
    client.request(method, url).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_paths_and_methods_leave_metrics_the_size_they_were() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_API_RATE_PER_SECOND", "1000000").set("LEVELUP_API_BURST", "1000000");
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let metrics = || async { client.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap() };

    // Every kind of request once, so each label set that can exist does.
    for method in METHODS {
        for path in PATHS {
            request(&client, &api.base_url, method, path).await;
        }
    }
    // The scrape's own series exist once it has been scraped.
    metrics().await;
    let before = metrics().await;

    let mut rng = rand::rng();
    let plan: Vec<(&str, &str)> = (0..10_000)
        .map(|_| (METHODS[rng.random_range(0..METHODS.len())], PATHS[rng.random_range(0..PATHS.len())]))
        .collect();
    for chunk in plan.chunks(32) {
        futures::future::join_all(chunk.iter().map(|(m, p)| request(&client, &api.base_url, m, p))).await;
    }
    let after = metrics().await;
    println!("/metrics: {} bytes before, {} bytes after 10,000 random requests", before.len(), after.len());
    // Counts and sums grow by a few digits per existing series; no series is added.
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(series(&after), series(&before), "no new series");
    assert!(after.len() <= before.len() + 8192, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(after.contains(r#"route="unmatched""#), "{after}");
    assert!(after.contains(r#"method="other""#), "{after}");
    api.stop().await.unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Benchmark (ignored: ~1 minute): with nothing scraping `/metrics`, the API's memory stays flat
/// over 400,000 requests (histogram samples are drained into buckets every 5 s, not buffered
/// until a scrape). Run: `scripts/test -p levelup-tests --test metrics_cardinality -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn without_a_scraper_the_api_memory_stays_flat() {
    use std::io::BufRead;
    let env = TestEnv::new().await;
    let mut child = std::process::Command::new(levelup_tests::processes::binary_path("levelup-api"))
        .env_clear()
        .envs(&env.vars)
        .env("LEVELUP_LOG", "info")
        .env("LEVELUP_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let address = loop {
        let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap_or_default();
        if line["message"] == "API listening" {
            break line["address"].as_str().unwrap().to_owned();
        }
    };
    // The log goes on being written: drain it so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{address}/healthz");
    let client = reqwest::Client::new();
    let burst = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            for _ in 0..n / 64 {
                futures::future::join_all((0..64).map(|_| client.get(&url).send())).await;
            }
        }
    };
    burst(20_000).await;
    let before = rss_kib(child.id());
    let started = std::time::Instant::now();
    burst(400_000).await;
    // Let the upkeep (every 5 s) run once more.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let after = rss_kib(child.id());
    println!(
        "API RSS without a scraper: {before} KiB after 20,000 requests, {after} KiB after 400,000 more ({:?})",
        started.elapsed()
    );
    let _ = child.kill();
    let _ = child.wait();
    // Buffered samples would be 400,000 × 8 bytes and more; allow allocator noise.
    assert!(after < before + 2048, "RSS grew from {before} to {after} KiB");
}
