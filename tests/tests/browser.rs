//! A person's path through the product in headless Chromium (driven over WebDriver with
//! fantoccini; `scripts/test` installs Debian's chromium and chromium-driver): open the challenge
//! link from an email in the outbox, see the challenge, submit, see the progress on the level
//! page; open the unsubscribe link, see a confirmation that changes nothing, confirm.

use std::{path::Path, process::Stdio, time::Duration};

use fantoccini::{ClientBuilder, Locator};
use levelup_common::{db::weekly_runs, domain::IsoWeek};
use levelup_tests::{TestEnv, fixtures, processes::spawn_api, wait_until};

/// Decodes a quoted-printable body part (soft line breaks and `=XX` escapes).
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn link_after(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    text[start..].split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>').next().unwrap().to_owned()
}

struct ChromeDriver {
    child: std::process::Child,
    port: u16,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> ChromeDriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let child = std::process::Command::new(&program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs chromium-driver)"));
    wait_until("chromedriver to listen", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    ChromeDriver { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_opens_the_emailed_challenge_submits_sees_progress_and_unsubscribes() {
    let (mut env, outbox) = TestEnv::with_outbox().await;
    let pool = env.db.pool.clone();
    let pool = &pool;
    fixtures::challenges(pool, 1, 2).await;
    sqlx::query("INSERT INTO subscribers (email, first_name, level) VALUES ('ada@example.com', 'Ada', 1)")
        .execute(pool)
        .await
        .unwrap();
    let api = spawn_api(env.config());
    env.set("LEVELUP_PUBLIC_BASE_URL", format!("{}/", api.base_url));
    weekly_runs::create(pool, IsoWeek::parse("2026-W47").unwrap(), "test").await.unwrap();
    env.run_due_deliveries("2026-W47").await;

    let eml_path = std::fs::read_dir(&outbox.path).unwrap().next().unwrap().unwrap().path();
    let eml = std::fs::read_to_string(&eml_path).unwrap();
    let body = decode_quoted_printable(&eml);
    let challenge_link = link_after(&body, &format!("{}/challenge/", api.base_url));
    let unsubscribe_link = link_after(&body, &format!("{}/unsubscribe?token=", api.base_url));

    let driver = start_chromedriver().await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=480,900"]
        }),
    );
    // Several rustls crypto backends are linked into the test binary; pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let browser = ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium");

    browser.goto(&challenge_link).await.unwrap();
    let heading = browser.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(heading, "L1-C0", "the challenge from the email is shown");
    browser
        .find(Locator::Id("answer"))
        .await
        .unwrap()
        .send_keys("for i in 1..=100 { println!(\"{i}\") }")
        .await
        .unwrap();
    browser.find(Locator::Css("input[name=passed]")).await.unwrap().click().await.unwrap();
    browser.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    let progress = wait_until("the level page", Duration::from_secs(20), || {
        let browser = browser.clone();
        async move {
            let url = browser.current_url().await.ok()?;
            if !url.path().starts_with("/level") {
                return None;
            }
            browser.find(Locator::Css(".progress")).await.ok()?.text().await.ok()
        }
    })
    .await;
    assert!(progress.contains("1 of 3"), "progress after one pass: {progress}");
    let shot = browser.screenshot().await.unwrap();
    let screenshot_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(screenshot_dir.join("level-page.png"), shot).unwrap();

    browser.goto(&unsubscribe_link).await.unwrap();
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM subscribers WHERE email = 'ada@example.com'")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(browser.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), "Unsubscribe");
    assert_eq!(status().await, "active", "opening the link changes nothing");
    browser.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    let done =
        wait_until("the unsubscribed page", Duration::from_secs(20), || {
            let browser = browser.clone();
            async move {
                browser.find(Locator::Css("h1")).await.ok()?.text().await.ok().filter(|t| t.contains("unsubscribed"))
            }
        })
        .await;
    assert_eq!(done, "You are unsubscribed");
    assert_eq!(status().await, "unsubscribed");
    browser.close().await.unwrap();
    api.stop().await.unwrap();
}
