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
