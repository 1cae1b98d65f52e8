//! Protocol details: `Allow` on every 405, security headers on pages, `/metrics` off the API port
//! on request, and an OpenAPI document that states the bounds the handlers enforce.

use levelup_tests::{TestEnv, processes::spawn_api};
use serde_json::Value;

#[tokio::test]
async fn every_405_says_which_methods_the_route_takes() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let spec: Value = client.get(api.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (template, operations) in spec["paths"].as_object().unwrap() {
        let path: String = template
            .split('/')
            .map(|s| {
                if s == "{week}" {
                    "2026-W47"
                } else if s.starts_with('{') {
                    "1"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut expected: Vec<String> = operations.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        if expected.contains(&"GET".to_owned()) {
            expected.push("HEAD".to_owned());
        }
        expected.sort();
        let response = client.request(reqwest::Method::TRACE, api.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 405, "TRACE {path}");
        let allow = response.headers().get("allow").unwrap_or_else(|| panic!("no Allow on TRACE {path}"));
        let mut allowed: Vec<String> = allow.to_str().unwrap().split(", ").map(str::to_owned).collect();
        allowed.sort();
        assert_eq!(allowed, expected, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        checked += 1;
    }
    assert!(checked >= 24, "{checked} paths");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn pages_and_the_admin_page_forbid_scripts_framing_and_sniffing() {
    let env = TestEnv::new().await;
    let (_, token) = env.subscriber_with_access_token("ada@example.com", 1).await;
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let ada = api.subscriber(&token);
    let pages = [
        ada.level_page().await,
        api.subscriber("forged").level_page().await,
        ada.questionnaire_page().await,
        api.admin().admin_page_raw().await,
    ];
    for response in pages {
        let what = format!("{} {}", response.url().path(), response.status());
        let headers = response.headers();
        let csp = headers.get("content-security-policy").unwrap_or_else(|| panic!("no CSP on {what}"));
        let csp = csp.to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(!csp.contains("script-src"), "no script may run: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(headers["x-frame-options"], "DENY", "{what}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{what}: page URLs carry tokens");
    }
    let json = ada.level_raw().await;
    assert_eq!(json.headers()["x-content-type-options"], "nosniff");
    let refused = client.get(api.url("/admin")).send().await.unwrap();
    assert_eq!(
        (refused.status().as_u16(), &refused.headers()["x-content-type-options"]),
        (401, &"nosniff".parse().unwrap())
    );
    let missing = client.get(api.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.headers()["x-content-type-options"], "nosniff", "errors too");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn with_a_metrics_address_metrics_leave_the_api_port() {
    let mut env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.set("LEVELUP_METRICS_BIND", format!("127.0.0.1:{port}"));
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let on_api = client.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    let metrics = levelup_tests::wait_until("the metrics listener", std::time::Duration::from_secs(10), || async {
        client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()
    })
    .await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(metrics.text().await.unwrap().contains("levelup_http_requests_total"));
    api.stop().await.unwrap();
}

#[tokio::test]
async fn the_document_states_the_bounds_the_handlers_enforce() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let spec: Value = reqwest::get(api.url("/openapi.json")).await.unwrap().json().await.unwrap();
    let parameter = |path: &str, name: &str| -> Value {
        spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} {name}"))
            .clone()
    };
    let schema = |value: &Value| -> Value {
        match value["schema"]["$ref"].as_str() {
            Some(reference) => spec["components"]["schemas"][reference.rsplit('/').next().unwrap()].clone(),
            None => value["schema"].clone(),
        }
    };
    let status = schema(&parameter("/v1/admin/subscribers", "status"));
    assert_eq!(status["enum"], serde_json::json!(["active", "unsubscribed", "bounced", "complained"]), "{status}");
    let state = schema(&parameter("/v1/admin/runs/{week}/deliveries", "state"));
    assert_eq!(state["enum"], serde_json::json!(["queued", "sending", "sent", "failed", "skipped"]), "{state}");
    let level = schema(&parameter("/v1/admin/challenges", "level"));
    assert_eq!((level["minimum"].as_f64(), level["maximum"].as_f64()), (Some(1.0), Some(100.0)), "{level}");
    for object in ["TriggerRun", "NewJob"] {
        let week = &spec["components"]["schemas"][object]["properties"]["week"];
        assert!(week["pattern"].is_string(), "{object}.week: {week}");
    }
    api.stop().await.unwrap();
}
