//! What the API writes to its log about requests: never a credential. The real binary at `info`,
//! its output captured.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use levelup_common::domain::tokens::Purpose;
use levelup_tests::{ADMIN_KEY, AdminClient, TestEnv, processes::binary_path, token_signer, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_tokens_and_keys_never_reach_the_log() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_LOG", "info").set("LEVELUP_LOG_FORMAT", "json");
    let (id, token) = env.subscriber_with_access_token("ada@example.com", 1).await;
    let unsubscribe = token_signer().issue(id, Purpose::Unsubscribe, chrono::Utc::now().timestamp() + 3600).unwrap();
    let mut child = Command::new(binary_path("levelup-api"))
        .env_clear()
        .envs(&env.vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut log = Vec::new();
    let address = loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).expect("the API starts");
        log.push(line.clone());
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if parsed["message"] == "API listening" {
            break parsed["address"].as_str().unwrap().to_owned();
        }
    };
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/v1/level?token={token}")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(format!("{base}/level?lang=en&token={token}")).send().await.unwrap().status(), 200);
    client.get(format!("{base}/unsubscribe?token={unsubscribe}")).send().await.unwrap();
    AdminClient::new(&base).runs_raw().await;
    client.get(format!("{base}/v1/level?token=v1.t1.forged.token-value")).send().await.unwrap();
    wait_until("the five responses to be logged", Duration::from_secs(10), || {
        log.extend(lines_rx.try_iter());
        let responses = log.iter().filter(|l| l.contains(r#""message":"response""#)).count();
        std::future::ready((responses >= 5).then_some(()))
    })
    .await;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    log.extend(lines_rx.try_iter());
    let log = log.join("\n");
    for secret in [token.as_str(), unsubscribe.as_str(), ADMIN_KEY, "forged.token-value"] {
        assert!(!log.contains(secret), "a credential reached the log:\n{log}");
    }
    assert!(log.contains("/level?lang=en&token=REDACTED"), "requests are still logged, redacted:\n{log}");
}

/// A bulk operation's result URL is signed (a credential valid for days): a failed download's
/// error — logged, and stored as a sync's error — does not carry it.
#[tokio::test]
async fn a_failed_bulk_download_does_not_repeat_its_signed_url() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SHOPIFY_SHOP", "fake.myshopify.com").set("LEVELUP_SHOPIFY_ACCESS_TOKEN", "shpat_0123456789");
    let config = env.config();
    let redis = levelup_common::runtime::redis_conn::connect(&config).await.unwrap();
    let client =
        levelup_common::shopify::client::ShopifyClient::new(&config, config.shopify.clone().unwrap(), redis).unwrap();
    // Nothing listens on port 9: the connection is refused.
    let url = "http://127.0.0.1:9/bulk/result.jsonl?X-Goog-Signature=signed-secret-value";
    let err = client.open_bulk_result(url).await.expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.contains("bulk result download failed"), "{message}");
    assert!(!message.contains("signed-secret-value"), "{message}");
}
